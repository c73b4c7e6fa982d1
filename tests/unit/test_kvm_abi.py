"""The KVM ABI declaration against numbers the kernel headers give (gcc on linux/kvm.h)."""

from __future__ import annotations

import ctypes

import pytest

from bootfuzz.run.kvm import abi


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("KVM_GET_API_VERSION", 0xAE00),
        ("KVM_CREATE_VM", 0xAE01),
        ("KVM_CHECK_EXTENSION", 0xAE03),
        ("KVM_GET_VCPU_MMAP_SIZE", 0xAE04),
        ("KVM_GET_SUPPORTED_CPUID", 0xC008AE05),
        ("KVM_CREATE_VCPU", 0xAE41),
        ("KVM_SET_USER_MEMORY_REGION", 0x4020AE46),
        ("KVM_SET_TSS_ADDR", 0xAE47),
        ("KVM_SET_IDENTITY_MAP_ADDR", 0x4008AE48),
        ("KVM_CREATE_IRQCHIP", 0xAE60),
        ("KVM_IRQ_LINE", 0x4008AE61),
        ("KVM_CREATE_PIT2", 0x4040AE77),
        ("KVM_RUN", 0xAE80),
        ("KVM_GET_REGS", 0x8090AE81),
        ("KVM_SET_REGS", 0x4090AE82),
        ("KVM_GET_SREGS", 0x8138AE83),
        ("KVM_SET_SREGS", 0x4138AE84),
        ("KVM_SET_CPUID2", 0x4008AE90),
        ("KVM_GET_MP_STATE", 0x8004AE98),
    ],
)
def test_abi_ioctl_number_matches_kernel_header(name: str, number: int) -> None:
    assert getattr(abi, name) == number


@pytest.mark.parametrize(
    ("struct", "size"),
    [
        (abi.kvm_regs, 144),
        (abi.kvm_sregs, 312),
        (abi.kvm_segment, 24),
        (abi.kvm_dtable, 16),
        (abi.kvm_cpuid_entry2, 40),
        (abi.kvm_userspace_memory_region, 32),
        (abi.kvm_pit_config, 64),
        (abi.kvm_irq_level, 8),
        (abi.kvm_run_io, 16),
    ],
)
def test_abi_struct_size_matches_kernel(struct: type[ctypes.Structure], size: int) -> None:
    assert ctypes.sizeof(struct) == size


def test_abi_kvm_run_exit_union_offsets() -> None:
    assert abi.kvm_run.exit_reason.offset == 8
    assert abi.kvm_run.u.offset == abi.KVM_RUN_HEADER_SIZE == 32
    assert abi.kvm_run_io.data_offset.offset == 8
    assert abi.kvm_run_mmio.is_write.offset == 20
    assert abi.kvm_run_internal.data.offset == 8


def test_abi_kvm_sregs_field_offsets() -> None:
    assert abi.kvm_sregs.tr.offset == 0x90
    assert abi.kvm_sregs.gdt.offset == 0xC0
    assert abi.kvm_sregs.efer.offset == 0x108
    assert abi.kvm_segment.type.offset == 0x0E


def test_abi_cpuid2_buffer_holds_nent_entries() -> None:
    buf = abi.cpuid2_buffer(3)
    assert len(buf) == 8 + 3 * 40
    entries = abi.cpuid2_entries(buf)
    entries[2].function = 0x40000000
    assert int.from_bytes(bytes(buf)[8 + 2 * 40 : 8 + 2 * 40 + 4], "little") == 0x40000000


def test_abi_ioc_size_over_14_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="14 bits"):
        abi._IOW(abi.KVMIO, 0x01, 1 << 14)


def test_abi_ioc_largest_size_is_accepted() -> None:
    assert abi._IOW(abi.KVMIO, 0x01, (1 << 14) - 1) == 0x7FFFAE01
