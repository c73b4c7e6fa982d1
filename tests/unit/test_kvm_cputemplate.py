"""The CPU templates' CPUID filtering, on hosts described as data (no /dev/kvm)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bootfuzz.case import CpuTemplate
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, AGENT_EXIT_VALUE
from bootfuzz.run.kvm.cpuid_check import RESULT_ADDR, cpuid_code, deviations
from bootfuzz.run.kvm.cputemplate import (
    BASELINE_BRAND,
    BASELINE_FEATURES,
    CPUID_FLAG_SIGNIFICANT_INDEX,
    VENDOR_AMD,
    VENDOR_INTEL,
    CpuidEntry,
    CpuTemplateError,
    baseline_cpuid,
    find,
    physical_address_bits,
    template_cpuid,
)

# Leaf 1 ECX bits the baseline hides.  source: Intel SDM vol. 2A, table 3-10.
SSE3, CX16, X2APIC, POPCNT, XSAVE, AVX, HYPERVISOR = 0, 13, 21, 23, 26, 28, 31


def vendor_words(vendor: str) -> tuple[int, int, int]:
    """(EBX, ECX, EDX) of leaf 0 for *vendor* (the string reads EBX, EDX, ECX)."""
    raw = vendor.encode()
    ebx, edx, ecx = (int.from_bytes(raw[i : i + 4], "little") for i in (0, 4, 8))
    return ebx, ecx, edx


def host(vendor: str = VENDOR_AMD, *, leaf1_ecx: int = 0, leaf1_edx: int = 0xFFFF_FFFF,
         ext_edx: int = 0xFFFF_FFFF, phys_bits: int = 48,
         extra: tuple[CpuidEntry, ...] = ()) -> tuple[CpuidEntry, ...]:
    """A host's supported CPUID: the leaves the baseline reads, plus *extra*."""
    ebx, ecx, edx = vendor_words(vendor)
    return (
        CpuidEntry(0, 0, 0, 0xD, ebx, ecx, edx),
        CpuidEntry(1, 0, 0, 0xB00F21, 0x1020800, leaf1_ecx, leaf1_edx),
        CpuidEntry(0x8000_0000, 0, 0, 0x8000_0021, ebx, ecx, edx),
        CpuidEntry(0x8000_0001, 0, 0, 0xB00F21, 0x4000_0000, 0x0040_0393, ext_edx),
        CpuidEntry(0x8000_0008, 0, 0, 0x3000 | phys_bits, 0x5002_0005, 0x7001, 0),
        *extra,
    )


#: What a rich host adds: XSAVE layout (leaf 0xD, per subleaf), leaf 7 features, KVM's leaves.
RICH_EXTRA = (
    CpuidEntry(7, 0, CPUID_FLAG_SIGNIFICANT_INDEX, 1, 0xF1BF_07AB, 0x405F_5F4E, 0xBC00_0010),
    CpuidEntry(0xD, 0, CPUID_FLAG_SIGNIFICANT_INDEX, 0xE7, 0x980, 0x2988, 0),
    CpuidEntry(0xD, 2, CPUID_FLAG_SIGNIFICANT_INDEX, 0x100, 0x240, 0, 0),
    CpuidEntry(0x4000_0000, 0, 0, 0x4000_0001, 0x4B4D564B, 0x564B4D56, 0x4D),
    CpuidEntry(0x4000_0001, 0, 0, 0x0100_7EFB, 0, 0, 0),
)
ALL_ECX = (1 << SSE3) | (1 << CX16) | (1 << X2APIC) | (1 << POPCNT) | (1 << XSAVE) | (1 << AVX)


def leaf(entries: tuple[CpuidEntry, ...], function: int, index: int = 0) -> CpuidEntry:
    found = find(entries, function, index)
    assert found is not None, f"no leaf {function:#x}"
    return found


def test_baseline_hides_what_a_rich_host_adds() -> None:
    """XSAVE, CX16, SSE3, AVX, x2APIC off; no leaf 7, 0xD or KVM leaves; the hypervisor bit on."""
    out = baseline_cpuid(host(leaf1_ecx=ALL_ECX, extra=RICH_EXTRA))
    assert leaf(out, 1).ecx == 1 << HYPERVISOR
    assert {e.function for e in out} == {0, 1, *range(0x8000_0000, 0x8000_0009)}
    assert leaf(out, 0).eax == 1  # the highest basic leaf: no 7, no 0xD
    assert leaf(out, 0x8000_0000).eax == 0x8000_0008


def test_baseline_is_the_same_on_a_rich_and_a_minimal_host() -> None:
    """The point of the template: what a guest sees does not depend on the host."""
    minimal = host(leaf1_ecx=1 << CX16, phys_bits=40)
    assert baseline_cpuid(host(leaf1_ecx=ALL_ECX, extra=RICH_EXTRA)) == baseline_cpuid(minimal)


@given(leaf1_ecx=st.integers(0, 2**32 - 1), leaf1_edx=st.integers(0, 2**32 - 1),
       ext_edx=st.integers(0, 2**32 - 1), phys_bits=st.integers(40, 52))
def test_baseline_never_depends_on_the_host_beyond_its_vendor(
    leaf1_ecx: int, leaf1_edx: int, ext_edx: int, phys_bits: int,
) -> None:
    """Any host that has the baseline's features gets the very same CPUID; any other is refused."""
    reference = baseline_cpuid(host())
    candidate = host(leaf1_ecx=leaf1_ecx, leaf1_edx=leaf1_edx, ext_edx=ext_edx,
                     phys_bits=phys_bits)
    has_all = all(
        (leaf1_edx if f.function == 1 else ext_edx) >> f.bit & 1 for f in BASELINE_FEATURES
    )
    if has_all:
        assert baseline_cpuid(candidate) == reference
    else:
        with pytest.raises(CpuTemplateError, match="does not offer"):
            baseline_cpuid(candidate)


def test_baseline_signature_is_family_15_model_6_stepping_1() -> None:
    eax = leaf(baseline_cpuid(host()), 1).eax
    family, model, stepping = eax >> 8 & 0xF, eax >> 4 & 0xF, eax & 0xF
    assert (family, model, stepping, eax >> 16) == (15, 6, 1, 0)


def test_baseline_leaf1_ebx_one_cpu_apic_id_0_clflush_64_bytes() -> None:
    ebx = leaf(baseline_cpuid(host()), 1).ebx
    assert (ebx >> 24, ebx >> 16 & 0xFF, (ebx >> 8 & 0xFF) * 8) == (0, 1, 64)


def test_baseline_features_golden() -> None:
    """Leaf 1 EDX and 0x80000001 EDX, bit for bit (docs/cpu-templates.md lists them)."""
    out = baseline_cpuid(host())
    assert leaf(out, 1).edx == 0x078B_FBFD  # fpu de pse ... sse sse2; no vme, no htt
    assert leaf(out, 0x8000_0001).edx == (1 << 11) | (1 << 20) | (1 << 29)  # syscall nx lm
    assert leaf(out, 0x8000_0001).ecx == 0  # no lahf_lm, no svm, no extended APIC space


def test_baseline_brand_string() -> None:
    out = baseline_cpuid(host())
    raw = b"".join(
        r.to_bytes(4, "little")
        for function in (0x8000_0002, 0x8000_0003, 0x8000_0004)
        for r in (leaf(out, function).eax, leaf(out, function).ebx, leaf(out, function).ecx,
                  leaf(out, function).edx)
    )
    assert raw.rstrip(b"\0").decode() == BASELINE_BRAND


def test_baseline_shows_40_physical_address_bits() -> None:
    assert physical_address_bits(baseline_cpuid(host(phys_bits=52))) == 40


@pytest.mark.parametrize("vendor", [VENDOR_AMD, VENDOR_INTEL])
def test_baseline_keeps_the_host_vendor(vendor: str) -> None:
    out = baseline_cpuid(host(vendor))
    assert (leaf(out, 0).ebx, leaf(out, 0).ecx, leaf(out, 0).edx) == vendor_words(vendor)


def test_baseline_on_intel_zeroes_what_amd_repeats() -> None:
    """AMD repeats the vendor in 0x80000000 and the signature in 0x80000001; Intel does not."""
    intel, amd = baseline_cpuid(host(VENDOR_INTEL)), baseline_cpuid(host(VENDOR_AMD))
    ext = leaf(intel, 0x8000_0000)
    assert (ext.ebx, ext.ecx, ext.edx) == (0, 0, 0)
    assert leaf(intel, 0x8000_0001).eax == 0
    assert leaf(amd, 0x8000_0001).eax == leaf(amd, 1).eax
    ext = leaf(amd, 0x8000_0000)
    assert (ext.ebx, ext.ecx, ext.edx) == vendor_words(VENDOR_AMD)


def test_baseline_refuses_a_host_without_sse2_naming_it() -> None:
    with pytest.raises(CpuTemplateError, match=r"does not offer sse2, which the baseline"):
        baseline_cpuid(host(leaf1_edx=0xFFFF_FFFF & ~(1 << 26)))


def test_baseline_refuses_a_host_without_long_mode_naming_it() -> None:
    with pytest.raises(CpuTemplateError, match=r"does not offer lm,"):
        baseline_cpuid(host(ext_edx=0xFFFF_FFFF & ~(1 << 29)))


def test_baseline_refuses_another_vendor() -> None:
    with pytest.raises(CpuTemplateError, match=r"'HygonGenuine'.*--cpu-template host"):
        baseline_cpuid(host("HygonGenuine"))


def test_baseline_refuses_fewer_physical_address_bits() -> None:
    with pytest.raises(CpuTemplateError, match="39 physical address bits"):
        baseline_cpuid(host(phys_bits=39))


def test_baseline_refuses_a_host_without_leaf_0() -> None:
    with pytest.raises(CpuTemplateError, match="no CPUID leaf 0"):
        baseline_cpuid(host()[1:])


def test_host_template_passes_the_host_through() -> None:
    rich = host(leaf1_ecx=ALL_ECX, extra=RICH_EXTRA)
    assert template_cpuid(CpuTemplate.HOST, rich) == rich


def test_template_cpuid_baseline_is_baseline_cpuid() -> None:
    assert template_cpuid(CpuTemplate.BASELINE, host()) == baseline_cpuid(host())


def test_find_honours_significant_index() -> None:
    entries = RICH_EXTRA
    assert leaf(entries, 0xD, 2).eax == 0x100
    assert find(entries, 0xD, 1) is None  # indexed leaf, subleaf absent
    plain = dataclasses.replace(RICH_EXTRA[3], flags=0)
    assert find((plain,), 0x4000_0000, 5) == plain  # not indexed: any subleaf


def test_cpuid_check_code_golden_for_one_leaf() -> None:
    """mov $1,%eax; xor %ecx,%ecx; cpuid; four stores; mov $v,%al; out %al,$port; hlt."""
    out = RESULT_ADDR.to_bytes(4, "little")
    assert cpuid_code((1,)) == (
        b"\xb8\x01\x00\x00\x00" b"\x31\xc9" b"\x0f\xa2" b"\xa3" + out
        + b"\x89\x1d" + (RESULT_ADDR + 4).to_bytes(4, "little")
        + b"\x89\x0d" + (RESULT_ADDR + 8).to_bytes(4, "little")
        + b"\x89\x15" + (RESULT_ADDR + 12).to_bytes(4, "little")
        + bytes((0xB0, AGENT_EXIT_VALUE, 0xE6, AGENT_EXIT_PORT, 0xF4))
    )


def test_cpuid_check_deviations_name_leaf_register_and_bits() -> None:
    want = (CpuidEntry(1, 0, 0, 0xF61, 0x10800, 0x8000_0000, 0x078B_FBFD),)
    seen = (CpuidEntry(1, 0, 0, 0xF61, 0x10800, 0x8000_2000, 0x078B_FBFD),)
    assert deviations(want, seen) == [
        "leaf 0x1 ecx: guest sees 0x80002000, template 0x80000000 (bits 0x00002000 differ)"]
    assert deviations(want, want) == []
