"""The mem=/memmap= model against hand-worked cases from e820.c's parsers."""

from __future__ import annotations

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.judge.user_memmap import apply_user_options, memparse

M = 1 << 20
BASE = (E820Entry(0, 0xA0000, 1), E820Entry(0xF0000, 0x10000, 2),
        E820Entry(0x100000, 256 * M - 0x100000, 1), E820Entry(0xFFFF0000, 0x10000, 2))


def e(addr: int, size: int, t: int) -> E820Entry:
    return E820Entry(addr, size, t)


def test_memparse_suffixes_and_bases() -> None:
    assert memparse("200M") == (200 * M, 4)
    assert memparse("0x1000") == (0x1000, 6)
    assert memparse("1G@") == (1 << 30, 2)
    assert memparse("010") == (8, 3)  # C octal, as simple_strtoull with base 0
    assert memparse("x") == (0, 0)


def test_no_options_no_user_map() -> None:
    user = apply_user_options("console=ttyS0 quiet", BASE)
    assert user.options == () and user.table is None


def test_mem_removes_ram_above_the_limit_only() -> None:
    user = apply_user_options("mem=200M", BASE)
    assert user.table == (e(0, 0xA0000, 1), e(0xF0000, 0x10000, 2),
                          e(0x100000, 200 * M - 0x100000, 1), e(0xFFFF0000, 0x10000, 2))


def test_memmap_reserved_acpi_ram_and_pram() -> None:
    user = apply_user_options("memmap=1M$0x8000000,2M#0x9000000 memmap=1M!0xA000000", BASE)
    assert user.table is not None
    assert e(0x8000000, M, 2) in user.table and e(0x9000000, 2 * M, 3) in user.table
    assert e(0xA000000, M, 12) in user.table
    assert e(0x100000, 0x8000000 - 0x100000, 1) in user.table


def test_memmap_exactmap_then_ram() -> None:
    user = apply_user_options("memmap=exactmap memmap=640K@0 memmap=100M@1M", BASE)
    assert user.table == (e(0, 640 << 10, 1), e(M, 100 * M, 1))


def test_memmap_exactmap_alone_is_invalid() -> None:
    user = apply_user_options("memmap=exactmap", BASE)
    assert user.invalid and user.table is None


def test_memmap_size_only_acts_like_mem() -> None:
    assert apply_user_options("memmap=128M", BASE).table == apply_user_options(
        "mem=128M", BASE).table


def test_memmap_percent_update_converts_only_the_old_type() -> None:
    user = apply_user_options("memmap=16M%0x4000000-1+2", BASE)
    assert user.table is not None
    assert e(0x4000000, 16 * M, 2) in user.table


def test_bad_values_are_ignored_like_the_kernel() -> None:
    user = apply_user_options("mem=0 memmap=$5", BASE)
    assert user.options == ("mem=0", "memmap=$5") and user.table is None
