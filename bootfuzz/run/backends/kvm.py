"""Our own minimal KVM VMM as an executor of BootPlans (bootfuzz.run.kvm).

The VMM is a separate process (``python -m bootfuzz.cli.vmm run MANIFEST``) so the
console session treats it exactly like QEMU: serial on stdout, an exit status
at the end.  For protected- and long-mode plans there is no firmware: the VMM
writes the plan's CPU state into the vCPU directly (bootfuzz.run.kvm.cpu), and
prints the firmware stub's "entering kernel" line at that moment so transcripts
read the same.  A real-mode plan (the 16-bit entry) runs our firmware as its
BIOS, from the reset vector, with the hand-off block QEMU's run gets too.
The guest's CPUID is the case's CPU template (bootfuzz.run.kvm.cputemplate),
checked against this host before the VMM starts.

The platform is QEMU ``pc``'s RAM split (bootfuzz.loader.platform), not a layout
of our own: the plan, its E820 table and so every oracle's expectation are
then identical on both backends, and a difference in what the kernel reports
is a difference in execution, not in the machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import ClassVar

from bootfuzz.abi.handoff import HANDOFF, HandoffMode
from bootfuzz.case import CpuTemplate
from bootfuzz.errors import BackendError
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.guest.protocol import QEMU_AGENT_EXIT_STATUS
from bootfuzz.loader.layout import HANDOFF_ADDR
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.platform import Platform, qemu_pc
from bootfuzz.run.backends.qemu_tcg import check_handoff_free, handoff_block
from bootfuzz.run.exits import ExitStatuses
from bootfuzz.run.kvm import abi
from bootfuzz.run.kvm.cpu import firmware_reset_state
from bootfuzz.run.kvm.cputemplate import CpuTemplateError, physical_address_bits, template_cpuid
from bootfuzz.run.kvm.vm import Kvm
from bootfuzz.run.kvm.vmm import (
    EXIT_HALTED,
    EXIT_INFRASTRUCTURE,
    EXIT_INTERNAL_ERROR,
    EXIT_RESET,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    Manifest,
    ManifestBlob,
)
from bootfuzz.run.memory_files import SUFFIX, MemoryFile, memory_files
from bootfuzz.transcript import GuestExit

MANIFEST_NAME = "kvm-manifest.json"

#: The VMM's exit statuses (bootfuzz.run.kvm.vmm).  A guest halted with interrupts
#: off is HUNG: the VMM sees it (QEMU's same guest sits until the session's silence
#: timeout kills it).  The VMM's own --timeout is the session's deadline reached sooner.
VMM_EXIT_STATUSES: ExitStatuses = {
    QEMU_AGENT_EXIT_STATUS: GuestExit.POWER_OFF,
    EXIT_RESET: GuestExit.RESET,
    EXIT_HALTED: GuestExit.HUNG,
    EXIT_TIMEOUT: GuestExit.KILLED,
    EXIT_INTERNAL_ERROR: GuestExit.BACKEND_ERROR,
    EXIT_INFRASTRUCTURE: GuestExit.BACKEND_ERROR,
    EXIT_USAGE: GuestExit.BACKEND_ERROR,
}


class KvmBackend:
    name: ClassVar[str] = "kvm"
    exit_statuses: ClassVar[ExitStatuses] = VMM_EXIT_STATUSES

    def check_available(self) -> None:
        """/dev/kvm opens read-write and speaks API version 12 (raises BackendError)."""
        kvm = Kvm()  # KvmError (a BackendError) names what is missing
        try:
            version = kvm.api_version()
        finally:
            kvm.close()
        if version != abi.KVM_API_VERSION:
            raise BackendError(
                f"/dev/kvm reports API version {version}; the VMM needs {abi.KVM_API_VERSION}"
            )

    def platform(self, memory: int) -> Platform:
        return qemu_pc(memory)

    def manifest(self, plan: BootPlan, run_dir: Path,
                 harness: HarnessArtifacts | None = None) -> Manifest:
        """The VMM's manifest for *plan*; a real-mode plan needs *harness* (its firmware)."""
        # One file per piece of memory the plan fills: blobs cut to RAM, a later one
        # over an earlier one, exactly as on QEMU (bootfuzz.run.memory_files).
        files = memory_files(plan, run_dir)
        cpu, firmware = plan.cpu, None
        if plan.cpu.mode is HandoffMode.REAL_16:
            if harness is None:
                raise BackendError("a real-mode plan runs our firmware: no harness given")
            # As on QEMU: the firmware starts at the reset vector and reads the
            # plan's state from the hand-off block.
            check_handoff_free(plan)
            handoff = (run_dir / f"handoff{SUFFIX}").resolve()
            handoff.write_bytes(handoff_block(plan.cpu))
            files.append(MemoryFile("handoff", HANDOFF_ADDR, HANDOFF.size, handoff))
            cpu, firmware = firmware_reset_state(), str(harness.firmware.resolve())
        blobs = tuple(ManifestBlob(f.name, f.addr, f.size, str(f.path)) for f in files)
        ram = tuple((r.start, r.size) for r in plan.platform.ram_ranges())
        return Manifest(plan.platform.memory, ram, blobs, cpu, firmware, plan.case.cpu_template)

    @staticmethod
    def check_cpu_template(template: CpuTemplate, top_of_ram: int) -> None:
        """Refuse, before the VMM starts, a template this host cannot show the guest
        (CpuTemplateError names what is missing), or RAM the guest could not address."""
        kvm = Kvm()
        try:
            cpuid = template_cpuid(template, kvm.supported_cpuid_entries())
        finally:
            kvm.close()
        bits = physical_address_bits(cpuid)
        if bits is not None and top_of_ram > 1 << bits:
            raise CpuTemplateError(
                f"guest RAM ends at {top_of_ram:#x}, past the {bits} physical address bits "
                f"the {template.value} CPU template shows")

    def prepare(self, plan: BootPlan, harness: HarnessArtifacts, run_dir: Path) -> list[str]:
        """Blob files and the manifest in *run_dir*; the firmware for a real-mode plan."""
        self.check_available()
        self.check_cpu_template(plan.case.cpu_template, plan.platform.top_of_ram)
        run_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest(plan, run_dir, harness)
        path = (run_dir / MANIFEST_NAME).resolve()
        try:
            path.write_text(manifest.to_json())
        except OSError as e:
            raise BackendError(f"cannot write {path}: {e.strerror}") from None
        return [sys.executable, "-m", "bootfuzz.cli.vmm", "run", os.fspath(path)]
