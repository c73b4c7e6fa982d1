"""The case log, ``OUT/campaign/cases.jsonl``: every case a campaign booted, one JSON line each.

A line holds the case as a reproducer document (bootfuzz.fuzz.reproducer, so
``bootfuzz replay cases.jsonl:N`` boots case N again and checks it still ends the
same way), how it ended (status, verdict, failing oracles, failure signature and
title), how long it took (in all, and per phase: bootfuzz.run.phases), and its
coverage count where one was measured (absent otherwise).

The status is one of bootfuzz.fuzz.state.STATUSES; the message says why a case is
not plain pass or fail: what the second boot of a ``flaky`` case did, the memory
floor of a ``below-floor`` one, the loader's refusal (a ``loader-refused`` finding,
or ``rejected`` with overrides), what an ``infra`` case could not do.

The log is also the campaign's journal: a case's line is appended *before* its
reproducer is written and before the state file that counts it is saved, and the
state records how many bytes of the log it covers.  A campaign killed between the
two leaves lines past that mark; ``--resume`` applies them to the state instead of
losing them (bootfuzz.fuzz.campaign).  Lines are small single writes, so a kill
leaves at most one line without its newline, which recovery cuts off.

Format of a line (keys in this order; optional ones absent when empty)::

    {"case": 12, "status": "fail", "verdict": "fail", "failing": ["boot"],
     "signature": "boot|panic: ...", "title": "panic: ...", "duration": 3.412,
     "phases": {"kernel": 0.02, "plan": 0.004, ...}, "coverage": 1234,
     "message": "...", "run_dir": "...", "reproducer": {...}}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootfuzz.fuzz.reproducer import (
    Reproducer,
    ReproducerError,
    load_reproducer,
    parse_reproducer,
    reproducer_json,
)
from bootfuzz.fuzz.state import STATUSES, CampaignError
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.verdict import Verdict

CASES_NAME = "cases.jsonl"
_KEYS = ("case", "status", "verdict", "failing", "signature", "title", "duration",
         "phases", "coverage", "message", "run_dir", "reproducer")


@dataclass(frozen=True)
class CaseRecord:
    """One line of the case log."""

    index: int  # the case number of the seed (bootfuzz.fuzz.generate.generate_case)
    status: str  # one of bootfuzz.fuzz.state.STATUSES
    reproducer: Reproducer  # the case, and (for a booted case) the verdict it showed
    verdict: Verdict | None = None  # None: never judged (refused or infrastructure)
    failing: tuple[str, ...] = ()
    signature: str | None = None  # bootfuzz.fuzz.triage.Signature.key of a failure
    title: str | None = None  # the signature's console part, for people
    duration: float = 0.0
    coverage: int | None = None  # None: not measured
    message: str = ""  # why a case was refused or could not run
    run_dir: str = ""  # the files of a failing or infrastructure case
    #: Seconds per phase of a booted case, in the order they ran (empty: not booted).
    phases: tuple[tuple[str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "case": self.index, "status": self.status,
            "verdict": None if self.verdict is None else self.verdict.value,
            "failing": list(self.failing), "signature": self.signature, "title": self.title,
            "duration": round(self.duration, 3),
        }
        if self.phases:
            doc["phases"] = {name: round(seconds, 4) for name, seconds in self.phases}
        if self.coverage is not None:
            doc["coverage"] = self.coverage
        if self.message:
            doc["message"] = self.message
        if self.run_dir:
            doc["run_dir"] = self.run_dir
        doc["reproducer"] = reproducer_json(self.reproducer)
        return doc

    @classmethod
    def from_json(cls, doc: object, where: str) -> CaseRecord:
        r = JsonReader(where, error=CampaignError)
        top = r.as_obj(doc, "(line)")
        r.keys(top, _KEYS, "(line)")
        verdict = top.get("verdict")
        signature = top.get("signature")
        title = top.get("title")
        coverage = top.get("coverage")
        phases = r.as_obj(top.get("phases", {}), "phases")
        try:
            rep = parse_reproducer(r.field(top, "reproducer", ""), f"{where}: reproducer")
        except ReproducerError as exc:
            raise CampaignError(str(exc).removeprefix(f"{exc.component}: ")) from None
        return cls(
            index=r.as_int(r.field(top, "case", ""), "case"),
            status=r.as_choice(r.field(top, "status", ""), "status", list(STATUSES)),
            reproducer=rep,
            verdict=None if verdict is None else Verdict(
                r.as_choice(verdict, "verdict", [v.value for v in Verdict])),
            failing=tuple(r.as_str(f, f"failing[{i}]") for i, f in enumerate(
                r.as_list(top.get("failing", []), "failing"))),
            signature=None if signature is None else r.as_str(signature, "signature"),
            title=None if title is None else r.as_str(title, "title"),
            duration=r.as_float(top.get("duration", 0.0), "duration"),
            coverage=None if coverage is None else r.as_int(coverage, "coverage"),
            message=r.as_str(top.get("message", ""), "message"),
            run_dir=r.as_str(top.get("run_dir", ""), "run_dir"),
            phases=tuple((name, r.as_float(seconds, f"phases.{name}"))
                         for name, seconds in phases.items()),
        )

    def line(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class LogTail:
    """What a log holds past an offset: whole records (each with the offset just past
    its line) and where the last whole line ends (a torn line after it is cut)."""

    records: tuple[tuple[int, CaseRecord], ...]
    end: int
    torn: bool


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read the case log: {exc.strerror}") from None


def _parse(path: Path, data: bytes, start: int, stop: int) -> Iterator[tuple[int, CaseRecord]]:
    """Records of the whole lines in data[start:stop], with their end offsets."""
    lineno = data.count(b"\n", 0, start) + 1
    pos = start
    while pos < stop:
        newline = data.find(b"\n", pos, stop)
        if newline < 0:
            return
        where = f"{path} line {lineno}"
        try:
            doc = json.loads(data[pos:newline])
        except (ValueError, RecursionError) as exc:
            raise CampaignError(f"{where}: not a JSON case record: {exc}") from None
        yield newline + 1, CaseRecord.from_json(doc, where)
        pos = newline + 1
        lineno += 1


def read_cases(path: Path, end: int | None = None) -> list[CaseRecord]:
    """The records of the log's first *end* bytes (all of it: None); a missing log is
    empty; a line that does not parse is an error naming the line."""
    data = _read(path)
    stop = len(data) if end is None else min(end, len(data))
    return [rec for _, rec in _parse(path, data, 0, stop)]


def read_tail(path: Path, start: int) -> LogTail:
    """The records after byte *start*: what a killed campaign booted but did not count."""
    data = _read(path)
    if len(data) < start:
        raise CampaignError(
            f"{path}: {len(data)} bytes, but the state counts {start}: the case log was "
            "cut or replaced; restore it or start another --out")
    records = tuple(_parse(path, data, start, len(data)))
    end = records[-1][0] if records else start
    return LogTail(records, end, torn=end < len(data))


def truncate(path: Path, size: int) -> None:
    """Cut the log to *size* bytes (a torn last line goes)."""
    with path.open("r+b") as fh:
        fh.truncate(size)


class CaseLog:
    """The log, open for appending; ``append`` returns the offset past the new line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("ab")

    def append(self, record: CaseRecord) -> int:
        self._fh.write(record.line())  # one write: a kill leaves a whole line or a torn one
        self._fh.flush()
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()


_CASE_REF = re.compile(r"(?P<file>.+\.jsonl):(?P<n>[^:/]*)")


def find_case(path: Path, n: int) -> CaseRecord:
    """The record of case *n* in the log at *path*."""
    if not path.is_file():
        raise CampaignError(f"{path}: no such case log")
    records = read_cases(path)
    for rec in records:
        if rec.index == n:
            return rec
    if not records:
        raise CampaignError(f"{path}: the case log is empty, there is no case {n}")
    numbers = sorted(r.index for r in records)
    raise CampaignError(f"{path}: no case {n}; it has {len(numbers)} case(s), numbered "
                        f"{numbers[0]} to {numbers[-1]}")


def load_replay_source(text: str) -> Reproducer:
    """A reproducer file, or ``LOG.jsonl:N``: case N of a campaign's case log."""
    m = _CASE_REF.fullmatch(text)
    if m is None:
        if text.endswith(".jsonl"):
            raise CampaignError(f"{text}: a case log; name one case as {text}:N (N the "
                                "case number)")
        return load_reproducer(Path(text))
    if not m["n"].isdigit():
        raise CampaignError(f"{text}: {m['n']!r} is not a case number (use {m['file']}:N, "
                            "N >= 0)")
    return find_case(Path(m["file"]), int(m["n"])).reproducer


__all__ = ["CASES_NAME", "CaseLog", "CaseRecord", "LogTail", "find_case",
           "load_replay_source", "read_cases", "read_tail", "truncate"]
