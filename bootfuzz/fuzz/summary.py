"""A campaign's summary, for programs (JSON), CI (JUnit XML) and people (markdown).

Written to ``OUT/campaign/`` at the end of every run, interrupted or not; JUnit
shows one testcase per failure signature, so a CI page lists the distinct bugs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootfuzz import junit
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.state import Finding


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

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.cases / self.elapsed if self.elapsed > 0 else 0.0


def summary_json(s: CampaignSummary) -> dict[str, Any]:
    return {
        "kernels": list(s.kernels), "seed": s.seed, "shard": f"{s.shard[0]}/{s.shard[1]}",
        "elapsed_seconds": round(s.elapsed, 1), "cases": s.cases,
        "cases_per_second": round(s.rate, 3), "counts": s.counts, "aborted": s.aborted or None,
        "findings": [dataclasses.asdict(f) for f in s.findings],
        "rejections": list(s.rejections),
    }


def junit_xml(s: CampaignSummary) -> str:
    """One testcase per failure signature, plus one for the campaign itself (an error
    when it was aborted)."""
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
    return junit.junit_xml(junit.Suite(
        "bootfuzz-fuzz", [campaign, *findings], s.elapsed,
        properties=(("seed", str(s.seed)), ("shard", f"{s.shard[0]}/{s.shard[1]}"),
                    ("kernels", ",".join(s.kernels))),
    ))


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(s: CampaignSummary) -> str:
    lines = [
        "# bootfuzz campaign",
        "",
        f"Kernels {', '.join(s.kernels)}; seed {s.seed}; shard {s.shard[0]}/{s.shard[1]}; "
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
    if s.rejections:
        lines += ["", "Cases the loader refused (a generator bug):", ""]
        lines += [f"- {_md(r)}" for r in s.rejections]
    return "\n".join(lines) + "\n"


def write_summaries(s: CampaignSummary, directory: Path) -> None:
    atomic_write_text(directory / "summary.json", json.dumps(summary_json(s), indent=2) + "\n")
    atomic_write_text(directory / "junit.xml", junit_xml(s))
    atomic_write_text(directory / "summary.md", summary_markdown(s))


__all__ = ["CampaignSummary", "junit_xml", "summary_json", "summary_markdown",
           "write_summaries"]
