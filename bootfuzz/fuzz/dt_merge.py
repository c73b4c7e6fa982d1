"""Device-tree shards taken together: ``bootfuzz merge OUT...`` on the outputs of
``bootfuzz fuzz --shard i/n`` runs with arm64/riscv64 kernels.

The x86 merge's rules (bootfuzz.fuzz.merge), for the device-tree campaign's files
(bootfuzz.fuzz.dt_campaign): the shards must be of one campaign (the same state but
for the shard, the same n, no shard twice, no case twice) and none may still run
(its lock held).  What one machine would have written comes out: the case logs as one
``dt-campaign/cases.jsonl`` in case order; per signature, the finding of the lowest
case number (the one a single run meets first) with its reproducer, as its shard
minimized it, copied to ``reproducers/``, and that shard's line of ``minimized.jsonl``;
one ``summary.md`` and ``junit.xml``.  A killed shard's torn last line is left out (its
``--resume`` counts that case), and a reproducer the kill left unwritten is taken from
the case's log line, as it was found.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.fileio import atomic_write_bytes, atomic_write_text
from bootfuzz.fuzz.campaign import campaign_lock
from bootfuzz.fuzz.caselog import CASES_NAME, CaseRecord, read_tail
from bootfuzz.fuzz.dt_campaign import (
    MINIMIZED_NAME,
    STATE_NAME,
    WORK_DIR,
    DtCampaignSummary,
    MinimizationRecord,
    outcome_of,
    read_minimized,
    reproducer_path,
    summary_junit,
    summary_markdown,
)
from bootfuzz.fuzz.merge import merged_records, not_running
from bootfuzz.fuzz.reproducer import write_reproducer
from bootfuzz.fuzz.state import CampaignError


def is_dt_output(out: Path) -> bool:
    """Whether *out* is the --out of a device-tree campaign."""
    return (out / WORK_DIR / STATE_NAME).is_file()


@dataclass(frozen=True)
class DtShard:
    """One shard's --out, read."""

    out: Path
    state: dict[str, object]
    records: tuple[CaseRecord, ...]
    minimized: dict[str, MinimizationRecord]
    elapsed: float  # from its junit.xml (0 when it wrote none: killed)

    @property
    def shard(self) -> tuple[int, int]:
        raw = self.state.get("shard", [0, 1])
        if (not isinstance(raw, list) or len(raw) != 2
                or not all(isinstance(x, int) for x in raw)):
            raise CampaignError(f"{self.out / WORK_DIR / STATE_NAME}: shard {raw!r} is not [i, n]")
        return raw[0], raw[1]

    @property
    def label(self) -> str:
        return f"{self.shard[0]}/{self.shard[1]}"

    @property
    def decides(self) -> dict[str, object]:
        """What decides the cases, the shard aside: equal in shards of one campaign."""
        return {k: v for k, v in self.state.items() if k != "shard"}


def _elapsed(path: Path) -> float:
    try:
        return float(ET.parse(path).getroot().get("time", "0"))
    except (OSError, ET.ParseError, ValueError):
        return 0.0


def read_dt_shard(out: Path) -> DtShard:
    work = out / WORK_DIR
    with not_running(work):
        try:
            state = json.loads((work / STATE_NAME).read_text())
        except (OSError, ValueError) as exc:
            raise CampaignError(f"{work / STATE_NAME}: not a campaign state file ({exc})"
                                ) from None
        if not isinstance(state, dict):
            raise CampaignError(f"{work / STATE_NAME}: not a campaign state file")
        records = tuple(rec for _, rec in read_tail(work / CASES_NAME, 0).records)
        return DtShard(out, state, records, read_minimized(work / MINIMIZED_NAME),
                       _elapsed(work / "junit.xml"))


def _check_one_campaign(shards: Sequence[DtShard]) -> None:
    first = shards[0]
    seen: dict[int, DtShard] = {}
    for s in shards:
        if s.decides != first.decides or s.shard[1] != first.shard[1]:
            raise CampaignError(
                f"{s.out} ({s.decides}, shard {s.label}) and {first.out} ({first.decides}, "
                f"shard {first.label}) are not shards of one campaign: merge outputs of the "
                "same --seed, --kernel, --overrides and --mem-max, split the same --shard i/N")
        other = seen.get(s.shard[0])
        if other is not None:
            raise CampaignError(f"{s.out} and {other.out} are both shard {s.label}")
        seen[s.shard[0]] = s


def merge_dt_campaigns(outs: Sequence[Path], dest: Path) -> DtCampaignSummary:
    """Merge the device-tree shard outputs *outs* into *dest*; returns the summary."""
    if not outs:
        raise CampaignError("merge: give at least one campaign --out")
    if dest.resolve() in {o.resolve() for o in outs}:
        raise CampaignError(f"{dest}: is one of the outputs to merge; give another --out")
    shards = sorted((read_dt_shard(o) for o in outs), key=lambda s: s.shard[0])
    _check_one_campaign(shards)
    seed = shards[0].state.get("seed")
    if not isinstance(seed, int):
        raise CampaignError(f"{shards[0].out / WORK_DIR / STATE_NAME}: no seed")
    n = shards[0].shard[1]
    given = {s.shard[0] for s in shards}
    summary = DtCampaignSummary(
        seed, shard=(0, 1), merged=tuple(s.label for s in shards),
        missing_shards=tuple(f"{i}/{n}" for i in range(n) if i not in given))
    # Every case, in case order; per signature the lowest case and its shard.
    records = merged_records([(s.out, s.records) for s in shards])
    owner: dict[int, DtShard] = {rec.index: s for s in shards for rec in s.records}
    work = dest / WORK_DIR
    with campaign_lock(work):
        if (work / STATE_NAME).exists():
            raise CampaignError(f"{dest}: holds a device-tree campaign of its own; merge into "
                                "another --out")
        for rec in records:
            o = outcome_of(rec)
            summary.outcomes.append(o)
            if o.status != "fail" or o.signature in summary.reproducers:
                continue
            source = reproducer_path(owner[o.number].out, o.number)
            target = reproducer_path(dest, o.number)
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_file():
                atomic_write_bytes(target, source.read_bytes())
            else:  # the shard was killed before it wrote it: the case as found
                write_reproducer(rec.reproducer, target)
            summary.reproducers[o.signature] = target
            done = owner[o.number].minimized.get(o.signature)
            if done is not None:
                summary.minimized[o.signature] = done
        atomic_write_bytes(work / CASES_NAME, b"".join(r.line() for r in records))
        atomic_write_bytes(work / MINIMIZED_NAME, b"".join(
            m.line() for sig, m in sorted(summary.minimized.items())))
        atomic_write_text(work / "summary.md", summary_markdown(summary))
        atomic_write_text(work / "junit.xml",
                          summary_junit(summary, max(s.elapsed for s in shards)))
    return summary


__all__ = ["DtShard", "is_dt_output", "merge_dt_campaigns", "read_dt_shard"]
