"""One definition of what a case can be (bootfuzz.fuzz.draws): the campaign's generator,
its mutator and the Hypothesis strategy draw the same rules, every dimension is reached,
and every case drawn without --overrides is laid out by our loader so that every
validity rule passes (a layout of a correct loader)."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
from hypothesis import Phase, find, given, settings

from bootfuzz.case import BootCase, EntryProtocol, InitrdPlacement
from bootfuzz.fuzz.draws import (
    DIMENSION_NAMES,
    CaseSpace,
    KernelLimits,
    Source,
    draw_case,
    e820_shapes,
    initrd_size_bound,
    misfits,
    redraw,
)
from bootfuzz.fuzz.generate import DEBIAN_CLOUD_LIMITS, GeneratorConfig, generate_case
from bootfuzz.fuzz.mutate import mutable_dimensions, mutate
from bootfuzz.fuzz.strategies import DrawSource, campaign_cases
from bootfuzz.judge.e820_model import sanitize
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import FOUR_GIB, GiB, MiB
from bootfuzz.loader.placement import plan_e820
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from tests.fakes import FakeInitrd, fake_bzimage

#: A bzImage stand-in: the 64-bit, 32-bit and 16-bit entries need no vmlinux.
IMAGE = parse_kernel_image(fake_bzimage(), "fake")
FAKE_ENTRIES = (EntryProtocol.BOOT64, EntryProtocol.BOOT32, EntryProtocol.REAL16)
LIMITS = dataclasses.replace(KernelLimits.of(IMAGE), entries=FAKE_ENTRIES)
SPACE = CaseSpace(kernels=(("fake", LIMITS),), max_memory=8 * GiB)


def _layout_failures(case: BootCase) -> list[str]:
    """The validity rules the loader's plan of *case* fails, for the initrd's smallest
    and largest built size (the plan refuses nothing: a refusal raises)."""
    bad = []
    assert case.initrd is not None
    for size in (max(case.initrd.size - case.initrd.size // 64, 1),
                 initrd_size_bound(case.initrd)):
        plan = plan_boot(case, IMAGE, qemu_pc(case.memory), FakeInitrd(size))
        bad += [f"{r.name}: {r.observed}" for r in check_layout(plan)
                if r.verdict is Verdict.FAIL]
    return bad


def test_random_is_a_source() -> None:
    src: Source = random.Random(1)  # mypy checks the protocol; the draw runs on it
    assert draw_case(src, SPACE).kernel == "fake"


def test_every_case_without_overrides_is_a_sound_layout() -> None:
    """Entry paths, placements, formats, relocation, a command line above 4 GiB,
    setup_data chains and E820 shapes all drawn, and every plan passes every rule."""
    seen: Counter[str] = Counter()
    for i in range(600):
        case = draw_case(random.Random(i), SPACE)
        assert misfits(SPACE, case) == []
        assert _layout_failures(case) == [], case
        ov = case.overrides
        seen.update([case.entry.value, case.initrd_placement.value])
        seen.update(k for k, on in (
            ("split", case.initrd is not None and case.initrd.split),
            ("raw", case.initrd is not None and case.initrd.raw),
            ("relocated", ov.kernel_load is not None),
            ("cmdline>4G", ov.cmdline_addr is not None and ov.cmdline_addr >= FOUR_GIB),
            ("setup_data", bool(ov.setup_data)), ("e820", ov.e820 is not None)) if on)
    for what in ("64", "32", "16", "top", "low", "high", "split", "raw", "relocated",
                 "cmdline>4G", "setup_data", "e820"):
        assert seen[what] >= 3, (what, seen)


def test_e820_shapes_keep_the_ram_of_the_platform() -> None:
    for memory in (256 * MiB, 4 * GiB, 6 * GiB):
        ours = sanitize(plan_e820(qemu_pc(memory)))
        assert ours is not None
        ram = [e for e in ours if e.type == 1]
        for name, table in e820_shapes(memory):
            kept = sanitize(table)
            assert kept is not None and [e for e in kept if e.type == 1] == ram, name


def test_overrides_space_draws_wild_layouts_too() -> None:
    wild = dataclasses.replace(SPACE, overrides=True)
    cases = [draw_case(random.Random(i), wild) for i in range(200)]
    assert sum(bool(c.overrides.fields) for c in cases) > 10
    assert sum(c.overrides.initrd_addr is not None for c in cases) > 10


@pytest.mark.parametrize("dimension", mutable_dimensions(SPACE))
def test_a_mutant_changes_one_dimension_and_stays_sound(dimension: str) -> None:
    """Redrawing one dimension keeps the ones before it and every later one that still
    fits; the mutant is as sound as a fresh case."""
    changed = 0
    for i in range(150):
        rng = random.Random(i)
        parent = draw_case(rng, SPACE)
        child = mutate(rng, SPACE, parent, dimension)
        assert misfits(SPACE, child) == [] and _layout_failures(child) == []
        changed += child != parent
        if dimension in DIMENSION_NAMES:
            at = DIMENSION_NAMES.index(dimension)
            if at > DIMENSION_NAMES.index("memory"):
                assert child.memory == parent.memory
            if at > DIMENSION_NAMES.index("entry"):
                assert child.entry == parent.entry
    assert changed > (20 if dimension == "cmdline-address" else 50)  # that one: > 3 GiB


def test_mutable_dimensions_leave_overrides_out_of_a_sound_campaign() -> None:
    assert "overrides" not in mutable_dimensions(SPACE)
    assert "overrides" in mutable_dimensions(dataclasses.replace(SPACE, overrides=True))


def test_redraw_of_the_entry_settles_a_high_initrd() -> None:
    """An initrd above 4 GiB needs a 64-bit entry: moving to 32 redraws the placement."""
    rng = random.Random(0)
    case = next(c for c in (draw_case(rng, SPACE) for _ in range(2000))
                if c.initrd_placement is InitrdPlacement.HIGH)
    for seed in range(40):
        child = redraw(random.Random(seed), SPACE, case, "entry")
        if child.entry is not EntryProtocol.BOOT64:
            assert child.initrd_placement is not InitrdPlacement.HIGH
        assert misfits(SPACE, child) == []


def test_generator_is_draw_case_over_a_seeded_random() -> None:
    config = GeneratorConfig(kernels=(("fake", LIMITS),), seed=5)
    assert generate_case(config, 3) == draw_case(random.Random("bootfuzz:5:3"), config)


@settings(max_examples=200, database=None, deadline=None)
@given(campaign_cases(limits=LIMITS, max_initrd=SPACE.max_initrd))
def test_campaign_cases_strategy_is_sound(case: BootCase) -> None:
    assert misfits(SPACE, case) == [] and _layout_failures(case) == []


def test_campaign_cases_shrink_to_the_plainest_case() -> None:
    """Hypothesis shrinks the campaign's rules: rare dimensions drop away, so the
    smallest case of a kernel with the 16-bit entry only is that entry and nothing
    else.  (Searching for a 16-bit case among all entries depended on Hypothesis's
    integer bias, which shifts with the constants of the test modules loaded before.)"""
    only16 = dataclasses.replace(LIMITS, entries=(EntryProtocol.REAL16,))
    found = find(campaign_cases(limits=only16),
                 lambda c: c.entry is EntryProtocol.REAL16 and c.initrd is not None,
                 settings=settings(database=None, max_examples=2000, derandomize=True,
                                   phases=(Phase.generate, Phase.shrink)))
    assert found.overrides.empty and found.initrd_placement is InitrdPlacement.TOP
    assert found.initrd is not None and not (found.initrd.split or found.initrd.raw)


def test_draw_source_follows_the_source_contract() -> None:
    @settings(max_examples=50, database=None)
    @given(campaign_cases())
    def never_fails(case: BootCase) -> None:
        assert case.memory % 8192 == 0

    never_fails()
    values = iter([0, 3])  # what Hypothesis would draw for each call's strategy
    src = DrawSource(lambda strategy: next(values))
    assert src.random() == pytest.approx(1.0, abs=1e-9)  # 0, the shrunk draw: rare off
    assert src.randrange(10, 20, 2) == 16
    assert DEBIAN_CLOUD_LIMITS.entries == tuple(EntryProtocol)
