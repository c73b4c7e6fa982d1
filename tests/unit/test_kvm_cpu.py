"""CpuState -> KVM registers, against golden values (no /dev/kvm)."""

from __future__ import annotations

import pytest

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.errors import HarnessBug
from bootfuzz.guest.harness import RESET_VECTOR
from bootfuzz.loader import layout
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.platform import FIRMWARE_TOP_BASE
from bootfuzz.loader.x86 import FLAT_CODE32, FLAT_CODE64, FLAT_DATA, Cr0, Cr4, Efer, gdt_entry
from bootfuzz.run.kvm import abi
from bootfuzz.run.kvm.cpu import (
    Segment,
    decode_descriptor,
    firmware_reset_state,
    make_regs,
    make_sregs,
)

GDT32 = b"".join(w.to_bytes(8, "little") for w in (0, FLAT_CODE32, FLAT_CODE32, FLAT_DATA))
GDT64 = b"".join(w.to_bytes(8, "little") for w in (0, FLAT_CODE32, FLAT_CODE64, FLAT_DATA))


def state(mode: HandoffMode) -> CpuState:
    long_mode = mode is HandoffMode.LONG_64
    return CpuState(
        mode=mode, rip=0x1000200, rsi=0x7000, rbx=0x0123_4567_89AB_CDEF, rsp=0x8FF0,
        cr0=int(Cr0.PE | Cr0.ET | (Cr0.PG if long_mode else 0)),
        cr3=0x9000 if long_mode else 0, cr4=int(Cr4.PAE) if long_mode else 0,
        efer=int(Efer.LME) if long_mode else 0,
        gdt_base=layout.GDT_ADDR, gdt_limit=31, code_selector=0x10, data_selector=0x18,
    )


def test_cpu_decode_flat_code32_golden() -> None:
    assert decode_descriptor(GDT32, 0x10) == Segment(
        selector=0x10, base=0, limit=0xFFFFFFFF, type=0xB, s=1, dpl=0, present=1, avl=0,
        l=0, db=1, g=1)


def test_cpu_decode_flat_code64_has_l_and_not_db() -> None:
    seg = decode_descriptor(GDT64, 0x10)
    assert (seg.l, seg.db, seg.type, seg.limit) == (1, 0, 0xB, 0xFFFFFFFF)


def test_cpu_decode_data_segment_golden() -> None:
    seg = decode_descriptor(GDT32, 0x18)
    assert (seg.type, seg.s, seg.db, seg.g, seg.limit) == (0x3, 1, 1, 1, 0xFFFFFFFF)


def test_cpu_decode_byte_granular_base_and_limit() -> None:
    word = gdt_entry(0x93, 0x4, base=0x12345678, limit=0xABCDE)
    seg = decode_descriptor(b"\0" * 8 + word.to_bytes(8, "little"), 0x08)
    assert (seg.base, seg.limit, seg.g) == (0x12345678, 0xABCDE, 0)


def test_cpu_decode_selector_past_gdt_is_a_bug() -> None:
    with pytest.raises(HarnessBug, match="outside the 32-byte GDT"):
        decode_descriptor(GDT32, 0x20)


def test_cpu_decode_last_selector_in_gdt_is_accepted() -> None:
    assert decode_descriptor(GDT32, 0x18).selector == 0x18


def test_cpu_decode_null_selector_is_a_bug() -> None:
    with pytest.raises(HarnessBug, match="null entry"):
        decode_descriptor(GDT32, 0x00)


def test_cpu_sregs_protected32_golden() -> None:
    sregs = make_sregs(state(HandoffMode.PROTECTED_32), GDT32)
    assert (sregs.cs.selector, sregs.cs.db, sregs.cs.l, sregs.cs.type) == (0x10, 1, 0, 0xB)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        assert (seg.selector, seg.type, seg.present, seg.limit) == (0x18, 0x3, 1, 0xFFFFFFFF)
    assert (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) == (0x11, 0, 0, 0)
    assert (sregs.gdt.base, sregs.gdt.limit) == (0x500, 31)
    assert (sregs.idt.base, sregs.idt.limit) == (0, 0)


def test_cpu_sregs_long64_sets_lma() -> None:
    sregs = make_sregs(state(HandoffMode.LONG_64), GDT64)
    assert sregs.efer == Efer.LME | Efer.LMA == 0x500
    assert (sregs.cr0, sregs.cr3, sregs.cr4) == (0x80000011, 0x9000, 0x20)
    assert (sregs.cs.l, sregs.cs.db) == (1, 0)


def test_cpu_sregs_task_register_is_busy_tss32() -> None:
    tr = make_sregs(state(HandoffMode.PROTECTED_32), GDT32).tr
    assert (tr.type, tr.s, tr.present, tr.base, tr.limit, tr.unusable) == (0xB, 0, 1, 0, 0x67, 0)


def test_cpu_sregs_keep_base_apic_state() -> None:
    base = abi.kvm_sregs(apic_base=0xFEE00900)
    assert make_sregs(state(HandoffMode.PROTECTED_32), GDT32, base).apic_base == 0xFEE00900


def test_cpu_regs_protected32_truncates_to_32_bits() -> None:
    regs = make_regs(state(HandoffMode.PROTECTED_32))
    assert (regs.rip, regs.rsi, regs.rbx, regs.rsp, regs.rflags) == (
        0x1000200, 0x7000, 0x89ABCDEF, 0x8FF0, 0x2)
    assert regs.rax == regs.rdi == regs.rbp == 0


def test_cpu_regs_long64_keeps_64_bits() -> None:
    assert make_regs(state(HandoffMode.LONG_64)).rbx == 0x0123_4567_89AB_CDEF


def real16_state(code: int = 0x1020, data: int = 0x1000, rip: int = 0, rsp: int = 0xE000,
                 cr0: int = int(Cr0.ET)) -> CpuState:
    """The 16-bit protocol's jump: CS = X/16 + 0x20, IP = 0, DS..SS = X/16 (X = 0x10000)."""
    return CpuState(mode=HandoffMode.REAL_16, rip=rip, rsi=0, rbx=0, rsp=rsp, cr0=cr0, cr3=0,
                    cr4=0, efer=0, gdt_base=0, gdt_limit=0, code_selector=code,
                    data_selector=data)


def test_cpu_sregs_real16_segments_are_selector_times_16() -> None:
    sregs = make_sregs(real16_state(), b"")
    cs = sregs.cs
    assert (cs.selector, cs.base, cs.limit, cs.type, cs.s, cs.present, cs.db, cs.l, cs.g) == (
        0x1020, 0x10200, 0xFFFF, 0xB, 1, 1, 0, 0, 0)
    for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        assert (seg.selector, seg.base, seg.limit, seg.type, seg.db, seg.g) == (
            0x1000, 0x10000, 0xFFFF, 0x3, 0, 0)


def test_cpu_sregs_real16_has_the_ivt_and_no_protection() -> None:
    sregs = make_sregs(real16_state(), b"")
    assert (sregs.idt.base, sregs.idt.limit) == (0, 0x3FF)
    assert (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) == (0x10, 0, 0, 0)


def test_cpu_regs_real16_ip_and_sp() -> None:
    regs = make_regs(real16_state())
    assert (regs.rip, regs.rsp, regs.rflags) == (0, 0xE000, 0x2)


@pytest.mark.parametrize("bad", [
    {"cr0": int(Cr0.PE | Cr0.ET)}, {"code": 0x10000}, {"rip": 0x1_0000}, {"rsp": 0x1_0000},
], ids=["pe-set", "selector-over-16-bits", "ip-over-16-bits", "sp-over-16-bits"])
def test_cpu_real16_state_a_real_mode_cpu_cannot_hold_is_a_bug(bad: dict[str, int]) -> None:
    with pytest.raises(HarnessBug, match="real-mode CpuState"):
        make_sregs(real16_state(**bad), b"")


def test_cpu_firmware_reset_state_fetches_the_reset_vector_below_1m() -> None:
    """The first fetch is the image's last 16 bytes: 0xFFFFFFF0 in the top alias is
    0xFFFF0 in the alias at 0xF0000, which is where our reset state points."""
    cpu = firmware_reset_state()
    sregs = make_sregs(cpu, b"")
    fetch = sregs.cs.base + make_regs(cpu).rip
    assert fetch == 0xFFFF0
    assert fetch - layout.BIOS_AREA_START == RESET_VECTOR - FIRMWARE_TOP_BASE
    assert sregs.cr0 == 0x6000_0010  # CD, NW, ET: the reset value
