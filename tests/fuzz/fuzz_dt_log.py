"""atheris target: the device-tree console parser (bootfuzz.judge.dt_observation).

Run: python -m tests.fuzz.fuzz_dt_log /tmp/new-corpus corpus/atheris/dt_log \
    -atheris_runs=100000 -max_len=16384
parse_dt_transcript reads the x86 parser's lines plus the arm64/riscv64 ones (machine
model, memory node ranges, reserved memory) and the device-tree agent's report (its
/chosen and memory nodes as hex); it takes the console as bytes or as text, so both
forms of each input go through.  It promises no exception for strange input; a
BootfuzzError is tolerated (our own, with a message), anything else is a crash.
"""

from __future__ import annotations

import contextlib

from tests.fuzz._common import instrumented, main

with instrumented(__name__ == "__main__"):
    from bootfuzz.errors import BootfuzzError
    from bootfuzz.judge.dt_observation import parse_dt_transcript

TARGET = "dt_log"


def TestOneInput(data: bytes) -> None:
    for console in (data, data.decode("utf-8", "replace")):
        with contextlib.suppress(BootfuzzError):
            parse_dt_transcript(console)


if __name__ == "__main__":
    main(TestOneInput)
