"""A kernel command line's bytes, and the text that stands for them.

The boot protocol takes bytes: the kernel copies whatever the loader wrote up to the
NUL, UTF-8 or not.  bootfuzz keeps a case's command line as text (argv, JSON and the
report are text), and keeps a byte that is not UTF-8 the way Python hands it over
from argv (PEP 383): as the lone surrogate U+DC80..U+DCFF that escapes it.  So
``--cmdline $'foo=\\xff'`` boots the byte 0xff, and a reproducer writes it as the
JSON escape ``\\udcff``.  Any other lone surrogate (``\\ud800``) stands for neither a
character nor a byte and is refused.
"""

from __future__ import annotations

import os

from bootfuzz.errors import CmdlineError

_ENCODING = "utf-8"
_ESCAPE = "surrogateescape"


def cmdline_bytes(cmdline: str) -> bytes:
    """The bytes *cmdline* stands for: UTF-8, each U+DC80..U+DCFF the byte it escapes."""
    try:
        return cmdline.encode(_ENCODING, _ESCAPE)
    except UnicodeEncodeError as exc:
        char = cmdline[exc.start]
        raise CmdlineError(
            f"U+{ord(char):04X} at offset {exc.start} is a lone surrogate: neither a "
            "character nor an escaped byte (a byte 0x80-0xff is written U+DC80-U+DCFF)"
        ) from None


def cmdline_text(raw: bytes) -> str:
    """The text that stands for *raw* (cmdline_bytes' inverse, for every byte string)."""
    return raw.decode(_ENCODING, _ESCAPE)


def from_argv(arg: str) -> str:
    """An argv word as command-line text: the bytes the user typed, whatever the locale.

    Python decoded argv with the file-system encoding; os.fsencode gives the typed
    bytes back, and cmdline_text() makes them our text form.
    """
    return cmdline_text(os.fsencode(arg))


_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def cmdline_shown(cmdline: str) -> str:
    """*cmdline* on one printable line, for a report: a byte that is not UTF-8 and a
    control character as ``\\xNN`` (``\\n``, ``\\r``, ``\\t`` by name), a backslash
    doubled, so two different command lines never look the same."""
    out = []
    for ch in cmdline:
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # an escaped byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate that is no byte
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
