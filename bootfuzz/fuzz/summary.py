"""A campaign's summary, for programs (JSON), CI (JUnit XML) and people (markdown).

Written to ``OUT/campaign/`` at the end of every run, interrupted or not, and by
``bootfuzz merge`` for shards taken together; JUnit shows one testcase per failure
signature, so a CI page lists the distinct bugs.  The per-kernel, per-entry table is
computed from the case log (bootfuzz.fuzz.caselog), so it covers every run of a
resumed campaign and every shard of a merged one.

Failures that are not findings have their own sections, also from the case log and
grouped by signature: ``flaky`` (failed once, not when booted again) and
``below-floor`` (short of memory under the kernel's floor, the floor in the detail).
In JUnit each such signature is a *skipped* testcase (a CI page shows it without
failing the build), and the ``flaky`` and ``below_floor`` counts are suite properties.
Cases with overrides the loader cannot represent (``rejected``) are counted, and the
first few listed with the loader's reason.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootfuzz import junit
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.caselog import CaseRecord
from bootfuzz.fuzz.state import STATUSES, Finding


@dataclass(frozen=True)
class TableRow:
    """Cases of one kernel and entry path: how many ended each way, and how long they took
    (booted cases only: a refused case never started)."""

    kernel: str
    entry: str
    counts: dict[str, int]
    seconds: float  # total
    median: float
    slowest: float

    @property
    def cases(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class NoiseRow:
    """Cases of one signature that failed without being a finding (flaky or below-floor)."""

    signature: str
    cases: tuple[int, ...]  # their case numbers, lowest first
    detail: str  # the first case's: what the second boot did, or the floor

    @property
    def first(self) -> int:
        return self.cases[0]


def _noise(records: Iterable[CaseRecord], status: str) -> tuple[NoiseRow, ...]:
    groups: dict[str, list[CaseRecord]] = {}
    for rec in records:
        if rec.status == status:
            groups.setdefault(rec.signature or "-", []).append(rec)
    rows = []
    for sig, recs in groups.items():
        recs.sort(key=lambda r: r.index)
        rows.append(NoiseRow(sig, tuple(r.index for r in recs), recs[0].message))
    return tuple(sorted(rows, key=lambda r: r.first))


def noise_tables(records: Iterable[CaseRecord]) -> tuple[tuple[NoiseRow, ...],
                                                         tuple[NoiseRow, ...]]:
    """The flaky and the below-floor rows of *records*."""
    recs = list(records)
    return _noise(recs, "flaky"), _noise(recs, "below-floor")


def case_table(records: Iterable[CaseRecord]) -> tuple[TableRow, ...]:
    """One row per (kernel, entry) of *records*, sorted."""
    groups: dict[tuple[str, str], list[CaseRecord]] = {}
    for rec in records:
        case = rec.reproducer.case
        groups.setdefault((case.kernel, case.entry.value), []).append(rec)
    rows = []
    for (kernel, entry), recs in sorted(groups.items()):
        counts = dict.fromkeys(STATUSES, 0)
        for rec in recs:
            counts[rec.status] += 1
        booted = [r.duration for r in recs if r.status != "rejected"]
        median = statistics.median(booted) if booted else 0.0
        rows.append(TableRow(kernel, entry, counts, sum(booted), median,
                             max(booted, default=0.0)))
    return tuple(rows)


@dataclass(frozen=True)
class CampaignSummary:
    kernels: tuple[str, ...]
    seed: int
    shard: tuple[int, int]
    elapsed: float
    counts: dict[str, int]
    findings: tuple[Finding, ...]
    rejections: tuple[str, ...] = ()
    aborted: str = ""
    table: tuple[TableRow, ...] = ()
    stop_signal: int = 0  # the signal that stopped the run early; 0: none
    flaky: tuple[NoiseRow, ...] = ()
    below_floor: tuple[NoiseRow, ...] = ()
    #: Set by merge: the shards taken together (then ``shard`` is unused).
    shards: tuple[tuple[int, int], ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.cases / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def shard_label(self) -> str:
        return "+".join(f"{i}/{n}" for i, n in (self.shards or (self.shard,)))

    @property
    def missing_shards(self) -> tuple[str, ...]:
        """The shards of a merged campaign that were not merged."""
        if not self.shards:
            return ()
        n = self.shards[0][1]
        have = {i for i, _ in self.shards}
        return tuple(f"{i}/{n}" for i in range(n) if i not in have)


def _row_json(row: TableRow) -> dict[str, Any]:
    return {"kernel": row.kernel, "entry": row.entry, "cases": row.cases, **row.counts,
            "seconds": round(row.seconds, 1), "median_seconds": round(row.median, 2),
            "slowest_seconds": round(row.slowest, 2)}


def _noise_json(rows: tuple[NoiseRow, ...]) -> list[dict[str, Any]]:
    return [{"signature": r.signature, "cases": list(r.cases), "detail": r.detail}
            for r in rows]


def summary_json(s: CampaignSummary) -> dict[str, Any]:
    doc = {
        "kernels": list(s.kernels), "seed": s.seed, "shard": s.shard_label,
        "elapsed_seconds": round(s.elapsed, 1), "cases": s.cases,
        "cases_per_second": round(s.rate, 3), "counts": s.counts, "aborted": s.aborted or None,
        "findings": [dataclasses.asdict(f) for f in s.findings],
        "flaky": _noise_json(s.flaky), "below_floor": _noise_json(s.below_floor),
        "rejections": list(s.rejections),
        "by_kernel_and_entry": [_row_json(r) for r in s.table],
    }
    if s.sources:
        doc["merged_from"] = list(s.sources)
        doc["missing_shards"] = list(s.missing_shards)
    return doc


def junit_xml(s: CampaignSummary) -> str:
    """One testcase per failure signature, plus one for the campaign itself (an error
    when it was aborted), and a skipped one per flaky or below-floor signature."""
    campaign = junit.Case(
        "bootfuzz.fuzz", "campaign",
        outcome=junit.Outcome.ERROR if s.aborted else junit.Outcome.PASSED, message=s.aborted,
        system_out=f"{s.cases} cases: " + ", ".join(f"{k} {v}" for k, v in s.counts.items()),
    )
    findings = [junit.Case(
        "bootfuzz.fuzz", f.key, outcome=junit.Outcome.FAILURE,
        message=f"{f.count} case(s); reproducer {f.file}",
        text=f"first case #{f.first_index}; minimized: {f.minimized}",
    ) for f in s.findings]
    noise = [junit.Case(
        "bootfuzz.fuzz", f"{status}: {r.signature}", outcome=junit.Outcome.SKIPPED,
        message=f"{what}, not a finding: {len(r.cases)} case(s), first #{r.first}: "
        f"{r.detail}",
    ) for status, what, rows in (("flaky", "failed once, not when booted again", s.flaky),
                                 ("below-floor", "short of memory below the kernel's floor",
                                  s.below_floor))
        for r in rows]
    return junit.junit_xml(junit.Suite(
        "bootfuzz-fuzz", [campaign, *findings, *noise], s.elapsed,
        properties=(("seed", str(s.seed)), ("shard", s.shard_label),
                    ("kernels", ",".join(s.kernels)),
                    ("flaky", str(s.counts.get("flaky", 0))),
                    ("below_floor", str(s.counts.get("below-floor", 0)))),
    ))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table_markdown(rows: tuple[TableRow, ...]) -> list[str]:
    lines = ["| kernel | entry | cases | " + " | ".join(STATUSES)
             + " | seconds | median s | slowest s |",
             "|---|---|---|" + "---|" * len(STATUSES) + "---|---|---|"]
    lines += [f"| {_md(r.kernel)} | {r.entry} | {r.cases} | "
              + " | ".join(str(r.counts[k]) for k in STATUSES)
              + f" | {r.seconds:.0f} | {r.median:.1f} | {r.slowest:.1f} |" for r in rows]
    return lines


def _noise_markdown(rows: tuple[NoiseRow, ...], detail: str) -> list[str]:
    return ["| signature | cases | first | " + detail + " |", "|---|---|---|---|",
            *(f"| {_md(r.signature)} | {len(r.cases)} | #{r.first} | {_md(r.detail)} |"
              for r in rows)]


def summary_markdown(s: CampaignSummary) -> str:
    merged = f" (merged from {len(s.sources)} shard outputs)" if s.sources else ""
    if s.missing_shards:
        merged += f" (**not merged:** {', '.join(s.missing_shards)})"
    lines = [
        "# bootfuzz campaign",
        "",
        f"Kernels {', '.join(s.kernels)}; seed {s.seed}; shard {s.shard_label}{merged}; "
        f"{s.cases} cases in {s.elapsed:.0f} s ({s.rate:.2f}/s): "
        + ", ".join(f"{v} {k}" for k, v in s.counts.items()) + ".",
        "",
    ]
    if s.aborted:
        lines += [f"**Aborted:** {_md(s.aborted)}", ""]
    if s.findings:
        lines += ["| signature | cases | first | minimized | reproducer |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_md(f.key)} | {f.count} | #{f.first_index} | "
                  f"{'yes' if f.minimized else 'no'} | `{f.file}` |" for f in s.findings]
    else:
        lines.append("No failures.")
    if s.flaky:
        lines += ["", "Flaky (failed once, not when booted again; never findings):", "",
                  *_noise_markdown(s.flaky, "booted again")]
    if s.below_floor:
        lines += ["", "Below the memory floor (the kernel short of memory; never "
                  "findings):", "", *_noise_markdown(s.below_floor, "floor")]
    if s.table:
        lines += ["", "Cases by kernel and entry path (seconds: booted cases):", "",
                  *_table_markdown(s.table)]
    if s.rejections:
        lines += ["", f"Rejected: {s.counts.get('rejected', 0)} case(s) with overrides the "
                  "loader cannot represent; the first:", ""]
        lines += [f"- {_md(r)}" for r in s.rejections]
    return "\n".join(lines) + "\n"


def write_summaries(s: CampaignSummary, directory: Path) -> None:
    atomic_write_text(directory / "summary.json", json.dumps(summary_json(s), indent=2) + "\n")
    atomic_write_text(directory / "junit.xml", junit_xml(s))
    atomic_write_text(directory / "summary.md", summary_markdown(s))


__all__ = ["CampaignSummary", "NoiseRow", "TableRow", "case_table", "junit_xml",
           "noise_tables", "summary_json", "summary_markdown", "write_summaries"]
