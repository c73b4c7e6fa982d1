"""The CPU template on a real /dev/kvm: CPUID executed inside a guest of our VMM.

The guest (bootfuzz.run.kvm.cpuid_check) runs CPUID on each leaf and stores the
registers; these tests compare them with the template.  Leaf 0 and the extended
leaves are answered from the table we set on every KVM seen so far; leaf 1's
feature bits are too on hardware KVM, while the emulating KVM of this project's CI
hosts adds its own (docs/cpu-templates.md), which bootfuzz doctor reports.
"""

from __future__ import annotations

import pytest

from bootfuzz.case import CpuTemplate
from bootfuzz.run.doctor import kvm_status
from bootfuzz.run.kvm.cpuid_check import guest_cpuid, template_deviations
from bootfuzz.run.kvm.cputemplate import CpuidEntry, find, template_cpuid
from bootfuzz.run.kvm.vm import Kvm

pytestmark = [pytest.mark.kvm, pytest.mark.usefixtures("any_kvm")]


def expected(template: CpuTemplate) -> tuple[CpuidEntry, ...]:
    kvm = Kvm()
    try:
        return template_cpuid(template, kvm.supported_cpuid_entries())
    finally:
        kvm.close()


def test_kvm_guest_sees_the_baseline_vendor_leaf_and_extended_leaves() -> None:
    """Leaf 0 says 1 is the highest basic leaf (the host's KVM says far more) and the
    extended leaves, the brand string and the 40 address bits are the template's:
    the VMM installed the template, not the host's CPUID."""
    want = tuple(e for e in expected(CpuTemplate.BASELINE) if e.function != 1)
    seen = guest_cpuid(CpuTemplate.BASELINE, tuple(e.function for e in want))
    assert seen == want


def test_kvm_guest_sees_the_baseline_signature() -> None:
    """Leaf 1 EAX/EBX: family 15 model 6 stepping 1, one CPU, APIC ID 0."""
    (seen,) = guest_cpuid(CpuTemplate.BASELINE, (1,))
    want = find(expected(CpuTemplate.BASELINE), 1)
    assert want is not None
    assert (seen.eax, seen.ebx) == (want.eax, want.ebx) == (0xF61, 0x10800)


def test_kvm_host_template_shows_the_host_kvm_leaf_0() -> None:
    want = find(expected(CpuTemplate.HOST), 0)
    assert want is not None
    (seen,) = guest_cpuid(CpuTemplate.HOST, (0,))
    assert seen == want


def test_kvm_hardware_shows_exactly_the_baseline() -> None:
    """Every register of every leaf the template defines, where KVM is hardware."""
    if not kvm_status().hardware:
        pytest.skip("needs hardware KVM; this emulating KVM answers leaf 1's bits itself "
                    f"({'; '.join(template_deviations(CpuTemplate.BASELINE)) or 'none'})")
    assert template_deviations(CpuTemplate.BASELINE) == ()
