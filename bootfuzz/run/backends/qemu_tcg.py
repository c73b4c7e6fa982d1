"""QEMU with TCG as a plain executor of our BootPlans.

QEMU's own -kernel loader is not used: our firmware stub (harness/firmware) is the
BIOS, every piece of memory the plan fills (bootfuzz.run.memory_files: the parts
of its blobs in RAM, a later blob over an earlier one) is put at its address with
``-device loader``, and the stub reads the hand-off block to enter the kernel in the
plan's CPU state.  So every byte the kernel finds was decided by our loader.  Facts
this relies on are in shared/reference/qemu-tcg-backend.md.

QEMU listens for QMP on a unix socket in the run directory, so the console session
can ask, while the guest is quiet, whether its CPU halted with interrupts off
(bootfuzz.run.qmp): such a guest is judged hung at once instead of after the
silence timeout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from bootfuzz.abi.handoff import HANDOFF, HANDOFF_MAGIC
from bootfuzz.errors import BackendError, LayoutError
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, QEMU_AGENT_EXIT_STATUS
from bootfuzz.loader.layout import FIRMWARE_CODE32_SELECTOR, HANDOFF_ADDR
from bootfuzz.loader.memory import memory_pieces
from bootfuzz.loader.plan import BootPlan, CpuState
from bootfuzz.loader.platform import Platform, qemu_pc
from bootfuzz.loader.x86 import Efer
from bootfuzz.run.coverage import plugin_argv
from bootfuzz.run.exits import ExitStatuses
from bootfuzz.run.memory_files import SUFFIX, MemoryFile, memory_files
from bootfuzz.run.qmp import QmpHaltProbe
from bootfuzz.transcript import GuestExit

QEMU_BINARY = "qemu-system-x86_64"
#: A unix socket's path must fit sun_path (108 bytes with its NUL, unix(7)).
_SUN_PATH_MAX = 107
#: QEMU exits 0 when the guest resets under -no-reboot (triple fault, panic=-1).
QEMU_RESET_STATUS = 0
#: What QEMU's exit status says about the guest, for any QEMU started with our
#: isa-debug-exit device and -no-reboot (this backend and the qemu-direct peer).
QEMU_EXIT_STATUSES: ExitStatuses = {
    QEMU_AGENT_EXIT_STATUS: GuestExit.POWER_OFF,
    QEMU_RESET_STATUS: GuestExit.RESET,
}


def handoff_block(cpu: CpuState) -> bytes:
    """The block the firmware stub reads; LMA is left to the CPU (set when paging turns on)."""
    return HANDOFF.build(
        {
            "magic": HANDOFF_MAGIC,
            "mode": int(cpu.mode),
            "gdt_limit": cpu.gdt_limit,
            "gdt_base": cpu.gdt_base,
            "cr0": cpu.cr0,
            "cr3": cpu.cr3,
            "cr4": cpu.cr4,
            "efer": cpu.efer & ~Efer.LMA,
            "rip": cpu.rip,
            "rsi": cpu.rsi,
            "rbx": cpu.rbx,
            "rsp": cpu.rsp,
            "code_selector": cpu.code_selector,
            "data_selector": cpu.data_selector,
            "firmware_code_selector": FIRMWARE_CODE32_SELECTOR,
        }
    )


def check_handoff_free(plan: BootPlan) -> None:
    """Refuse a plan that writes over our hand-off block: the firmware stub reads it
    before the jump, so no plan bytes can be there on this backend."""
    start, end = HANDOFF_ADDR, HANDOFF_ADDR + HANDOFF.size
    for piece in memory_pieces(plan.blobs, plan.platform):
        if piece.addr < end and start < piece.end:
            raise LayoutError(
                f"{piece.blob.name} [{piece.addr:#x}, {piece.end:#x}) covers [{start:#x}, "
                f"{end:#x}), where the qemu-tcg backend's firmware reads its hand-off block "
                "before the jump: run this layout on another backend"
            )


def _qemu_opt(path: Path) -> str:
    """A path as a QEMU option value: commas are doubled, or QEMU splits there."""
    return str(path).replace(",", ",,")


def qmp_socket(run_dir: Path) -> Path:
    """Where the run's QEMU listens for QMP: in *run_dir*, or, where that path is too
    long for a unix socket, in the temporary directory under a name derived from it."""
    path = run_dir.resolve() / "qmp.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"bootfuzz-qmp-{digest}.sock"


class QemuTcgBackend:
    name: ClassVar[str] = "qemu-tcg"
    exit_statuses: ClassVar[ExitStatuses] = QEMU_EXIT_STATUSES
    machine = "pc"

    def __init__(self, binary: str | None = None) -> None:
        #: $BOOTFUZZ_QEMU picks another QEMU build (a developer's own tree, say).
        self.binary = binary or os.environ.get("BOOTFUZZ_QEMU", QEMU_BINARY)

    def check_available(self) -> None:
        if shutil.which(self.binary) is None:
            raise BackendError(
                f"{self.binary} not found: install the Debian package qemu-system-x86"
            )

    def platform(self, memory: int) -> Platform:
        return qemu_pc(memory)

    def prepare(self, plan: BootPlan, harness: HarnessArtifacts, run_dir: Path) -> list[str]:
        self.check_available()
        check_handoff_free(plan)
        run_dir.mkdir(parents=True, exist_ok=True)
        handoff = run_dir / f"handoff{SUFFIX}"
        handoff.write_bytes(handoff_block(plan.cpu))
        files = [*memory_files(plan, run_dir),
                 MemoryFile("handoff", HANDOFF_ADDR, HANDOFF.size, handoff)]
        argv = [
            self.binary,
            "-machine", f"{self.machine},accel=tcg",
            "-m", f"{plan.platform.memory // 1024}K",
            "-smp", "1",
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-monitor", "none",
            "-serial", "stdio",
            "-no-reboot",
            "-bios", str(harness.firmware),
            "-device", f"isa-debug-exit,iobase={AGENT_EXIT_PORT:#x},iosize=0x04",
            "-qmp", f"unix:{_qemu_opt(qmp_socket(run_dir))},server=on,wait=off",
        ]
        for file in files:
            argv += [
                "-device",
                f"loader,file={_qemu_opt(file.path)},addr={file.addr:#x},force-raw=on",
            ]
        return argv

    def coverage_argv(self, plugin: Path, map_path: Path) -> list[str]:
        """Arguments that load the block-coverage plugin (bootfuzz.run.coverage)
        writing into *map_path*: TCG runs plugins, so this backend records coverage."""
        return plugin_argv(plugin, map_path)

    def halt_probe(self, run_dir: Path) -> QmpHaltProbe:
        """Asks the QEMU that prepare()'s argv starts whether its guest halted for good."""
        return QmpHaltProbe(qmp_socket(run_dir))
