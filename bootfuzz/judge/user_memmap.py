"""A model of the kernel's ``mem=`` and ``memmap=`` handling: the "user:" map.

source: arch/x86/kernel/e820.c (parse_memopt, parse_memmap_one, e820__range_add,
__e820__range_remove, __e820__range_update, e820__finish_early_params), the same in
6.1 and 6.12; boot-protocol.md 4.1 item 4 and 6.  The kernel applies the options to
its table in command-line order, then sanitizes and prints it as "user:".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.judge.e820_model import sanitize

_U64_MAX = (1 << 64) - 1
_SUFFIX = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_MEMPARSE = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)([kKmMgGtTpPeE]?)")


class UserMapError(ValueError):
    """An option the kernel itself would reject (-EINVAL): it then leaves the map alone."""


def memparse(text: str, pos: int = 0) -> tuple[int, int]:
    """The kernel's memparse(): a C-style number with an optional binary suffix."""
    m = _MEMPARSE.match(text, pos)
    if m is None:
        return 0, pos
    digits = m.group(1)
    value = int(digits, 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10)
    if m.group(2):
        value <<= _SUFFIX[m.group(2).lower()]
    return value & _U64_MAX, m.end()


@dataclass(frozen=True)
class UserMap:
    """The options found, and the table the kernel prints as "user:" (None: not printed)."""

    options: tuple[str, ...]
    table: tuple[E820Entry, ...] | None
    invalid: bool = False  # sanitizing failed: "Invalid user supplied memory map" panic


def _remove(table: list[E820Entry], start: int, size: int, old: int | None) -> list[E820Entry]:
    size = min(size, _U64_MAX - start)
    end = start + size
    out = []
    for e in table:
        if old is not None and e.type != old:
            out.append(e)
            continue
        if e.end <= start or e.addr >= end:
            out.append(e)
            continue
        if e.addr < start:
            out.append(E820Entry(e.addr, start - e.addr, e.type))
        if e.end > end:
            out.append(E820Entry(end, e.end - end, e.type))
    return out


def _update(table: list[E820Entry], start: int, size: int, old: int, new: int
            ) -> list[E820Entry]:
    size = min(size, _U64_MAX - start)
    end = start + size
    out = _remove(table, start, size, old)
    for e in table:
        if e.type == old and e.addr < end and e.end > start:
            lo, hi = max(e.addr, start), min(e.end, end)
            out.append(E820Entry(lo, hi - lo, new))
    return out


def _memmap_one(table: list[E820Entry], item: str) -> list[E820Entry]:
    if item.startswith("exactmap"):
        return []
    size, pos = memparse(item)
    if pos == 0:
        raise UserMapError(f"memmap={item}: no size")
    rest = item[pos:]
    if rest[:1] in ("@", "#", "$", "!"):
        start, _ = memparse(rest, 1)
        kind = {"@": E820Type.RAM, "#": E820Type.ACPI, "$": E820Type.RESERVED,
                "!": E820Type.PRAM}[rest[0]]
        return [*table, E820Entry(start, size, kind)]
    if rest[:1] == "%":
        start, p = memparse(rest, 1)
        old = new = -1
        if rest[p:p + 1] == "-":
            old, p = memparse(rest, p + 1)
        if rest[p:p + 1] == "+":
            new, p = memparse(rest, p + 1)
        if old == -1 and new == -1:
            raise UserMapError(f"memmap={item}: neither -old nor +new type")
        if new == -1:
            return _remove(table, start, size, old)
        if old == -1:
            return [*table, E820Entry(start, size, new)]
        return _update(table, start, size, old, new)
    return _remove(table, size, _U64_MAX - size, E820Type.RAM)


def apply_user_options(cmdline: str, table: tuple[E820Entry, ...]) -> UserMap:
    """The "user:" map the kernel prints for *cmdline* over its current *table*."""
    entries = list(table)
    options: list[str] = []
    userdef = False
    for token in cmdline.split():
        key, _, value = token.partition("=")
        if key == "mem" and value:
            options.append(token)
            if value == "nopentium":
                continue  # 64-bit: ignored with a warning
            size, _ = memparse(value)
            if size == 0:
                continue  # -EINVAL: no change
            entries = _remove(entries, size, _U64_MAX - size, E820Type.RAM)
            userdef = True
        elif key == "memmap" and value:
            options.append(token)
            for item in value.split(","):
                try:
                    entries = _memmap_one(entries, item)
                except UserMapError:
                    continue
                userdef = True
    if not userdef:
        return UserMap(tuple(options), None)
    result = sanitize(entries)
    if result is None:
        return UserMap(tuple(options), None, invalid=True)
    return UserMap(tuple(options), tuple(result))
