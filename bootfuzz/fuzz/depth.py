"""How far a campaign boots each case: to the ``RAMDISK:`` line, through the initramfs
unpack, or to the agent; and which cases are interesting enough to boot to the end.

``--depth early`` stops a boot as soon as the e820, command-line and initrd-placement
oracles can answer (bootfuzz.judge.oracles.StopPoint.RAMDISK: about a quarter of a
TCG boot), ``unpack`` once the initramfs was unpacked as well.  A shallow boot is
*promoted*, booted again to the end, when it is interesting: any answer but a pass,
or a pass whose verdict vector (the oracles asked and their answers) this worker has
not seen yet.  A failure is so always judged, triaged and reproduced from a full boot,
and the first case of each kind is seen whole; the rest of the cases, the ones like
those before them, cost only their shallow boot.

The kinds seen are the campaign's: the campaign hands each case the kinds promoted so
far by any worker, and each worker process also remembers its own (the pool keeps its
workers).  Two cases of a new kind booting at the same time may both be promoted: a
boot more, never one less.  Without the campaign's set, every worker would promote
every kind once: ``--jobs`` times the full boots on a machine with that many cores.
"""

from __future__ import annotations

import enum
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

from bootfuzz.case import BootCase
from bootfuzz.fuzz.triage import BootOutcome
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.silence import Silence


class Depth(enum.StrEnum):
    EARLY = "early"
    UNPACK = "unpack"
    FULL = "full"

    @property
    def stop(self) -> StopPoint | None:
        """Where a boot at this depth stops (None: it runs to its end)."""
        return _STOPS[self]


_STOPS = {Depth.EARLY: StopPoint.RAMDISK, Depth.UNPACK: StopPoint.UNPACK, Depth.FULL: None}

#: An oracle's name and answer, for each oracle asked: what kind of case a boot was.
VerdictVector = tuple[tuple[str, str], ...]
_SEEN: set[VerdictVector] = set()


class DepthBoot(Protocol):
    """A boot function that can stop early (bootfuzz.run.boot.run_case)."""

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: Silence, until: StopPoint | None = None) -> BootOutcome: ...


def verdict_vector(result: BootOutcome) -> VerdictVector:
    return tuple(sorted((r.name, r.verdict.value) for r in result.oracles if r.asked))


def boot_at_depth(boot: DepthBoot, case: BootCase, run_dir: Path, *, timeout: float,
                  silence_timeout: Silence, until: StopPoint | None,
                  seen: Collection[VerdictVector] = frozenset()
                  ) -> tuple[BootOutcome, VerdictVector | None]:
    """Boot *case* to *until*, and again to the end when the shallow boot is interesting;
    with the kind (verdict vector) of a pass promoted because neither this process nor
    *seen* (the campaign's kinds) had it, for the campaign to remember (None otherwise).

    The full boot reuses *run_dir* (the shallow boot's files are removed first), so a
    promoted case leaves the files of the boot it is judged by."""
    if until is None:
        return boot(case, run_dir, timeout=timeout, silence_timeout=silence_timeout), None
    shallow = boot(case, run_dir, timeout=timeout, silence_timeout=silence_timeout, until=until)
    vector = verdict_vector(shallow)
    passed = shallow.verdict is Verdict.PASS
    if passed and (vector in _SEEN or vector in seen):
        return shallow, None
    _SEEN.add(vector)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    full = boot(case, run_dir, timeout=timeout, silence_timeout=silence_timeout)
    return full, vector if passed else None


def forget_seen() -> None:
    """Forget the vectors this process has seen (a new campaign in the same process)."""
    _SEEN.clear()
