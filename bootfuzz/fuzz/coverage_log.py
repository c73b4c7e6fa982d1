"""The coverage log, ``OUT/campaign/coverage.jsonl``: what each case reached first.

A guided campaign (``bootfuzz fuzz --coverage``) appends one line for every case
that reached kernel blocks no earlier case of the same kernel and entry path had
reached, holding only those new blocks (KASLR-normalized offsets from ``_text``,
bootfuzz.run.coverage) and the functions they reached first.  Taken in time
order, the lines give the campaign's coverage at every moment, which case first
reached each function, per kernel and entry path: what ``bootfuzz coverage
report`` draws (bootfuzz.fuzz.coverage_report).  Shards each write their own; a
merged log is their lines together (the report sorts them by time).

Lines are single appends flushed and fsynced before the case's reproducer is
written, so a SIGKILL loses at most the line being written, which the reader
skips (a line without its newline); a resumed writer rebuilds what it has seen
from the file.  Format (one line, keys in this order)::

    {"v": 1, "at": 1764652800.5, "case": 12, "kernel": "debian-6.1-cloud",
     "kernel_sha256": "...", "entry": "64", "blocks": 50473, "functions": 6094,
     "new_blocks": [1234, ...], "new_functions": ["e820__memory_setup", ...]}

``at`` is Unix time; ``blocks``/``functions`` are the case's own totals.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootfuzz.errors import ConfigError, StorageError
from bootfuzz.jsonread import JsonReader
from bootfuzz.run.coverage import BlockCoverage

COVERAGE_LOG_NAME = "coverage.jsonl"
LOG_VERSION = 1
_KEYS = ("v", "at", "case", "kernel", "kernel_sha256", "entry", "blocks", "functions",
         "new_blocks", "new_functions")


@dataclass(frozen=True)
class CoverageEntry:
    """One line: a case and the coverage it reached first for its kernel and entry path."""

    at: float
    case: int
    kernel: str
    kernel_sha256: str
    entry: str
    blocks: int
    functions: int
    new_blocks: tuple[int, ...]
    new_functions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"v": LOG_VERSION, "at": round(self.at, 3), "case": self.case,
                "kernel": self.kernel, "kernel_sha256": self.kernel_sha256,
                "entry": self.entry, "blocks": self.blocks, "functions": self.functions,
                "new_blocks": list(self.new_blocks), "new_functions": list(self.new_functions)}

    @classmethod
    def from_json(cls, doc: object, where: str) -> CoverageEntry:
        r = JsonReader(where, error=ConfigError)
        top = r.as_obj(doc, "(line)")
        r.keys(top, _KEYS, "(line)")
        if r.as_int(r.field(top, "v", ""), "v") != LOG_VERSION:
            raise ConfigError(f"{where}: coverage log version {top['v']}, "
                              f"this bootfuzz reads {LOG_VERSION}")
        return cls(
            at=r.as_float(r.field(top, "at", ""), "at"),
            case=r.as_int(r.field(top, "case", ""), "case"),
            kernel=r.as_str(r.field(top, "kernel", ""), "kernel"),
            kernel_sha256=r.as_str(r.field(top, "kernel_sha256", ""), "kernel_sha256"),
            entry=r.as_str(r.field(top, "entry", ""), "entry"),
            blocks=r.as_int(r.field(top, "blocks", ""), "blocks"),
            functions=r.as_int(r.field(top, "functions", ""), "functions"),
            new_blocks=tuple(r.as_int(b, "new_blocks[]") for b in
                             r.as_list(r.field(top, "new_blocks", ""), "new_blocks")),
            new_functions=tuple(r.as_str(f, "new_functions[]") for f in
                                r.as_list(r.field(top, "new_functions", ""), "new_functions")),
        )


def read_coverage_log(path: Path) -> list[CoverageEntry]:
    """The entries of *path* in file order; a last line cut short by a kill is skipped,
    any other bad line is a ConfigError naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (nor a corpus beside it): a campaign run "
                          "with bootfuzz fuzz --coverage writes them") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    entries = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], 1):  # the part after the last newline is cut
        if line.strip():
            try:
                doc = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{path}:{number}: not JSON ({exc})") from None
            entries.append(CoverageEntry.from_json(doc, f"{path}:{number}"))
    return entries


class CoverageLog:
    """Appends to a coverage log what each case reached first (per kernel and entry).

    Built from the file it appends to, so a resumed campaign keeps its earlier
    coverage; a last line cut short by a kill is cut off before appending.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._blocks: dict[tuple[str, str], set[int]] = {}
        self._functions: dict[tuple[str, str], set[str]] = {}
        if path.exists():
            self._cut_partial_line()
            for e in read_coverage_log(path):
                key = (e.kernel_sha256, e.entry)
                self._blocks.setdefault(key, set()).update(e.new_blocks)
                self._functions.setdefault(key, set()).update(e.new_functions)

    def _cut_partial_line(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(end)

    def seen_blocks(self, kernel_sha256: str, entry: str) -> frozenset[int]:
        return frozenset(self._blocks.get((kernel_sha256, entry), ()))

    def record(self, case: int, kernel: str, entry: str, coverage: BlockCoverage,
               at: float | None = None) -> CoverageEntry | None:
        """Append *case*'s new blocks and functions, if it has any; returns the line
        written (None: nothing new for its kernel and entry path)."""
        key = (coverage.kernel_sha256, entry)
        seen = self._blocks.setdefault(key, set())
        new_blocks = coverage.blocks - seen
        if not new_blocks:
            return None
        functions = coverage.functions()
        seen_functions = self._functions.setdefault(key, set())
        entry_line = CoverageEntry(
            at=time.time() if at is None else at, case=case, kernel=kernel,
            kernel_sha256=coverage.kernel_sha256, entry=entry, blocks=len(coverage.blocks),
            functions=len(functions), new_blocks=tuple(sorted(new_blocks)),
            new_functions=tuple(sorted(functions - seen_functions)),
        )
        line = json.dumps(entry_line.to_json(), separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                f.write(line.encode())
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StorageError.writing(self.path, exc) from None
        seen |= new_blocks
        seen_functions |= functions
        return entry_line
