"""atheris target: the console transcript parser (bootfuzz.judge.observation.parse_transcript).

Run: python -m tests.fuzz.fuzz_kernel_log /tmp/new-corpus corpus/atheris/kernel_log \
    -atheris_runs=100000
The parser promises no exception at all for strange input; a BootfuzzError is
tolerated (our own, with a message), anything else is a crash.
"""

from __future__ import annotations

from tests.fuzz._common import instrumented, main

with instrumented(__name__ == "__main__"):
    from bootfuzz.errors import BootfuzzError
    from bootfuzz.judge.observation import parse_transcript

TARGET = "kernel_log"


def TestOneInput(data: bytes) -> None:
    text = data.decode("utf-8", "replace")  # what the console session hands over
    try:
        parse_transcript(text)
    except BootfuzzError:
        return


if __name__ == "__main__":
    main(TestOneInput)
