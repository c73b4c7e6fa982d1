"""A guided campaign's corpus: every case that showed something new, kept as a reproducer.

What a boot showed (:class:`Signals`) is three kinds of feature, each per kernel:
its verdict vector (the oracles asked and their answers, bootfuzz.fuzz.depth), its
console lines normalized (numbers and addresses blanked as in triage; lines that
echo the case's own command-line tokens and the agent's report dropped, or every
command line would be new), and, when the boot ran with coverage, the kernel blocks
it reached (KASLR-normalized offsets, bootfuzz.run.coverage).  A case with a
feature no earlier case had is kept in ``OUT/campaign/corpus/`` as a reproducer file
(``bootfuzz replay`` boots it again) whose ``corpus`` part holds the features it
added, the case number, the campaign time it was found at and, for a mutant, its
parent and the dimension changed.

The features seen are the union of the entries' new features, so the corpus
directory is all the state there is: a resumed campaign, ``--corpus DIR`` (an
earlier night's corpus as seeds) and ``bootfuzz merge`` (shards' corpora) read it
back.  An entry is written (atomically) before its case's log line: a campaign
killed between the two keeps the entry and boots that case number again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootfuzz.case import HARNESS_CMDLINE, BootCase
from bootfuzz.errors import ConfigError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.generate import split_cmdline
from bootfuzz.fuzz.reproducer import (
    Expectation,
    Reproducer,
    load_reproducer,
    reproducer_json,
)
from bootfuzz.fuzz.state import CampaignError
from bootfuzz.fuzz.triage import normalize
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.patterns import line_body

CORPUS_DIR = "corpus"
#: The reproducer document's key for what a corpus entry adds.
CORPUS_KEY = "corpus"
#: Console lines that say nothing of the boot path: our agent's report.
_AGENT = re.compile(r"^BOOTFUZZ-")


@dataclass(frozen=True)
class Signals:
    """What one boot showed, for novelty: picklable, small but for the blocks."""

    verdicts: str  # "oracle=answer,..." of the oracles asked
    lines: frozenset[str]
    blocks: frozenset[int] | None = None  # None: booted without coverage


def console_features(case: BootCase, console: str) -> frozenset[str]:
    """The console's lines, normalized, without those echoing the case's own tokens."""
    own = [t for t in split_cmdline(case.cmdline) if t not in HARNESS_CMDLINE.split()]
    out = set()
    for line in console.splitlines():
        body = line_body(line.rstrip("\r")).strip()
        if not body or _AGENT.match(body) or any(t in body for t in own):
            continue
        out.add(normalize(body))
    return frozenset(out)


def verdict_text(vector: Iterable[tuple[str, str]]) -> str:
    return ",".join(f"{name}={answer}" for name, answer in vector)


@dataclass(frozen=True)
class Novelty:
    """The features of a boot no earlier case of its kernel showed."""

    verdicts: tuple[str, ...] = ()
    lines: tuple[str, ...] = ()
    blocks: tuple[int, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.verdicts or self.lines or self.blocks)

    def to_json(self) -> dict[str, Any]:
        return {"verdicts": list(self.verdicts), "lines": list(self.lines),
                "blocks": list(self.blocks)}


@dataclass(frozen=True)
class CorpusEntry:
    """One kept case: its file, what it added, when and how it was made."""

    path: Path
    case: BootCase
    index: int
    elapsed: float
    new: Novelty
    blocks: int | None = None  # how many blocks its boot reached (None: not measured)
    parent: str | None = None  # the entry it was mutated from (its file name)
    mutated: str | None = None  # the dimension changed (bootfuzz.fuzz.draws)

    @property
    def name(self) -> str:
        return self.path.name


def _features(r: JsonReader, doc: object, where: str) -> tuple[Novelty, dict[str, Any]]:
    top = r.as_obj(doc, where)
    r.keys(top, ("case", "elapsed", "kernel", "new", "blocks", "parent", "mutated"), where)
    new = r.as_obj(r.field(top, "new", where), f"{where}.new")
    r.keys(new, ("verdicts", "lines", "blocks"), f"{where}.new")
    novelty = Novelty(
        verdicts=tuple(r.as_str(v, f"{where}.new.verdicts[]")
                       for v in r.as_list(new.get("verdicts", []), f"{where}.new.verdicts")),
        lines=tuple(r.as_str(v, f"{where}.new.lines[]")
                    for v in r.as_list(new.get("lines", []), f"{where}.new.lines")),
        blocks=tuple(r.as_int(v, f"{where}.new.blocks[]")
                     for v in r.as_list(new.get("blocks", []), f"{where}.new.blocks")),
    )
    return novelty, top


def load_entry(path: Path) -> CorpusEntry:
    """Read one corpus file (a reproducer with a ``corpus`` part)."""
    rep = load_reproducer(path)
    doc = rep.extra.get(CORPUS_KEY)
    if doc is None:
        raise CampaignError(f"{path}: a reproducer without a corpus part, not a corpus entry")
    r = JsonReader(str(path), error=CampaignError)
    novelty, top = _features(r, doc, CORPUS_KEY)
    blocks, parent, mutated = top.get("blocks"), top.get("parent"), top.get("mutated")
    return CorpusEntry(
        path=path, case=rep.case,
        index=r.as_int(r.field(top, "case", CORPUS_KEY), "corpus.case"),
        elapsed=r.as_float(top.get("elapsed", 0.0), "corpus.elapsed"), new=novelty,
        blocks=None if blocks is None else r.as_int(blocks, "corpus.blocks"),
        parent=None if parent is None else r.as_str(parent, "corpus.parent"),
        mutated=None if mutated is None else r.as_str(mutated, "corpus.mutated"),
    )


def entry_name(index: int, case: BootCase) -> str:
    digest = hashlib.sha256(json.dumps(reproducer_json(Reproducer(case)),
                                       sort_keys=True).encode()).hexdigest()[:10]
    return f"{index:07d}-{digest}.json"


@dataclass
class Corpus:
    """The entries of one corpus directory and the features they add up to."""

    directory: Path
    entries: list[CorpusEntry] = field(default_factory=list)
    verdicts: set[tuple[str, str]] = field(default_factory=set)  # (kernel, vector)
    lines: set[tuple[str, str]] = field(default_factory=set)  # (kernel, line)
    blocks: dict[str, set[int]] = field(default_factory=dict)  # kernel -> offsets

    @classmethod
    def open(cls, directory: Path) -> Corpus:
        """The corpus in *directory* (made if missing), its entries in the order found."""
        corpus = cls(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for entry in read_entries(directory):
            corpus._learn(entry)
        return corpus

    def _learn(self, entry: CorpusEntry) -> None:
        kernel = entry.case.kernel
        self.entries.append(entry)
        self.verdicts.update((kernel, v) for v in entry.new.verdicts)
        self.lines.update((kernel, ln) for ln in entry.new.lines)
        self.blocks.setdefault(kernel, set()).update(entry.new.blocks)

    def novelty(self, kernel: str, signals: Signals) -> Novelty:
        """What *signals* show that no entry of *kernel* has."""
        seen = self.blocks.get(kernel, set())
        return Novelty(
            verdicts=() if (kernel, signals.verdicts) in self.verdicts else (signals.verdicts,),
            lines=tuple(sorted(ln for ln in signals.lines if (kernel, ln) not in self.lines)),
            blocks=tuple(sorted((signals.blocks or frozenset()) - seen)),
        )

    def add(self, case: BootCase, index: int, elapsed: float, new: Novelty, *,
            kernel_sha256: str | None = None, expect: Expectation | None = None,
            blocks: int | None = None, parent: str | None = None,
            mutated: str | None = None, description: str = "") -> CorpusEntry:
        """Write the entry (atomically), then count its features as seen."""
        path = self.directory / entry_name(index, case)
        doc: dict[str, Any] = {"case": index, "elapsed": round(elapsed, 3),
                               "new": new.to_json()}
        if blocks is not None:
            doc["blocks"] = blocks
        if parent is not None:
            doc["parent"] = parent
        if mutated is not None:
            doc["mutated"] = mutated
        rep = Reproducer(case, kernel_sha256=kernel_sha256, expect=expect,
                         description=description, extra={CORPUS_KEY: doc})
        atomic_write_text(path, json.dumps(reproducer_json(rep), separators=(",", ":")) + "\n")
        entry = CorpusEntry(path, case, index, elapsed, new, blocks, parent, mutated)
        self._learn(entry)
        return entry

    def seed_from(self, directory: Path, kernels: Sequence[str]) -> int:
        """Copy an earlier corpus's entries of *kernels* in (their features count as
        seen, their cases are parents); returns how many were new here."""
        if not directory.is_dir():
            raise CampaignError(f"--corpus {directory}: no such directory")
        known = {e.name for e in self.entries}
        added = 0
        for entry in read_entries(directory):
            if entry.case.kernel not in kernels or entry.name in known:
                continue
            target = self.directory / entry.name
            atomic_write_text(target, entry.path.read_text(encoding="utf-8"))
            self._learn(CorpusEntry(target, entry.case, entry.index, entry.elapsed,
                                    entry.new, entry.blocks, entry.parent, entry.mutated))
            added += 1
        return added

    def block_count(self) -> int:
        return sum(len(b) for b in self.blocks.values())


def read_entries(directory: Path) -> list[CorpusEntry]:
    """The entries of *directory* in the order they were found (time, then number);
    a file that is not an entry is an error naming it."""
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            out.append(load_entry(path))
        except ConfigError as exc:
            raise CampaignError(f"corpus: {str(exc).removeprefix(f'{exc.component}: ')}"
                                ) from None
    out.sort(key=lambda e: (e.elapsed, e.index))
    return out


__all__ = ["CORPUS_DIR", "CORPUS_KEY", "Corpus", "CorpusEntry", "Novelty", "Signals",
           "console_features", "entry_name", "load_entry", "read_entries", "verdict_text"]
