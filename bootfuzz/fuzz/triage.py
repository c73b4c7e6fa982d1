"""Failure signatures: what makes two failed boots "the same bug".

A signature is the oracles that failed plus one word on how the guest ended (the
first panic line with its numbers blanked, or a hang/reset).  The campaign keeps
one reproducer per signature and counts the rest; the minimizer accepts a smaller
case only while its signature is unchanged.  ``evidence`` picks the console lines
that show a signature, for the reproducer's reader.  Pure: reads boot results.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bootfuzz.judge.observation import Observation
from bootfuzz.judge.patterns import ORACLE_EVIDENCE, PANIC_EVIDENCE, line_body
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.transcript import GuestExit

#: At most this many console lines go into a reproducer's evidence.
EVIDENCE_LINES = 24


class _Transcript(Protocol):
    @property
    def text(self) -> str: ...


class BootOutcome(Protocol):
    """What triage, the minimizer and the campaign read of a boot
    (bootfuzz.run.boot.BootResult; tests pass small fakes)."""

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


def evidence(result: BootOutcome, sig: Signature) -> str:
    """The console lines that show *sig*: the panic, and the lines its oracles read."""
    lines = result.transcript.text.splitlines()
    wanted = [ORACLE_EVIDENCE[n] for n in sig.failing if n in ORACLE_EVIDENCE]
    if sig.kind.startswith("panic"):
        wanted.append(PANIC_EVIDENCE)
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


__all__ = ["EVIDENCE_LINES", "BootOutcome", "Signature", "evidence", "normalize", "signature"]
