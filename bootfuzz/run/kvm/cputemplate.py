"""CPU templates: the CPUID our VMM shows the guest, pinned so a case behaves alike on any host.

Without a template a VMM hands the guest all of KVM_GET_SUPPORTED_CPUID, which
differs from host to host (CPU generation, host kernel, nested or not): the
kernel then picks other code paths (alternatives, errata, FPU layout) and a
reproducer recorded on one machine can behave differently on the next.  As
Firecracker's CPU templates do, a template fixes what the guest sees; unlike
them ours fixes every value rather than masking the host's, and it refuses a
host that lacks a feature the template shows (one message naming the
features), so a run either sees exactly the template or does not start.

``baseline`` (the default) is documented feature by feature in
docs/cpu-templates.md; its values never change under that name (a changed CPU
is a new template name, so old reproducers keep their meaning).  ``host`` is
the host's whole supported CPUID, as before templates existed.  Pure: the
caller reads the host's CPUID (bootfuzz.run.kvm.vm) and hands it in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bootfuzz.case import CpuTemplate
from bootfuzz.errors import BackendError

#: Leaf 0 / 0x80000000 vendor strings (EBX, EDX, ECX read in that order).
#: source: Intel SDM vol. 2A, CPUID leaf 0; AMD APM vol. 3, CPUID Fn0000_0000.
VENDOR_INTEL = "GenuineIntel"
VENDOR_AMD = "AuthenticAMD"
LEAF_VENDOR = 0x0
LEAF_FEATURES = 0x1
LEAF_EXT_MAX = 0x8000_0000
LEAF_EXT_FEATURES = 0x8000_0001
LEAF_BRAND = (0x8000_0002, 0x8000_0003, 0x8000_0004)
LEAF_ADDRESS_SIZES = 0x8000_0008
#: KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic, the kernel's spelling): the entry is per subleaf.
#: source: arch/x86/include/uapi/asm/kvm.h
CPUID_FLAG_SIGNIFICANT_INDEX = 1 << 0
REGISTERS = ("eax", "ebx", "ecx", "edx")


class CpuTemplateError(BackendError):
    """This host's KVM cannot show the guest the template's CPU."""

    component = "cpu template"


@dataclass(frozen=True)
class CpuidEntry:
    """One struct kvm_cpuid_entry2: what CPUID answers for (function, index)."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int

    def register(self, name: str) -> int:
        value: int = getattr(self, name)
        return value


@dataclass(frozen=True)
class Feature:
    """A CPUID feature bit: leaf (subleaf 0), register, bit; the name /proc/cpuinfo uses."""

    name: str
    function: int
    register: str
    bit: int


def _features(function: int, register: str, bits: dict[int, str]) -> tuple[Feature, ...]:
    return tuple(Feature(name, function, register, bit) for bit, name in sorted(bits.items()))


#: The baseline's feature bits, each shown to the guest and each required of the host.
#: Leaf 1 EDX: the x86-64 base ISA (FPU, CX8, CMOV, MMX, FXSR, SSE, SSE2; psABI
#: x86-64 "baseline") and the system features a PC kernel uses (paging extensions,
#: TSC, MSRs, the local APIC, MTRR/PAT, machine check, CLFLUSH, SYSENTER).  VME is
#: left out: only 32-bit kernels run vm86.  Leaf 1 ECX: nothing (SSE3, CX16, XSAVE,
#: POPCNT... are x86-64-v2 and later).  Leaf 0x80000001 EDX: long mode, NX, SYSCALL.
#: source: Intel SDM vol. 2A, CPUID table 3-11 (leaf 1 EDX); AMD APM vol. 3,
#: Fn8000_0001_EDX; the x86-64 psABI, "Micro-architecture levels".
BASELINE_FEATURES: tuple[Feature, ...] = (
    *_features(LEAF_FEATURES, "edx", {
        0: "fpu", 2: "de", 3: "pse", 4: "tsc", 5: "msr", 6: "pae", 7: "mce", 8: "cx8",
        9: "apic", 11: "sep", 12: "mtrr", 13: "pge", 14: "mca", 15: "cmov", 16: "pat",
        17: "pse36", 19: "clflush", 23: "mmx", 24: "fxsr", 25: "sse", 26: "sse2",
    }),
    *_features(LEAF_EXT_FEATURES, "edx", {11: "syscall", 20: "nx", 29: "lm"}),
)
#: Leaf 1 ECX bit 31: "a hypervisor is present".  Software-defined (KVM shows it
#: whatever the silicon), so it is set without asking the host.  source: Intel SDM
#: vol. 2A, table 3-10 (bit 31 "not used", reserved for hypervisors); Linux
#: arch/x86/include/asm/cpufeatures.h, X86_FEATURE_HYPERVISOR.
HYPERVISOR_BIT = 1 << 31

#: Family 15, model 6, stepping 1 (EAX = 0x00000F61): a generic x86-64 with no
#: model-specific paths in Linux beyond its oldest ones (K8 and NetBurst, whose MSR
#: accesses are the *_safe kind), the signature QEMU's generic KVM CPU model shows,
#: so kernels meet it daily.  The vendor stays the host's: KVM runs guest code on
#: the host's silicon, and vendor-specific instructions (SYSENTER in long mode,
#: VMCALL/VMMCALL) follow it.  source: Intel SDM vol. 2A, figure 3-6 (version
#: information); Linux arch/x86/kernel/cpu/amd.c init_amd_k8, intel.c early_init_intel.
BASELINE_FAMILY = 0xF
BASELINE_MODEL = 0x6
BASELINE_STEPPING = 0x1
BASELINE_SIGNATURE = (BASELINE_FAMILY << 8) | (BASELINE_MODEL << 4) | BASELINE_STEPPING
#: Leaf 1 EBX: CLFLUSH line size 8 * 8 = 64 bytes (bits 15:8), one logical
#: processor (23:16), initial APIC ID 0 (31:24): our one vCPU.
CLFLUSH_LINE_QWORDS = 8
BASELINE_LEAF1_EBX = (1 << 16) | (CLFLUSH_LINE_QWORDS << 8)
#: Leaf 0x80000008 EAX: 40 physical and 48 linear address bits, as TCG's default
#: CPU shows (so both backends' guests agree); a host with fewer physical bits
#: cannot back it.  source: AMD APM vol. 3, Fn8000_0008_EAX.
BASELINE_PHYS_BITS = 40
BASELINE_LINEAR_BITS = 48
BASELINE_BRAND = "bootfuzz baseline x86-64 CPU"
BRAND_BYTES = 48
#: The highest basic and extended leaves the baseline answers (leaf 0 EAX,
#: 0x80000000 EAX): no leaf 7 features, no XSAVE leaf 0xD, no topology leaves.
BASELINE_MAX_BASIC = LEAF_FEATURES
BASELINE_MAX_EXTENDED = LEAF_ADDRESS_SIZES


def _vendor(entries: Sequence[CpuidEntry]) -> str:
    leaf = find(entries, LEAF_VENDOR)
    if leaf is None:
        raise CpuTemplateError("the host's KVM reports no CPUID leaf 0 (no vendor)")
    return b"".join(r.to_bytes(4, "little") for r in (leaf.ebx, leaf.edx, leaf.ecx)).decode(
        "ascii", "replace")


def find(entries: Sequence[CpuidEntry], function: int, index: int = 0) -> CpuidEntry | None:
    """The entry answering CPUID (*function*, *index*), or None."""
    for e in entries:
        if e.function == function and (
            e.index == index or not e.flags & CPUID_FLAG_SIGNIFICANT_INDEX
        ):
            return e
    return None


def has_feature(entries: Sequence[CpuidEntry], feature: Feature) -> bool:
    leaf = find(entries, feature.function)
    return leaf is not None and bool(leaf.register(feature.register) >> feature.bit & 1)


def _bits(function: int, register: str) -> int:
    value = 0
    for f in BASELINE_FEATURES:
        if (f.function, f.register) == (function, register):
            value |= 1 << f.bit
    return value


def _brand_entries(brand: str) -> list[CpuidEntry]:
    raw = brand.encode("ascii").ljust(BRAND_BYTES, b"\0")
    words = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, BRAND_BYTES, 4)]
    return [CpuidEntry(leaf, 0, 0, *words[4 * n : 4 * n + 4])
            for n, leaf in enumerate(LEAF_BRAND)]


def baseline_cpuid(host: Sequence[CpuidEntry]) -> tuple[CpuidEntry, ...]:
    """The baseline template's CPUID on a host whose KVM supports *host*.

    Every value is the template's; only the vendor string comes from the host.
    Raises CpuTemplateError when the host cannot back it (another vendor, a
    feature or physical address bits it lacks).
    """
    vendor = _vendor(host)
    if vendor not in (VENDOR_INTEL, VENDOR_AMD):
        raise CpuTemplateError(
            f"the baseline CPU template knows {VENDOR_INTEL} and {VENDOR_AMD} hosts, this one "
            f"is {vendor!r}: run with --cpu-template host")
    missing = [f.name for f in BASELINE_FEATURES if not has_feature(host, f)]
    if missing:
        raise CpuTemplateError(
            f"this host's KVM does not offer {', '.join(missing)}, which the baseline CPU "
            "template shows the guest: run with --cpu-template host")
    sizes = find(host, LEAF_ADDRESS_SIZES)
    host_phys = 0 if sizes is None else sizes.eax & 0xFF
    if host_phys < BASELINE_PHYS_BITS:
        raise CpuTemplateError(
            f"this host's CPU has {host_phys} physical address bits, the baseline CPU "
            f"template shows {BASELINE_PHYS_BITS}: run with --cpu-template host")
    leaf0 = find(host, LEAF_VENDOR)
    assert leaf0 is not None  # _vendor found it
    amd = vendor == VENDOR_AMD
    # AMD repeats the vendor in 0x80000000 and the signature in 0x80000001 EAX;
    # Intel leaves both zero.  source: AMD APM vol. 3, Fn8000_0000, Fn8000_0001_EAX.
    ext_vendor = (leaf0.ebx, leaf0.ecx, leaf0.edx) if amd else (0, 0, 0)
    return (
        CpuidEntry(LEAF_VENDOR, 0, 0, BASELINE_MAX_BASIC, leaf0.ebx, leaf0.ecx, leaf0.edx),
        CpuidEntry(LEAF_FEATURES, 0, 0, BASELINE_SIGNATURE, BASELINE_LEAF1_EBX,
                   _bits(LEAF_FEATURES, "ecx") | HYPERVISOR_BIT, _bits(LEAF_FEATURES, "edx")),
        CpuidEntry(LEAF_EXT_MAX, 0, 0, BASELINE_MAX_EXTENDED, *ext_vendor),
        CpuidEntry(LEAF_EXT_FEATURES, 0, 0, BASELINE_SIGNATURE if amd else 0, 0,
                   _bits(LEAF_EXT_FEATURES, "ecx"), _bits(LEAF_EXT_FEATURES, "edx")),
        *_brand_entries(BASELINE_BRAND),
        # 0x80000005..7 (caches, TLBs, power management): all zero, nothing to
        # describe that would hold on every host.
        *(CpuidEntry(leaf, 0, 0, 0, 0, 0, 0) for leaf in (0x8000_0005, 0x8000_0006,
                                                           0x8000_0007)),
        CpuidEntry(LEAF_ADDRESS_SIZES, 0, 0, BASELINE_LINEAR_BITS << 8 | BASELINE_PHYS_BITS,
                   0, 0, 0),
    )


def template_cpuid(template: CpuTemplate, host: Sequence[CpuidEntry]) -> tuple[CpuidEntry, ...]:
    """The CPUID a guest of *template* sees on a host whose KVM supports *host*."""
    if template is CpuTemplate.HOST:
        return tuple(host)
    if template is CpuTemplate.BASELINE:
        return baseline_cpuid(host)
    raise CpuTemplateError(f"unknown CPU template {template!r}")


def physical_address_bits(entries: Sequence[CpuidEntry]) -> int | None:
    """What leaf 0x80000008 tells the guest, or None without that leaf."""
    sizes = find(entries, LEAF_ADDRESS_SIZES)
    return None if sizes is None else sizes.eax & 0xFF
