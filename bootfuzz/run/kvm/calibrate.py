"""How fast does this machine's KVM run guest code?

Hardware-assisted KVM runs a simple loop at hundreds of millions of
instructions per second; a KVM that emulates (nested without hardware
support underneath) manages a few million, and a full kernel boot is then
out of reach.  ``bootfuzz doctor`` reports the number so the difference is
visible before a run times out.
"""

from __future__ import annotations

import time

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.errors import HarnessBug
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, AGENT_EXIT_VALUE, QEMU_AGENT_EXIT_STATUS
from bootfuzz.loader import layout
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.x86 import FLAT_CODE32, FLAT_DATA, Cr0
from bootfuzz.run.kvm.cpu import make_regs
from bootfuzz.run.kvm.vmm import Machine, Manifest

CALIBRATION_MEMORY = 2 * layout.MiB
LOOP_ADDR = layout.HIGH_MEMORY_START
#: Instructions per iteration of the loop below (dec, jnz).
INSNS_PER_ITERATION = 2
_MAX_ITERATIONS = 0xFFFF_FFFF


def loop_code(iterations: int) -> bytes:
    """32-bit code: ``mov $n, %ecx; 1: dec %ecx; jnz 1b; mov $v, %al; out %al, $port``.

    Hand-encoded (Intel SDM vol. 2) so calibration needs no assembler.
    """
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise HarnessBug(f"calibration loop of {iterations} iterations")
    return (
        b"\xb9" + iterations.to_bytes(4, "little")  # mov $iterations, %ecx
        + b"\x49"  # dec %ecx
        + b"\x75\xfd"  # jnz back to dec
        + b"\xb0" + bytes((AGENT_EXIT_VALUE,))  # mov $AGENT_EXIT_VALUE, %al
        + b"\xe6" + bytes((AGENT_EXIT_PORT,))  # out %al, $AGENT_EXIT_PORT
        + b"\xf4"  # hlt (not reached)
    )


def _cpu() -> CpuState:
    return CpuState(
        mode=HandoffMode.PROTECTED_32, rip=LOOP_ADDR, rsi=0, rbx=0, rsp=layout.BOOT_STACK_TOP,
        cr0=int(Cr0.PE | Cr0.ET), cr3=0, cr4=0, efer=0, gdt_base=layout.GDT_ADDR,
        gdt_limit=layout.GDT_SIZE - 1, code_selector=layout.BOOT_CS,
        data_selector=layout.BOOT_DS,
    )


def _timed_run(machine: Machine, iterations: int) -> float:
    machine.vm.write(LOOP_ADDR, loop_code(iterations))
    machine.vcpu.set_regs(make_regs(machine.manifest.cpu))
    start = time.perf_counter()
    status = machine.run()
    took = time.perf_counter() - start
    if status != QEMU_AGENT_EXIT_STATUS:
        raise HarnessBug(f"calibration guest ended with status {status}")
    return took


def measure_guest_ips(seconds: float = 1.0) -> float:
    """Guest instructions per second of a dec/jnz loop, run for about *seconds*.

    The loop grows tenfold until it runs a tenth of *seconds*, then is sized to
    *seconds*; the cost of one empty run (VM entry and our exit handling) is
    subtracted.  Must run in the main thread (the VMM uses SIGALRM).
    """
    manifest = Manifest(CALIBRATION_MEMORY, ((0, CALIBRATION_MEMORY),), (), _cpu())
    machine = Machine(manifest, announce_entry=False)
    gdt = b"".join(w.to_bytes(8, "little") for w in (0, FLAT_CODE32, FLAT_CODE32, FLAT_DATA))
    machine.vm.write(layout.GDT_ADDR, gdt)
    machine.set_entry_state()
    overhead = _timed_run(machine, 1)
    iterations = 100_000
    took = _timed_run(machine, iterations)
    while took < seconds / 10 and iterations < _MAX_ITERATIONS:
        iterations = min(iterations * 10, _MAX_ITERATIONS)
        took = _timed_run(machine, iterations)
    iterations = max(1, min(int(iterations * seconds / max(took, 1e-9)), _MAX_ITERATIONS))
    took = _timed_run(machine, iterations)
    return INSNS_PER_ITERATION * iterations / max(took - overhead, 1e-9)
