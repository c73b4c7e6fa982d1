"""Test-case minimization: the smallest case that still fails the same way.

The minimizer shrinks a failing case field by field (overrides removed one by one,
command line tokens dropped, initrd toward small, memory toward the smallest the
loader accepts) and keeps each step only while the *same* signature
(bootfuzz.fuzz.triage) still fails, within a budget of boots.  The boot is
injected, so the minimizer runs without QEMU in unit tests.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bootfuzz.case import HARNESS_CMDLINE, BootCase, Overrides
from bootfuzz.compression import Compression
from bootfuzz.errors import ConfigError
from bootfuzz.fuzz.generate import split_cmdline
from bootfuzz.fuzz.triage import BootOutcome, Signature, signature
from bootfuzz.loader.layout import PAGE_SIZE, MiB, align_down, align_up

#: Default budget of boots for one minimization (each is a QEMU run of seconds).
DEFAULT_MAX_BOOTS = 24
#: Memory bisection stops when the bracket is this narrow.
MEMORY_RESOLUTION = 4 * MiB

BootFn = Callable[[BootCase], BootOutcome]


# --------------------------------------------------------------------------------------
# Minimization
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Minimized:
    case: BootCase
    result: BootOutcome | None  # the last boot that showed the signature (None: none ran)
    boots: int
    rejected: int  # candidates the loader refused (no boot)
    steps: tuple[str, ...]  # what was kept, in order
    complete: bool = True  # False: the budget or the deadline stopped it early


class _Search:
    def __init__(self, boot: BootFn, target: Signature, max_boots: int,
                 deadline: float | None) -> None:
        self.boot = boot
        self.target = target
        self.max_boots = max_boots
        self.deadline = deadline
        self.boots = 0
        self.rejected = 0
        self.result: BootOutcome | None = None
        self.seen: set[BootCase] = set()

    @property
    def exhausted(self) -> bool:
        late = self.deadline is not None and time.monotonic() >= self.deadline
        return self.boots >= self.max_boots or late

    def reproduces(self, case: BootCase) -> bool:
        if self.exhausted or case in self.seen:
            return False
        self.seen.add(case)
        try:
            result = self.boot(case)
        except ConfigError:
            self.rejected += 1  # the loader refused it: not the same failure
            return False
        self.boots += 1
        if signature(result) == self.target:
            self.result = result
            return True
        return False


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


def _split_prefix(cmdline: str) -> tuple[str, list[str]]:
    if cmdline.startswith(HARNESS_CMDLINE):
        return HARNESS_CMDLINE, split_cmdline(cmdline[len(HARNESS_CMDLINE):])
    return "", split_cmdline(cmdline)


def _join(prefix: str, tokens: Sequence[str]) -> str:
    return " ".join([prefix, *tokens] if prefix else tokens)


def minimize(
    case: BootCase, target: Signature, boot: BootFn, *, max_boots: int = DEFAULT_MAX_BOOTS,
    memory_floor: int = 2 * MiB, deadline: float | None = None,
) -> Minimized:
    """Shrink *case* while it still fails with *target*, in at most *max_boots* boots.

    Steps, each kept only if the signature is unchanged: drop all overrides, then
    each one; drop command-line tokens (all, halves, then one by one; the harness
    prefix stays); initrd seed 0, gzip, then smaller sizes; memory toward
    *memory_floor* by bisection (page-aligned, to MEMORY_RESOLUTION).  Candidates
    the loader refuses (ConfigError) cost no boot and never count as reproducing.
    """
    s = _Search(boot, target, max_boots, deadline)
    steps: list[str] = []

    def attempt(label: str, candidate: BootCase) -> bool:
        nonlocal case
        if candidate != case and s.reproduces(candidate):
            case = candidate
            steps.append(label)
            return True
        return False

    # 1. Overrides: all at once, then one by one (restarting after each success).
    progress = True
    while progress and not case.overrides.empty and not s.exhausted:
        progress = False
        for label, ov in _without_overrides(case.overrides):
            if attempt(f"removed {label}", dataclasses.replace(case, overrides=ov)):
                progress = True
                break
    # 2. Command-line tokens: all, then halves, then single tokens.
    prefix, tokens = _split_prefix(case.cmdline)
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
    # 4. Memory toward the floor: the floor itself, then bisection.
    floor = align_up(memory_floor, PAGE_SIZE)
    if floor < case.memory and not attempt("memory at the floor",
                                           dataclasses.replace(case, memory=floor)):
        lo, hi = floor, case.memory  # lo does not reproduce, hi does
        while hi - lo > MEMORY_RESOLUTION and not s.exhausted:
            mid = align_down((lo + hi) // 2, PAGE_SIZE)
            if attempt(f"memory {mid:#x}", dataclasses.replace(case, memory=mid)):
                hi = mid
            else:
                lo = mid
    return Minimized(case, s.result, s.boots, s.rejected, tuple(steps), not s.exhausted)


__all__ = ["DEFAULT_MAX_BOOTS", "BootFn", "Minimized", "minimize"]
