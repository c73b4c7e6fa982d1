"""The sanitizer model against hand-worked cases from e820__update_table's rules."""

from __future__ import annotations

import itertools

from bootfuzz.abi.e820 import E820Entry, pack_table, unpack_table
from bootfuzz.judge.e820_model import sanitize

RAM, RES, ACPI = 1, 2, 3


def e(addr: int, size: int, t: int) -> E820Entry:
    return E820Entry(addr, size, t)


def test_sanitize_sorted_disjoint_table_is_unchanged() -> None:
    table = [e(0, 0xA0000, RAM), e(0xF0000, 0x10000, RES), e(0x100000, 0xFF00000, RAM)]
    assert sanitize(table) == table


def test_sanitize_fewer_than_two_entries_fails() -> None:
    assert sanitize([e(0, 0x1000, RAM)]) is None


def test_sanitize_wrapping_entry_fails() -> None:
    assert sanitize([e(0, 0x1000, RAM), e(0xFFFFFFFFFFFFF000, 0x2000, RAM)]) is None


def test_sanitize_sorts_and_merges_adjacent_same_type() -> None:
    table = [e(0x2000, 0x1000, RAM), e(0, 0x1000, RAM), e(0x1000, 0x1000, RAM)]
    assert sanitize(table) == [e(0, 0x3000, RAM)]


def test_sanitize_overlap_higher_type_wins() -> None:
    table = [e(0, 0x10000, RAM), e(0x4000, 0x2000, RES)]
    assert sanitize(table) == [e(0, 0x4000, RAM), e(0x4000, 0x2000, RES), e(0x6000, 0xA000, RAM)]


def test_sanitize_overlap_numeric_max_not_order() -> None:
    table = [e(0x1000, 0x1000, ACPI), e(0, 0x4000, RES)]
    assert sanitize(table) == [e(0, 0x1000, RES), e(0x1000, 0x1000, ACPI), e(0x2000, 0x2000, RES)]


def test_sanitize_zero_size_and_type_zero_vanish() -> None:
    table = [e(0, 0x1000, RAM), e(0x5000, 0, RES), e(0x1000, 0x1000, 0)]
    assert sanitize(table) == [e(0, 0x1000, RAM)]


def test_sanitize_nomerge_types_stay_split() -> None:
    table = [e(0, 0x1000, 12), e(0x1000, 0x1000, 12)]
    assert sanitize(table) == table


def test_pack_unpack_round_trip() -> None:
    table = [e(0, 0xA0000, RAM), e(0x100000000, 0x40000000, RAM)]
    raw = pack_table(table)
    assert len(raw) == 40
    assert unpack_table(raw, 2) == table


# The sanitizer model against its definition, by brute force over a small address
# space: after sanitizing, every address is covered by the numerically highest type
# of the entries covering it (0: none), entries are sorted and disjoint, and no two
# adjacent entries share a type unless it is a "nomerge" type.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SPACE = 64
TYPES = [1, 2, 3, 4, 5, 12, 128, 0xEFFFFFFF, 0]
NOMERGE = {12, 0xEFFFFFFF}

small_entries = st.lists(
    st.builds(E820Entry, st.integers(0, SPACE - 1), st.integers(0, 16), st.sampled_from(TYPES)),
    min_size=2, max_size=12,
)


def coverage(entries: list[E820Entry]) -> list[int]:
    cover = [0] * (SPACE + 16)
    for x in entries:
        for a in range(x.addr, x.addr + x.size):
            cover[a] = max(cover[a], x.type)
    return cover


@settings(max_examples=1000, deadline=None)
@given(small_entries)
def test_sanitize_matches_its_definition(entries: list[E820Entry]) -> None:
    out = sanitize(entries)
    assert out is not None
    assert coverage(out) == coverage(entries)
    assert all(x.size > 0 and x.type != 0 for x in out)
    for a, b in itertools.pairwise(out):
        assert a.end <= b.addr  # sorted, disjoint
        if a.end == b.addr and a.type == b.type:
            assert a.type in NOMERGE  # merged unless nomerge


@settings(max_examples=300, deadline=None)
@given(small_entries)
def test_sanitize_is_idempotent_and_order_independent(entries: list[E820Entry]) -> None:
    out = sanitize(entries)
    assert out is not None
    if len(out) >= 2 and not any(x.type in NOMERGE for x in out):
        assert sanitize(out) == out
    assert coverage(sanitize(list(reversed(entries))) or []) == coverage(out)
