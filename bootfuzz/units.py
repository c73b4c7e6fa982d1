"""Byte sizes as people type them on the command line ("512", "4K", "8M", "1G").

Binary units only, like QEMU's -m: K = 2**10, M = 2**20, G = 2**30, T = 2**40.
Fractions ("1.5G") are refused rather than rounded: a size that lands on an
exact byte count is what a reproducer must record, so the user writes it exactly.
"""

from __future__ import annotations

import re

from bootfuzz.errors import ConfigError

#: Suffix -> multiplier (binary units; upper or lower case accepted).
UNIT_SHIFTS: dict[str, int] = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}

# re.ASCII: \d must not match other scripts' digits, which int() would accept.
_SIZE_RE = re.compile(r"(?P<digits>\d+)(?P<unit>[KMGT]?)", re.ASCII | re.IGNORECASE)


class SizeError(ConfigError):
    """A size argument that is not an integer with an optional K/M/G/T suffix."""

    component = "size"


def parse_size(text: str) -> int:
    """Return the number of bytes *text* names ("8M" -> 8388608)."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        hint = "fractions are not accepted; " if "." in text or "," in text else ""
        raise SizeError(
            f"{text!r} is not a size: {hint}write an integer with an optional "
            "K, M, G or T suffix (binary units), e.g. 512, 4K, 8M, 1G"
        )
    return int(match["digits"]) << UNIT_SHIFTS[match["unit"].upper()]


def format_size(value: int) -> str:
    """Write *value* with the largest unit that divides it exactly (parse_size's inverse)."""
    if value < 0:
        raise SizeError(f"{value} is negative; sizes are byte counts")
    for unit, shift in sorted(UNIT_SHIFTS.items(), key=lambda item: -item[1]):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return "0"
