"""Real kernels booted through our loader on QEMU-TCG, judged by every oracle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.case import (
    HARNESS_CMDLINE,
    BootCase,
    EntryProtocol,
    InitrdPlacement,
    InitrdSpec,
    Overrides,
)
from bootfuzz.compression import SUPPORTED, Compression
from bootfuzz.judge.observation import MapKind
from bootfuzz.judge.oracles import ExactEvidence, StopPoint, judge
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.layout import FOUR_GIB, GiB, MiB
from bootfuzz.loader.plan import PlacedInitrd
from bootfuzz.run.boot import BootResult, run_case
from bootfuzz.transcript import GuestExit
from tests.integration.conftest import PINNED

pytestmark = pytest.mark.qemu


def boot(tmp_path: Path, kernel: str, memory: int = 256 * MiB, size: int = 1 * MiB,
         compression: Compression = Compression.GZIP, cmdline: str = HARNESS_CMDLINE,
         backend: str = "qemu-tcg") -> BootResult:
    case = BootCase(kernel=kernel, memory=memory, cmdline=cmdline,
                    initrd=InitrdSpec(size, compression, seed=7), backend=backend)
    return run_case(case, run_dir=tmp_path)


def assert_all_pass(result: BootResult) -> None:
    failed = [f"{r.name}: {r.verdict.value}: expected {r.expected!r}, observed {r.observed!r} "
              f"{r.detail}" for r in result.oracles if r.verdict is not Verdict.PASS]
    assert not failed, "\n".join(failed) + f"\nlog: {result.run_dir / 'console.log'}"
    assert result.verdict is Verdict.PASS


@pytest.fixture(scope="module")
def cloud_boot(tmp_path_factory: pytest.TempPathFactory) -> BootResult:
    return boot(tmp_path_factory.mktemp("cloud"), "debian-6.1-cloud",
                cmdline=HARNESS_CMDLINE + ' bootfuzz.token="a b" -- x')


@pytest.mark.parametrize("kernel", PINNED)
def test_boot_pinned_kernel_256m_all_oracles_pass(
    tmp_path: Path, kernel: str, full_boot_backend: str
) -> None:
    """Each pinned kernel reaches our /init agent with every oracle passing."""
    result = boot(tmp_path, kernel, backend=full_boot_backend)
    assert_all_pass(result)
    assert result.observation.linux_version_count == 1
    assert (tmp_path / "console.log").read_text().count("BOOTFUZZ-AGENT ") == 1


def test_boot_cloud_quoted_cmdline_passes(cloud_boot: BootResult) -> None:
    """Quotes and `--` reach the kernel and /proc/cmdline unchanged."""
    assert_all_pass(cloud_boot)
    assert cloud_boot.observation.command_line == cloud_boot.case.cmdline


def test_boot_612_cloud_5g_shows_ram_above_4g_as_planned(
    tmp_path: Path, full_boot_backend: str
) -> None:
    """At 5 GiB the kernel prints RAM below the gap and from 4 GiB up, as planned."""
    result = boot(tmp_path, "debian-6.12-cloud", memory=5 * GiB, backend=full_boot_backend)
    assert_all_pass(result)
    printed = [(ln.start, ln.end, ln.type_text) for ln in result.observation.bios_e820]
    assert (0x100000, 3 * GiB - 1, "usable") in printed
    assert (FOUR_GIB, FOUR_GIB + 2 * GiB - 1, "usable") in printed
    assert not any(s < FOUR_GIB <= e or (3 * GiB <= s < FOUR_GIB and t == "usable")
                   for s, e, t in printed)


def test_boot_64mib_xz_initrd_unpacks(tmp_path: Path) -> None:
    """A 64 MiB xz initrd is placed, unpacked and read back with the right digest."""
    result = boot(tmp_path, "debian-6.1-cloud", size=64 * MiB, compression=Compression.XZ)
    assert_all_pass(result)
    assert result.plan.initrd is not None and result.plan.initrd.size > 64 * MiB


# The oracles must be able to fail on a real observation: judge the real boot
# against plans that differ from what was written.

def rejudge(result: BootResult, **changes: object) -> dict[str, Verdict]:
    plan = dataclasses.replace(result.plan, **changes)  # type: ignore[arg-type]
    ev = ExactEvidence(plan, result.observation, result.guest_exit, result.transcript.end_detail)
    return {r.name: r.verdict for r in judge(ev)}


def test_oracles_fail_when_the_initrd_was_meant_elsewhere(cloud_boot: BootResult) -> None:
    assert cloud_boot.plan.initrd is not None
    moved = dataclasses.replace(cloud_boot.plan.initrd, addr=cloud_boot.plan.initrd.addr - 0x1000)
    verdicts = rejudge(cloud_boot, initrd=moved)
    assert verdicts["initrd-placement"] is Verdict.FAIL
    assert verdicts["e820"] is Verdict.PASS


def test_oracles_fail_when_the_e820_was_meant_otherwise(cloud_boot: BootResult) -> None:
    # A reserved hole in the middle of RAM that the kernel never saw.
    e820 = (*cloud_boot.plan.e820, E820Entry(0x8000000, 0x100000, 2))
    verdicts = rejudge(cloud_boot, e820=e820, kernel_e820=e820)
    assert verdicts["e820"] is Verdict.FAIL
    assert verdicts["firmware-memmap"] is Verdict.FAIL


def test_oracles_fail_on_another_cmdline_and_payload(cloud_boot: BootResult) -> None:
    assert cloud_boot.plan.initrd is not None
    other = PlacedInitrd(cloud_boot.plan.initrd.addr, cloud_boot.plan.initrd.size, "0" * 64)
    verdicts = rejudge(cloud_boot, cmdline=b"console=ttyS0", initrd=other)
    assert verdicts["cmdline"] is Verdict.FAIL
    assert verdicts["agent-cmdline"] is Verdict.FAIL
    assert verdicts["payload-digest"] is Verdict.FAIL


def test_oracle_boot_params_fails_on_a_different_zero_page(cloud_boot: BootResult) -> None:
    zp = bytearray(cloud_boot.plan.zero_page)
    zp[0x210] ^= 0x01  # type_of_loader
    assert rejudge(cloud_boot, zero_page=bytes(zp))["boot-params"] is Verdict.FAIL


@pytest.mark.parametrize("kernel", PINNED)
def test_boot_pvh_entry_all_oracles_pass(tmp_path: Path, kernel: str) -> None:
    """The PVH entry (hvm_start_info, module 0 = initrd) reaches the agent, every oracle passing."""
    case = BootCase(kernel=kernel, memory=5 * GiB, initrd=InitrdSpec(1 * MiB),
                    entry=EntryProtocol.PVH)
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    printed = [(ln.start, ln.end, ln.type_text) for ln in result.observation.bios_e820]
    assert (0xA0000, 0xFFFFF, "reserved") in printed  # the hole Linux's PVH code adds


def test_boot_until_ramdisk_stops_early_and_answers_only_early_oracles(tmp_path: Path) -> None:
    """--until ramdisk: e820, cmdline, initrd placement answer; the rest stay unknown."""
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB, initrd=InitrdSpec(1 * MiB),
                    entry=EntryProtocol.PVH)
    result = run_case(case, run_dir=tmp_path, until=StopPoint.RAMDISK)
    # The validity rules judge the plan alone: they answer whatever the guest did.
    verdicts = {r.name: r.verdict for r in result.oracles if not r.name.startswith("valid-")}
    assert all(r.verdict is Verdict.PASS for r in result.oracles if r.name.startswith("valid-"))
    assert {n for n, v in verdicts.items() if v is Verdict.PASS} == {
        "e820", "cmdline", "initrd-placement"}
    assert all(v is Verdict.UNKNOWN for n, v in verdicts.items()
               if n not in {"e820", "cmdline", "initrd-placement"})
    assert result.verdict is Verdict.PASS
    assert result.observation.agent is None and result.guest_exit is GuestExit.KILLED


def _many_entries(memory: int, holes: int) -> tuple[E820Entry, ...]:
    """Our table with RAM above 128 MiB (clear of the decompressor's window) cut by *holes*
    reserved pages: 3 + 2 * holes entries."""
    from bootfuzz.loader.placement import plan_e820
    from bootfuzz.loader.platform import qemu_pc

    base = [e for e in plan_e820(qemu_pc(memory)) if e.addr != 0x100000]
    ram: list[E820Entry] = [E820Entry(0x100000, 0x8000000 - 0x100000, 1)]
    cursor = 0x8000000
    for _ in range(holes):
        ram += [E820Entry(cursor, 0x10000, 1), E820Entry(cursor + 0x10000, 0x1000, 2)]
        cursor += 0x11000
    ram.append(E820Entry(cursor, memory - cursor, 1))
    return (*base[:1], *ram, *base[1:])


def test_boot_e820_of_200_entries_through_setup_e820_ext(tmp_path: Path) -> None:
    """200+ entries: 128 in the zero page, the rest in SETUP_E820_EXT; both maps as modelled."""
    table = _many_entries(256 * MiB, 100)
    assert len(table) > 200
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB, initrd=InitrdSpec(1 * MiB),
                    overrides=Overrides(e820=table))
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    verdicts = {r.name: r.verdict for r in result.oracles}
    assert verdicts["e820-extended"] is Verdict.PASS and verdicts["firmware-memmap"] is Verdict.PASS
    assert len(result.observation.e820_tables[MapKind.EXTENDED]) > 200


def test_boot_e820_unsorted_overlapping_printed_as_the_sanitizer_model(tmp_path: Path) -> None:
    """An unsorted table with overlaps: the kernel prints exactly our model's output."""
    table = (
        E820Entry(0x100000, 256 * MiB - 0x100000, 1),
        E820Entry(0xF0000, 0x10000, 2),
        E820Entry(0x8000000, 0x200000, 2),  # reserved inside RAM: the higher type wins
        E820Entry(0, 0xA0000, 1),
        E820Entry(0x8100000, 0x400000, 1),  # RAM overlapping the reserved range
        E820Entry(0xFFFF0000, 0x10000, 2),
        E820Entry(0x9000000, 0, 3),  # zero size: vanishes
    )
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB, initrd=InitrdSpec(1 * MiB),
                    overrides=Overrides(e820=table))
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    printed = [(ln.start, ln.end, ln.type_text) for ln in result.observation.bios_e820]
    assert (0x8000000, 0x81FFFFF, "reserved") in printed


@pytest.mark.parametrize(
    ("compression", "split"),
    [(c, False) for c in sorted(SUPPORTED)] + [(Compression.ZSTD, True), (Compression.NONE, True)],
    ids=lambda v: v.value if isinstance(v, Compression) else ("split" if v else "single"),
)
def test_boot_every_initrd_format_unpacks(tmp_path: Path, compression: Compression,
                                          split: bool) -> None:
    """Every compression the kernel decodes, whole or as two concatenated archives."""
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB,
                    initrd=InitrdSpec(2 * MiB, compression, seed=11, split=split))
    assert_all_pass(run_case(case, run_dir=tmp_path))


def test_boot_mem_and_memmap_user_map_as_modelled(tmp_path: Path) -> None:
    """mem= and memmap= on the command line: the kernel's "user:" map is our model's."""
    case = BootCase(kernel="debian-6.12-cloud", memory=256 * MiB, initrd=InitrdSpec(1 * MiB),
                    cmdline=HARNESS_CMDLINE + " mem=200M memmap=1M$0x8000000,2M#0x9000000",
                    initrd_placement=InitrdPlacement.LOW)
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    assert {r.name: r.verdict for r in result.oracles}["e820-user"] is Verdict.PASS
    assert result.observation.e820_tables[MapKind.USER]


def test_boot_cmdline_and_initrd_above_4g(tmp_path: Path) -> None:
    """ext_cmd_line_ptr and ext_ramdisk_image: both above 4 GiB, read where planned."""
    case = BootCase(kernel="debian-6.12-cloud", memory=6 * GiB, initrd=InitrdSpec(1 * MiB),
                    overrides=Overrides(cmdline_addr=0x180000000),
                    initrd_placement=InitrdPlacement.HIGH)
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    assert result.plan.initrd is not None and result.plan.initrd.addr >= FOUR_GIB
    assert result.observation.ramdisk is not None
    assert result.observation.ramdisk.start == result.plan.initrd.addr


@pytest.mark.parametrize(
    ("kernel", "entry", "load"),
    [("debian-6.1-cloud", EntryProtocol.BOOT64, 0x200000),  # Xen HVM direct-boot style
     ("debian-6.1-cloud", EntryProtocol.BOOT32, 0x400000),
     ("debian-6.12-cloud", EntryProtocol.PVH, 0x3000000)],  # PHYS32_RELOC: 6.12 only
    ids=["64-at-2M", "32-at-4M", "pvh-612-at-48M"],
)
def test_boot_relocated_kernel(tmp_path: Path, kernel: str, entry: EntryProtocol,
                               load: int) -> None:
    """Load addresses other than the default, by the kernel's own relocation rules."""
    case = BootCase(kernel=kernel, memory=256 * MiB, initrd=InitrdSpec(1 * MiB), entry=entry,
                    overrides=Overrides(kernel_load=load))
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    assert result.plan.kernel_load == load


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP],
                         ids=lambda c: c.value)
def test_boot_non_cpio_initrd_is_rejected_then_no_root_panic(
    tmp_path: Path, compression: Compression
) -> None:
    """An initrd that is no cpio archive: the kernel says why it rejects it, frees it,
    finds no /init and ends in the no-root panic; placement is still judged."""
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB,
                    initrd=InitrdSpec(1 * MiB, compression, raw=True))
    result = run_case(case, run_dir=tmp_path)
    assert_all_pass(result)
    names = {r.name for r in result.oracles}
    assert "payload-digest" not in names and "agent-cmdline" not in names
    obs = result.observation
    assert obs.unpack_failure or obs.not_initramfs
    assert any("VFS: Unable to mount root fs" in p for p in obs.panics)
