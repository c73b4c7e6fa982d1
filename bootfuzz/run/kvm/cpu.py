"""A plan's CpuState as KVM register contents.  Pure: no /dev/kvm.

On QEMU our firmware stub reaches the plan's state by executing lgdt, mov to
CR0/CR3/CR4, wrmsr EFER and a far return (harness/firmware/stub.S).  KVM lets
us write the result directly, so the hidden segment state must be what those
instructions would have loaded: every segment is decoded from the descriptor
the plan wrote into its GDT.  source: Intel SDM vol. 3A, 3.4.5 (descriptor
format) and 9.8 (entering protected mode), 9.8.5 (IA-32e mode).

A REAL_16 state is real mode: no descriptors, each segment's base is its
selector times 16 with a 64 KiB limit, and the IDT is the interrupt vector
table at 0.  source: SDM vol. 3A, 20.1 (real-address mode operation), 9.1.1
(processor state after reset: the segment caches, IDTR base 0 limit 0xFFFF).
"""

from __future__ import annotations

from dataclasses import dataclass

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.errors import HarnessBug
from bootfuzz.guest.harness import RESET_VECTOR_OFFSET
from bootfuzz.loader.layout import BIOS_AREA_START
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.x86 import Cr0, Efer
from bootfuzz.run.kvm import abi

#: RFLAGS bit 1 is reserved and always 1; IF (bit 9) stays 0 at entry.
RFLAGS_RESERVED = 0x2
#: A 32-bit busy TSS: PVH and VMX entry both require a usable TR.
#: source: SDM vol. 3A, table 3-2 (system segment types: 0xB = 32-bit TSS busy).
TSS_TYPE_BUSY32 = 0xB
TSS_LIMIT = 0x67  # 104 bytes: the minimum 32-bit TSS
#: LDT type for an unused LDTR.  source: SDM vol. 3A, table 3-2.
LDT_TYPE = 0x2
#: Real-mode segment caches as a reset leaves them: present, S=1, read/write
#: data (type 3) or execute/read code (type 0xB), 16-bit, byte-granular 64 KiB.
#: source: SDM vol. 3A, table 9-1 (the reset values of CS and DS..SS).
REAL_MODE_LIMIT = 0xFFFF
REAL_CODE_TYPE = 0xB
REAL_DATA_TYPE = 0x3
#: The interrupt vector table real mode dispatches through: 256 vectors of 4 bytes.
IVT_LIMIT = 256 * 4 - 1
#: CR0 and the GDTR's limit after a reset (CD, NW and ET set; base 0).
#: source: SDM vol. 3A, table 9-1.
CR0_RESET = 0x6000_0010
RESET_GDT_LIMIT = 0xFFFF


@dataclass(frozen=True)
class Segment:
    """A segment register's visible selector plus its hidden descriptor cache."""

    selector: int
    base: int
    limit: int  # in bytes - 1, after G scaling
    type: int
    s: int
    dpl: int
    present: int
    avl: int
    l: int  # noqa: E741 (the descriptor's name for it)
    db: int
    g: int


def decode_descriptor(gdt: bytes, selector: int) -> Segment:
    """The GDT entry *selector* points at, as the CPU would load it."""
    index = selector >> 3
    if selector & 0x4:
        raise HarnessBug(f"selector {selector:#x} points into an LDT")
    if index == 0 or (index + 1) * 8 > len(gdt):
        raise HarnessBug(
            f"selector {selector:#x} is outside the {len(gdt)}-byte GDT (or the null entry)"
        )
    word = int.from_bytes(gdt[index * 8 : index * 8 + 8], "little")
    limit = (word & 0xFFFF) | ((word >> 48) & 0xF) << 16
    base = ((word >> 16) & 0xFFFFFF) | ((word >> 56) & 0xFF) << 24
    access = (word >> 40) & 0xFF
    flags = (word >> 52) & 0xF
    g = (flags >> 3) & 1
    if g:
        limit = (limit << 12) | 0xFFF
    return Segment(
        selector=selector,
        base=base,
        limit=limit,
        type=access & 0xF,
        s=(access >> 4) & 1,
        dpl=(access >> 5) & 3,
        present=(access >> 7) & 1,
        avl=flags & 1,
        l=(flags >> 1) & 1,
        db=(flags >> 2) & 1,
        g=g,
    )


def kvm_segment_of(seg: Segment) -> abi.kvm_segment:
    return abi.kvm_segment(
        base=seg.base, limit=seg.limit, selector=seg.selector, type=seg.type,
        present=seg.present, dpl=seg.dpl, db=seg.db, s=seg.s, l=seg.l, g=seg.g,
        avl=seg.avl, unusable=0,
    )


def task_register() -> abi.kvm_segment:
    """TR: a 32-bit busy TSS at 0 (never switched to; it only has to be valid)."""
    return abi.kvm_segment(base=0, limit=TSS_LIMIT, selector=0, type=TSS_TYPE_BUSY32,
                           present=1, dpl=0, db=0, s=0, l=0, g=0, avl=0, unusable=0)


def local_descriptor_table() -> abi.kvm_segment:
    """LDTR: marked unusable, as after `lldt 0`."""
    return abi.kvm_segment(base=0, limit=0, selector=0, type=LDT_TYPE, present=1, unusable=1)


def real_mode_segment(selector: int, *, code: bool) -> abi.kvm_segment:
    """The segment cache real mode loads for *selector*: base selector * 16, 64 KiB."""
    return abi.kvm_segment(
        base=selector << 4, limit=REAL_MODE_LIMIT, selector=selector,
        type=REAL_CODE_TYPE if code else REAL_DATA_TYPE, present=1, dpl=0, db=0, s=1, l=0,
        g=0, avl=0, unusable=0,
    )


def check_cpu_state(cpu: CpuState) -> None:
    """Refuse states the stub could not produce either (so the two backends agree)."""
    if cpu.mode is HandoffMode.LONG_64:
        if not cpu.efer & Efer.LME:
            raise HarnessBug("long-mode CpuState without EFER.LME")
    elif cpu.mode is HandoffMode.REAL_16:
        if cpu.cr0 & (Cr0.PE | Cr0.PG) or cpu.efer or cpu.cr4:
            raise HarnessBug(f"real-mode CpuState with protection or paging on: cr0="
                             f"{cpu.cr0:#x} cr4={cpu.cr4:#x} efer={cpu.efer:#x}")
        if max(cpu.code_selector, cpu.data_selector, cpu.rip, cpu.rsp) > 0xFFFF:
            raise HarnessBug("real-mode CpuState with a selector, IP or SP over 16 bits")
    elif cpu.mode is not HandoffMode.PROTECTED_32:
        raise HarnessBug(f"unknown CpuState mode {cpu.mode!r}")


def make_sregs(cpu: CpuState, gdt: bytes, base: abi.kvm_sregs | None = None) -> abi.kvm_sregs:
    """Special registers for *cpu*; *gdt* is the table at cpu.gdt_base (limit + 1 bytes),
    not read for a real-mode state.

    *base* is the vCPU's reset state (KVM_GET_SREGS), so apic_base and the
    interrupt bitmap keep KVM's values.  In long mode EFER gets LMA, which the
    CPU would have set itself when the stub turned paging on.  The IDT is empty
    (limit 0): an exception before the kernel loads its own IDT triple-faults,
    which we report as a reset rather than jumping through garbage.
    """
    check_cpu_state(cpu)
    sregs = abi.kvm_sregs() if base is None else abi.kvm_sregs.from_buffer_copy(base)
    if cpu.mode is HandoffMode.REAL_16:
        return _real_mode_sregs(cpu, sregs)
    code = kvm_segment_of(decode_descriptor(gdt, cpu.code_selector))
    data = kvm_segment_of(decode_descriptor(gdt, cpu.data_selector))
    sregs.cs = code
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, data)
    sregs.tr = task_register()
    sregs.ldt = local_descriptor_table()
    sregs.gdt = abi.kvm_dtable(base=cpu.gdt_base, limit=cpu.gdt_limit)
    sregs.idt = abi.kvm_dtable(base=0, limit=0)
    sregs.cr0 = cpu.cr0
    sregs.cr2 = 0
    sregs.cr3 = cpu.cr3
    sregs.cr4 = cpu.cr4
    efer = cpu.efer
    if cpu.mode is HandoffMode.LONG_64:
        efer |= Efer.LMA
    else:
        efer &= ~(Efer.LMA | Efer.LME)
    sregs.efer = efer
    return sregs


def _real_mode_sregs(cpu: CpuState, sregs: abi.kvm_sregs) -> abi.kvm_sregs:
    """Real mode: segments from the selectors, the IVT at 0, the plan's GDTR (unused)."""
    sregs.cs = real_mode_segment(cpu.code_selector, code=True)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, real_mode_segment(cpu.data_selector, code=False))
    sregs.tr = task_register()
    sregs.ldt = local_descriptor_table()
    sregs.gdt = abi.kvm_dtable(base=cpu.gdt_base, limit=cpu.gdt_limit)
    sregs.idt = abi.kvm_dtable(base=0, limit=IVT_LIMIT)
    sregs.cr0 = cpu.cr0
    sregs.cr2 = 0
    sregs.cr3 = 0
    sregs.cr4 = 0
    sregs.efer = 0
    return sregs


def firmware_reset_state() -> CpuState:
    """Where a PC starts its BIOS: real mode at the reset vector, IF clear.

    A reset leaves CS = 0xF000 with base 0xFFFF0000, the image's alias below
    4 GiB; a CpuState's real-mode base is the selector's, so we start in the
    alias below 1 MiB instead (base 0xF0000: the same 16 bytes at linear 0xFFFF0).
    The first instruction, a far jump into that alias, is the same either way.
    """
    return CpuState(
        mode=HandoffMode.REAL_16, rip=RESET_VECTOR_OFFSET, rsi=0, rbx=0, rsp=0,
        cr0=CR0_RESET, cr3=0, cr4=0, efer=0, gdt_base=0, gdt_limit=RESET_GDT_LIMIT,
        code_selector=BIOS_AREA_START >> 4, data_selector=0,
    )


def make_regs(cpu: CpuState) -> abi.kvm_regs:
    """General registers at the jump: all zero but the four the plan names (as the stub)."""
    mask = 0xFFFF_FFFF_FFFF_FFFF if cpu.mode is HandoffMode.LONG_64 else 0xFFFF_FFFF
    return abi.kvm_regs(
        rip=cpu.rip & mask, rsi=cpu.rsi & mask, rbx=cpu.rbx & mask, rsp=cpu.rsp & mask,
        rflags=RFLAGS_RESERVED,
    )
