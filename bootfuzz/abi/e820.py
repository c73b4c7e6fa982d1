"""E820 memory types, the words the kernel prints for them, and the zero-page entry.

Two printed vocabularies exist for the same numbers: the boot log's type words
(``e820_print_type()``) and the strings of /sys/firmware/memmap and /proc/iomem
(``e820_type_to_string()``).  The oracles compare both against the map the
loader wrote, so both live next to the enum.
source: arch/x86/include/asm/e820/types.h, arch/x86/kernel/e820.c (6.1 = 6.12).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bootfuzz.abi.bootparam import E820_ENTRY_SIZE, E820_MAX_ENTRIES_ZEROPAGE
from bootfuzz.abi.structs import Field, Struct


class E820Type(enum.IntEnum):
    """``enum e820_type`` (kernel names without the ``E820_TYPE_`` prefix)."""

    RAM = 1
    RESERVED = 2
    ACPI = 3
    NVS = 4
    UNUSABLE = 5
    DISABLED = 6
    PMEM = 7
    PRAM = 12
    SOFT_RESERVED = 0xEFFFFFFF
    #: Kernel-internal: RAM the kernel reserved for itself (setup_data); prints as RAM.
    RESERVED_KERN = 128


_KERNEL_WORDS: dict[int, str] = {
    E820Type.RAM: "usable",
    E820Type.RESERVED_KERN: "usable",
    E820Type.RESERVED: "reserved",
    E820Type.SOFT_RESERVED: "soft reserved",
    E820Type.ACPI: "ACPI data",
    E820Type.NVS: "ACPI NVS",
    E820Type.UNUSABLE: "unusable",
}

_FIRMWARE_STRINGS: dict[int, str] = {
    E820Type.RAM: "System RAM",
    E820Type.RESERVED_KERN: "System RAM",
    E820Type.ACPI: "ACPI Tables",
    E820Type.NVS: "ACPI Non-volatile Storage",
    E820Type.UNUSABLE: "Unusable memory",
    E820Type.PRAM: "Persistent Memory (legacy)",
    E820Type.PMEM: "Persistent Memory",
    E820Type.RESERVED: "Reserved",
    E820Type.SOFT_RESERVED: "Soft Reserved",
}

#: What e820_type_to_string() returns for any other value.
FIRMWARE_UNKNOWN_TYPE = "Unknown E820 type"

_NUMBERED_WORDS = re.compile(r"(?:persistent \()?type (\d+)\)?")


def kernel_type_words(t: int) -> str:
    """The words ``e820_print_type()`` appends to a ``BIOS-e820: [mem ...]`` line."""
    if t in _KERNEL_WORDS:
        return _KERNEL_WORDS[t]
    if t in (E820Type.PMEM, E820Type.PRAM):
        return f"persistent (type {t})"
    return f"type {t}"


def kernel_type_from_words(words: str) -> int | None:
    """Invert :func:`kernel_type_words`; None for text the kernel never prints.

    "usable" is printed for both RAM and RESERVED_KERN; this returns RAM, the only
    one a loader can write meaningfully.
    """
    for number, text in _KERNEL_WORDS.items():
        if text == words:
            return number
    m = _NUMBERED_WORDS.fullmatch(words)
    if m is None:
        return None
    t = int(m.group(1))
    if t >= 1 << 32 or kernel_type_words(t) != words:  # "type 7" is printed as "persistent"
        return None
    return t


def firmware_memmap_type(t: int) -> str:
    """The ``type`` string of /sys/firmware/memmap/<n>/ (and /proc/iomem)."""
    return _FIRMWARE_STRINGS.get(t, FIRMWARE_UNKNOWN_TYPE)


#: ``struct boot_e820_entry``, packed.  source: arch/x86/include/uapi/asm/bootparam.h.
#: Its size and the zero page's entry count are boot_params facts, declared there.
BOOT_E820_ENTRY = Struct(
    "boot_e820_entry",
    E820_ENTRY_SIZE,
    (
        Field("addr", 0, 8),
        Field("size", 8, 8),
        Field("type", 16, 4),
    ),
)

__all__ = [
    "BOOT_E820_ENTRY",
    "E820_MAX_ENTRIES_ZEROPAGE",
    "FIRMWARE_UNKNOWN_TYPE",
    "E820Type",
    "firmware_memmap_type",
    "kernel_type_from_words",
    "kernel_type_words",
]

#: The kernel table's capacity on Debian configs (NODES_SHIFT=10 -> 128 + 3*1024).
#: source: boot-protocol.md 4.3, E820_MAX_ENTRIES
KERNEL_E820_MAX_ENTRIES = 3200
#: Fewer entries than this and the kernel ignores the table (BIOS-88 fallback).
E820_MIN_ENTRIES = 2


@dataclass(frozen=True, order=True)
class E820Entry:
    """One ``struct boot_e820_entry``: [addr, addr + size) of a type."""

    addr: int
    size: int
    type: int

    @property
    def end(self) -> int:
        """First byte past the entry."""
        return self.addr + self.size

    @property
    def last(self) -> int:
        """Last byte of the entry, as the kernel prints it."""
        return self.addr + self.size - 1

    def pack(self) -> bytes:
        return (
            self.addr.to_bytes(8, "little")
            + self.size.to_bytes(8, "little")
            + self.type.to_bytes(4, "little")
        )

    @classmethod
    def unpack(cls, raw: bytes) -> E820Entry:
        return cls(
            int.from_bytes(raw[0:8], "little"),
            int.from_bytes(raw[8:16], "little"),
            int.from_bytes(raw[16:20], "little"),
        )


def pack_table(entries: Sequence[E820Entry]) -> bytes:
    return b"".join(e.pack() for e in entries)


def unpack_table(raw: bytes, count: int) -> list[E820Entry]:
    return [
        E820Entry.unpack(raw[i * E820_ENTRY_SIZE : (i + 1) * E820_ENTRY_SIZE])
        for i in range(count)
    ]
