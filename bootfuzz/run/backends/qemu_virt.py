"""QEMU-TCG ``virt`` (aarch64, riscv64) as a plain executor of our device-tree plans.

QEMU's own -kernel/-dtb/-initrd are not used (that is the peer target in
bootfuzz.peers.dt_targets): every blob of the plan is put at its address with
``-device loader``, and QEMU's generic loader sets the CPU's PC to our entry stub
(``-device loader,addr=...,cpu-num=0``).  arm64: the stub sets x0..x3 and jumps to
the Image (booting.rst); there is no firmware, QEMU answers PSCI calls itself (HVC,
as virt does when it boots at EL1 without firmware).  riscv64: ``-bios none``, OpenSBI's
fw_dynamic (Debian package opensbi) is loaded at the start of RAM like any blob, and
the stub enters it with our DTB and our fw_dynamic_info (the kernel is its next stage).

How the guest ends: QEMU exits 0 both when the guest powers off (PSCI SYSTEM_OFF, SBI
shutdown) and, under -no-reboot, when it resets (panic=-1).  The kernel prints
"reboot: Power down" before it powers off (kernel/reboot.c, kernel_power_off), and
only our agent asks for that; so status 0 with that line is a power-off, without it
a reset (classify_virt_exit).
"""

from __future__ import annotations

import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bootfuzz.arch import Arch
from bootfuzz.errors import BackendError, LayoutError
from bootfuzz.guest.harness import DtHarness
from bootfuzz.loader.dt_plan import DtBootPlan
from bootfuzz.loader.virt import ARM64_CPU
from bootfuzz.run.coverage import plugin_argv
from bootfuzz.run.exits import ExitStatuses, classify_exit
from bootfuzz.transcript import GuestExit, Transcript

QEMU_BINARIES = {Arch.ARM64: "qemu-system-aarch64", Arch.RISCV64: "qemu-system-riscv64"}
QEMU_PACKAGES = {Arch.ARM64: "qemu-system-arm", Arch.RISCV64: "qemu-system-misc"}
#: OpenSBI's generic-platform fw_dynamic as the Debian package opensbi installs it;
#: $BOOTFUZZ_OPENSBI picks another build.
OPENSBI_FW_DYNAMIC = Path("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin")
OPENSBI_ENV = "BOOTFUZZ_OPENSBI"
#: QEMU exits 0 on a guest power-off and on a reset under -no-reboot.
VIRT_EXIT_STATUSES: ExitStatuses = {0: GuestExit.RESET}
#: The kernel's last words before it powers off (kernel/reboot.c; pr_fmt "reboot: ").
POWER_DOWN_LINE = "reboot: Power down"


def opensbi_firmware() -> Path:
    env = os.environ.get(OPENSBI_ENV)
    return Path(env) if env else OPENSBI_FW_DYNAMIC


def classify_virt_exit(transcript: Transcript) -> GuestExit:
    """How a virt guest ended: status 0 is a power-off when the kernel said so, else a reset."""
    how = classify_exit(transcript, VIRT_EXIT_STATUSES)
    if how is GuestExit.RESET and POWER_DOWN_LINE in transcript.text:
        return GuestExit.POWER_OFF
    return how


@dataclass(frozen=True)
class LoadedFile:
    """One ``-device loader`` file: bytes at a guest address."""

    name: str
    addr: int
    path: Path


def loader_path(path: Path) -> str:
    """*path* as a -device loader option value (commas doubled)."""
    return str(path).replace(",", ",,")


def machine_args(arch: Arch, memory: int) -> list[str]:
    """The machine both our backend and the -kernel peer start."""
    args = ["-machine", "virt,accel=tcg" + (",gic-version=2" if arch is Arch.ARM64 else ""),
            "-m", f"{memory // 1024}K", "-smp", "1"]
    if arch is Arch.ARM64:
        args += ["-cpu", ARM64_CPU]
    return [*args, "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot"]


class QemuVirtBackend:
    """Runs a DtBootPlan on ``qemu-system-{aarch64,riscv64} -machine virt``."""

    name: ClassVar[str] = "qemu-virt"

    def __init__(self, arch: Arch) -> None:
        self.arch = arch
        self.binary = QEMU_BINARIES[arch]

    def check_available(self) -> None:
        if shutil.which(self.binary) is None:
            raise BackendError(f"{self.binary} not found: install the Debian package "
                               f"{QEMU_PACKAGES[self.arch]}")
        if self.arch is Arch.RISCV64 and not opensbi_firmware().is_file():
            raise BackendError(f"{opensbi_firmware()} not found: install the Debian package "
                               f"opensbi (or set {OPENSBI_ENV})")

    def files(self, plan: DtBootPlan, harness: DtHarness, run_dir: Path) -> list[LoadedFile]:
        """Write the plan's blobs and the stub into *run_dir*: what QEMU loads, in order."""
        out: list[LoadedFile] = []
        if self.arch is Arch.RISCV64:
            out.append(LoadedFile("opensbi", plan.machine.ram_start, opensbi_firmware()))
        stub = harness.entry_stub.read_bytes()
        params = b"".join(v.to_bytes(8, "little") for v in self._stub_params(plan))
        stub_path = run_dir / "entry.bin"
        stub_path.write_bytes(stub + params)
        out.append(LoadedFile("entry", plan.entry.pc, stub_path))
        for blob in plan.blobs:
            if not plan.machine.in_ram(blob.addr, blob.end):
                continue  # bytes where the machine has no RAM are not stored
            if blob.path is not None:
                path = blob.path
            else:
                path = run_dir / f"{blob.name}.bin"
                path.write_bytes(blob.data or b"")
            if blob.size:
                out.append(LoadedFile(blob.name, blob.addr, path))
        return out

    def _stub_params(self, plan: DtBootPlan) -> tuple[int, ...]:
        if self.arch is Arch.ARM64:
            return (plan.entry.args[0], plan.entry.kernel_entry)
        return (plan.entry.args[1], plan.entry.args[2], plan.machine.ram_start)

    def check_files(self, plan: DtBootPlan, files: list[LoadedFile]) -> None:
        """QEMU refuses overlapping loader images and ROMs: say which, in one line."""
        spans = [(f.addr, f.addr + f.path.stat().st_size, f.name) for f in files]
        spans += [(r.start, r.end, r.name) for r in plan.machine.reserved()
                  if r.name != "OpenSBI"]
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in itertools.pairwise(spans):
            if b0 < a1:
                raise LayoutError(
                    f"{an} [{a0:#x}, {a1:#x}) and {bn} [{b0:#x}, {b1:#x}) overlap; QEMU's "
                    "loader cannot place both: run this layout on another backend"
                )

    def coverage_argv(self, plugin: Path, map_path: Path) -> list[str]:
        """Arguments that load the block-coverage plugin (bootfuzz.run.coverage): TCG
        runs it on the arm64 and riscv64 emulators as on x86."""
        return plugin_argv(plugin, map_path)

    def prepare(self, plan: DtBootPlan, harness: DtHarness, run_dir: Path) -> list[str]:
        self.check_available()
        run_dir.mkdir(parents=True, exist_ok=True)
        files = self.files(plan, harness, run_dir)
        self.check_files(plan, files)
        argv = [self.binary, *machine_args(self.arch, plan.machine.memory)]
        if self.arch is Arch.RISCV64:
            argv += ["-bios", "none"]
        for f in files:
            argv += ["-device", f"loader,file={loader_path(f.path)},addr={f.addr:#x},force-raw=on"]
        argv += ["-device", f"loader,addr={plan.entry.pc:#x},cpu-num=0"]
        return argv
