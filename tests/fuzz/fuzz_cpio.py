"""atheris target: the newc cpio reader (bootfuzz.guest.cpio.parse_newc).

Run: python -m tests.fuzz.fuzz_cpio /tmp/new-corpus corpus/atheris/cpio -atheris_runs=100000
Any exception but a BootfuzzError (InitramfsError) is a crash.
"""

from __future__ import annotations

from tests.fuzz._common import instrumented, main

with instrumented(__name__ == "__main__"):
    from bootfuzz.errors import BootfuzzError
    from bootfuzz.guest.cpio import parse_newc

TARGET = "cpio"


def TestOneInput(data: bytes) -> None:
    try:
        entries = parse_newc(data)
    except BootfuzzError:
        return
    for entry in entries:  # each entry's data lies inside the archive
        body = entry.data(data)
        assert len(body) == entry.size, (entry.name, len(body), entry.size)


if __name__ == "__main__":
    main(TestOneInput)
