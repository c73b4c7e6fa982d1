"""Failure signatures and test-case minimization.

A failure's *signature* is what makes two failures "the same bug": the oracles that
failed and one word on how the guest ended (the first panic line, normalized, or a
hang/reset).  The minimizer shrinks a failing case field by field (overrides
removed one by one, command line tokens dropped, initrd toward small, memory
toward the smallest the loader accepts) and keeps each step only while the *same*
signature still fails, within a budget of boots.  The boot is injected, so the
minimizer runs without QEMU in unit tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bootfuzz.case import HARNESS_CMDLINE, BootCase, Overrides
from bootfuzz.errors import ConfigError
from bootfuzz.fuzz.generate import split_cmdline
from bootfuzz.guest.initramfs import Compression
from bootfuzz.judge.observation import Observation, line_body
from bootfuzz.judge.oracles import OracleResult, Verdict
from bootfuzz.loader.layout import PAGE_SIZE, MiB, align_down, align_up
from bootfuzz.run.backends.base import GuestExit

#: Default budget of boots for one minimization (each is a QEMU run of seconds).
DEFAULT_MAX_BOOTS = 24
#: Memory bisection stops when the bracket is this narrow.
MEMORY_RESOLUTION = 4 * MiB
#: At most this many console lines go into a reproducer's evidence.
EVIDENCE_LINES = 24


class _Transcript(Protocol):
    @property
    def text(self) -> str: ...


class BootOutcome(Protocol):
    """What the minimizer and the campaign read of a boot (bootfuzz.run.boot.BootResult)."""

    @property
    def verdict(self) -> Verdict: ...
    @property
    def oracles(self) -> Sequence[OracleResult]: ...
    @property
    def observation(self) -> Observation: ...
    @property
    def guest_exit(self) -> GuestExit: ...
    @property
    def transcript(self) -> _Transcript: ...


BootFn = Callable[[BootCase], BootOutcome]


# --------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------

_HEX = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b")
_NUM = re.compile(r"\d+")


def normalize(line: str) -> str:
    """A console message with its addresses and numbers blanked, so runs compare."""
    return _NUM.sub("N", _HEX.sub("ADDR", line.strip())).replace("ADDR", "0x?")[:160]


@dataclass(frozen=True, order=True)
class Signature:
    """The failing oracles and how the guest ended: one bug, whatever the case."""

    failing: tuple[str, ...]
    kind: str

    @property
    def key(self) -> str:
        return f"{','.join(self.failing) or '-'}|{self.kind}"

    @property
    def slug(self) -> str:
        """A file-name stem: readable, short, unique for the key."""
        import hashlib

        words = re.sub(r"[^a-z0-9]+", "-", self.key.lower()).strip("-")[:60].rstrip("-")
        return f"{words}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"

    @classmethod
    def parse(cls, key: str) -> Signature:
        failing, _, kind = key.partition("|")
        return cls(tuple(f for f in failing.split(",") if f and f != "-"), kind)


def signature(result: BootOutcome) -> Signature | None:
    """The signature of a failed boot; None when it passed."""
    if result.verdict is Verdict.PASS:
        return None
    failing = tuple(sorted(r.name for r in result.oracles
                           if r.asked and r.verdict is Verdict.FAIL))
    obs = result.observation
    if obs.panics:
        kind = "panic: " + normalize(obs.panics[0])
    elif result.guest_exit is GuestExit.POWER_OFF:
        kind = "mismatch" if failing else "unknown"
    else:
        kind = f"exit: {result.guest_exit.value}"
    return Signature(failing, kind)


#: Console lines that show each oracle's answer (what a reader of a reproducer wants).
_EVIDENCE_PATTERNS: dict[str, str] = {
    "boot": r"Kernel panic|Linux version|Run .* as init|BOOTFUZZ|bootfuzz-firmware",
    "e820": r"BIOS-e820|e820:",
    "cmdline": r"Command line:",
    "agent-cmdline": r"Command line:",
    "initrd-placement": r"RAMDISK",
    "initrd-unpacked": r"initramfs|Initramfs|initrd",
}


def evidence(result: BootOutcome, sig: Signature) -> str:
    """The console lines that show *sig*: the panic, and the lines its oracles read."""
    lines = result.transcript.text.splitlines()
    wanted = [_EVIDENCE_PATTERNS[n] for n in sig.failing if n in _EVIDENCE_PATTERNS]
    if sig.kind.startswith("panic"):
        wanted.append(r"Kernel panic")
    picked: list[str] = []
    if wanted:
        pattern = re.compile("|".join(wanted))
        picked = [ln.rstrip() for ln in lines if pattern.search(line_body(ln))]
    if not picked:
        picked = [ln.rstrip() for ln in lines[-EVIDENCE_LINES // 2:]]
    for r in result.oracles:
        if r.name in sig.failing and r.name.startswith("valid-"):
            picked.append(f"(plan) {r.name}: expected {r.expected}; observed {r.observed}")
    return "\n".join(picked[:EVIDENCE_LINES])


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


# --------------------------------------------------------------------------------------
# bootfuzz minimize FILE
# --------------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``minimize`` to the ``bootfuzz`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "minimize", help="shrink a failing reproducer while it fails the same way",
        description="Boot the reproducer, take its failure signature (failing oracles and "
        "how the guest ended), then shrink overrides, command line, initrd and memory while "
        "the same signature still fails.  Writes the smaller reproducer.",
    )
    p.add_argument("file", metavar="FILE", help="a reproducer JSON file that fails")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write the result; default FILE with .min.json")
    p.add_argument("--max-boots", type=int, default=DEFAULT_MAX_BOOTS, metavar="N",
                   help=f"boot at most N candidates; default {DEFAULT_MAX_BOOTS}")
    p.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS",
                   help="give up on one guest after this long; default 180")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``bootfuzz minimize``: 0 a smaller reproducer was written, 1 the file does not
    fail (nothing to minimize); errors raise (the CLI maps them to 2 and 3)."""
    from bootfuzz.fuzz.generate import KernelLimits, min_memory
    from bootfuzz.fuzz.reproducer import (
        Expectation,
        check_kernel_sha256,
        load_reproducer,
        write_reproducer,
    )
    from bootfuzz.judge.oracles import StopPoint
    from bootfuzz.kernel.image import load_kernel_image
    from bootfuzz.kernel.pinned import resolve_kernel
    from bootfuzz.run.boot import run_case

    path = Path(args.file)
    rep = load_reproducer(path)
    kernel_path = resolve_kernel(rep.case.kernel)
    check_kernel_sha256(rep, kernel_path)
    until: StopPoint | None = rep.until

    def boot(case: BootCase) -> BootOutcome:
        return run_case(case, timeout=args.timeout, until=until)

    first = boot(rep.case)
    sig = signature(first)
    if sig is None:
        print(f"{path}: the case passes; nothing to minimize", file=sys.stderr)
        return 1
    print(f"{path}: fails as {sig.key}", file=sys.stderr)
    limits = KernelLimits.of(load_kernel_image(kernel_path))
    done = minimize(rep.case, sig, boot, max_boots=args.max_boots,
                    memory_floor=min_memory(limits, rep.case.initrd))
    shown = done.result or first
    out = Path(args.out) if args.out else path.with_suffix(".min.json")
    write_reproducer(dataclasses.replace(
        rep, case=done.case, expect=Expectation(Verdict.FAIL, sig.failing),
        evidence=evidence(shown, sig),
        description=rep.description or f"minimized from {path.name}: {sig.key}",
    ), out)
    print(f"{out}: {len(done.steps)} steps kept in {done.boots} boots "
          f"({done.rejected} refused by the loader): {'; '.join(done.steps) or 'none'}")
    return 0


__all__ = ["BootOutcome", "Minimized", "Signature", "add_parser", "evidence", "minimize",
           "normalize", "run", "signature"]
