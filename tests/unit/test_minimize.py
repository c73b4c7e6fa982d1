"""The minimizer's memory bisection, with a fake boot that fails exactly above a planted
memory threshold and asks the real platform model whether QEMU can run a size.

Each fake refuses what `loader.platform.qemu_pc` refuses (a size off the 8 KiB
granule), and some also refuse sizes of their own; a refusal is no verdict, so it must
neither raise nor lower a bound: the minimizer still lands on the smallest size that
fails (within one granule of the threshold when nothing there is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.arch import Arch
from bootfuzz.case import (
    EARLIER_HARNESS_CMDLINES,
    HARNESS_CMDLINE,
    BootCase,
    DtOverrides,
    InitrdPlacement,
    InitrdSpec,
    Overrides,
    harness_cmdline,
    harness_cmdlines,
)
from bootfuzz.compression import Compression
from bootfuzz.errors import LayoutError
from bootfuzz.fuzz.minimize import (
    MAX_REFUSED_SIZES,
    MEMORY_GRANULE,
    Outcome,
    _Search,
    memory_granule,
    minimize,
)
from bootfuzz.fuzz.triage import Signature, signature
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.dt_image import parse_dt_image
from bootfuzz.loader.dt_plan import plan_dt_boot
from bootfuzz.loader.layout import GiB, KiB, MiB
from bootfuzz.loader.platform import QEMU_RAM_ALIGN, qemu_pc
from bootfuzz.transcript import GuestExit
from tests.dt_fakes import ARCHES, HOLES, FakeInitrd, fake_image
from tests.fakes import FakeResult, FakeTranscript

PANIC = "[    0.5] Kernel panic - not syncing: System is deadlocked on memory\n"
TARGET = Signature(("boot",), "Kernel panic - not syncing: System is deadlocked on memory")
FLOOR = 64 * MiB
START = 8 * GiB
#: The issue's case: failing above 1147 MiB, minimized from 8 GiB.
THRESHOLD = 1147 * MiB


FAILED = FakeResult(Verdict.FAIL, (OracleResult("boot", Verdict.FAIL, "agent", "panic"),),
                    parse_transcript(PANIC), GuestExit.RESET, FakeTranscript(PANIC))
PASSED = FakeResult(Verdict.PASS, (OracleResult("boot", Verdict.PASS, "agent", "agent"),),
                    parse_transcript(""), GuestExit.POWER_OFF, FakeTranscript(""))


@dataclass
class ThresholdBoot:
    """Fails with TARGET exactly when memory > *threshold*; refuses what QEMU pc refuses
    and whatever *refuses* says.  Records every size booted and every size refused."""

    threshold: int
    refuses: Callable[[int], bool] = lambda memory: False
    booted: list[int] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)

    def __call__(self, case: BootCase) -> FakeResult:
        try:
            qemu_pc(case.memory)  # the real rule: off the 8 KiB granule is refused
            if self.refuses(case.memory):
                raise LayoutError(f"memory {case.memory:#x} refused by this fake")
        except LayoutError:
            self.refused.append(case.memory)
            raise
        self.booted.append(case.memory)
        return FAILED if case.memory > self.threshold else PASSED


def case_with(memory: int) -> BootCase:
    return BootCase(kernel="k", memory=memory, cmdline=HARNESS_CMDLINE, initrd=None)


def smallest_failing(boot: ThresholdBoot) -> int:
    """The smallest granule multiple above the threshold the fake accepts."""
    m = (boot.threshold // MEMORY_GRANULE + 1) * MEMORY_GRANULE
    while boot.refuses(m):
        m += MEMORY_GRANULE
    return m


def test_the_granule_is_qemus() -> None:
    assert MEMORY_GRANULE == QEMU_RAM_ALIGN == 8 * KiB


def test_fake_fails_exactly_above_the_threshold() -> None:
    boot = ThresholdBoot(THRESHOLD)
    assert signature(boot(case_with(THRESHOLD + MEMORY_GRANULE))) == TARGET
    assert signature(boot(case_with(THRESHOLD))) is None


def test_lands_within_one_granule_of_the_threshold_from_8_gib() -> None:
    """The issue's case: 8 GiB failing above 1147 MiB once minimized to 4132 MiB."""
    boot = ThresholdBoot(THRESHOLD)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    assert THRESHOLD < done.case.memory <= THRESHOLD + 8 * KiB
    assert done.complete and done.rejected == 0 and not boot.refused
    assert all(m % MEMORY_GRANULE == 0 for m in boot.booted)
    assert done.result is not None and signature(done.result) == TARGET
    assert done.boots == len(boot.booted) <= 21  # one boot per halving of 8 GiB to 8 KiB


@settings(max_examples=60, deadline=None)
@given(threshold=st.integers(FLOOR, START - 1), start_pages=st.integers(0, 1))
def test_any_threshold_lands_within_one_granule(threshold: int, start_pages: int) -> None:
    """Any planted threshold, from a granule-aligned start or one a 4 KiB page off it."""
    start = START - start_pages * 4 * KiB
    boot = ThresholdBoot(threshold)
    done = minimize(case_with(start), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    if threshold >= align_start(start):  # nothing smaller than the start can fail
        assert done.case.memory == start
    else:
        assert threshold < done.case.memory <= threshold + 8 * KiB
    assert done.complete and not boot.refused  # never an off-granule candidate


def align_start(start: int) -> int:
    """The largest granule multiple below *start* (the first size that could be kept)."""
    return (start - 1) // MEMORY_GRANULE * MEMORY_GRANULE


def test_a_refused_first_midpoint_moves_no_bound() -> None:
    """The first midpoint is refused: no verdict, so the result is still the threshold
    (before, a refusal counted as "does not reproduce" and the lower bound climbed)."""
    first_mid = ((FLOOR + START) // 2) // MEMORY_GRANULE * MEMORY_GRANULE
    boot = ThresholdBoot(THRESHOLD, refuses=lambda m: m == first_mid)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    assert boot.refused == [first_mid] and done.rejected == 1
    assert THRESHOLD < done.case.memory <= THRESHOLD + 8 * KiB
    assert done.complete


def test_refusals_below_the_threshold_move_no_bound() -> None:
    """The loader refuses a band just below the threshold (as it would sizes too small
    for an override): those are unknown, not "passes", and the result is exact."""
    boot = ThresholdBoot(THRESHOLD, refuses=lambda m: THRESHOLD - 300 * MiB <= m <= THRESHOLD)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    assert boot.refused and done.rejected == len(boot.refused)
    assert THRESHOLD < done.case.memory <= THRESHOLD + 8 * KiB


def test_scattered_refusals_above_the_threshold_raise_no_bound() -> None:
    """Every third granule refused, everywhere: a refusal above the threshold taken for
    "does not reproduce" would push the result past it; as unknowns it stays exact."""
    boot = ThresholdBoot(THRESHOLD, refuses=lambda m: (m // MEMORY_GRANULE) % 3 == 0)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    assert any(m > THRESHOLD for m in boot.refused)
    assert done.case.memory == smallest_failing(boot) <= THRESHOLD + 2 * MEMORY_GRANULE
    assert done.boots <= 24  # a lone refused middle costs its neighbour, not a detour


def test_a_loader_floor_above_the_threshold_is_found_exactly() -> None:
    """The loader refuses everything below 2 GiB (an override that needs that much): the
    smallest size that runs fails, and that is the one kept."""
    boot = ThresholdBoot(THRESHOLD, refuses=lambda m: m < 2 * GiB)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    assert done.case.memory == smallest_failing(boot) == 2 * GiB
    assert done.complete and 0 < len(boot.refused) <= MAX_REFUSED_SIZES + 1


def test_refusals_above_the_threshold_raise_no_bound() -> None:
    """A refused band right above the threshold: the smallest size that fails and runs
    is the band's end, and that is what the minimizer keeps."""
    band_end = THRESHOLD + 200 * MiB
    boot = ThresholdBoot(THRESHOLD, refuses=lambda m: THRESHOLD < m <= band_end)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    assert done.case.memory == smallest_failing(boot) == band_end + MEMORY_GRANULE
    assert len(boot.refused) <= MAX_REFUSED_SIZES


@settings(max_examples=60, deadline=None)
@given(threshold=st.integers(FLOOR, 4 * GiB), band_start=st.integers(FLOOR, 6 * GiB),
       band_size=st.integers(MEMORY_GRANULE, 64 * MiB))
def test_a_refused_band_anywhere_never_gives_a_larger_result(
    threshold: int, band_start: int, band_size: int,
) -> None:
    """Whatever band the loader refuses, the result fails, runs, and is the smallest size
    that does, or lies within one granule above a size that was refused."""
    boot = ThresholdBoot(threshold,
                         refuses=lambda m: band_start <= m < band_start + band_size)
    done = minimize(case_with(START), TARGET, boot, max_boots=64, memory_floor=FLOOR)
    kept = done.case.memory
    assert kept > threshold and not boot.refuses(kept)
    below = kept - MEMORY_GRANULE
    assert kept == smallest_failing(boot) or below in boot.refused
    assert len(boot.refused) <= MAX_REFUSED_SIZES + 1  # the floor, then the bisection's


def test_search_outcomes_refused_is_unknown_and_remembered() -> None:
    boot = ThresholdBoot(THRESHOLD)
    s = _Search(boot, TARGET, max_boots=2, deadline=None)
    assert s.outcome(case_with(THRESHOLD + 4 * KiB)) is Outcome.UNKNOWN  # off the granule
    assert s.outcome(case_with(THRESHOLD + 4 * KiB)) is Outcome.UNKNOWN
    assert (s.rejected, s.boots) == (1, 0)  # asked once, remembered
    assert s.outcome(case_with(THRESHOLD + 8 * KiB)) is Outcome.REPRODUCES
    assert s.outcome(case_with(THRESHOLD)) is Outcome.OTHER
    assert s.outcome(case_with(THRESHOLD)) is Outcome.OTHER and s.boots == 2
    assert s.outcome(case_with(2 * THRESHOLD)) is Outcome.UNKNOWN  # budget spent: no verdict
    assert boot.booted == [THRESHOLD + 8 * KiB, THRESHOLD]


def test_budget_spent_mid_bisection_keeps_a_failing_size() -> None:
    boot = ThresholdBoot(THRESHOLD)
    done = minimize(case_with(START), TARGET, boot, max_boots=6, memory_floor=FLOOR)
    assert not done.complete and done.boots == 6
    assert done.case.memory > THRESHOLD and done.case.memory in (*boot.booted, START)


# ---- the harness's part of the command line -------------------------------------------------


def _fails_with_bad_token(case: BootCase) -> FakeResult:
    """Fails whenever "bad=1" is on the command line, whatever else is (so only the
    minimizer's own rule keeps the harness's options)."""
    return FAILED if "bad=1" in case.cmdline.split() else PASSED


def test_the_harness_options_of_an_earlier_version_stay_whole() -> None:
    """A case made before HARNESS_CMDLINE grew keeps its own harness part: replayed and
    minimized, it still boots with the options it was found with."""
    assert EARLIER_HARNESS_CMDLINES
    for earlier in EARLIER_HARNESS_CMDLINES:
        assert HARNESS_CMDLINE.startswith(earlier) and earlier != HARNESS_CMDLINE
    for harness in (*EARLIER_HARNESS_CMDLINES, HARNESS_CMDLINE):
        case = BootCase(kernel="k", memory=256 * MiB, cmdline=f"{harness} a=1 bad=1 b=2")
        done = minimize(case, TARGET, _fails_with_bad_token, max_boots=20, memory_floor=256 * MiB)
        assert done.case.cmdline == f"{harness} bad=1", harness


# --------------------------------------------------------------------------------------
# Device-tree cases: the same minimizer, QEMU virt's MiB granule, holes and DT overrides
# --------------------------------------------------------------------------------------

DT_THRESHOLD = 1234 * MiB + 5 * KiB  # between two MiB


@dataclass
class DtBoot:
    """Plans every candidate with the real device-tree loader (a fake Image and initrd):
    what it refuses is refused here.  Fails with TARGET when memory > DT_THRESHOLD and,
    with *needs_fault*, only while the DTB's initrd-end override is there."""

    needs_fault: bool = False
    booted: list[BootCase] = field(default_factory=list)

    def __call__(self, case: BootCase) -> FakeResult:
        plan_dt_boot(case, parse_dt_image(fake_image(case.arch)), FakeInitrd(0x3000))
        self.booted.append(case)
        faulty = case.dt.initrd_end is not None or not self.needs_fault
        return FAILED if case.memory > DT_THRESHOLD and faulty else PASSED


def dt_case(arch: Arch, **kw: object) -> BootCase:
    base = dict(kernel="k", memory=6 * GiB, initrd=InitrdSpec(3 * MiB, Compression.XZ, 77),
                arch=arch, backend="qemu-virt", mem_holes=HOLES[arch],
                initrd_placement=InitrdPlacement.LOW,
                cmdline=f"{harness_cmdline(arch)} loglevel=8 nokaslr",
                dt=DtOverrides(address_cells=2, size_cells=2, initrd_end=0x1234_5000))
    return BootCase(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ARCHES)
def test_a_device_tree_case_lands_within_one_mib_with_everything_else_gone(arch: Arch) -> None:
    boot = DtBoot()
    done = minimize(dt_case(arch), TARGET, boot, max_boots=60, memory_floor=160 * MiB)
    assert memory_granule(done.case) == MiB
    assert DT_THRESHOLD < done.case.memory <= DT_THRESHOLD + MiB
    assert done.case.memory % MiB == 0 and all(c.memory % MiB == 0 for c in boot.booted)
    assert done.case.dt == DtOverrides() and done.case.mem_holes == ()
    assert done.case.initrd_placement is InitrdPlacement.TOP
    assert done.case.cmdline == harness_cmdline(arch)  # the harness's line stays whole
    assert done.case.initrd == InitrdSpec(0, Compression.GZIP, 0)
    assert done.complete and signature(done.result) == TARGET  # type: ignore[arg-type]


def test_a_device_tree_fault_the_failure_needs_stays() -> None:
    boot = DtBoot(needs_fault=True)
    done = minimize(dt_case(Arch.ARM64), TARGET, boot, max_boots=60, memory_floor=160 * MiB)
    assert done.case.dt == DtOverrides(initrd_end=0x1234_5000)  # only the fault is left
    assert DT_THRESHOLD < done.case.memory <= DT_THRESHOLD + MiB


def test_an_earlier_device_tree_harness_line_stays_whole() -> None:
    """A case made before the device-tree line skipped initcalls keeps its own line."""
    for arch in ARCHES:
        earlier = harness_cmdlines(arch)[1]
        assert harness_cmdline(arch).startswith(earlier) and earlier != harness_cmdline(arch)
        case = BootCase(kernel="k", memory=256 * MiB, cmdline=f"{earlier} a=1 bad=1 b=2",
                        arch=arch, backend="qemu-virt")
        done = minimize(case, TARGET, _fails_with_bad_token, max_boots=20,
                        memory_floor=256 * MiB)
        assert done.case.cmdline == f"{earlier} bad=1", arch


def test_a_cancelled_minimization_boots_no_more() -> None:
    boot = DtBoot()
    calls = iter([False, False, True])
    done = minimize(dt_case(Arch.RISCV64), TARGET, boot, max_boots=60,
                    memory_floor=160 * MiB, cancelled=lambda: next(calls, True))
    assert not done.complete and len(boot.booted) <= 2


def test_pvh_start_info_fields_go_one_by_one_and_the_initrd_moves_to_the_top() -> None:
    """An x86 case whose failure needs one hvm_start_info override of two: the other goes
    (it stayed with the rest before: only "all overrides" was tried), and an initrd
    placed low goes back to the top when that fails the same way."""
    def boot(case: BootCase) -> FakeResult:
        names = [name for name, _ in case.overrides.start_info]
        return FAILED if "module0.paddr" in names else PASSED

    case = BootCase(kernel="k", memory=256 * MiB, cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(4096), initrd_placement=InitrdPlacement.LOW,
                    overrides=Overrides(start_info=(("flags", 1), ("module0.paddr", 0x1000))))
    done = minimize(case, TARGET, boot, max_boots=20, memory_floor=256 * MiB)
    assert done.case.overrides == Overrides(start_info=(("module0.paddr", 0x1000),))
    assert done.case.initrd_placement is InitrdPlacement.TOP
    assert "removed override start_info flags" in done.steps
