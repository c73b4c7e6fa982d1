"""Every dimension of the campaign's cases on the pinned kernels (issue 10 item 4): the
loader lays each case out so that every validity rule passes (no boot), and generated
cases booted with coverage pass every oracle, Hypothesis steering towards cases that
reach more kernel blocks (hypothesis.target); a guided campaign killed with SIGKILL and
resumed loses no corpus entry and no finding."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, target

from bootfuzz.case import BootCase
from bootfuzz.fuzz.campaign import read_kernels
from bootfuzz.fuzz.caselog import read_cases
from bootfuzz.fuzz.corpus import read_entries
from bootfuzz.fuzz.coverage_log import COVERAGE_LOG_NAME, read_coverage_log
from bootfuzz.fuzz.draws import CaseSpace, draw_case, initrd_size_bound, misfits
from bootfuzz.fuzz.state import load_state
from bootfuzz.fuzz.strategies import campaign_cases
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.loader.layout import GiB, MiB
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.boot import UnbuiltInitrd, run_case
from tests.processes import marked, new_mark, poll, reaped, sigkill_leaves_nothing

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


def _fuzz(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "fuzz",
            "--kernel", KERNEL, "--coverage", "--jobs", "2", "--max-cases", "6",
            "--time", "20m", "--out", str(out), "--mem-min", "160M", "--mem-max", "1G",
            "--max-initrd", "2M", "--minimize-boots", "0", "--timeout", "240", *extra]


@pytest.mark.qemu
@pytest.mark.slow
def test_guided_campaign_sigkilled_and_resumed_loses_no_entry_and_no_finding(
    tmp_path: Path,
) -> None:
    """``bootfuzz fuzz --coverage`` (two jobs, two QEMUs with the coverage plugin) killed
    with SIGKILL once its corpus has an entry: nothing of it is left running; --resume
    finishes its six cases, each on record once; every corpus entry written before the
    kill is there unchanged, with the kernel blocks it added, and every failure logged
    before it is a finding."""
    env = new_mark()
    corpus = tmp_path / "campaign" / "corpus"
    log = tmp_path / "campaign" / "cases.jsonl"
    proc = subprocess.Popen(_fuzz(tmp_path, "--seed", "2025"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with reaped(env):
        def entry_and_two_running() -> bool:
            assert proc.poll() is None, "the campaign ended before it was killed"
            qemus = [c for _, c in marked(env) if "qemu" in c.split(" ", 1)[0]]
            return corpus.is_dir() and any(corpus.glob("*.json")) and len(qemus) == 2

        assert poll(entry_and_two_running, 900, step=0.2), marked(env)
        assert sigkill_leaves_nothing(proc, env), marked(env)
    before = {p.name: p.read_bytes() for p in corpus.glob("*.json")}
    logged = read_cases(log)
    assert before and len(logged) < 6

    resumed = subprocess.run(_fuzz(tmp_path, "--resume"), env=env, capture_output=True,
                             text=True, timeout=1800)
    assert resumed.returncode in (0, 1), resumed.stderr
    after = {p.name: p.read_bytes() for p in corpus.glob("*.json")}
    assert before.items() <= after.items()
    records = read_cases(log)
    assert sorted(r.index for r in records) == list(range(6))
    entries = read_entries(corpus)
    assert entries[0].new.blocks and all(e.blocks for e in entries)
    state = load_state(tmp_path / "campaign" / "state.json")
    assert {r.signature for r in logged if r.status == "fail"} <= set(state.findings)
    assert not marked(env)
    # The coverage log (what `bootfuzz coverage report` draws): each kernel and entry
    # path's first line holds that case's every block, no block is logged twice.
    coverage = read_coverage_log(tmp_path / "campaign" / COVERAGE_LOG_NAME)
    assert coverage and {c.case for c in coverage} <= set(range(6))
    first = coverage[0]
    assert first.new_blocks and len(first.new_blocks) == first.blocks
    assert "e820__memory_setup" in first.new_functions
    for key in {(c.kernel_sha256, c.entry) for c in coverage}:
        logged_blocks = [b for c in coverage if (c.kernel_sha256, c.entry) == key
                         for b in c.new_blocks]
        assert len(logged_blocks) == len(set(logged_blocks))
