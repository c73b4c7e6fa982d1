"""Shards taken together: ``bootfuzz merge OUT...`` makes one campaign of sharded outputs.

Shard i/n of a seed runs the cases k with k % n == i (bootfuzz.fuzz.scheduler), so
n machines split one campaign.  Merging reads each shard's state, case log and
reproducers, checks they are shards of the same campaign (same seed and generator,
the same n, no shard twice, no case twice), and writes what one machine would have:
the case logs as one (``cases.jsonl``, in case order, coverage counts kept where a
shard measured them), the failures de-duplicated by signature (for a signature
found by several shards, the reproducer of its lowest case number: the one a single
run would have found first, counts summed), the reproducers copied next to it, and
one summary (markdown, JSON, JUnit); the corpora of guided shards as one
(``campaign/corpus``: every entry, bootfuzz.fuzz.corpus).  A shard still running
(its lock held) is refused: its files are still changing.

Only what a shard's state counts is merged; lines a killed shard logged past it
are counted by its own ``--resume``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bootfuzz.fileio import atomic_write_bytes
from bootfuzz.fuzz.campaign import LOCK_NAME, MAX_REJECTIONS_KEPT, campaign_lock
from bootfuzz.fuzz.caselog import CASES_NAME, CaseRecord, read_cases
from bootfuzz.fuzz.corpus import CORPUS_DIR, read_entries
from bootfuzz.fuzz.state import STATUSES, CampaignError, CampaignState, Finding, load_state
from bootfuzz.fuzz.summary import CampaignSummary, case_table, noise_tables, write_summaries
from bootfuzz.jsonread import JsonReader

SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class ShardOutput:
    """One shard's ``--out``, read."""

    out: Path
    state: CampaignState
    records: tuple[CaseRecord, ...]
    aborted: str  # from its last summary, when it wrote one

    @property
    def label(self) -> str:
        return f"{self.state.shard[0]}/{self.state.shard[1]}"


@contextlib.contextmanager
def not_running(work: Path) -> Iterator[None]:
    """Hold a shared lock on a shard while reading it: refused while its campaign runs."""
    lock = work / LOCK_NAME
    if not lock.exists():
        yield
        return
    with lock.open("r") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = fh.read().strip() or "unknown"
            raise CampaignError(f"{work.parent}: a campaign (pid {holder}) is still running "
                                "there; merge it once it has ended") from None
        yield


def _last_aborted(path: Path) -> str:
    """The ``aborted`` of a shard's summary.json ("" when it has none)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as exc:
        raise CampaignError(f"{path}: cannot read the summary: {exc}") from None
    r = JsonReader(str(path), error=CampaignError)
    aborted = r.as_obj(doc, "(top level)").get("aborted")
    return "" if aborted is None else r.as_str(aborted, "aborted")


def read_shard(out: Path) -> ShardOutput:
    """A shard's state, the case records it counts, and how its last run ended."""
    work = out / "campaign"
    state_path = work / "state.json"
    if not state_path.is_file():
        raise CampaignError(f"{out}: no campaign state ({state_path}); give the --out of "
                            "a bootfuzz fuzz run")
    with not_running(work):
        state = load_state(state_path)
        records = tuple(read_cases(work / CASES_NAME, state.cases_bytes))
        aborted = _last_aborted(work / SUMMARY_NAME)
    return ShardOutput(out, state, records, aborted)


def _check_same_campaign(shards: Sequence[ShardOutput]) -> None:
    first = shards[0]
    seen: dict[int, ShardOutput] = {}
    for s in shards:
        st = s.state
        if (st.seed, st.generator, st.shard[1]) != (
                first.state.seed, first.state.generator, first.state.shard[1]):
            raise CampaignError(
                f"{s.out} (seed {st.seed}, shard {s.label}) and {first.out} (seed "
                f"{first.state.seed}, shard {first.label}) are not shards of one campaign: "
                "merge outputs of the same --seed, --kernel and bounds, split the same --shard "
                "i/N")
        other = seen.get(st.shard[0])
        if other is not None:
            raise CampaignError(f"{s.out} and {other.out} are both shard {s.label}")
        seen[st.shard[0]] = s


def merged_records(logs: Sequence[tuple[Path, Sequence[CaseRecord]]]) -> list[CaseRecord]:
    """The case records of each shard's (--out, records), as one log in case order;
    a case in two shards is refused (they were not one split)."""
    where: dict[int, Path] = {}
    for out, records in logs:
        for rec in records:
            if rec.index in where:
                raise CampaignError(f"case #{rec.index} is in both {where[rec.index]} and "
                                    f"{out}")
            where[rec.index] = out
    return sorted((rec for _, records in logs for rec in records), key=lambda r: r.index)


def _merged_findings(shards: Sequence[ShardOutput], dest: Path) -> list[Finding]:
    """One finding per signature: the lowest first case wins, counts add up; its
    reproducer is copied into *dest* (reproducers sit directly in a shard's --out)."""
    best: dict[str, tuple[Finding, Path]] = {}
    counts: dict[str, int] = {}
    for s in shards:
        for f in s.state.findings.values():
            counts[f.key] = counts.get(f.key, 0) + f.count
            known = best.get(f.key)
            if known is None or f.first_index < known[0].first_index:
                best[f.key] = (f, s.out / Path(f.file).name)
    merged = []
    for key, (f, source) in sorted(best.items(), key=lambda kv: kv[1][0].first_index):
        target = dest / source.name
        if not source.is_file():
            raise CampaignError(f"{source}: the reproducer of {key!r} is missing")
        atomic_write_bytes(target, source.read_bytes())
        merged.append(replace(f, file=str(target), count=counts[key]))
    return merged


def _merged_corpus(shards: Sequence[ShardOutput], dest: Path) -> int:
    """Every shard's corpus entries copied into *dest* (their names carry the case
    number, which no two shards share); returns how many."""
    copied = 0
    for s in shards:
        source = s.out / "campaign" / CORPUS_DIR
        if not source.is_dir():
            continue
        for entry in read_entries(source):
            atomic_write_bytes(dest / entry.name, entry.path.read_bytes())
            copied += 1
    return copied


def merge_campaigns(outs: Sequence[Path], dest: Path) -> CampaignSummary:
    """Merge the shard outputs *outs* into *dest* (reproducers there, the rest in
    ``dest/campaign``); returns the merged summary."""
    if not outs:
        raise CampaignError("merge: give at least one campaign --out")
    resolved = {o.resolve() for o in outs}
    if dest.resolve() in resolved:
        raise CampaignError(f"{dest}: is one of the outputs to merge; give another --out")
    shards = [read_shard(o) for o in outs]
    _check_same_campaign(shards)
    shards.sort(key=lambda s: s.state.shard[0])
    records = merged_records([(s.out, s.records) for s in shards])
    work = dest / "campaign"
    with campaign_lock(work):
        if (work / "state.json").exists():
            raise CampaignError(f"{dest}: holds a campaign of its own; merge into another "
                                "--out")
        findings = _merged_findings(shards, dest)
        _merged_corpus(shards, work / CORPUS_DIR)
        atomic_write_bytes(work / CASES_NAME, b"".join(r.line() for r in records))
        counts = dict.fromkeys(STATUSES, 0)
        for s in shards:
            for k, v in s.state.counts.items():
                counts[k] += v
        first = shards[0].state
        summary = CampaignSummary(
            kernels=first.kernels, seed=first.seed, shard=first.shard,
            elapsed=max(s.state.elapsed for s in shards),  # shards run side by side
            counts=counts, findings=tuple(findings),
            rejections=tuple(r for s in shards for r in s.state.rejections)[
                :MAX_REJECTIONS_KEPT],
            aborted="; ".join(f"shard {s.label}: {s.aborted}" for s in shards if s.aborted),
            table=case_table(records),
            flaky=noise_tables(records)[0], below_floor=noise_tables(records)[1],
            shards=tuple(s.state.shard for s in shards),
            sources=tuple(str(s.out) for s in shards),
        )
        write_summaries(summary, work)
    return summary


__all__ = ["ShardOutput", "merge_campaigns", "merged_records", "not_running", "read_shard"]
