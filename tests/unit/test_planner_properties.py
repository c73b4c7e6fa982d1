"""Properties of the pure planner over generated cases (bootfuzz.fuzz.strategies), on a fake
bzImage with Debian 6.1 cloud's numbers: thousands of cases in seconds."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.abi.bootparam import BOOT_PARAMS, E820_MAX_ENTRIES_ZEROPAGE, E820_TABLE_OFFSET
from bootfuzz.abi.e820 import E820Entry, unpack_table
from bootfuzz.case import BootCase, Overrides
from bootfuzz.errors import ConfigError
from bootfuzz.fuzz.generate import initrd_size_bound
from bootfuzz.fuzz.strategies import boot_cases, e820_tables, kernel_limits, setup_header_values
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader import entry_cpu, x86
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from tests.fakes import FakeInitrd, fake_bzimage

IMAGE = parse_kernel_image(fake_bzimage(init_size=0x3378000))
LIMITS = kernel_limits(IMAGE)
#: Planning is cheap: many more examples than the profile's default, in a few seconds.
MANY = settings(max_examples=max(1000, settings().max_examples), deadline=None)
SOME = settings(max_examples=max(300, settings().max_examples), deadline=None)
#: Every integer field of boot_params, not only the writable header fields.
INT_FIELDS = tuple(f.name for f in BOOT_PARAMS if not f.raw)


@pytest.fixture(autouse=True, scope="module")
def _cached_page_tables() -> Iterator[None]:
    """identity_page_tables is pure and takes most of a plan's time: cache it here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(entry_cpu, "identity_page_tables",
                   functools.lru_cache(maxsize=None)(x86.identity_page_tables))
        yield


def plan_for(case: BootCase, initrd_size: int | None = None) -> BootPlan:
    """Plan *case* with an initrd of the largest size its spec can build to."""
    initrd = None
    if case.initrd is not None:
        initrd = FakeInitrd(initrd_size if initrd_size is not None
                            else initrd_size_bound(case.initrd))
    return plan_boot(case, IMAGE, qemu_pc(case.memory), initrd)


def failing_rules(plan: BootPlan) -> dict[str, str]:
    return {r.name: r.observed for r in check_layout(plan) if r.verdict is not Verdict.PASS}


@MANY
@given(boot_cases(image=IMAGE))
def test_planner_valid_case_accepted_and_every_rule_passes(case: BootCase) -> None:
    plan = plan_for(case)
    assert failing_rules(plan) == {}


@SOME
@given(boot_cases(image=IMAGE), st.integers(1, 1 << 16))
def test_planner_valid_case_small_real_initrd_every_rule_passes(case: BootCase, size: int
                                                                ) -> None:
    """The bound is from above; a small archive (low compression overhead) fits too."""
    assert failing_rules(plan_for(case, initrd_size=size)) == {}


@MANY
@given(boot_cases(image=IMAGE, valid_only=False))
def test_planner_any_case_plans_or_raises_config_error(case: BootCase) -> None:
    try:
        plan = plan_for(case)
    except ConfigError:
        return  # refused with a message: the only allowed failure
    if case.overrides.empty:
        assert failing_rules(plan) == {}  # our own layouts are never flagged


@MANY
@given(boot_cases(image=IMAGE), setup_header_values(min_fields=1, max_fields=6))
def test_planner_header_overrides_land_exactly_in_zero_page(case: BootCase,
                                                           values: dict[str, int]) -> None:
    _check_field_overrides(case, values)


@SOME
@given(boot_cases(image=IMAGE),
       setup_header_values(names=st.sampled_from(INT_FIELDS), min_fields=1, max_fields=6))
def test_planner_any_boot_params_override_lands_exactly(case: BootCase,
                                                        values: dict[str, int]) -> None:
    _check_field_overrides(case, values)


def _check_field_overrides(case: BootCase, values: dict[str, int]) -> None:
    base = plan_for(case)
    over = plan_for(dataclasses.replace(case, overrides=Overrides(fields=tuple(values.items()))))
    zp = bytearray(base.zero_page)
    for name, value in values.items():
        assert BOOT_PARAMS[name].decode(over.zero_page) == value
        BOOT_PARAMS.pack_into(zp, {name: value})
    assert over.zero_page == bytes(zp)  # nothing else changed


@SOME
@given(boot_cases(image=IMAGE), e820_tables(max_entries=E820_MAX_ENTRIES_ZEROPAGE + 2))
def test_planner_e820_override_written_exactly_or_refused(
    case: BootCase, table: tuple[E820Entry, ...]
) -> None:
    case = dataclasses.replace(case, overrides=Overrides(e820=table))
    if len(table) > E820_MAX_ENTRIES_ZEROPAGE:
        try:
            plan_for(case)
        except ConfigError as exc:
            assert "do not fit the zero page" in str(exc)
            return
        raise AssertionError("more than 128 entries were accepted")
    plan = plan_for(case)
    assert plan.e820 == table
    count = BOOT_PARAMS["e820_entries"].decode(plan.zero_page)
    assert count == len(table)
    assert tuple(unpack_table(plan.zero_page[E820_TABLE_OFFSET:], len(table))) == table
