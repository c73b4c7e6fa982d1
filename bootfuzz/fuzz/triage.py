"""Failure signatures: what makes two failed boots "the same bug".

A signature is the oracles that failed plus a title: the crash the console shows,
named as syzkaller names Linux crashes (by its site: ``kernel BUG at FILE:LINE``,
``BUG: ... in FUNC``, ``WARNING: at FILE:LINE FUNC``, ...; the precedence is
bootfuzz.judge.patterns.CRASH_PATTERNS), or how the guest ended when nothing crashed.
Titles keep what identifies a site (source line, function) and blank what changes
from boot to boot (addresses, KASLR offsets, numbers, PIDs), so one bug has one
signature and two bugs two.  The campaign keeps one reproducer per signature and
counts the rest; the minimizer accepts a smaller case only while its signature is
unchanged.  ``evidence`` picks the console lines that show a signature, for the
reproducer's reader.  Pure: reads boot results.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bootfuzz.judge.observation import Observation
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.patterns import (
    CRASH_EVIDENCE,
    CRASH_PATTERNS,
    CRASH_PC,
    DIE_HEADER,
    LINUX_VERSION,
    ORACLE_EVIDENCE,
    SOURCE_SITE,
    SYMBOL_OFFSET,
    UNNAMED_TRAP,
    CrashPattern,
    die_trap,
    line_body,
)
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.transcript import GuestExit

#: At most this many console lines go into a reproducer's evidence.
EVIDENCE_LINES = 24


class _Transcript(Protocol):
    @property
    def text(self) -> str: ...


class JudgedBoot(Protocol):
    """What a signature is made of: any judged boot, x86 or device-tree
    (bootfuzz.run.boot.BootResult, bootfuzz.run.dt_boot.DtBootResult)."""

    @property
    def verdict(self) -> Verdict: ...
    @property
    def oracles(self) -> Sequence[OracleResult]: ...
    @property
    def guest_exit(self) -> GuestExit: ...
    @property
    def transcript(self) -> _Transcript: ...


class BootOutcome(JudgedBoot, Protocol):
    """What triage, the minimizer and the campaign read of an x86 boot
    (bootfuzz.run.boot.BootResult; tests pass small fakes)."""

    @property
    def observation(self) -> Observation: ...
    @property
    def phases(self) -> Mapping[str, float]: ...
    @property
    def until(self) -> StopPoint | None: ...


#: What a title keeps (a source site; a symbol, its offsets dropped) and what it blanks
#: (addresses and long hex words; numbers not inside an identifier, so ``ext4_...``
#: stays while PIDs, CPU numbers, sizes and counters go).
_KEEP_OR_BLANK = re.compile(
    rf"(?P<site>{SOURCE_SITE.pattern})|{SYMBOL_OFFSET.pattern}"
    r"|(?P<hex>0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b)|(?<!\w)\d+"
)
#: Titles longer than this are cut (a panic's text can run on).
TITLE_LENGTH = 160


def _keep_or_blank(m: re.Match[str]) -> str:
    if m.group("site"):
        return m.group("site")
    if m.group("func"):
        return m.group("func")
    return "0x?" if m.group("hex") else "N"


def normalize(line: str) -> str:
    """A console message with what varies between boots blanked: addresses and KASLR
    offsets become ``0x?``, other numbers ``N``; source sites and symbols stay."""
    return _KEEP_OR_BLANK.sub(_keep_or_blank, line.strip())[:TITLE_LENGTH]


def _first_boot(console: str) -> list[str]:
    """The line bodies of the first boot (a reset guest prints a second banner)."""
    bodies: list[str] = []
    banners = 0
    for line in console.split("\n"):
        body = line_body(line.rstrip("\r"))
        if LINUX_VERSION.regex.match(body):
            banners += 1
            if banners > 1:
                break
        bodies.append(body)
    return bodies


def _title(pattern: CrashPattern, match: re.Match[str], bodies: Sequence[str], at: int
           ) -> str:
    fields = {k: v for k, v in match.groupdict().items() if v is not None}
    if pattern.text_before:
        fields["text"] = next((b for b in reversed(bodies[:at]) if b.strip()), "")
    if "text" in fields:
        fields["text"] = normalize(fields["text"])
    if pattern.name == "rip":
        traps = [m for b in bodies[:at] if (m := DIE_HEADER.match(b))]
        fields["trap"] = die_trap(traps[-1]) if traps else UNNAMED_TRAP
    title = pattern.title.format(**fields)
    if pattern.needs_function:
        rip = next((m for b in bodies[at + 1:] if (m := CRASH_PC.match(b))), None)
        if rip is not None:
            title += f" in {rip.group('func')}"
    return title[:TITLE_LENGTH]


def crash_title(console: str) -> str | None:
    """The title of the crash in a console transcript; None when nothing crashed.

    The first pattern of CRASH_PATTERNS found anywhere in the first boot wins, at
    its first line: a ``kernel BUG at`` line beats the oops and panic it causes."""
    bodies = _first_boot(console)
    for pattern in CRASH_PATTERNS:
        for at, body in enumerate(bodies):
            if m := pattern.regex.match(body):
                return _title(pattern, m, bodies, at)
    return None


@dataclass(frozen=True, order=True)
class Signature:
    """The failing oracles and the crash's title: one bug, whatever the case."""

    failing: tuple[str, ...]
    title: str  # crash_title(), or how the guest ended: "mismatch", "exit: killed", ...

    @property
    def key(self) -> str:
        return f"{','.join(self.failing) or '-'}|{self.title}"

    @property
    def slug(self) -> str:
        """A file-name stem: readable, short, unique for the key."""
        words = re.sub(r"[^a-z0-9]+", "-", self.key.lower()).strip("-")[:60].rstrip("-")
        return f"{words}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"

    @classmethod
    def parse(cls, key: str) -> Signature:
        failing, _, title = key.partition("|")
        return cls(tuple(f for f in failing.split(",") if f and f != "-"), title)


def signature(result: JudgedBoot) -> Signature | None:
    """The signature of a failed boot; None when it passed."""
    if result.verdict is Verdict.PASS:
        return None
    failing = tuple(sorted(r.name for r in result.oracles
                           if r.asked and r.verdict is Verdict.FAIL))
    title = crash_title(result.transcript.text)
    if title is None:
        if result.guest_exit is GuestExit.POWER_OFF:
            title = "mismatch" if failing else "unknown"
        else:
            title = f"exit: {result.guest_exit.value}"
    return Signature(failing, title)


#: The failing "oracle" of a case without overrides that our loader refused.
LOADER_REFUSED = "loader-refused"


def refusal_signature(message: str) -> Signature:
    """The signature of our loader refusing a case of our own making: a finding titled
    by the message's first line with its numbers blanked (one bug, one signature)."""
    first = message.splitlines()[0] if message else "refused"
    return Signature((LOADER_REFUSED,), normalize(first))


def evidence(result: JudgedBoot, sig: Signature) -> str:
    """The console lines that show *sig*: its oracles' lines and the crash's lines."""
    lines = result.transcript.text.splitlines()
    wanted = [ORACLE_EVIDENCE[n] for n in sig.failing if n in ORACLE_EVIDENCE]
    oracle_lines = re.compile("|".join(wanted)) if wanted else None

    def shows(body: str) -> bool:
        return (oracle_lines is not None and oracle_lines.search(body) is not None) or any(
            p.match(body) for p in CRASH_EVIDENCE)

    picked = [ln.rstrip() for ln in lines if shows(line_body(ln.rstrip("\r")))]
    if not picked:
        picked = [ln.rstrip() for ln in lines[-EVIDENCE_LINES // 2:]]
    for r in result.oracles:
        if r.name in sig.failing and r.name.startswith("valid-"):
            picked.append(f"(plan) {r.name}: expected {r.expected}; observed {r.observed}")
    return "\n".join(picked[:EVIDENCE_LINES])


__all__ = ["EVIDENCE_LINES", "LOADER_REFUSED", "TITLE_LENGTH", "BootOutcome", "JudgedBoot",
           "Signature", "crash_title", "evidence", "normalize", "refusal_signature",
           "signature"]
