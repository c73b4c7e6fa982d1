"""The device-tree loader: Image headers, the DTB writer (checked by dtc), the virt plan
and the layout rules that judge it, with and without a faulty loader's overrides."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from bootfuzz.abi.fdt import FDT_HEADER, FDT_MAGIC, unpack_be
from bootfuzz.abi.fw_dynamic import FW_DYNAMIC_INFO
from bootfuzz.arch import Arch
from bootfuzz.case import DtOverrides, InitrdPlacement, harness_cmdline
from bootfuzz.errors import CmdlineError, ConfigError, ImageError, LayoutError
from bootfuzz.judge.dt_rules import check_dt_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.dt_image import parse_dt_image
from bootfuzz.loader.dt_plan import memory_ranges, plan_dt_boot
from bootfuzz.loader.virt import VirtMachine
from tests.dt_fakes import HOLES, IMAGE_SIZE, GiB, MiB, case, fake_image, plan

ARCHES = (Arch.ARM64, Arch.RISCV64)


def failing(p) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.name for r in check_dt_layout(p) if r.verdict is not Verdict.PASS]


# ----------------------------------------------------------------------------- headers


@pytest.mark.parametrize("arch", ARCHES)
def test_image_header_is_read(arch: Arch) -> None:
    img = parse_dt_image(fake_image(arch))
    assert img.arch is arch
    assert img.image_size == IMAGE_SIZE
    assert img.text_offset == (0 if arch is Arch.ARM64 else 0x200000)
    assert img.page_size == 4096 and img.anywhere


def test_image_header_refuses_foreign_and_compressed_files() -> None:
    with pytest.raises(ImageError, match="gzip"):
        parse_dt_image(b"\x1f\x8b" + bytes(100))
    with pytest.raises(ImageError, match="no header magic"):
        parse_dt_image(bytes(128))
    with pytest.raises(ImageError, match="image_size is 0"):
        parse_dt_image(fake_image(Arch.ARM64, image_size=0))


def test_arm64_kernel_that_wants_the_start_of_dram_is_refused() -> None:
    image = parse_dt_image(fake_image(Arch.ARM64, flags=0b0010))
    with pytest.raises(LayoutError, match="near the start of DRAM"):
        plan_dt_boot(case(Arch.ARM64), image)


@pytest.mark.parametrize(("arch", "size"), [(Arch.ARM64, 2048), (Arch.RISCV64, 1024)])
def test_a_command_line_the_kernel_would_cut_is_refused(arch: Arch, size: int) -> None:
    """The kernel keeps COMMAND_LINE_SIZE - 1 bytes of bootargs: the longest line it
    keeps is planned, one byte more is refused naming the limit, and so is a NUL."""
    image = parse_dt_image(fake_image(arch))
    base = harness_cmdline(arch) + " "
    longest = base + "x" * (size - 1 - len(base))
    assert plan_dt_boot(case(arch, cmdline=longest), image).cmdline == longest.encode()
    with pytest.raises(CmdlineError, match=f"COMMAND_LINE_SIZE of {size}"):
        plan_dt_boot(case(arch, cmdline=longest + "x"), image)
    with pytest.raises(CmdlineError, match="NUL"):
        plan_dt_boot(case(arch, cmdline=base + "a\0b"), image)


def test_arch_names() -> None:
    assert Arch.parse("arm64") is Arch.ARM64 and Arch.parse("aarch64") is Arch.ARM64
    assert Arch.parse("amd64") is Arch.X86_64 and not Arch.X86_64.device_tree
    with pytest.raises(ConfigError, match="unknown architecture 'sparc'"):
        Arch.parse("sparc")


# ----------------------------------------------------------------------------- plans


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("memory", [256 * MiB, 4 * GiB])
@pytest.mark.parametrize("placement", list(InitrdPlacement)[:2])
def test_our_plan_obeys_every_rule(arch: Arch, memory: int, placement: InitrdPlacement) -> None:
    holes = HOLES[arch] if memory == 4 * GiB else ()
    p = plan(arch, memory, mem_holes=holes, initrd_placement=placement)
    assert failing(p) == []
    assert len(p.memory) == (2 if holes else 1)
    # No blob of ours where QEMU keeps its own DTB (QEMU would refuse to start), and
    # only the fw_dynamic_info OpenSBI reads in the block left to OpenSBI.
    for r in p.machine.reserved():
        for b in p.blobs:
            if r.name.startswith("QEMU") or b.name != "fw_dynamic_info":
                assert b.end <= r.start or r.end <= b.addr, (b.name, r.name)


def test_memory_nodes_are_the_ram_around_the_holes() -> None:
    m = VirtMachine(Arch.ARM64, 4 * GiB)
    assert memory_ranges(m, ((0xC000_0000, 256 * MiB),)) == [
        (0x4000_0000, 2 * GiB), (0xD000_0000, 0x140000000 - 0xD000_0000)]
    with pytest.raises(LayoutError, match="not inside the machine's RAM"):
        memory_ranges(m, ((0x1000, 0x1000),))
    with pytest.raises(LayoutError, match="not a non-empty page range"):
        memory_ranges(m, ((0x5000_0000, 100),))


def test_arm64_entry_and_riscv_fw_dynamic_info() -> None:
    a = plan(Arch.ARM64)
    assert a.entry.args == (a.dtb_addr, 0, 0, 0) and a.entry.kernel_entry == a.kernel_load
    assert a.kernel_load % (2 * MiB) == 0 and a.dtb_addr % 8 == 0
    r = plan(Arch.RISCV64)
    info = FW_DYNAMIC_INFO.parse(r.blob("fw_dynamic_info").data or b"")
    assert info["next_addr"] == r.kernel_load == 0x8020_0000
    assert info["next_mode"] == 1 and r.entry.args[1] == r.dtb_addr
    assert r.entry.args[2] == r.blob("fw_dynamic_info").addr


def test_riscv_initrd_avoids_qemus_own_dtb_below_3g() -> None:
    """QEMU's DTB ROM sits at 0x8fe00000-0x8ff00000 of a 256M riscv64 virt: an initrd
    that fits above it goes there, a larger one below it."""
    small = plan(Arch.RISCV64, 256 * MiB, initrd=1 * MiB)
    assert small.initrd is not None and small.initrd.addr == 0x8FF0_0000
    large = plan(Arch.RISCV64, 256 * MiB, initrd=1 * MiB + 1)
    assert large.initrd is not None and large.initrd.end <= 0x8FE0_0000


@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc (device-tree-compiler) not installed")
@pytest.mark.parametrize("arch", ARCHES)
def test_dtc_reads_our_dtb(arch: Arch, tmp_path: Path) -> None:
    p = plan(arch, 4 * GiB, mem_holes=HOLES[arch])
    (tmp_path / "a.dtb").write_bytes(p.dtb)
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", tmp_path / "a.dtb"],
                         capture_output=True, text=True, check=True).stdout
    for a, _ in p.memory:
        assert f"memory@{a:x} {{" in dts
    assert f'bootargs = "{harness_cmdline(arch)}";' in dts
    assert "linux,initrd-start" in dts and "rng-seed" in dts
    assert ("arm,cortex-a15-gic" if arch is Arch.ARM64 else "riscv,plic0") in dts
    header = unpack_be(FDT_HEADER, p.dtb)
    assert header["magic"] == FDT_MAGIC and header["totalsize"] == len(p.dtb)


# ----------------------------------------------------------------------------- overrides


def _plan_with(arch: Arch, **dt: object):  # type: ignore[no-untyped-def]
    base = plan(arch, initrd_placement=InitrdPlacement.LOW)
    return base, plan(arch, initrd_placement=InitrdPlacement.LOW,
                      dt=DtOverrides(**dt))  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ARCHES)
def test_initrd_range_one_page_past_fails_the_range_rule(arch: Arch) -> None:
    base = plan(arch, initrd_placement=InitrdPlacement.LOW)
    assert base.initrd is not None
    bad = plan(arch, initrd_placement=InitrdPlacement.LOW,
               dt=DtOverrides(initrd_end=base.initrd.end + 4096))
    assert failing(bad) == ["dt-valid-initrd-range"]
    assert bad.initrd == base.initrd  # the bytes stay; only what /chosen says moves


@pytest.mark.parametrize("arch", ARCHES)
def test_memory_omitting_the_dtb_page_fails_the_dtb_rule(arch: Arch) -> None:
    base = plan(arch)
    page = base.dtb_addr & ~0xFFF
    (a, s), = base.memory
    bad = plan(arch, dt=DtOverrides(memory=((a, page - a), (page + 4096, a + s - page - 4096))))
    assert failing(bad) == ["dt-valid-dtb-in-memory"]


@pytest.mark.parametrize(("dt", "rule"), [
    ({"header": (("totalsize", 100),)}, "dt-valid-header"),
    ({"truncate": 64}, "dt-valid-header"),
    ({"dtb_addr": 0x4300_0004}, "dt-valid-dtb-in-memory"),
    ({"reservations": ((0x4800_0000, 0x2000), (0x4800_1000, 0x1000))}, "dt-valid-reservations"),
    ({"bootargs_raw": b"console=ttyAMA0"}, "dt-valid-bootargs"),
    ({"memory": ((0x4000_0000, 512 * MiB),)}, "dt-valid-memory-nodes"),
])
def test_each_malformed_dtb_fails_its_rule(dt: dict[str, object], rule: str) -> None:
    p = plan(Arch.ARM64, dt=DtOverrides(**dt))  # type: ignore[arg-type]
    assert rule in failing(p)


def test_inverted_initrd_range_fails_the_place_rule() -> None:
    base = plan(Arch.ARM64)
    assert base.initrd is not None
    p = plan(Arch.ARM64, dt=DtOverrides(initrd_start=base.initrd.end,
                                        initrd_end=base.initrd.addr))
    assert {"dt-valid-initrd-range", "dt-valid-initrd-place"} <= set(failing(p))


def test_one_size_cell_cannot_describe_four_gib() -> None:
    with pytest.raises(LayoutError, match="#size-cells 1"):
        plan(Arch.ARM64, 4 * GiB, dt=DtOverrides(size_cells=1))
    p = plan(Arch.ARM64, 4 * GiB, mem_holes=HOLES[Arch.ARM64],
             dt=DtOverrides(size_cells=1))
    assert failing(p) == []
    assert dataclasses.replace(p.case.dt, size_cells=None).empty
