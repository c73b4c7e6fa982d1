"""E820 type words (boot log and sysfs) and the zero-page entry declaration."""

from __future__ import annotations

import pytest

from bootfuzz.abi.e820 import (
    BOOT_E820_ENTRY,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820Type,
    firmware_memmap_type,
    kernel_type_from_words,
    kernel_type_words,
)

# source: arch/x86/kernel/e820.c, e820_print_type() and e820_type_to_string().
WORDS = [
    (1, "usable", "System RAM"),
    (2, "reserved", "Reserved"),
    (3, "ACPI data", "ACPI Tables"),
    (4, "ACPI NVS", "ACPI Non-volatile Storage"),
    (5, "unusable", "Unusable memory"),
    (6, "type 6", "Unknown E820 type"),
    (7, "persistent (type 7)", "Persistent Memory"),
    (12, "persistent (type 12)", "Persistent Memory (legacy)"),
    (128, "usable", "System RAM"),
    (0xEFFFFFFF, "soft reserved", "Soft Reserved"),
    (0, "type 0", "Unknown E820 type"),
    (19, "type 19", "Unknown E820 type"),
    (0xFFFFFFFF, "type 4294967295", "Unknown E820 type"),
]


@pytest.mark.parametrize(("t", "words", "sysfs"), WORDS)
def test_e820_type_words_match_kernel_strings(t: int, words: str, sysfs: str) -> None:
    assert kernel_type_words(t) == words
    assert firmware_memmap_type(t) == sysfs


@pytest.mark.parametrize(("t", "words", "sysfs"), [w for w in WORDS if w[0] != 128])
def test_e820_type_from_words_inverts_kernel_words(t: int, words: str, sysfs: str) -> None:
    assert kernel_type_from_words(words) == t


@pytest.mark.parametrize(
    "words", ["type 7", "type 01", "persistent (type 5)", "Usable", "", "type 4294967296"]
)
def test_e820_type_from_words_never_printed_is_none(words: str) -> None:
    assert kernel_type_from_words(words) is None


def test_e820_type_kernel_names_and_values() -> None:
    assert int(E820Type.RESERVED_KERN) == 128
    assert int(E820Type.SOFT_RESERVED) == 0xEFFFFFFF
    assert E820Type(12).name == "PRAM"


def test_e820_boot_entry_layout_is_packed_20_bytes() -> None:
    raw = BOOT_E820_ENTRY.build({"addr": 0x100000, "size": 0xFF00000, "type": E820Type.RAM})
    assert raw == bytes.fromhex("0000100000000000 0000f00f00000000 01000000")  # addr size type
    assert BOOT_E820_ENTRY.size == 20
    assert E820_MAX_ENTRIES_ZEROPAGE == 128


def test_e820_boot_entry_type_over_32_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="type: 0x100000000 does not fit in 4 bytes"):
        BOOT_E820_ENTRY.build({"type": 1 << 32})
