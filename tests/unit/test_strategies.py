"""The strategies themselves: arguments checked up front, edges reachable, bounds kept,
and failures shrinking to the simplest case."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import Phase, find, given, settings
from hypothesis.errors import InvalidArgument

from bootfuzz.abi.bootparam import BOOT_PARAMS
from bootfuzz.abi.e820 import E820Entry
from bootfuzz.case import HARNESS_CMDLINE, BootCase, InitrdSpec
from bootfuzz.compression import SUPPORTED
from bootfuzz.fuzz.generate import (
    COMPRESSIONS,
    DEBIAN_CLOUD_LIMITS,
    MEMORY_GRANULE,
    WRITABLE_SETUP_HEADER_FIELDS,
    min_memory,
    split_cmdline,
)
from bootfuzz.fuzz.strategies import (
    boot_cases,
    cmdline_tokens,
    cmdlines,
    e820_tables,
    initrd_specs,
    memory_sizes,
    overrides,
    setup_header_values,
)
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, GiB, MiB
from bootfuzz.loader.platform import PC_SPLIT_THRESHOLD

#: Reachability: the first example that shows an edge is enough (no shrinking).
FIND = settings(max_examples=5000, database=None, phases=(Phase.generate,))
#: Shrinking tests: the whole search.
SHRINK = settings(max_examples=5000, database=None)


# -- arguments ---------------------------------------------------------------------------


def test_strategies_memory_min_above_max_is_refused_at_call() -> None:
    with pytest.raises(InvalidArgument, match="min_size=0x2000 is larger than max_size=0x1000"):
        memory_sizes(min_size=0x2000, max_size=0x1000)


def test_strategies_memory_no_granule_in_range_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="no 8 KiB-aligned size"):
        memory_sizes(min_size=MEMORY_GRANULE + 1, max_size=2 * MEMORY_GRANULE - 1)


def test_strategies_plain_value_for_strategy_parameter_names_just() -> None:
    with pytest.raises(TypeError, match=r"use hypothesis.strategies.just\(5\)"):
        initrd_specs(sizes=5)  # type: ignore[arg-type]


def test_strategies_cmdline_prefix_longer_than_limit_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="longer than max_size=4"):
        cmdlines(prefix="console=ttyS0", max_size=4)


def test_strategies_boot_cases_overrides_with_valid_only_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="pass valid_only=False"):
        boot_cases(overrides=overrides())


# -- bounds ------------------------------------------------------------------------------


@given(memory_sizes(min_size=3 * MiB, max_size=6 * GiB))
def test_strategies_memory_aligned_and_in_range(memory: int) -> None:
    assert memory % PAGE_SIZE == 0 and 3 * MiB <= memory <= 6 * GiB


@given(initrd_specs(max_size=8 * MiB))
def test_strategies_initrd_buildable_and_in_range(spec: InitrdSpec) -> None:
    assert 0 <= spec.size <= 8 * MiB and spec.compression in SUPPORTED


@given(cmdlines(max_size=600))
def test_strategies_cmdline_within_limit_without_nul(text: str) -> None:
    raw = text.encode()
    assert len(raw) <= 600 and b"\0" not in raw and text.startswith(HARNESS_CMDLINE)


@given(cmdline_tokens(non_ascii=True))
def test_strategies_token_is_one_kernel_token(token: str) -> None:
    assert split_cmdline(token) == [token]


@given(setup_header_values(max_fields=5))
def test_strategies_header_values_writable_and_fit(values: dict[str, int]) -> None:
    assert set(values) <= set(WRITABLE_SETUP_HEADER_FIELDS)
    for name, value in values.items():
        assert 0 <= value < 1 << (8 * BOOT_PARAMS[name].size)


@given(e820_tables(max_entries=5))
def test_strategies_e820_bounded_and_u64(table: tuple[E820Entry, ...]) -> None:
    assert len(table) <= 5
    assert all(e.addr >= 0 and e.addr + e.size < 1 << 64 and 0 <= e.type < 1 << 32
               for e in table)


@given(boot_cases())
def test_strategies_valid_case_memory_at_least_floor(case: BootCase) -> None:
    assert case.memory >= min_memory(DEBIAN_CLOUD_LIMITS, case.initrd)
    assert case.overrides.empty and len(case.cmdline.encode()) <= 2047


# -- edges are reachable -----------------------------------------------------------------


@pytest.mark.parametrize("edge", [PC_SPLIT_THRESHOLD - MEMORY_GRANULE, PC_SPLIT_THRESHOLD,
                                  PC_SPLIT_THRESHOLD + MEMORY_GRANULE, 3 * GiB, FOUR_GIB,
                                  FOUR_GIB + MEMORY_GRANULE])
def test_strategies_memory_edge_reachable(edge: int) -> None:
    assert find(memory_sizes(), lambda m: m == edge, settings=FIND) == edge


def test_strategies_memory_floor_reachable() -> None:
    floor = min_memory(DEBIAN_CLOUD_LIMITS)
    assert find(memory_sizes(floor=floor), lambda m: m == floor, settings=FIND) == floor


def test_strategies_memory_unaligned_only_when_asked() -> None:
    m = find(memory_sizes(aligned=False), lambda m: m % PAGE_SIZE != 0, settings=FIND)
    assert m % PAGE_SIZE


@pytest.mark.parametrize("size", [0, 1, PAGE_SIZE - 1, PAGE_SIZE + 1, 2 * MiB + 1])
def test_strategies_initrd_size_edge_reachable(size: int) -> None:
    assert find(initrd_specs(), lambda s: s.size == size, settings=FIND).size == size


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_strategies_every_compression_reachable(compression: object) -> None:
    find(initrd_specs(), lambda s: s.compression is compression, settings=FIND)


@pytest.mark.parametrize("short", [0, 1])
def test_strategies_cmdline_exactly_at_and_one_below_limit(short: int) -> None:
    find(cmdlines(max_size=500), lambda t: len(t.encode()) == 500 - short, settings=FIND)


def test_strategies_cmdline_over_limit_only_when_asked() -> None:
    text = find(cmdlines(max_size=500, over_limit=True), lambda t: len(t.encode()) > 500,
                settings=SHRINK)
    assert len(text.encode()) == 501  # shrinks to one byte over


@pytest.mark.parametrize("token", ["rdinit=/init", "--", '"a b"'])
def test_strategies_cmdline_special_tokens_reachable(token: str) -> None:
    find(cmdlines(), lambda t: token in t, settings=FIND)


def test_strategies_header_value_initrd_addr_max_plus_one_reachable() -> None:
    find(setup_header_values(min_fields=1),
         lambda v: 0x80000000 in v.values(), settings=FIND)


@pytest.mark.parametrize("shape", ["unsorted", "overlapping", "zero-size", "adjacent", "hole"])
def test_strategies_e820_shape_reachable(shape: str) -> None:
    def has(table: tuple[E820Entry, ...]) -> bool:
        pairs = list(itertools.pairwise(table))
        return {
            "unsorted": any(b.addr < a.addr for a, b in pairs),
            "overlapping": any(a.addr < b.addr < a.end for a, b in pairs),
            "zero-size": any(e.size == 0 for e in table),
            "adjacent": any(a.end == b.addr and a.size and b.size for a, b in pairs),
            "hole": any(a.end < b.addr for a, b in pairs),
        }[shape]

    find(e820_tables(), has, settings=FIND)


# -- shrinking ---------------------------------------------------------------------------


def test_strategies_case_with_initrd_shrinks_to_simplest() -> None:
    case = find(boot_cases(), lambda c: c.initrd is not None, settings=SHRINK)
    assert case.initrd == InitrdSpec(0, COMPRESSIONS[0], 0)
    assert case.cmdline == HARNESS_CMDLINE
    assert case.memory == min_memory(DEBIAN_CLOUD_LIMITS, case.initrd)


def test_strategies_overrides_shrink_to_the_one_needed() -> None:
    found = find(overrides(), lambda o: o.kernel_load is not None, settings=SHRINK)
    assert found.kernel_load == 0 and found.fields == () and found.e820 is None
    assert found.setup_data == () and found.cmdline_raw is None


def test_strategies_invalid_cases_reach_overrides_and_long_cmdlines() -> None:
    find(boot_cases(valid_only=False), lambda c: not c.overrides.empty, settings=FIND)
    find(boot_cases(valid_only=False), lambda c: len(c.cmdline.encode()) > 2047, settings=FIND)
