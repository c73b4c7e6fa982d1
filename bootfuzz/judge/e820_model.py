"""A model of the kernel's E820 sanitizer: the table the kernel keeps from what we wrote.

The model follows ``e820__update_table()`` (arch/x86/kernel/e820.c, the same in 6.1
and 6.12) as summarized in shared/reference/boot-protocol.md 4.3: the kernel prints
the *sanitized* table, so the e820 oracle compares the kernel's lines with
``sanitize(what we wrote)``, not with what we wrote.
"""

from __future__ import annotations

from collections.abc import Iterable

from bootfuzz.abi.e820 import E820_MIN_ENTRIES, KERNEL_E820_MAX_ENTRIES, E820Entry

#: Types whose adjacent entries the kernel never merges.  source: e820.c, PRAM and
#: SOFT_RESERVED are "nomerge" in e820__update_table.
_NOMERGE_TYPES = frozenset({12, 0xEFFFFFFF})
_U64 = 1 << 64


def sanitize(entries: Iterable[E820Entry], max_entries: int = KERNEL_E820_MAX_ENTRIES
             ) -> list[E820Entry] | None:
    """The table the kernel keeps, or None where the kernel's sanitizer fails.

    Overlaps resolve to the numerically highest type, type 0 and empty entries
    vanish, adjacent entries of one type merge (except the "nomerge" types).
    """
    table = list(entries)
    if len(table) < E820_MIN_ENTRIES:
        return None
    if any((e.addr + e.size) % _U64 < e.addr for e in table):
        return None
    # Change points: (address, 0 = start / 1 = end, entry index).  Starts sort
    # before ends at one address, as in the kernel's cpcompare().
    points: list[tuple[int, int, int]] = []
    for index, e in enumerate(table):
        if e.size:
            points.append((e.addr, 0, index))
            points.append((e.addr + e.size, 1, index))
    points.sort(key=lambda p: (p[0], p[1]))
    active: dict[int, int] = {}
    out: list[list[int]] = []  # [addr, size, type]
    last_type = 0
    last_addr = 0
    for addr, kind, index in points:
        if kind == 0:
            active[index] = table[index].type
        else:
            active.pop(index, None)
        current = max(active.values(), default=0)
        if current != last_type or current in _NOMERGE_TYPES:
            if last_type != 0:
                out[-1][1] = addr - last_addr
                if out[-1][1] == 0:
                    out.pop()
                elif len(out) >= max_entries:
                    break
            if current != 0:
                out.append([addr, 0, current])
                last_addr = addr
            last_type = current
    return [E820Entry(a, s, t) for a, s, t in out if s]
