"""Where one boot's time went, phase by phase: what a campaign's speed is made of.

The host's phases (reading the kernel, planning, building the initrd, writing the
blobs, judging) are timed around the calls that do them; the guest's come from when
the console lines that end them arrived (``Transcript.line_times``): the backend's
start until the first output, then until the kernel's ``RAMDISK:`` line, until the
initramfs was unpacked (``Freeing initrd memory``), until our agent reported, and
until the backend was gone.  A line the boot never printed leaves its phase out; the
next phase then runs from the last line that was seen, so the phases always add up
to the boot's duration.  bench/campaign_throughput.py reports their medians.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bootfuzz.judge.patterns import AGENT_PREFIX, line_body
from bootfuzz.transcript import Transcript

#: Host phases, in the order a boot runs them.
KERNEL, PLAN, INITRD, BLOBS, JUDGE = "kernel", "plan", "initrd", "blobs", "judge"
#: Guest phases: each ends at its console line (a regex matched at a line body's start).
GUEST_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("to-ramdisk", re.compile(r"RAMDISK: ")),  # reserve_initrd (arch/x86/kernel/setup.c)
    ("to-unpacked", re.compile(r"Freeing initrd memory: ")),  # init/initramfs.c
    ("to-agent", re.compile(re.escape(AGENT_PREFIX))),  # our /init's report
)
#: The backend started until its first output; the last mark until the process ended.
BACKEND_START, BACKEND_EXIT = "backend-start", "to-exit"


class Stopwatch:
    """Accumulates named host phases (a phase timed twice adds up)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.monotonic() - started


def guest_phases(transcript: Transcript) -> dict[str, float]:
    """The guest's phases, from when its console lines arrived (seconds each)."""
    if transcript.first_output_after is None:
        return {BACKEND_START: transcript.duration}
    phases = {BACKEND_START: transcript.first_output_after}
    last, pending = transcript.first_output_after, 0  # GUEST_MARKS[pending:] not seen yet
    for line, at in zip(transcript.text.split("\n"), transcript.line_times, strict=False):
        body = line_body(line)
        # Marks in order, each after the one before; a mark a boot skips (no initrd:
        # no RAMDISK line) does not stop the later ones.
        for i in range(pending, len(GUEST_MARKS)):
            name, regex = GUEST_MARKS[i]
            if regex.match(body):
                phases[name] = at - last
                last, pending = at, i + 1
                break
        if pending == len(GUEST_MARKS):
            break
    phases[BACKEND_EXIT] = max(transcript.duration - last, 0.0)
    return phases
