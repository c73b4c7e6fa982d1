"""Every dimension of the campaign's cases on the pinned kernels (issue 10 item 4): the
loader lays each case out so that every validity rule passes (no boot), and generated
cases booted with coverage pass every oracle, Hypothesis steering towards cases that
reach more kernel blocks (hypothesis.target)."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, target

from bootfuzz.case import BootCase
from bootfuzz.fuzz.campaign import read_kernels
from bootfuzz.fuzz.draws import CaseSpace, draw_case, initrd_size_bound, misfits
from bootfuzz.fuzz.strategies import campaign_cases
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.loader.layout import GiB, MiB
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.boot import UnbuiltInitrd, run_case

X86_KERNELS = ("debian-6.1-cloud", "debian-6.12-cloud", "debian-6.1-amd64")


@pytest.mark.parametrize("kernel", X86_KERNELS)
def test_every_generated_case_of_a_pinned_kernel_is_a_sound_layout(kernel: str) -> None:
    """500 cases of the campaign's space: every entry path the kernel has, every
    placement, format and correct-loader override; each plans and passes every rule."""
    limits = read_kernels((kernel,))[kernel].limits
    image = load_kernel_image(resolve_kernel(kernel))
    space = CaseSpace(kernels=((kernel, limits),))
    entries: Counter[str] = Counter()
    for i in range(500):
        case = draw_case(random.Random(i), space)
        assert misfits(space, case) == []
        entries[case.entry.value] += 1
        assert case.initrd is not None
        plan = plan_boot(case, image, qemu_pc(case.memory),
                         UnbuiltInitrd(initrd_size_bound(case.initrd)))
        bad = [f"{r.name}: {r.observed}" for r in check_layout(plan)
               if r.verdict is Verdict.FAIL]
        assert bad == [], (i, case)
    assert set(entries) == {e.value for e in limits.entries}


KERNEL = "debian-6.1-cloud"
BOOTS = settings(max_examples=3 if settings().max_examples <= 200 else 20, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.qemu
@pytest.mark.slow
@BOOTS
@given(case=campaign_cases(kernel=KERNEL,
                           limits=read_kernels((KERNEL,))[KERNEL].limits,
                           max_memory=5 * GiB, max_initrd=2 * MiB))
def test_generated_cases_with_coverage_pass_every_oracle(case: BootCase) -> None:
    """A campaign case on debian-6.1-cloud, booted with block coverage: every oracle
    passes; Hypothesis is told the blocks it reached, so it looks for more."""
    run_dir = Path(tempfile.mkdtemp(prefix="bootfuzz-guided-"))
    result = run_case(case, run_dir, timeout=240, coverage=True)
    if result.coverage is not None:
        target(float(len(result.coverage.blocks)), label="kernel blocks")
    failed = [f"{r.name}: expected {r.expected!r}, observed {r.observed!r}"
              for r in result.oracles if r.verdict is not Verdict.PASS and r.asked]
    assert result.verdict is Verdict.PASS, "\n".join(failed) + f"\nlog: {run_dir}"
