"""How printk shows one message on a console: split at its newlines, and cut where its
buffers end.  Pure; the cmdline oracle compares the console with this model.

source: kernel/printk/printk.c of 6.1 and 6.12, measured on both with the pinned
kernels (tests/integration/test_cmdline_printk_real.py):

* ``vprintk_store`` keeps one message as one record: the formatted text, its one
  trailing newline removed, cut at the record's limit (``LOG_LINE_MAX`` in 6.1,
  ``PRINTKRB_RECORD_MAX`` in 6.12, a little under 1 KiB of text).
* ``record_print_text`` writes the record to a console as lines: the text split at
  every newline, each line with the record's prefix (timestamp, caller) and a
  newline; an empty line is still a prefixed line.  The formatted lines must fit
  the console's buffer (``CONSOLE_LOG_MAX``, 1024 bytes, in 6.1;
  ``PRINTK_MESSAGE_MAX``, 2048, since 6.6): the first line that does not fit is
  dropped with all after it, and a line is never shown cut there.

So a shown record is our record's lines, exactly, up to one of two cuts: the
record's text ends inside its limit window (the last line may be cut anywhere), or
the lines shown fill the console buffer so the next whole line would not fit.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

#: The record text a console shows of a message longer than one record, in bytes.
#: Measured "Command line: " plus: 975 bytes (6.1, earlyprintk), 977 (6.1), 1007
#: (6.12); a record shorter than ours whose text ends in this window was cut by
#: vprintk_store.
RECORD_TEXT_MIN = 960
RECORD_TEXT_MAX = 1023
#: The console buffer one record is formatted into, by kernel version.
CONSOLE_BUFFER_6_1 = 1024  # CONSOLE_LOG_MAX, kernel/printk/printk.c (6.1)
CONSOLE_BUFFER_6_6 = 2048  # PRINTK_MESSAGE_MAX, kernel/printk/internal.h (6.6 .. 6.12)
_VERSION = re.compile(r"Linux version (\d+)\.(\d+)")


def console_buffers(banner: str | None) -> tuple[int, ...]:
    """The console buffer sizes a kernel with this ``Linux version`` banner may use:
    one where the version tells (6.1 and older: 1024; 6.6 and newer: 2048), both where
    it does not (no banner, or a version between the two we have read)."""
    m = _VERSION.match(banner or "")
    if m is not None:
        version = (int(m.group(1)), int(m.group(2)))
        if version <= (6, 1):
            return (CONSOLE_BUFFER_6_1,)
        if version >= (6, 6):
            return (CONSOLE_BUFFER_6_6,)
    return (CONSOLE_BUFFER_6_1, CONSOLE_BUFFER_6_6)


def record_lines(text: bytes) -> tuple[bytes, ...]:
    """The console lines of a record whose text (its trailing newline already removed by
    printk) is *text*.  A line's trailing carriage returns cannot be told from the
    console's own line end ("\\r\\n"), so they are not part of what a line shows."""
    return tuple(line.rstrip(b"\r") for line in text.split(b"\n"))


class Shown(enum.Enum):
    WHOLE = "whole"  # every line, exactly
    RECORD_CUT = "record-cut"  # the record's text ends in the record limit window
    CONSOLE_CUT = "console-cut"  # the next whole line would not fit the console buffer
    DIFFERENT = "different"


@dataclass(frozen=True)
class ShownRecord:
    how: Shown
    lines: tuple[bytes, ...]  # the record's lines as the console showed them
    detail: str = ""


def shown_record(
    expected: Sequence[bytes], first: bytes, prefix: bytes, following: Sequence[bytes],
    buffers: Sequence[int],
) -> ShownRecord:
    """Compare the console with a record whose lines are *expected* (record_lines).

    *first* is the first line's message as shown, *prefix* the printk prefix it came
    with (every further line of the record carries the same), *following* the console
    lines after it, whole and exact.  Further lines are taken from *following* while
    the one before equals ours; the first that does not ends the comparison: a cut of
    ours, the next message (the record was cut before it), or a difference.
    """
    lines = [first]
    for line in following[: len(expected) - 1]:
        if lines[-1] != expected[len(lines) - 1] or not line.startswith(prefix):
            break
        lines.append(line[len(prefix):])
    if lines == list(expected):
        return ShownRecord(Shown.WHOLE, tuple(lines))
    n = len(lines)
    if lines[:-1] != list(expected[: n - 1]):
        return ShownRecord(Shown.DIFFERENT, tuple(lines))
    # The last line taken is ours (whole or cut), or already the next message.
    shown = lines if expected[n - 1].startswith(lines[-1]) else lines[:-1]
    if shown:
        text = len(b"\n".join(shown))
        if RECORD_TEXT_MIN <= text <= RECORD_TEXT_MAX:
            return ShownRecord(Shown.RECORD_CUT, tuple(shown),
                               f"printk shows the first {text} bytes of a longer record")
        if shown[-1] == expected[len(shown) - 1]:
            used = sum(len(prefix) + len(line) + 1 for line in shown)
            cost = len(prefix) + len(expected[len(shown)]) + 1
            for size in buffers:
                if used + 1 <= size < used + cost + 1:
                    return ShownRecord(
                        Shown.CONSOLE_CUT, tuple(shown),
                        f"printk shows {len(shown)} of the record's {len(expected)} lines: "
                        f"{used} bytes with their prefixes, and the next would overflow "
                        f"the {size}-byte console buffer")
    return ShownRecord(Shown.DIFFERENT, tuple(lines))
