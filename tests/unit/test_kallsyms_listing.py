"""run/kallsyms.py: the dumper's listing taken from the console between its markers."""

from __future__ import annotations

import pytest

from bootfuzz.errors import BackendError
from bootfuzz.guest.protocol import KALLSYMS_BEGIN, KALLSYMS_END
from bootfuzz.run.kallsyms import listing_from_console


def test_the_listing_is_what_lies_between_the_markers() -> None:
    console = (f"[    0.1] kernel noise\n{KALLSYMS_BEGIN}\nffffffff81000000 T _text\n"
               f"ffffffff81000010 t f\n{KALLSYMS_END}\n[    9.9] reboot\n")
    assert listing_from_console(console) == "ffffffff81000000 T _text\nffffffff81000010 t f\n"


def test_a_cut_listing_is_an_error() -> None:
    with pytest.raises(BackendError, match="no complete listing"):
        listing_from_console(f"{KALLSYMS_BEGIN}\nffffffff81000000 T _text\n")
    with pytest.raises(BackendError, match="no complete listing"):
        listing_from_console("Kernel panic - not syncing\n")
