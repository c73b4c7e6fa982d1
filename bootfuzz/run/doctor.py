"""What can run here, and how fast: measured, not guessed.

`bootfuzz doctor` reports each backend; `--backend auto` uses the same probe to
pick kvm only where KVM is backed by hardware.  An emulating (nested, software)
KVM runs guests at a few million instructions per second, hardware KVM at
hundreds of millions or more: the threshold below sits far from both.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from dataclasses import dataclass

from bootfuzz.case import CpuTemplate
from bootfuzz.errors import BootfuzzError

#: Guest instructions per second above which KVM counts as hardware-backed.
#: Measured here: an emulating nested KVM runs 0.4-2 M/s; hardware runs > 500 M/s.
HARDWARE_KVM_MIN_IPS = 50e6
CALIBRATION_SECONDS = 0.5


@dataclass(frozen=True)
class BackendStatus:
    name: str
    usable: bool
    detail: str  # what was measured, or what is missing
    guest_ips: float | None = None  # kvm: measured guest instructions per second
    hardware: bool | None = None  # kvm: backed by hardware virtualization
    #: kvm: where the guest's CPUID differs from the default CPU template (empty:
    #: this KVM shows the guest exactly the template; bootfuzz.run.kvm.cpuid_check).
    cpu_template_deviations: tuple[str, ...] = ()

    @property
    def fast(self) -> bool:
        return self.usable and bool(self.hardware)


def qemu_tcg_status() -> BackendStatus:
    from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend

    backend = QemuTcgBackend()
    try:
        backend.check_available()
    except BootfuzzError as exc:
        return BackendStatus("qemu-tcg", False, str(exc))
    out = subprocess.run([backend.binary, "--version"], capture_output=True, text=True,
                         check=False).stdout.splitlines()
    version = out[0] if out else "unknown version"
    return BackendStatus("qemu-tcg", True, f"{shutil.which(backend.binary)}: {version}")


def qemu_virt_status(arch_name: str) -> BackendStatus:
    """qemu-virt for one device-tree architecture: its QEMU (and OpenSBI for riscv64)."""
    from bootfuzz.arch import Arch
    from bootfuzz.run.backends.qemu_virt import QemuVirtBackend

    backend = QemuVirtBackend(Arch(arch_name))
    name = f"qemu-virt ({arch_name})"
    try:
        backend.check_available()
    except BootfuzzError as exc:
        return BackendStatus(name, False, str(exc))
    out = subprocess.run([backend.binary, "--version"], capture_output=True, text=True,
                         check=False).stdout.splitlines()
    return BackendStatus(name, True, f"{shutil.which(backend.binary)}: "
                         f"{out[0] if out else 'unknown version'}")


@functools.cache
def kvm_status() -> BackendStatus:
    """Open /dev/kvm and run the calibration guest (cached: it takes about a second)."""
    from bootfuzz.run.backends.kvm import KvmBackend

    try:
        KvmBackend().check_available()
        from bootfuzz.run.kvm.calibrate import measure_guest_ips
        from bootfuzz.run.kvm.cpuid_check import template_deviations

        started = time.monotonic()
        ips = measure_guest_ips(CALIBRATION_SECONDS)
        took = time.monotonic() - started
        template = CpuTemplate.BASELINE
        deviations = template_deviations(template)
    except BootfuzzError as exc:
        return BackendStatus("kvm", False, str(exc))
    hardware = ips >= HARDWARE_KVM_MIN_IPS
    kind = "hardware" if hardware else "emulated (software) KVM: guests run far too slowly"
    detail = (f"/dev/kvm runs guests at {ips / 1e6:.1f} M instructions/s ({kind}; "
              f"hardware KVM does > {HARDWARE_KVM_MIN_IPS / 1e6:.0f} M/s); "
              f"calibration took {took:.1f} s; ")
    if deviations:
        detail += (f"the guest does NOT see exactly the {template.value} CPU template (this "
                   f"KVM answers CPUID itself): {'; '.join(deviations)}")
    else:
        detail += f"the guest sees exactly the {template.value} CPU template"
    return BackendStatus("kvm", True, detail, ips, hardware, deviations)


def kvm_cannot_boot(status: BackendStatus | None = None) -> str | None:
    """Why no full boot would finish on this /dev/kvm (*status*, else measured once per
    process), or None on hardware KVM: what campaigns refuse and targets skip with."""
    status = status or kvm_status()
    return None if status.fast else f"a full boot needs hardware KVM: {status.detail}"


def pick_backend() -> str:
    """kvm where it is backed by hardware, else qemu-tcg."""
    return "kvm" if kvm_status().fast else "qemu-tcg"


def report() -> list[BackendStatus]:
    return [qemu_tcg_status(), kvm_status(), qemu_virt_status("aarch64"),
            qemu_virt_status("riscv64")]
