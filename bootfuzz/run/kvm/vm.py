"""Thin wrappers over /dev/kvm: one fcntl.ioctl each, errno turned into KvmError.

Side effects live here and only here; what to put in the registers is decided
in bootfuzz/kvm/cpu.py, what to do on an exit in bootfuzz/kvm/vmm.py.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass

from bootfuzz.case import CpuTemplate
from bootfuzz.errors import BackendError
from bootfuzz.run.kvm import abi
from bootfuzz.run.kvm.cputemplate import CpuidEntry, template_cpuid

KVM_DEVICE = "/dev/kvm"
#: Where KVM puts the three pages of the real-mode TSS Intel VMX needs, and the
#: identity page table it uses for unpaged guests: inside the 32-bit MMIO gap,
#: never RAM, just below the 64 KiB our firmware occupies under 4 GiB on QEMU.
#: source: QEMU target/i386/kvm/kvm.c (kvm_arch_init: identity map at 0xfeffc000
#: by default, TSS right after); we keep both below the BIOS range instead.
TSS_ADDR = 0xFFFBD000
IDENTITY_MAP_ADDR = 0xFFFBC000
#: ISA IRQ lines (PC/AT): COM1, the i8042 keyboard and aux ports.
#: mmap's constant exists from Python 3.13 on.  source: include/uapi/asm-generic/mman.h
MAP_NORESERVE: int = getattr(mmap, "MAP_NORESERVE", 0x4000)
IRQ_COM1 = 4
IRQ_KEYBOARD = 1
IRQ_AUX = 12


class KvmError(BackendError):
    """A KVM ioctl failed, or /dev/kvm is missing or unusable."""

    component = "kvm"

    def __init__(self, message: str, err: int | None = None) -> None:
        super().__init__(message)
        self.errno = err


def _ioctl(fd: int, request: int, arg: int | ctypes.Array[ctypes.c_char] | ctypes.Structure,
           what: str) -> int:
    """One ioctl; *arg* is an int or a ctypes object the kernel may read and write."""
    try:
        if isinstance(arg, int):
            return int(fcntl.ioctl(fd, request, arg))
        return int(fcntl.ioctl(fd, request, arg, True))
    except OSError as e:
        if e.errno == errno.EINTR:
            raise
        raise KvmError(f"{what} failed: {os.strerror(e.errno or 0)}", e.errno) from None


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
_libc.ioctl.restype = ctypes.c_int


def _ioctl_ulong(fd: int, request: int, arg: int, what: str) -> int:
    """An ioctl whose argument is an unsigned long (fcntl.ioctl passes a C int)."""
    ret = int(_libc.ioctl(fd, request, arg))
    if ret < 0:
        err = ctypes.get_errno()
        raise KvmError(f"{what} failed: {os.strerror(err)}", err)
    return ret


def open_kvm() -> int:
    """/dev/kvm opened read-write, or a KvmError that says what is missing."""
    try:
        return os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KvmError(
            f"{KVM_DEVICE} does not exist: the kernel has no KVM (load kvm_intel or "
            "kvm_amd, or enable nested virtualization on the host)"
        ) from None
    except PermissionError:
        raise KvmError(
            f"{KVM_DEVICE} cannot be opened read-write by uid {os.getuid()}: "
            "join the kvm group or run as root"
        ) from None
    except OSError as e:
        raise KvmError(f"cannot open {KVM_DEVICE}: {e.strerror}") from None


@dataclass
class GuestMemory:
    """One RAM range of the guest, backed by an anonymous private mapping.

    MAP_NORESERVE: several GiB cost nothing until the guest touches them.
    """

    guest_phys_addr: int
    size: int
    mapping: mmap.mmap

    def contains(self, addr: int, size: int) -> bool:
        return self.guest_phys_addr <= addr and addr + size <= self.guest_phys_addr + self.size

    def write(self, addr: int, data: bytes) -> None:
        off = addr - self.guest_phys_addr
        self.mapping[off : off + len(data)] = data

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.guest_phys_addr
        return self.mapping[off : off + size]

    @property
    def host_addr(self) -> int:
        return ctypes.addressof(ctypes.c_char.from_buffer(self.mapping))


def _anonymous(size: int, what: str) -> mmap.mmap:
    try:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
    except OSError as e:
        raise KvmError(f"cannot map {size:#x} bytes of {what}: {e.strerror}") from None


class Kvm:
    """The /dev/kvm system fd."""

    def __init__(self) -> None:
        self.fd = open_kvm()

    def close(self) -> None:
        os.close(self.fd)

    def api_version(self) -> int:
        return _ioctl(self.fd, abi.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")

    def check_extension(self, cap: int) -> int:
        return _ioctl(self.fd, abi.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def vcpu_mmap_size(self) -> int:
        return _ioctl(self.fd, abi.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self) -> ctypes.Array[ctypes.c_char]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer while the kernel says E2BIG."""
        nent = 128
        while True:
            buf = abi.cpuid2_buffer(nent)
            try:
                _ioctl(self.fd, abi.KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID")
                return buf
            except KvmError as e:
                if e.errno != errno.E2BIG or nent >= 4096:
                    raise
                nent *= 2

    def supported_cpuid_entries(self) -> tuple[CpuidEntry, ...]:
        """KVM_GET_SUPPORTED_CPUID as entries."""
        return tuple(
            CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
            for e in abi.cpuid2_entries(self.supported_cpuid())
        )

    def create_vm(self) -> Vm:
        return Vm(self, _ioctl(self.fd, abi.KVM_CREATE_VM, 0, "KVM_CREATE_VM"))


class Vm:
    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self.memory: list[GuestMemory] = []  # RAM, where blobs go
        self.roms: list[GuestMemory] = []

    def close(self) -> None:
        os.close(self.fd)

    def set_tss_addr(self, addr: int = TSS_ADDR) -> None:
        _ioctl_ulong(self.fd, abi.KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR")

    def set_identity_map_addr(self, addr: int = IDENTITY_MAP_ADDR) -> None:
        value = ctypes.c_uint64(addr)
        _ioctl(self.fd, abi.KVM_SET_IDENTITY_MAP_ADDR, value, "KVM_SET_IDENTITY_MAP_ADDR")  # type: ignore[arg-type]

    def create_irqchip(self) -> None:
        _ioctl(self.fd, abi.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def create_pit2(self) -> None:
        config = abi.kvm_pit_config(flags=0)
        _ioctl(self.fd, abi.KVM_CREATE_PIT2, config, "KVM_CREATE_PIT2")

    def irq_line(self, irq: int, level: bool) -> None:
        arg = abi.kvm_irq_level(irq=irq, level=int(level))
        _ioctl(self.fd, abi.KVM_IRQ_LINE, arg, "KVM_IRQ_LINE")

    def add_memory(self, guest_phys_addr: int, size: int) -> GuestMemory:
        """A new slot of anonymous RAM at *guest_phys_addr*."""
        mem = GuestMemory(guest_phys_addr, size, _anonymous(size, "guest RAM"))
        self._add_slot(mem, 0)
        self.memory.append(mem)
        return mem

    def add_rom(self, guest_phys_addr: int, data: bytes) -> None:
        """*data* as read-only memory at *guest_phys_addr*: guest writes exit as MMIO
        (dropped, as a ROM ignores them); where KVM has no read-only slots, writable."""
        mem = GuestMemory(guest_phys_addr, len(data), _anonymous(len(data), "ROM"))
        mem.write(guest_phys_addr, data)
        readonly = self.kvm.check_extension(abi.KVM_CAP_READONLY_MEM) > 0
        self._add_slot(mem, abi.KVM_MEM_READONLY if readonly else 0)
        self.roms.append(mem)

    def _add_slot(self, mem: GuestMemory, flags: int) -> None:
        region = abi.kvm_userspace_memory_region(
            slot=len(self.memory) + len(self.roms), flags=flags,
            guest_phys_addr=mem.guest_phys_addr, memory_size=mem.size,
            userspace_addr=mem.host_addr,
        )
        _ioctl(self.fd, abi.KVM_SET_USER_MEMORY_REGION, region,
               f"KVM_SET_USER_MEMORY_REGION [{mem.guest_phys_addr:#x}, +{mem.size:#x})")

    def add_ram_ranges(self, ranges: Sequence[tuple[int, int]]) -> None:
        for start, size in ranges:
            self.add_memory(start, size)

    def range_for(self, addr: int, size: int) -> GuestMemory:
        for mem in self.memory:
            if mem.contains(addr, size):
                return mem
        raise KvmError(f"[{addr:#x}, {addr + size:#x}) is not inside one guest RAM range")

    def write(self, addr: int, data: bytes) -> None:
        self.range_for(addr, len(data)).write(addr, data)

    def read(self, addr: int, size: int) -> bytes:
        return self.range_for(addr, size).read(addr, size)

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        fd = _ioctl(self.fd, abi.KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU")
        return Vcpu(fd, self.kvm.vcpu_mmap_size())


class Vcpu:
    def __init__(self, fd: int, mmap_size: int) -> None:
        self.fd = fd
        try:
            self.mapping = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED,
                                     mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise KvmError(f"cannot map the vCPU's kvm_run page: {e.strerror}") from None
        self.run_page = abi.kvm_run.from_buffer(self.mapping)

    def run(self) -> None:
        """KVM_RUN; EINTR propagates (a signal asked us to look at the guest)."""
        _ioctl(self.fd, abi.KVM_RUN, 0, "KVM_RUN")

    def get_regs(self) -> abi.kvm_regs:
        regs = abi.kvm_regs()
        _ioctl(self.fd, abi.KVM_GET_REGS, regs, "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: abi.kvm_regs) -> None:
        _ioctl(self.fd, abi.KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self) -> abi.kvm_sregs:
        sregs = abi.kvm_sregs()
        _ioctl(self.fd, abi.KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: abi.kvm_sregs) -> None:
        _ioctl(self.fd, abi.KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def set_cpuid2(self, cpuid: ctypes.Array[ctypes.c_char]) -> None:
        _ioctl(self.fd, abi.KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")

    def set_cpuid(self, entries: Sequence[CpuidEntry]) -> None:
        """KVM_SET_CPUID2 with exactly *entries*."""
        buf = abi.cpuid2_buffer(len(entries))
        for slot, e in zip(abi.cpuid2_entries(buf), entries, strict=True):
            slot.function, slot.index, slot.flags = e.function, e.index, e.flags
            slot.eax, slot.ebx, slot.ecx, slot.edx = e.eax, e.ebx, e.ecx, e.edx
        self.set_cpuid2(buf)

    def mp_state(self) -> int:
        state = abi.kvm_mp_state()
        _ioctl(self.fd, abi.KVM_GET_MP_STATE, state, "KVM_GET_MP_STATE")
        return int(state.mp_state)

    def io_data(self, offset: int, length: int) -> memoryview:
        """The bytes of a PIO exit, in the shared page (writable for IN)."""
        return memoryview(self.mapping)[offset : offset + length]


def create_machine(ranges: Sequence[tuple[int, int]],
                   template: CpuTemplate = CpuTemplate.BASELINE) -> tuple[Kvm, Vm, Vcpu]:
    """A PC-like VM: in-kernel PIC/IOAPIC/LAPIC and PIT, *ranges* of RAM, one vCPU
    whose CPUID is *template*'s (bootfuzz.run.kvm.cputemplate).

    Order matters: TSS and identity-map addresses and the irqchip before the
    vCPU exists; CPUID on the vCPU before it first runs.
    """
    kvm = Kvm()
    version = kvm.api_version()
    if version != abi.KVM_API_VERSION:
        raise KvmError(f"KVM API version {version}, expected {abi.KVM_API_VERSION}")
    vm = kvm.create_vm()
    vm.set_tss_addr()
    vm.set_identity_map_addr()
    vm.create_irqchip()
    vm.create_pit2()
    vm.add_ram_ranges(ranges)
    vcpu = vm.create_vcpu()
    vcpu.set_cpuid(template_cpuid(template, kvm.supported_cpuid_entries()))
    return kvm, vm, vcpu
