"""What memory holds after a plan's blobs are written (bootfuzz.loader.memory), the files
the backends load it from (bootfuzz.run.memory_files), and the platform's regions."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bootfuzz.case import BootCase, Overrides
from bootfuzz.errors import HarnessBug, ImageError, LayoutError
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import FOUR_GIB, HANDOFF_ADDR, GiB, MiB
from bootfuzz.loader.memory import lost_bytes, memory_pieces, read_memory
from bootfuzz.loader.placement import check_blobs
from bootfuzz.loader.plan import Blob, BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import ADDRESS_SPACE_END, Platform, RegionKind, qemu_pc
from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend, check_handoff_free
from bootfuzz.run.memory_files import memory_files
from tests.fakes import FakeInitrd, fake_bzimage

PC = qemu_pc(256 * MiB)
SPLIT = qemu_pc(6 * GiB)
IMAGE = parse_kernel_image(fake_bzimage(init_size=0x3378000))


def blob(name: str, addr: int, data: bytes) -> Blob:
    return Blob(name, addr, len(data), data=data)


# ---- the platform's regions -------------------------------------------------------

@pytest.mark.parametrize("platform", [PC, SPLIT, qemu_pc(2 * MiB)], ids=["256M", "6G", "2M"])
def test_regions_cover_the_address_space_in_order(platform: Platform) -> None:
    regions = platform.regions()
    assert regions[0].start == 0 and regions[-1].end == ADDRESS_SPACE_END
    assert all(a.end == b.start for a, b in itertools.pairwise(regions))
    ram = sum(r.end - r.start for r in regions if r.ram)
    legacy = 0x100000 - 0xA0000
    assert ram == platform.memory - legacy  # all RAM but what hides under the legacy area


def test_regions_of_a_split_guest() -> None:
    kinds = [(r.kind, r.start, r.end) for r in SPLIT.regions()]
    assert kinds == [
        (RegionKind.LOW_RAM, 0, 0xA0000),
        (RegionKind.LEGACY, 0xA0000, 0x100000),
        (RegionKind.RAM_1M, 0x100000, 3 * GiB),
        (RegionKind.MMIO_GAP, 3 * GiB, FOUR_GIB),
        (RegionKind.RAM_4G, FOUR_GIB, FOUR_GIB + 3 * GiB),
        (RegionKind.BEYOND_RAM, FOUR_GIB + 3 * GiB, ADDRESS_SPACE_END),
    ]
    gap = SPLIT.regions()[3]
    assert [f.name for f in gap.fixtures][1:4] == ["IOAPIC", "HPET", "LAPIC"]
    # Without RAM above 4 GiB the space beyond RAM starts at 4 GiB.
    assert PC.regions()[-1].start == FOUR_GIB and PC.regions()[-2].end == FOUR_GIB


# ---- pieces: RAM only, the later blob wins ---------------------------------------

def test_pieces_drop_bytes_outside_ram_and_keep_the_rest() -> None:
    """A blob across the top of RAM below the gap keeps its part in RAM."""
    top = PC.low.end
    b = blob("initrd", top - 0x1000, bytes(range(256)) * 32)
    (piece,) = memory_pieces([b], PC)
    assert (piece.addr, piece.size, piece.offset) == (top - 0x1000, 0x1000, 0)
    (lost,) = lost_bytes([b], PC)
    assert (lost.addr, lost.end, lost.region) == (top, top + 0x1000, RegionKind.MMIO_GAP)
    assert lost.reason == "not stored: no RAM in the 32-bit MMIO gap"


def test_pieces_skip_the_legacy_area() -> None:
    b = blob("x", 0x9F000, b"\1" * 0x62000)  # [0x9f000, 0x101000): low RAM, legacy, RAM
    pieces = memory_pieces([b], PC)
    assert [(p.addr, p.size, p.offset) for p in pieces] == [
        (0x9F000, 0x1000, 0), (0x100000, 0x1000, 0x61000)]
    assert [(x.addr, x.end) for x in lost_bytes([b], PC)] == [(0xA0000, 0x100000)]


def test_pieces_later_blob_wins_and_earlier_keeps_both_sides() -> None:
    early = blob("early", 0x1000, b"A" * 0x300)
    late = blob("late", 0x1100, b"B" * 0x100)
    pieces = memory_pieces([early, late], PC)
    assert [(p.blob.name, p.addr, p.size, p.offset) for p in pieces] == [
        ("early", 0x1000, 0x100, 0), ("late", 0x1100, 0x100, 0), ("early", 0x1200, 0x100, 0x200)]
    (lost,) = lost_bytes([early, late], PC)
    assert (lost.blob.name, lost.addr, lost.end, lost.reason) == (
        "early", 0x1100, 0x1200, "overwritten by late")
    assert read_memory([early, late], PC, 0x10FF, 3) == b"ABB"
    # The other order: the early blob is now written last and wins.
    assert read_memory([late, early], PC, 0x10FF, 3) == b"AAA"


def test_read_memory_unknown_where_nothing_or_a_file_is() -> None:
    b = blob("a", 0x1000, b"xy")
    f = Blob("file", 0x2000, 4, path=Path("/nonexistent"))
    assert read_memory([b, f], PC, 0x1000, 2) == b"xy"
    assert read_memory([b, f], PC, 0x1000, 3) is None  # byte 0x1002 is not ours
    assert read_memory([b, f], PC, 0x2000, 1) is None  # a file's bytes are not read here
    assert read_memory([b], PC, 0xF0000000, 1) is None  # no RAM


# ---- what the loader refuses ----------------------------------------------------

def test_check_blobs_refuses_only_the_unrepresentable_with_overrides() -> None:
    wild = [blob("a", 0x1000, b"A" * 16), blob("b", 0x1008, b"B" * 16),
            blob("gap", 0xF0000000, b"C"), blob("legacy", 0xB8000, b"D")]
    check_blobs(wild, PC, own_layout=False)  # overlaps and no-RAM bytes: a layout that runs
    with pytest.raises(LayoutError, match=r"ends past 2\*\*64"):
        check_blobs([blob("far", ADDRESS_SPACE_END - 1, b"ab")], PC, own_layout=False)


def test_check_blobs_own_layout_conflict_is_our_bug_or_the_images() -> None:
    with pytest.raises(HarnessBug, match=r"our loader's own layout puts b \[0x1008, 0x1010\): "
                                         "overwritten by a"):
        check_blobs([blob("b", 0x1008, b"B" * 16), blob("a", 0x1000, b"A" * 16)], PC,
                    own_layout=True)
    with pytest.raises(HarnessBug, match="no RAM in the 32-bit MMIO gap"):
        check_blobs([blob("zero_page", 0xF0000000, b"Z")], PC, own_layout=True)
    with pytest.raises(ImageError, match="the image's own load address puts gdt"):
        check_blobs([blob("gdt", 0x500, b"G" * 32), blob("vmlinux0", 0x400, b"V" * 0x200)],
                    PC, own_layout=True)


def plan(overrides: Overrides, memory: int = 256 * MiB) -> BootPlan:
    case = BootCase(kernel="fake", memory=memory, overrides=overrides)
    return plan_boot(case, IMAGE, qemu_pc(memory), FakeInitrd(MiB))


def test_overrides_once_refused_now_plan() -> None:
    """An initrd where no RAM is, a kernel loaded past RAM: faulty layouts, planned."""
    gap = plan(Overrides(initrd_addr=0xF0000000))
    assert gap.blob("initrd").addr == 0xF0000000 and gap.initrd is not None
    past = plan(Overrides(kernel_load=0x20000000))  # 512 MiB in a 256 MiB guest
    assert past.kernel_load == 0x20000000
    with pytest.raises(LayoutError, match="too small"):  # without the override: user input
        plan(Overrides(), memory=32 * MiB)


# ---- the files the backends load ------------------------------------------------

def test_memory_files_cut_data_and_file_blobs(tmp_path: Path) -> None:
    source = tmp_path / "initrd.img"
    source.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    top = PC.low.end
    whole = Blob("initrd", 0x200000, 0x4000, path=source)
    cut = Blob("initrd", top - 0x1000, 0x4000, path=source)
    under = blob("cmdline", 0x4000, b"c" * 0x20)
    over = blob("zero_page", 0x4010, b"z" * 0x20)
    p = plan(Overrides())
    for blobs, want in (
        ((whole,), [("initrd", 0x200000, 0x4000, source.read_bytes())]),
        ((cut,), [("initrd", top - 0x1000, 0x1000, source.read_bytes()[:0x1000])]),
        ((under, over), [("cmdline", 0x4000, 0x10, b"c" * 0x10),
                         ("zero_page", 0x4010, 0x20, b"z" * 0x20)]),
    ):
        files = memory_files(BootPlan(**{**p.__dict__, "blobs": blobs}), tmp_path)
        assert [(f.name, f.addr, f.size, f.path.read_bytes()) for f in files] == want
    assert memory_files(BootPlan(**{**p.__dict__, "blobs": (whole,)}), tmp_path)[0].path == \
        source.resolve()  # a whole file blob is loaded from where it is


def test_qemu_loads_one_device_per_piece_and_refuses_its_handoff_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bootfuzz.guest.harness import HarnessArtifacts

    monkeypatch.setattr(QemuTcgBackend, "check_available", lambda self: None)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(b"\1" * MiB)
    case = BootCase(kernel="fake", memory=PC.memory,
                    overrides=Overrides(initrd_addr=PC.low.end - 0x1000))
    p = plan_boot(case, IMAGE, PC, FakeInitrd(MiB, initrd))
    fw = tmp_path / "fw.bin"
    harness = HarnessArtifacts(agent=fw, firmware=fw, agent_selftest=fw, directory=tmp_path)
    argv = QemuTcgBackend().prepare(p, harness, tmp_path)
    loaders = [a for a in argv if a.startswith("loader,")]
    assert f"addr={PC.low.end - 0x1000:#x}" in " ".join(loaders)
    assert len(loaders) == len(memory_pieces(p.blobs, p.platform)) + 1  # + the hand-off block
    over = plan(Overrides(cmdline_addr=HANDOFF_ADDR))
    with pytest.raises(LayoutError, match="the qemu-tcg backend's firmware reads its hand-off"):
        check_handoff_free(over)
