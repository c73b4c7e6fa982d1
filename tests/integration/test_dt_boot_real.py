"""Real device-tree boots: the pinned arm64 and riscv64 kernels through our loader on
QEMU-TCG virt (riscv64 through Debian's OpenSBI), judged by every oracle; and the same
case through QEMU's own -kernel, and on arm64 through edk2 and the kernel's EFI stub, as
differential peers.

Two boots run in the default suite (arm64 at 256M, riscv64 at 4G as two memory nodes
around a hole) and the EFI-stub diff; the other two must-show combinations and the
diffs against QEMU's -kernel are opted into with BOOTFUZZ_DT_FULL=1 (the nox session
that runs them sets it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, InitrdSpec, harness_cmdline
from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers.dt_diff import PeerFirmware
from bootfuzz.run.backends.qemu_virt import QEMU_BINARIES, QEMU_PACKAGES, opensbi_firmware

pytestmark = pytest.mark.qemu
KERNELS = {Arch.ARM64: "debian-6.12-cloud-arm64", Arch.RISCV64: "debian-6.12-riscv64"}
HOLES = {Arch.ARM64: ((0xC000_0000, 256 << 20),), Arch.RISCV64: ((0x1_0000_0000, 256 << 20),)}
FULL = os.environ.get("BOOTFUZZ_DT_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="BOOTFUZZ_DT_FULL=1 not set: the default "
                               "suite boots arm64 at 256M and riscv64 at 4G only")


def _need(arch: Arch) -> None:
    if shutil.which(QEMU_BINARIES[arch]) is None:
        pytest.skip(f"{QEMU_BINARIES[arch]} not installed (Debian package "
                    f"{QEMU_PACKAGES[arch]})")
    if arch is Arch.RISCV64 and not opensbi_firmware().is_file():
        pytest.skip(f"riscv64 needs OpenSBI: {opensbi_firmware()} is not installed "
                    "(Debian package opensbi)")


def _need_firmware(firmware: PeerFirmware) -> None:
    if not firmware.path.is_file():
        pytest.skip(f"{firmware.path} is not installed (Debian package {firmware.package})")


def _case(arch: Arch, memory: int) -> BootCase:
    return BootCase(kernel=KERNELS[arch], memory=memory, cmdline=harness_cmdline(arch),
                    initrd=InitrdSpec(1 << 20, seed=12), arch=arch, backend="qemu-virt",
                    mem_holes=HOLES[arch] if memory > 1 << 30 else ())


@pytest.mark.parametrize(("arch", "memory"), [
    (Arch.ARM64, 256 << 20),
    (Arch.RISCV64, 4 << 30),
    pytest.param(Arch.ARM64, 4 << 30, marks=full_only),
    pytest.param(Arch.RISCV64, 256 << 20, marks=full_only),
], ids=["arm64-256M", "riscv64-4G-hole", "arm64-4G-hole", "riscv64-256M"])
def test_dt_boot_passes_every_oracle(arch: Arch, memory: int, tmp_path: Path) -> None:
    from bootfuzz.run.dt_boot import run_dt_case

    _need(arch)
    result = run_dt_case(_case(arch, memory), tmp_path, timeout=240, silence_timeout=60)
    bad = {r.name: r.observed for r in result.oracles if r.verdict is not Verdict.PASS}
    assert result.verdict is Verdict.PASS, (bad, tmp_path / "console.log")
    names = {r.name for r in result.oracles}
    assert {"dt-memory", "iomem-ram", "initrd-unpacked", "payload-digest", "cmdline",
            "dt-memory-kept", "dt-chosen-kept", "dt-rng-seed"} <= names
    ranges = result.observation.memory_node_ranges
    assert len(ranges) == (2 if memory > 1 << 30 else 1)


@pytest.mark.parametrize("arch", [Arch.ARM64, Arch.RISCV64], ids=["arm64", "riscv64"])
def test_the_longest_command_line_the_kernel_keeps_passes(arch: Arch, tmp_path: Path) -> None:
    """COMMAND_LINE_SIZE - 1 bytes of bootargs (2047 on arm64, 1023 on riscv64): the
    kernel keeps all of them (agent-cmdline), and its "Kernel command line:" message,
    longer than one printk record, is judged as printk cuts it, not as a mismatch."""
    from bootfuzz.run.dt_boot import run_dt_case

    _need(arch)
    size = arch.command_line_size
    assert size is not None
    base = harness_cmdline(arch) + " bootfuzz.long="
    case = _case(arch, 256 << 20)
    case = BootCase(kernel=case.kernel, memory=case.memory, arch=arch, backend=case.backend,
                    initrd=case.initrd, cmdline=base + "y" * (size - 1 - len(base)))
    result = run_dt_case(case, tmp_path, timeout=240, silence_timeout=60)
    verdicts = {r.name: r.verdict for r in result.oracles}
    assert result.verdict is Verdict.PASS, (verdicts, tmp_path / "console.log")
    assert verdicts["agent-cmdline"] is Verdict.PASS and verdicts["cmdline"] is Verdict.PASS


@full_only
@pytest.mark.parametrize("arch", [Arch.ARM64, Arch.RISCV64], ids=["arm64", "riscv64"])
def test_diff_against_qemus_own_kernel_loader(arch: Arch, tmp_path: Path) -> None:
    from bootfuzz.peers.dt_diff import run_dt_diff

    _need(arch)
    report = run_dt_diff(_case(arch, 256 << 20), tmp_path, timeout=240, silence_timeout=60,
                         parallel=False)
    assert report.left.verdict is Verdict.PASS and report.right.verdict is Verdict.PASS
    differing = {r.field for r in report.differences}
    # Both loaders put the initrd somewhere else and QEMU writes its range in one cell:
    # permitted choices, found every time; the kernels' memory and command line agree.
    assert "chosen initrd range" in differing
    assert not differing & {"early memory node ranges", "kernel command line", "payload"}


def test_diff_against_the_kernels_efi_stub_under_edk2(tmp_path: Path) -> None:
    """arm64 through edk2 and the EFI stub (efi-stub:virt) beside our loader, with a hole
    in our layout's memory: both pass every oracle they are judged by (the peer's memory
    against the UEFI map it printed), and the kernels' views differ where UEFI decides
    otherwise: memory from the map (no-map runtime ranges, the flash window), edk2's
    initrd= option, no memory nodes kept; the payload read back is the same."""
    from bootfuzz.peers.dt_diff import FIRMWARE_PEERS, PEER_EFI_NAME, run_dt_diff

    _need(Arch.ARM64)
    _need_firmware(FIRMWARE_PEERS[PEER_EFI_NAME, Arch.ARM64])
    report = run_dt_diff(_case(Arch.ARM64, 4 << 30), tmp_path, timeout=240,
                         silence_timeout=60, parallel=False, peer=PEER_EFI_NAME)
    assert report.left.verdict is Verdict.PASS, report.left.run_dir
    peer = {r.name: r.verdict for r in report.right.oracles}
    assert report.right.verdict is Verdict.PASS, (peer, report.right.run_dir)
    assert {"efi-ram", "efi-memblock", "iomem-ram", "initrd-unpacked"} <= set(peer)
    differing = {r.field for r in report.differences}
    assert {"early memory node ranges", "kernel command line", "memory nodes kept"} <= differing
    assert "payload" not in differing


@pytest.mark.parametrize("arch", [Arch.ARM64, Arch.RISCV64], ids=["arm64", "riscv64"])
def test_diff_against_u_boots_booti(arch: Arch, tmp_path: Path) -> None:
    """Through U-Boot (u-boot:virt; arm64: autoboot loads the kernel and initrd from
    QEMU's fw_cfg; riscv64: behind OpenSBI, booti typed at its prompt), booti with QEMU's
    DT: both pass; the initrd is elsewhere (U-Boot's or QEMU's place, said in /chosen),
    the kernels' memory, command line and payload agree."""
    from bootfuzz.peers.dt_diff import FIRMWARE_PEERS, PEER_UBOOT_NAME, run_dt_diff

    _need(arch)
    _need_firmware(FIRMWARE_PEERS[PEER_UBOOT_NAME, arch])
    report = run_dt_diff(_case(arch, 256 << 20), tmp_path, timeout=240,
                         silence_timeout=60, parallel=False, peer=PEER_UBOOT_NAME)
    assert report.left.verdict is Verdict.PASS, report.left.run_dir
    assert report.right.verdict is Verdict.PASS, (
        {r.name: r.verdict for r in report.right.oracles}, report.right.run_dir)
    differing = {r.field for r in report.differences}
    assert "chosen initrd range" in differing
    assert not differing & {"early memory node ranges", "kernel command line", "payload",
                            "iomem System RAM"}


@pytest.mark.parametrize(("arch", "image_start"), [(Arch.ARM64, 0x4020_0000),
                                                   (Arch.RISCV64, 0x8020_0000)],
                         ids=["arm64", "riscv64"])
def test_coverage_names_the_device_tree_boot_path(arch: Arch, image_start: int,
                                                  tmp_path: Path) -> None:
    """The kernel's symbols from its own boot in the agent's kallsyms mode (an empty
    cache: the dump boot runs), then a boot with the plugin: its blocks land on the
    kernel's functions at the address it was linked at (no KASLR seed is given) and at
    the physical address our loader put the image (riscv64's _text past its head,
    OpenSBI's blocks below it not taken for the kernel's)."""
    from bootfuzz.kernel.pinned import resolve_kernel
    from bootfuzz.run.dt_boot import dump_dt_kallsyms, run_dt_case
    from bootfuzz.run.kallsyms import kernel_symbols

    _need(arch)
    table = kernel_symbols(resolve_kernel(KERNELS[arch]), cache_dir=tmp_path / "cache",
                           dump=lambda p: dump_dt_kallsyms(p, arch))
    assert {"start_kernel", "setup_arch", "unflatten_device_tree"} <= set(table.names)
    result = run_dt_case(_case(arch, 256 << 20), tmp_path / "run", timeout=240,
                         silence_timeout=60, coverage=True)
    assert result.verdict is Verdict.PASS and result.coverage is not None
    cov = result.coverage
    assert cov.text_base is not None and cov.text_base % (2 << 20) == table.text_residue
    assert cov.physical_base == image_start + table.text_residue
    reached = cov.functions()
    assert {"start_kernel", "setup_arch", "unflatten_device_tree", "populate_rootfs"} <= reached
    assert len(cov.init_functions()) > 500 and cov.other < len(cov.blocks) // 10
    assert (tmp_path / "run" / "coverage.map").is_file()


def test_minimize_shrinks_a_real_device_tree_finding_that_replays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A faulty loader's arm64 DTB (linux,initrd-end a page past the initrd) with a hole,
    two extra bootargs and a 64 KiB initrd low in RAM: ``bootfuzz minimize`` keeps the
    fault, drops what the failure does not need, and the result replays as it expects."""
    import dataclasses

    from bootfuzz.case import DtOverrides, InitrdPlacement
    from bootfuzz.cli.main import main
    from bootfuzz.fuzz.reproducer import Reproducer, load_reproducer, write_reproducer
    from bootfuzz.run.dt_boot import prepare_dt

    _need(Arch.ARM64)
    monkeypatch.setenv("BOOTFUZZ_RUNS", str(tmp_path / "runs"))
    case = BootCase(kernel=KERNELS[Arch.ARM64], memory=512 << 20,
                    cmdline=f"{harness_cmdline(Arch.ARM64)} loglevel=8 x=1",
                    initrd=InitrdSpec(64 << 10, seed=5), arch=Arch.ARM64, backend="qemu-virt",
                    mem_holes=((0x5000_0000, 16 << 20),), initrd_placement=InitrdPlacement.LOW)
    initrd = prepare_dt(case).plan.initrd
    assert initrd is not None
    case = dataclasses.replace(case, dt=DtOverrides(initrd_end=initrd.end + 4096))
    found = tmp_path / "found.json"
    write_reproducer(Reproducer(case, None), found)
    assert main(["minimize", str(found), "--max-boots", "6", "--timeout", "120"]) == 0
    small = load_reproducer(tmp_path / "found.min.json")
    assert small.case.dt == case.dt  # the fault is the failure: it stays
    assert small.case.mem_holes == () and small.case.cmdline == harness_cmdline(Arch.ARM64)
    assert small.expect is not None and "dt-valid-initrd-range" in small.expect.failing
    assert main(["replay", str(tmp_path / "found.min.json")]) == 0  # expectation met


def test_dt_campaign_sigkilled_leaves_no_qemu_and_resumes(tmp_path: Path) -> None:
    """A real arm64 campaign (two jobs, two QEMUs running) killed with SIGKILL: no process
    of it stays (its QEMUs lose their console's pty and end); --resume then finishes its
    cases, each on record once."""
    import subprocess
    import sys

    from bootfuzz.fuzz.caselog import read_cases
    from tests.processes import marked, new_mark, poll, reaped, sigkill_leaves_nothing

    _need(Arch.ARM64)
    env = new_mark()
    argv = [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "fuzz",
            "--kernel", KERNELS[Arch.ARM64], "--jobs", "2", "--max-cases", "3",
            "--time", "20m", "--seed", "9", "--mem-max", "1G", "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    with reaped(env):
        assert poll(lambda: proc.poll() is None and len(
            [c for _, c in marked(env) if "qemu-system-aarch64" in c]) == 2, 300, step=0.2)
        assert sigkill_leaves_nothing(proc, env), marked(env)
    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    records = read_cases(tmp_path / "dt-campaign" / "cases.jsonl")
    assert sorted(r.index for r in records) == [0, 1, 2]
