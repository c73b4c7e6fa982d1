"""Test-case minimization: the smallest case that still fails the same way.

The minimizer shrinks a failing case field by field (overrides removed one by one,
device-tree holes dropped, command line tokens dropped, initrd toward small, memory
toward the smallest the loader accepts) and keeps each step only while the *same* signature
(bootfuzz.fuzz.triage) still fails, within a budget of boots.  Each candidate has one
of three outcomes: it reproduces, it booted and did not (a verdict), or nothing is
known (the loader refused it, or the budget ran out); only a verdict moves a bound.
Memory is bisected in the granule of the case's machine, the only sizes its backend
runs (QEMU pc's 8 KiB, QEMU virt's MiB).  The boot is injected, so the minimizer runs
without QEMU in unit tests, and the same minimizer serves x86 and device-tree cases.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bootfuzz.case import BootCase, DtOverrides, InitrdPlacement, Overrides, harness_cmdlines
from bootfuzz.compression import Compression
from bootfuzz.errors import ConfigError
from bootfuzz.fuzz.generate import split_cmdline
from bootfuzz.fuzz.triage import JudgedBoot, Signature, signature
from bootfuzz.loader.layout import MiB, align_down, align_up
from bootfuzz.loader.platform import QEMU_RAM_ALIGN
from bootfuzz.loader.virt import RAM_GRANULE as VIRT_RAM_GRANULE

#: Default budget of boots for one minimization (each is a QEMU run of seconds):
#: room for the memory bisection's ~20 steps (8 GiB down to 8 KiB) after the others.
DEFAULT_MAX_BOOTS = 40
#: x86 memory is bisected in QEMU's -m granule: a size between two granules is refused
#: by the loader (bootfuzz.loader.platform.qemu_pc), so it is never a candidate.
MEMORY_GRANULE = QEMU_RAM_ALIGN
#: At most this many memory sizes the loader refuses in one bisection: they cost no
#: boot, so without a cap a stretch the loader refuses throughout would be walked whole.
MAX_REFUSED_SIZES = 64

#: A boot of a candidate, judged: x86 (bootfuzz.run.boot) or device-tree (run.dt_boot).
BootFn = Callable[[BootCase], JudgedBoot]


def memory_granule(case: BootCase) -> int:
    """The step between the memory sizes *case*'s machine runs: QEMU virt's whole MiB
    for the device-tree architectures (bootfuzz.loader.virt), QEMU pc's 8 KiB else."""
    return VIRT_RAM_GRANULE if case.arch.device_tree else MEMORY_GRANULE


# --------------------------------------------------------------------------------------
# Minimization
# --------------------------------------------------------------------------------------


class Outcome(enum.Enum):
    """What one candidate told: only REPRODUCES and OTHER are verdicts."""

    REPRODUCES = "reproduces"  # booted and failed with the target signature
    OTHER = "other"  # booted, and passed or failed differently
    UNKNOWN = "unknown"  # not booted: the loader refused it, or no budget was left


@dataclass(frozen=True)
class Minimized:
    case: BootCase
    result: JudgedBoot | None  # the last boot that showed the signature (None: none ran)
    boots: int
    rejected: int  # candidates the loader refused (no boot)
    steps: tuple[str, ...]  # what was kept, in order
    complete: bool = True  # False: the budget or the deadline stopped it early


class _Search:
    def __init__(self, boot: BootFn, target: Signature, max_boots: int,
                 deadline: float | None, cancelled: Callable[[], bool] | None = None) -> None:
        self.boot = boot
        self.target = target
        self.max_boots = max_boots
        self.deadline = deadline
        self.cancelled = cancelled
        self.boots = 0
        self.rejected = 0
        self.result: JudgedBoot | None = None
        self.known: dict[BootCase, Outcome] = {}

    @property
    def exhausted(self) -> bool:
        late = self.deadline is not None and time.monotonic() >= self.deadline
        return (self.boots >= self.max_boots or late
                or (self.cancelled is not None and self.cancelled()))

    def outcome(self, case: BootCase) -> Outcome:
        if case in self.known:
            return self.known[case]
        if self.exhausted:
            return Outcome.UNKNOWN  # not remembered: no budget is not an answer
        try:
            result = self.boot(case)
        except ConfigError:
            self.rejected += 1  # the loader refused it: nothing is known
            self.known[case] = Outcome.UNKNOWN
            return Outcome.UNKNOWN
        self.boots += 1
        found = Outcome.REPRODUCES if signature(result) == self.target else Outcome.OTHER
        if found is Outcome.REPRODUCES:
            self.result = result
        self.known[case] = found
        return found


def _memory_gap(lo: int, refused: Sequence[int], hi: int, granule: int = MEMORY_GRANULE
                ) -> tuple[int, int] | None:
    """The stretch of (lo, hi) to bisect next, or None when no granule size is left.

    *refused* (sorted) are sizes in between the loader refused; they cut the range into
    gaps, none of them known.  The gap just below *hi* goes first: with refusals below
    it (the loader's "too small"), that is where the threshold is.  Then the widest: a
    smaller failing size may still lie below a refused stretch."""
    points = [lo, *refused, hi]
    gaps = [(a, b) for a, b in itertools.pairwise(points)
            if align_up(a + 1, granule) < b]
    if not gaps:
        return None
    top = gaps[-1]
    return top if top[1] == hi else max(gaps, key=lambda g: g[1] - g[0])


def _memory_probes(a: int, b: int, granule: int = MEMORY_GRANULE) -> tuple[int, ...]:
    """The middle of the gap (a, b) in the granule, then its two neighbours: a size the
    loader refuses alone (not a stretch of them) costs one more plan, no boot."""
    first, last = align_up(a + 1, granule), align_down(b - 1, granule)
    mid = min(max(align_down((a + b) // 2, granule), first), last)
    near = (mid + granule, mid - granule)
    return (mid, *(m for m in near if first <= m <= last))


def _without_overrides(ov: Overrides) -> Iterator[tuple[str, Overrides]]:
    """Each single override removed (header fields one at a time), all of them first."""
    if not ov.empty:
        yield "all overrides", Overrides()
    for i, (name, _) in enumerate(ov.fields):
        yield f"override {name}", dataclasses.replace(ov, fields=ov.fields[:i] + ov.fields[i + 1:])
    for key in ("initrd_addr", "cmdline_addr", "cmdline_raw", "e820", "kernel_load"):
        if getattr(ov, key) is not None:
            cleared: dict[str, Any] = {key: None}
            yield f"override {key}", dataclasses.replace(ov, **cleared)
    if ov.setup_data:
        yield "override setup_data", dataclasses.replace(ov, setup_data=())
    for i, (name, _) in enumerate(ov.start_info):
        yield (f"override start_info {name}",
               dataclasses.replace(ov, start_info=ov.start_info[:i] + ov.start_info[i + 1:]))


def _without_dt_overrides(ov: DtOverrides) -> Iterator[tuple[str, DtOverrides]]:
    """The same for a device-tree case: all of them first, then each header field and
    each other decision back to the loader's."""
    if not ov.empty:
        yield "all device-tree overrides", DtOverrides()
    for i, (name, _) in enumerate(ov.header):
        yield f"dt header {name}", dataclasses.replace(ov, header=ov.header[:i] + ov.header[i + 1:])
    default = DtOverrides()
    for f in dataclasses.fields(DtOverrides):
        if f.name != "header" and getattr(ov, f.name) != getattr(default, f.name):
            cleared: dict[str, Any] = {f.name: getattr(default, f.name)}
            yield f"dt {f.name}", dataclasses.replace(ov, **cleared)


def _without_holes(holes: tuple[tuple[int, int], ...]
                   ) -> Iterator[tuple[str, tuple[tuple[int, int], ...]]]:
    """A device-tree case's memory holes: all of them, then each one."""
    if len(holes) > 1:
        yield "all memory holes", ()
    for i, (start, size) in enumerate(holes):
        yield f"memory hole {start:#x}+{size:#x}", holes[:i] + holes[i + 1:]


def _split_prefix(cmdline: str, case: BootCase) -> tuple[str, list[str]]:
    """The harness's part of *cmdline* (today's for the case's architecture, or an
    earlier version's for a case made before it changed: the longest that matches) and
    the tokens after it."""
    for prefix in sorted(harness_cmdlines(case.arch), key=len, reverse=True):
        if cmdline.startswith(prefix):
            return prefix, split_cmdline(cmdline[len(prefix):])
    return "", split_cmdline(cmdline)


def _join(prefix: str, tokens: Sequence[str]) -> str:
    return " ".join([prefix, *tokens] if prefix else tokens)


def minimize(
    case: BootCase, target: Signature, boot: BootFn, *, max_boots: int = DEFAULT_MAX_BOOTS,
    memory_floor: int = 2 * MiB, deadline: float | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Minimized:
    """Shrink *case* while it still fails with *target*, in at most *max_boots* boots.

    Steps, each kept only if the signature is unchanged: drop all overrides, then
    each one (x86's, or a device-tree case's, then its memory holes); the initrd at the
    top of RAM; drop command-line tokens (all, halves, then one by one; the harness
    prefix stays); initrd seed 0, gzip, then smaller sizes; memory toward
    *memory_floor* by bisection in the machine's granule (memory_granule), down to one
    granule above the largest size that boots without the failure.  Candidates the
    loader refuses (ConfigError) cost no boot and are no verdict: a step that would have
    moved a bound leaves it where it is, and the bisection tries the sizes next to it,
    then another stretch.  *deadline* (time.monotonic) and *cancelled* (asked before
    each boot) stop it early, with what it kept so far.
    """
    s = _Search(boot, target, max_boots, deadline, cancelled)
    steps: list[str] = []

    def attempt(label: str, candidate: BootCase) -> bool:
        nonlocal case
        if candidate != case and s.outcome(candidate) is Outcome.REPRODUCES:
            case = candidate
            steps.append(label)
            return True
        return False

    def remove_each(options: Callable[[BootCase], Iterator[tuple[str, BootCase]]]) -> None:
        """Try the candidates *options* makes of the case; after each one kept, again
        from the smaller case, until none is kept."""
        while not s.exhausted and any(attempt(label, candidate)
                                      for label, candidate in options(case)):
            pass

    # 1. Overrides: all at once, then one by one (restarting after each success); the
    # same for a device-tree case's overrides and its memory holes.
    remove_each(lambda c: ((f"removed {label}", dataclasses.replace(c, overrides=ov))
                           for label, ov in _without_overrides(c.overrides)))
    remove_each(lambda c: ((f"removed {label}", dataclasses.replace(c, dt=dt))
                           for label, dt in _without_dt_overrides(c.dt)))
    remove_each(lambda c: ((f"removed {label}", dataclasses.replace(c, mem_holes=holes))
                           for label, holes in _without_holes(c.mem_holes)))
    if case.initrd is not None and case.initrd_placement is not InitrdPlacement.TOP:
        attempt("initrd at the top",
                dataclasses.replace(case, initrd_placement=InitrdPlacement.TOP))
    # 2. Command-line tokens: all, then halves, then single tokens.
    prefix, tokens = _split_prefix(case.cmdline, case)
    chunk = len(tokens)
    while chunk >= 1 and tokens and not s.exhausted:
        removed = False
        for start in range(0, len(tokens), chunk):
            kept = tokens[:start] + tokens[start + chunk:]
            if attempt(f"dropped {chunk} cmdline token(s)",
                       dataclasses.replace(case, cmdline=_join(prefix, kept))):
                tokens, removed = kept, True
                break
        if not removed:
            chunk //= 2
    # 3. The initrd: simplest seed and compression, then smaller.
    if case.initrd is not None:
        spec = case.initrd
        for label, change in (("seed 0", {"seed": 0}),
                              ("gzip", {"compression": Compression.GZIP})):
            simpler = dataclasses.replace(spec, **change)
            if simpler != spec and attempt(f"initrd {label}",
                                           dataclasses.replace(case, initrd=simpler)):
                spec = simpler
        for size in sorted({0, 4096, spec.size // 16, spec.size // 4, spec.size // 2}):
            if size >= spec.size:
                break
            smaller = dataclasses.replace(spec, size=size)
            if attempt(f"initrd size {size}", dataclasses.replace(case, initrd=smaller)):
                break
    # 4. Memory toward the floor: the floor itself, then bisection in the granule.
    granule = memory_granule(case)
    floor = align_up(memory_floor, granule)
    if floor < case.memory and not attempt("memory at the floor",
                                           dataclasses.replace(case, memory=floor)):
        lo, hi = floor, case.memory  # nothing to try at or below lo; hi reproduces
        refused: list[int] = []  # sizes in (lo, hi) the loader refused: no verdict
        while not s.exhausted and len(refused) < MAX_REFUSED_SIZES:
            gap = _memory_gap(lo, refused, hi, granule)
            if gap is None:
                break
            found, size = Outcome.UNKNOWN, 0
            for size in _memory_probes(*gap, granule):
                if len(refused) >= MAX_REFUSED_SIZES:
                    break
                found = s.outcome(dataclasses.replace(case, memory=size))
                if found is not Outcome.UNKNOWN or s.exhausted:
                    break
                bisect.insort(refused, size)
            if found is Outcome.REPRODUCES:
                hi, case = size, dataclasses.replace(case, memory=size)
                steps.append(f"memory {size:#x}")
                refused = [r for r in refused if r < size]
            elif found is Outcome.OTHER:
                lo = size
                refused = [r for r in refused if r > size]
    return Minimized(case, s.result, s.boots, s.rejected, tuple(steps), not s.exhausted)


__all__ = ["DEFAULT_MAX_BOOTS", "MAX_REFUSED_SIZES", "MEMORY_GRANULE", "BootFn", "Minimized",
           "Outcome", "memory_granule", "minimize"]
