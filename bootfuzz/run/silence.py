"""How long a guest may stay quiet before it is judged stuck: learned per kernel.

A guest that stops printing but does not halt (a loop with interrupts on, a
decompressor spinning) can only be told from a slow healthy one by how quiet a
healthy boot of that kernel ever gets.  Each passing full boot records the longest
gap between its console lines (from the backend's start to the agent's report); the
silence timeout of a later boot of the same kernel is :data:`GAP_FACTOR` times the
longest gap recorded, never below :data:`FLOOR`.  Until :data:`MIN_BOOTS` passing
boots are on record (a kernel never seen) the caller's default stays.

The longest quiet stretch of a healthy boot is the initramfs unpack (about 4 s for
8 MiB of bzip2 on TCG, twice that on a loaded machine), and it grows with the
initrd.  So the record also keeps, per compression, the largest payload a passing
boot unpacked, and a case with a larger payload (or a compression never seen) gets
the default: its unpack may be quieter than any gap on record.

The record is kept per kernel sha256 in the cache
(``$BOOTFUZZ_CACHE/silence/<sha256>.json``), so a campaign's workers, later
campaigns and single boots all learn from each other; writes are serialized by a
lock and atomic, so parallel boots never tear it.  A guest halted with interrupts
off is not waited for at all (bootfuzz.run.qmp); this is for the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.cache import cache_root
from bootfuzz.case import InitrdSpec
from bootfuzz.fileio import atomic_write_text, locked
from bootfuzz.transcript import Transcript

#: A healthy boot may be this many times quieter than the quietest one seen.
GAP_FACTOR = 3.0
#: Never judge a guest stuck after less quiet than this (seconds): a loaded machine
#: stretches every gap, and one boot's gaps are not all a kernel has.
FLOOR = 10.0
#: Passing boots on record before the learned timeout replaces the default.
MIN_BOOTS = 3
_DIR = "silence"


@dataclass(frozen=True)
class LearnedSilence:
    """A silence timeout to learn from the kernel's passing boots; *unseen* seconds
    for a kernel with fewer than MIN_BOOTS on record (and never more than that)."""

    unseen: float


#: What a boot is given: a fixed number of seconds, or "learn it".
Silence = float | LearnedSilence


@dataclass(frozen=True)
class SilenceRecord:
    """What the passing boots of one kernel showed."""

    longest_gap: float  # seconds
    boots: int
    #: Per compression (its name), the largest initrd payload a passing boot unpacked.
    payloads: tuple[tuple[str, int], ...] = ()

    def covers(self, initrd: InitrdSpec | None) -> bool:
        """Whether a passing boot unpacked at least this much of this compression."""
        return initrd is None or initrd.size <= dict(self.payloads).get(
            initrd.compression.value, -1)

    def timeout(self, unseen: float, initrd: InitrdSpec | None = None) -> float:
        """The silence timeout for a boot of *initrd*: *unseen* until enough boots are
        in, or when none of them unpacked as much."""
        if self.boots < MIN_BOOTS or not self.covers(initrd):
            return unseen
        return min(unseen, max(FLOOR, GAP_FACTOR * self.longest_gap))

    def add(self, gap: float, initrd: InitrdSpec | None) -> SilenceRecord:
        payloads = dict(self.payloads)
        if initrd is not None and not self.covers(initrd):
            payloads[initrd.compression.value] = initrd.size
        return SilenceRecord(max(self.longest_gap, gap), self.boots + 1,
                             tuple(sorted(payloads.items())))


def longest_gap(transcript: Transcript) -> float:
    """The longest quiet stretch of *transcript*: before its first output, and between
    two whole lines (a line's arrival time is when its newline came)."""
    first = transcript.first_output_after
    if first is None:
        return transcript.duration
    times = (0.0, first, *transcript.line_times)
    return max(b - a for a, b in itertools.pairwise(times))


def _path(kernel_sha256: str, cache_dir: Path | None) -> Path:
    return cache_root(cache_dir) / _DIR / f"{kernel_sha256}.json"


def read_record(kernel_sha256: str, cache_dir: Path | None = None) -> SilenceRecord:
    """The record of this kernel; an empty one when there is none (or it is unreadable:
    a lost record only costs the default timeout, never a verdict)."""
    try:
        doc = json.loads(_path(kernel_sha256, cache_dir).read_text())
        gap, boots, payloads = doc["longest_gap"], doc["boots"], doc.get("payloads", {})
        if (isinstance(gap, int | float) and isinstance(boots, int) and gap >= 0
                and boots >= 0 and isinstance(payloads, dict)
                and all(isinstance(v, int) for v in payloads.values())):
            return SilenceRecord(float(gap), boots, tuple(sorted(payloads.items())))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return SilenceRecord(0.0, 0)



def learn(kernel_sha256: str, transcript: Transcript, initrd: InitrdSpec | None,
          cache_dir: Path | None = None) -> SilenceRecord:
    """Add a passing boot (its transcript, the initrd it unpacked) to its kernel's
    record; returns the new record.

    Best effort: a cache that cannot be written leaves the record as it was."""
    path = _path(kernel_sha256, cache_dir)
    gap = longest_gap(transcript)
    try:
        with locked(path):
            new = read_record(kernel_sha256, cache_dir).add(gap, initrd)
            atomic_write_text(path, json.dumps({
                "longest_gap": round(new.longest_gap, 3), "boots": new.boots,
                "payloads": dict(new.payloads)}) + "\n")
    except OSError:
        return read_record(kernel_sha256, cache_dir)
    return new


def timeout_for(silence: Silence, kernel_sha256: str | None, initrd: InitrdSpec | None,
                cache_dir: Path | None = None) -> float:
    """Seconds of quiet allowed for a boot of *initrd*: fixed, or learned for this
    kernel (None: not known)."""
    if not isinstance(silence, LearnedSilence):
        return silence
    if kernel_sha256 is None:
        return silence.unseen
    return read_record(kernel_sha256, cache_dir).timeout(silence.unseen, initrd)


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The sha256 of a kernel file, hashed once per process (keyed by its identity)."""
    st = path.stat()
    key = (os.fspath(path.resolve()), st.st_size, st.st_mtime_ns)
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest
