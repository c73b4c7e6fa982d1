"""The part of the KVM ABI our VMM uses, declared once with ctypes.

source: include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h (Linux 6.x;
the x86 structures have not changed layout since API version 12).  Field names
are the kernel's; offsets are in the comments and pinned by the size asserts at
the bottom, which run at import.  ioctl numbers are computed from the structure
sizes with the _IO/_IOR/_IOW/_IOWR macros of include/uapi/asm-generic/ioctl.h.
"""

from __future__ import annotations

import ctypes

# ---- include/uapi/asm-generic/ioctl.h ----
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    if not 0 <= size < (1 << _IOC_SIZEBITS):
        raise ValueError(f"ioctl argument size {size} does not fit {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, size: int) -> int:
    return _IOC(_IOC_READ, type_, nr, size)


def _IOW(type_: int, nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, type_, nr, size)


def _IOWR(type_: int, nr: int, size: int) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, size)


# ---- constants (include/uapi/linux/kvm.h unless noted) ----
KVM_API_VERSION = 12
KVMIO = 0xAE

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0

KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3

KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_HALTED = 3

KVM_CAP_IRQCHIP = 0
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_PIT2 = 33
KVM_CAP_SET_IDENTITY_MAP_ADDR = 37
KVM_CAP_READONLY_MEM = 81
KVM_CAP_IMMEDIATE_EXIT = 136

#: kvm_userspace_memory_region.flags: guest writes to the slot exit as MMIO (a ROM).
KVM_MEM_READONLY = 1 << 1

#: source: arch/x86/include/uapi/asm/kvm.h
KVM_NR_INTERRUPTS = 256

# ---- arch/x86/include/uapi/asm/kvm.h ----


class kvm_regs(ctypes.LittleEndianStructure):
    _fields_ = [
        ("rax", ctypes.c_uint64),  # 0x00
        ("rbx", ctypes.c_uint64),  # 0x08
        ("rcx", ctypes.c_uint64),  # 0x10
        ("rdx", ctypes.c_uint64),  # 0x18
        ("rsi", ctypes.c_uint64),  # 0x20
        ("rdi", ctypes.c_uint64),  # 0x28
        ("rsp", ctypes.c_uint64),  # 0x30
        ("rbp", ctypes.c_uint64),  # 0x38
        ("r8", ctypes.c_uint64),  # 0x40
        ("r9", ctypes.c_uint64),  # 0x48
        ("r10", ctypes.c_uint64),  # 0x50
        ("r11", ctypes.c_uint64),  # 0x58
        ("r12", ctypes.c_uint64),  # 0x60
        ("r13", ctypes.c_uint64),  # 0x68
        ("r14", ctypes.c_uint64),  # 0x70
        ("r15", ctypes.c_uint64),  # 0x78
        ("rip", ctypes.c_uint64),  # 0x80
        ("rflags", ctypes.c_uint64),  # 0x88
    ]


class kvm_segment(ctypes.LittleEndianStructure):
    _fields_ = [
        ("base", ctypes.c_uint64),  # 0x00
        ("limit", ctypes.c_uint32),  # 0x08
        ("selector", ctypes.c_uint16),  # 0x0c
        ("type", ctypes.c_uint8),  # 0x0e
        ("present", ctypes.c_uint8),  # 0x0f
        ("dpl", ctypes.c_uint8),  # 0x10
        ("db", ctypes.c_uint8),  # 0x11
        ("s", ctypes.c_uint8),  # 0x12
        ("l", ctypes.c_uint8),  # 0x13
        ("g", ctypes.c_uint8),  # 0x14
        ("avl", ctypes.c_uint8),  # 0x15
        ("unusable", ctypes.c_uint8),  # 0x16
        ("padding", ctypes.c_uint8),  # 0x17
    ]


class kvm_dtable(ctypes.LittleEndianStructure):
    _fields_ = [
        ("base", ctypes.c_uint64),  # 0x00
        ("limit", ctypes.c_uint16),  # 0x08
        ("padding", ctypes.c_uint16 * 3),  # 0x0a
    ]


class kvm_sregs(ctypes.LittleEndianStructure):
    _fields_ = [
        ("cs", kvm_segment),  # 0x000
        ("ds", kvm_segment),  # 0x018
        ("es", kvm_segment),  # 0x030
        ("fs", kvm_segment),  # 0x048
        ("gs", kvm_segment),  # 0x060
        ("ss", kvm_segment),  # 0x078
        ("tr", kvm_segment),  # 0x090
        ("ldt", kvm_segment),  # 0x0a8
        ("gdt", kvm_dtable),  # 0x0c0
        ("idt", kvm_dtable),  # 0x0d0
        ("cr0", ctypes.c_uint64),  # 0x0e0
        ("cr2", ctypes.c_uint64),  # 0x0e8
        ("cr3", ctypes.c_uint64),  # 0x0f0
        ("cr4", ctypes.c_uint64),  # 0x0f8
        ("cr8", ctypes.c_uint64),  # 0x100
        ("efer", ctypes.c_uint64),  # 0x108
        ("apic_base", ctypes.c_uint64),  # 0x110
        ("interrupt_bitmap", ctypes.c_uint64 * ((KVM_NR_INTERRUPTS + 63) // 64)),  # 0x118
    ]


class kvm_cpuid_entry2(ctypes.LittleEndianStructure):
    _fields_ = [
        ("function", ctypes.c_uint32),  # 0x00
        ("index", ctypes.c_uint32),  # 0x04
        ("flags", ctypes.c_uint32),  # 0x08
        ("eax", ctypes.c_uint32),  # 0x0c
        ("ebx", ctypes.c_uint32),  # 0x10
        ("ecx", ctypes.c_uint32),  # 0x14
        ("edx", ctypes.c_uint32),  # 0x18
        ("padding", ctypes.c_uint32 * 3),  # 0x1c
    ]


class kvm_cpuid2(ctypes.LittleEndianStructure):
    """The header only: ``entries`` is a flexible array (see :func:`cpuid2_buffer`)."""

    _fields_ = [
        ("nent", ctypes.c_uint32),  # 0x00
        ("padding", ctypes.c_uint32),  # 0x04
        # struct kvm_cpuid_entry2 entries[] at 0x08
    ]


def cpuid2_buffer(nent: int) -> ctypes.Array[ctypes.c_char]:
    """A zeroed kvm_cpuid2 with room for *nent* entries, nent already filled in."""
    buf = ctypes.create_string_buffer(
        ctypes.sizeof(kvm_cpuid2) + nent * ctypes.sizeof(kvm_cpuid_entry2)
    )
    kvm_cpuid2.from_buffer(buf).nent = nent
    return buf


def cpuid2_entries(buf: ctypes.Array[ctypes.c_char]) -> ctypes.Array[kvm_cpuid_entry2]:
    """The entries of a kvm_cpuid2 buffer, as many as its nent says (a view, not a copy)."""
    nent = kvm_cpuid2.from_buffer(buf).nent
    entries: ctypes.Array[kvm_cpuid_entry2] = (kvm_cpuid_entry2 * nent).from_buffer(
        buf, ctypes.sizeof(kvm_cpuid2)
    )
    return entries


# ---- include/uapi/linux/kvm.h ----


class kvm_userspace_memory_region(ctypes.LittleEndianStructure):
    _fields_ = [
        ("slot", ctypes.c_uint32),  # 0x00
        ("flags", ctypes.c_uint32),  # 0x04
        ("guest_phys_addr", ctypes.c_uint64),  # 0x08
        ("memory_size", ctypes.c_uint64),  # 0x10
        ("userspace_addr", ctypes.c_uint64),  # 0x18
    ]


class kvm_pit_config(ctypes.LittleEndianStructure):
    _fields_ = [
        ("flags", ctypes.c_uint32),  # 0x00
        ("pad", ctypes.c_uint32 * 15),  # 0x04
    ]


class kvm_irq_level(ctypes.LittleEndianStructure):
    # The first word is a union {__u32 irq; __s32 status;}: we only ever pass irq.
    _fields_ = [
        ("irq", ctypes.c_uint32),  # 0x00
        ("level", ctypes.c_uint32),  # 0x04
    ]


class kvm_mp_state(ctypes.LittleEndianStructure):
    _fields_ = [("mp_state", ctypes.c_uint32)]  # 0x00


# The members of kvm_run's exit union that we read.


class kvm_run_hw(ctypes.LittleEndianStructure):
    _fields_ = [("hardware_exit_reason", ctypes.c_uint64)]  # 0x00


class kvm_run_fail_entry(ctypes.LittleEndianStructure):
    _fields_ = [
        ("hardware_entry_failure_reason", ctypes.c_uint64),  # 0x00
        ("cpu", ctypes.c_uint32),  # 0x08
    ]


class kvm_run_ex(ctypes.LittleEndianStructure):
    _fields_ = [
        ("exception", ctypes.c_uint32),  # 0x00
        ("error_code", ctypes.c_uint32),  # 0x04
    ]


class kvm_run_io(ctypes.LittleEndianStructure):
    _fields_ = [
        ("direction", ctypes.c_uint8),  # 0x00
        ("size", ctypes.c_uint8),  # 0x01 bytes per item
        ("port", ctypes.c_uint16),  # 0x02
        ("count", ctypes.c_uint32),  # 0x04
        ("data_offset", ctypes.c_uint64),  # 0x08 relative to kvm_run start
    ]


class kvm_run_mmio(ctypes.LittleEndianStructure):
    _fields_ = [
        ("phys_addr", ctypes.c_uint64),  # 0x00
        ("data", ctypes.c_uint8 * 8),  # 0x08
        ("len", ctypes.c_uint32),  # 0x10
        ("is_write", ctypes.c_uint8),  # 0x14
    ]


class kvm_run_internal(ctypes.LittleEndianStructure):
    _fields_ = [
        ("suberror", ctypes.c_uint32),  # 0x00
        ("ndata", ctypes.c_uint32),  # 0x04
        ("data", ctypes.c_uint64 * 16),  # 0x08
    ]


class kvm_run_emulation_failure(ctypes.LittleEndianStructure):
    _fields_ = [
        ("suberror", ctypes.c_uint32),  # 0x00
        ("ndata", ctypes.c_uint32),  # 0x04
        ("flags", ctypes.c_uint64),  # 0x08
        ("insn_size", ctypes.c_uint8),  # 0x10
        ("insn_bytes", ctypes.c_uint8 * 15),  # 0x11
    ]


class kvm_run_system_event(ctypes.LittleEndianStructure):
    _fields_ = [
        ("type", ctypes.c_uint32),  # 0x00
        ("ndata", ctypes.c_uint32),  # 0x04
        ("data", ctypes.c_uint64 * 16),  # 0x08 (union with __u64 flags)
    ]


class kvm_run_exit(ctypes.Union):
    _fields_ = [
        ("hw", kvm_run_hw),
        ("fail_entry", kvm_run_fail_entry),
        ("ex", kvm_run_ex),
        ("io", kvm_run_io),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("emulation_failure", kvm_run_emulation_failure),
        ("system_event", kvm_run_system_event),
        ("padding", ctypes.c_char * 256),  # the kernel's "char padding[256]"
    ]


class kvm_run(ctypes.LittleEndianStructure):
    """The shared vCPU page up to the end of the exit union.

    What follows (kvm_valid_regs, kvm_dirty_regs, the sync-regs union) is not
    used; the mapping is KVM_GET_VCPU_MMAP_SIZE bytes, so it is there anyway.
    """

    _anonymous_ = ("u",)
    _fields_ = [
        ("request_interrupt_window", ctypes.c_uint8),  # 0x00 in
        ("immediate_exit", ctypes.c_uint8),  # 0x01 in
        ("padding1", ctypes.c_uint8 * 6),  # 0x02
        ("exit_reason", ctypes.c_uint32),  # 0x08 out
        ("ready_for_interrupt_injection", ctypes.c_uint8),  # 0x0c
        ("if_flag", ctypes.c_uint8),  # 0x0d
        ("flags", ctypes.c_uint16),  # 0x0e
        ("cr8", ctypes.c_uint64),  # 0x10
        ("apic_base", ctypes.c_uint64),  # 0x18
        ("u", kvm_run_exit),  # 0x20: the exit union
    ]


#: Offset of kvm_run's exit union: the end of the fixed header.
KVM_RUN_HEADER_SIZE = 0x20

# ---- ioctl numbers ----
# system ioctls (on /dev/kvm)
KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, ctypes.sizeof(kvm_cpuid2))
# VM ioctls
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, ctypes.sizeof(kvm_userspace_memory_region))
KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = _IOW(KVMIO, 0x48, ctypes.sizeof(ctypes.c_uint64))
KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60)
KVM_IRQ_LINE = _IOW(KVMIO, 0x61, ctypes.sizeof(kvm_irq_level))
KVM_CREATE_PIT2 = _IOW(KVMIO, 0x77, ctypes.sizeof(kvm_pit_config))
# vCPU ioctls
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, ctypes.sizeof(kvm_regs))
KVM_SET_REGS = _IOW(KVMIO, 0x82, ctypes.sizeof(kvm_regs))
KVM_GET_SREGS = _IOR(KVMIO, 0x83, ctypes.sizeof(kvm_sregs))
KVM_SET_SREGS = _IOW(KVMIO, 0x84, ctypes.sizeof(kvm_sregs))
KVM_SET_CPUID2 = _IOW(KVMIO, 0x90, ctypes.sizeof(kvm_cpuid2))
KVM_GET_MP_STATE = _IOR(KVMIO, 0x98, ctypes.sizeof(kvm_mp_state))

# ---- import-time layout checks against the kernel's sizes ----
assert ctypes.sizeof(kvm_regs) == 144
assert ctypes.sizeof(kvm_segment) == 24
assert ctypes.sizeof(kvm_dtable) == 16
assert ctypes.sizeof(kvm_sregs) == 312
assert kvm_sregs.cr0.offset == 0xE0 and kvm_sregs.interrupt_bitmap.offset == 0x118
assert ctypes.sizeof(kvm_cpuid_entry2) == 40
assert ctypes.sizeof(kvm_cpuid2) == 8
assert ctypes.sizeof(kvm_userspace_memory_region) == 32
assert ctypes.sizeof(kvm_pit_config) == 64
assert ctypes.sizeof(kvm_irq_level) == 8
assert ctypes.sizeof(kvm_run_io) == 16
assert ctypes.sizeof(kvm_run_exit) == 256
assert kvm_run.exit_reason.offset == 0x08
assert kvm_run.u.offset == KVM_RUN_HEADER_SIZE
assert ctypes.sizeof(kvm_run) == KVM_RUN_HEADER_SIZE + 256
assert kvm_run_emulation_failure.insn_bytes.offset == 0x11
