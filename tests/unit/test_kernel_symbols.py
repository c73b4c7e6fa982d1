"""kernel/symbols.py: kallsyms parsing and finding a boot's KASLR slide from its blocks."""

from __future__ import annotations

import random

import pytest

from bootfuzz.errors import ConfigError
from bootfuzz.kernel.symbols import (
    KASLR_ALIGN,
    MIN_SLIDE_VOTES,
    SymbolTable,
    find_slide,
    parse_kallsyms,
)

TEXT = 0xFFFF_FFFF_8100_0000


def listing(funcs: dict[str, int], base: int = TEXT) -> str:
    lines = [f"{base:016x} T _text", f"{base + 0x10_0000:016x} T _etext",
             f"{base + 0x20_0000:016x} T _sinittext", f"{base + 0x21_0000:016x} T _einittext",
             f"{base + 0x30_0000:016x} D some_data",
             f"{base + 0x40:016x} t helper_in_module\t[ext4]"]
    lines += [f"{base + off:016x} t {name}" for name, off in funcs.items()]
    return "\n".join(lines) + "\n"


def test_parse_keeps_code_relative_to_text_and_skips_data_and_modules() -> None:
    table = parse_kallsyms(listing({"startup_64": 0, "e820__memory_setup": 0x1000,
                                    "populate_rootfs": 0x20_0100}))
    assert table.text_end == 0x10_0000
    assert (table.init_start, table.init_end) == (0x20_0000, 0x21_0000)
    assert "some_data" not in table.names and "helper_in_module" not in table.names
    fn = table.function_at(0x1010)
    assert fn is not None and fn.name == "e820__memory_setup" and fn.start == 0x1000
    assert not fn.init
    init = table.function_at(0x20_0104)
    assert init is not None and init.name == "populate_rootfs" and init.init


def test_function_at_outside_code_is_none() -> None:
    table = parse_kallsyms(listing({"startup_64": 0}))
    assert table.function_at(0x10_0000) is None  # _etext
    assert table.function_at(0x18_0000) is None  # between .text and .init.text
    assert table.function_at(-1) is None


def test_listing_without_addresses_or_marks_is_refused() -> None:
    with pytest.raises(ConfigError, match="zero addresses"):
        parse_kallsyms(listing({"f": 0}, base=0))
    with pytest.raises(ConfigError, match="lacks _etext"):
        parse_kallsyms(f"{TEXT:016x} T _text\n")


def test_dumps_loads_round_trip_and_bad_cache_is_refused() -> None:
    table = parse_kallsyms(listing({"a": 0x10, "b": 0x200, "c": 0x20_0010}))
    assert SymbolTable.loads(table.dumps()) == table
    with pytest.raises(ConfigError, match="not a bootfuzz symbol table"):
        SymbolTable.loads("ffff T _text\n")


def synthetic_table(n: int = 3000, seed: int = 1) -> SymbolTable:
    rng = random.Random(seed)
    starts = sorted(rng.sample(range(0, 0x100_0000, 16), n))
    return SymbolTable(tuple(starts), tuple(f"f{i}" for i in range(n)), 0x100_0000,
                       0x110_0000, 0x111_0000)


def boot_blocks(table: SymbolTable, base: int, seed: int = 2) -> set[int]:
    """A boot's blocks: the starts of the functions it called and blocks inside them."""
    rng = random.Random(seed)
    called = rng.sample(table.starts, 600)
    return {base + s for s in called} | {base + s + rng.randrange(1, 16) for s in called}


def test_find_slide_recovers_the_base_of_a_boot() -> None:
    table = synthetic_table()
    for slot in (0, 7, 300):
        base = TEXT + slot * KASLR_ALIGN
        slide = find_slide(boot_blocks(table, base), table)
        assert slide is not None and slide.base == base
        assert slide.votes >= 2 * slide.runner_up


def test_find_slide_refuses_too_few_blocks_to_decide() -> None:
    table = synthetic_table()
    few = sorted(boot_blocks(table, TEXT))[: MIN_SLIDE_VOTES - 1]
    assert find_slide(few, table) is None
    assert find_slide([], table) is None


def test_entered_at_base_only_counts_a_base_that_ran() -> None:
    table = synthetic_table()
    base = 0x400_0000
    blocks = {base + s for s in table.starts[1:40]}  # the entry at _text itself did not run
    assert find_slide(blocks, table) is not None
    assert find_slide(blocks, table, entered_at_base=True) is None
    assert find_slide(blocks | {base}, table, entered_at_base=True) is not None


#: riscv64's _text sits past its head, 0x2000 into the 2 MiB the image starts at.
RISCV_TEXT = 0xFFFF_FFFF_8000_2000


def test_the_listings_text_address_is_kept_and_an_older_cache_still_loads() -> None:
    table = parse_kallsyms(listing({"a": 0x10}, base=RISCV_TEXT))
    assert table.text_address == RISCV_TEXT and table.text_residue == 0x2000
    assert SymbolTable.loads(table.dumps()) == table
    head, _, rest = table.dumps().partition("\n")
    older = SymbolTable.loads(head.rsplit(" ", 1)[0] + "\n" + rest)  # three fields
    assert older.text_address == 0 and older.starts == table.starts


def test_a_text_off_the_2_mib_is_found_and_firmware_below_does_not_outvote_it() -> None:
    """A riscv64-like boot: _text 0x2000 past the image's 2 MiB start, the image entered
    at its start (_start, the head), and firmware blocks (OpenSBI at the RAM base, 2 MiB
    below the image) that must not be taken for the kernel."""
    rng = random.Random(3)
    starts = sorted(rng.sample(range(0, 0x100_0000, 2), 3000))
    table = SymbolTable(tuple(starts), tuple(f"f{i}" for i in range(3000)), 0x100_0000,
                        0x110_0000, 0x111_0000, RISCV_TEXT)
    virt = find_slide(boot_blocks(table, RISCV_TEXT), table)
    assert virt is not None and virt.base == RISCV_TEXT
    image, firmware = 0x8020_0000, 0x8000_0000
    physical = {image + 0x2000 + s for s in table.starts[:60]}
    opensbi = {firmware + 2 * rng.randrange(0x20000) for _ in range(2600)} | {firmware}
    found = find_slide(physical | opensbi | {image}, table, entered_at_base=True)
    assert found is not None and found.base == image + 0x2000  # _text, not the entry
    # Without the image's entry among the blocks, no base is believed (the rule that
    # once let a firmware address win when _text itself was no block).
    assert find_slide(physical | opensbi, table, entered_at_base=True) is None
