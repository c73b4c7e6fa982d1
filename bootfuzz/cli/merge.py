"""``bootfuzz merge OUT... --out DIR``: sharded campaign outputs as one campaign (x86
campaigns, or device-tree ones: bootfuzz.fuzz.dt_merge)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bootfuzz.cli.exits import ExitStatus

EPILOG = """\
exit status: 0 no failure, 1 failures found (reproducers copied into --out),
2 outputs that are not shards of one campaign (or one still running), 3 a shard
was aborted for infrastructure reasons."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Merge the outputs of `bootfuzz fuzz --shard i/N` runs of one seed: their case logs "
        "into one cases.jsonl, their failures de-duplicated by signature (reproducers copied "
        "into --out), one summary in markdown, JSON and JUnit XML in OUT/campaign/.  Shards "
        "of a device-tree campaign (arm64/riscv64 kernels) merge the same way into "
        "OUT/dt-campaign/ (markdown and JUnit XML).")
    p.epilog = EPILOG
    p.add_argument("outputs", nargs="+", metavar="SHARD_OUT",
                   help="the --out directory of each shard")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where the merged reproducers go; summaries in DIR/campaign")


def run(args: argparse.Namespace) -> int:
    from bootfuzz.fuzz.dt_merge import is_dt_output
    from bootfuzz.fuzz.state import CampaignError

    outputs = [Path(o) for o in args.outputs]
    dt = [is_dt_output(o) for o in outputs]
    if any(dt) and not all(dt):
        raise CampaignError("merge: some outputs are of device-tree campaigns and some not; "
                            "merge shards of one campaign")
    return _run_dt(outputs, Path(args.out)) if all(dt) else _run_x86(args)


def _run_dt(outputs: list[Path], dest: Path) -> int:
    from bootfuzz.fuzz.dt_campaign import summary_markdown
    from bootfuzz.fuzz.dt_merge import merge_dt_campaigns

    summary = merge_dt_campaigns(outputs, dest)
    if summary.missing_shards:
        print(f"bootfuzz merge: not merged: shard(s) {', '.join(summary.missing_shards)}",
              file=sys.stderr)
    print(summary_markdown(summary))
    return ExitStatus.FINDING if summary.findings else ExitStatus.PASS


def _run_x86(args: argparse.Namespace) -> int:
    from bootfuzz.fuzz.merge import merge_campaigns
    from bootfuzz.fuzz.summary import summary_markdown

    summary = merge_campaigns([Path(o) for o in args.outputs], Path(args.out))
    if summary.missing_shards:
        print(f"bootfuzz merge: not merged: shard(s) {', '.join(summary.missing_shards)}",
              file=sys.stderr)
    print(summary_markdown(summary))
    if summary.findings:
        return ExitStatus.FINDING
    return ExitStatus.INFRASTRUCTURE if summary.aborted else ExitStatus.PASS
