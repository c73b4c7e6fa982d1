"""Does the guest see the CPU template we set?  Asked of the guest itself.

KVM_SET_CPUID2 is what a VMM can say; the CPUID instruction in the guest is what
the guest kernel reads.  Hardware KVM intercepts every CPUID and answers from the
table we set.  An emulating KVM may not: this project's CI hosts answer leaf 1
ECX/EDX partly from their own CPU whatever the table says.  A run on such a host
does not see exactly its template, and a reproducer recorded there may replay
differently on a faithful host, so ``bootfuzz doctor`` runs a tiny guest that
executes CPUID on every leaf the template defines and names each difference.
"""

from __future__ import annotations

import functools

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import CpuTemplate
from bootfuzz.errors import HarnessBug
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, AGENT_EXIT_VALUE, QEMU_AGENT_EXIT_STATUS
from bootfuzz.loader import layout
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.x86 import FLAT_CODE32, FLAT_DATA, Cr0
from bootfuzz.run.kvm.cputemplate import REGISTERS, CpuidEntry, template_cpuid
from bootfuzz.run.kvm.vm import Kvm
from bootfuzz.run.kvm.vmm import Machine, Manifest

CHECK_MEMORY = 2 * layout.MiB
CODE_ADDR = layout.HIGH_MEMORY_START
#: Where the guest stores EAX, EBX, ECX, EDX of each leaf, 16 bytes per leaf.
RESULT_ADDR = CODE_ADDR + 0x1000
_ENTRY_BYTES = 16
_MAX_LEAVES = 0x1000 // _ENTRY_BYTES


def cpuid_code(leaves: tuple[int, ...]) -> bytes:
    """32-bit code: CPUID (subleaf 0) on each leaf, the four registers stored at
    RESULT_ADDR in order, then out through the exit port.

    Hand-encoded (Intel SDM vol. 2: B8 mov eax,imm32; 31 C9 xor ecx,ecx; 0F A2
    cpuid; A3 mov moffs32,eax; 89 /r mov r/m32,r32 with disp32 ModRM 0x1D/0x0D/0x15
    for EBX/ECX/EDX) so the check needs no assembler.
    """
    if not 1 <= len(leaves) <= _MAX_LEAVES:
        raise HarnessBug(f"CPUID check of {len(leaves)} leaves")
    code = bytearray()
    for i, leaf in enumerate(leaves):
        out = RESULT_ADDR + i * _ENTRY_BYTES
        code += b"\xb8" + leaf.to_bytes(4, "little") + b"\x31\xc9\x0f\xa2"
        code += b"\xa3" + out.to_bytes(4, "little")
        for modrm, offset in ((0x1D, 4), (0x0D, 8), (0x15, 12)):
            code += bytes((0x89, modrm)) + (out + offset).to_bytes(4, "little")
    code += b"\xb0" + bytes((AGENT_EXIT_VALUE,)) + b"\xe6" + bytes((AGENT_EXIT_PORT,)) + b"\xf4"
    return bytes(code)


def _cpu() -> CpuState:
    return CpuState(
        mode=HandoffMode.PROTECTED_32, rip=CODE_ADDR, rsi=0, rbx=0, rsp=layout.BOOT_STACK_TOP,
        cr0=int(Cr0.PE | Cr0.ET), cr3=0, cr4=0, efer=0, gdt_base=layout.GDT_ADDR,
        gdt_limit=layout.GDT_SIZE - 1, code_selector=layout.BOOT_CS,
        data_selector=layout.BOOT_DS,
    )


def guest_cpuid(template: CpuTemplate, leaves: tuple[int, ...]) -> tuple[CpuidEntry, ...]:
    """What CPUID answers inside a guest of *template* for each of *leaves* (subleaf 0).

    Must run in the main thread (the VMM uses SIGALRM).
    """
    manifest = Manifest(CHECK_MEMORY, ((0, CHECK_MEMORY),), (), _cpu(), None, template)
    machine = Machine(manifest, announce_entry=False)
    gdt = b"".join(w.to_bytes(8, "little") for w in (0, FLAT_CODE32, FLAT_CODE32, FLAT_DATA))
    machine.vm.write(layout.GDT_ADDR, gdt)
    machine.vm.write(CODE_ADDR, cpuid_code(leaves))
    machine.set_entry_state()
    status = machine.run(timeout=60)
    if status != QEMU_AGENT_EXIT_STATUS:
        raise HarnessBug(f"CPUID check guest ended with status {status}")
    raw = machine.vm.read(RESULT_ADDR, len(leaves) * _ENTRY_BYTES)
    words = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]
    return tuple(CpuidEntry(leaf, 0, 0, *words[4 * n : 4 * n + 4])
                 for n, leaf in enumerate(leaves))


def deviations(expected: tuple[CpuidEntry, ...], seen: tuple[CpuidEntry, ...]) -> list[str]:
    """One line per register the guest saw differently from *expected* (same leaves)."""
    out = []
    for want, got in zip(expected, seen, strict=True):
        for reg in REGISTERS:
            a, b = want.register(reg), got.register(reg)
            if a != b:
                out.append(f"leaf {want.function:#x} {reg}: guest sees {b:#010x}, template "
                           f"{a:#010x} (bits {a ^ b:#010x} differ)")
    return out


@functools.cache
def template_deviations(template: CpuTemplate) -> tuple[str, ...]:
    """How the guest's CPUID differs from *template* on this host (empty: honoured).

    Leaves the template defines at subleaf 0 only: what lies beyond the highest
    leaf is vendor-defined and not part of any template.
    """
    kvm = Kvm()
    try:
        host = kvm.supported_cpuid_entries()
    finally:
        kvm.close()
    expected = tuple(e for e in template_cpuid(template, host) if e.index == 0)
    seen = guest_cpuid(template, tuple(e.function for e in expected))
    return tuple(deviations(expected, seen))
