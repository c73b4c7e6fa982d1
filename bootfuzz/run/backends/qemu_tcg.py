"""QEMU with TCG as a plain executor of our BootPlans.

QEMU's own -kernel loader is not used: our firmware stub (harness/firmware) is the
BIOS, every blob of the plan is put at its address with ``-device loader``, and the
stub reads the hand-off block to enter the kernel in the plan's CPU state.  So every
byte the kernel finds was decided by our loader.  Facts this relies on are in
shared/reference/qemu-tcg-backend.md.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar

from bootfuzz.abi.handoff import HANDOFF, HANDOFF_MAGIC
from bootfuzz.errors import BackendError
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, QEMU_AGENT_EXIT_STATUS
from bootfuzz.loader.layout import FIRMWARE_CODE32_SELECTOR, HANDOFF_ADDR
from bootfuzz.loader.plan import Blob, BootPlan, CpuState
from bootfuzz.loader.platform import Platform, qemu_pc
from bootfuzz.loader.x86 import Efer
from bootfuzz.run.exits import ExitStatuses
from bootfuzz.transcript import GuestExit

QEMU_BINARY = "qemu-system-x86_64"
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


def _qemu_opt(path: Path) -> str:
    """A path as a QEMU option value: commas are doubled, or QEMU splits there."""
    return str(path).replace(",", ",,")


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

    def _blob_file(self, blob: Blob, run_dir: Path) -> Path:
        if blob.path is not None:
            return blob.path
        assert blob.data is not None
        path = run_dir / f"{blob.name}.bin"
        path.write_bytes(blob.data)
        return path

    def prepare(self, plan: BootPlan, harness: HarnessArtifacts, run_dir: Path) -> list[str]:
        self.check_available()
        run_dir.mkdir(parents=True, exist_ok=True)
        blobs = [*plan.blobs, Blob("handoff", HANDOFF_ADDR, HANDOFF.size,
                                    data=handoff_block(plan.cpu))]
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
        ]
        for blob in blobs:
            argv += [
                "-device",
                f"loader,file={_qemu_opt(self._blob_file(blob, run_dir))},addr={blob.addr:#x},"
                "force-raw=on",
            ]
        return argv
