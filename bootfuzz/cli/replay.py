"""``bootfuzz replay FILE``: a reproducer (or case N of a campaign's case log,
``cases.jsonl:N``) booted again (N times) and judged."""

from __future__ import annotations

import argparse
import dataclasses
import json

from bootfuzz.case import DtOverrides, Overrides
from bootfuzz.cli.case_args import count, seconds
from bootfuzz.cli.dt_report import dt_result_json, dt_result_table
from bootfuzz.cli.exits import EPILOG, ExitStatus
from bootfuzz.cli.report import result_json, result_table
from bootfuzz.fuzz.caselog import load_replay_source
from bootfuzz.fuzz.replay import replay
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.boot import DEFAULT_TIMEOUT
from bootfuzz.run.dt_boot import DtBootResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Replay a reproducer (corpus/*.json): the same kernel (sha256 checked), case and "
        "overrides.  With --times N it boots N times and checks every verdict is the same.  "
        "OUT/campaign/cases.jsonl:N replays case N of a campaign and checks it ends as it did.")
    p.epilog = EPILOG
    p.add_argument("file", metavar="FILE",
                   help="a reproducer JSON file, or a campaign's case log with a case number: "
                   "OUT/campaign/cases.jsonl:N")
    p.add_argument("--times", type=count, default=1, metavar="N",
                   help="replay N times; exit 1 if the verdicts differ")
    p.add_argument("--without-overrides", action="store_true",
                   help="replay the case with the loader's own decisions instead")
    p.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    rep = load_replay_source(args.file)
    if args.without_overrides:
        rep = dataclasses.replace(rep, case=dataclasses.replace(
            rep.case, overrides=Overrides(), dt=DtOverrides()), expect=None)
    outcomes = [replay(rep, timeout=args.timeout) for _ in range(args.times)]
    signatures = {(o.result.verdict, o.failing) for o in outcomes}
    if args.json:
        print(json.dumps({
            "file": args.file,
            "runs": [{**(dt_result_json(o.result) if isinstance(o.result, DtBootResult)
                         else result_json(o.result)), "expectation_met": o.expectation_met,
                      "mismatch": o.mismatch} for o in outcomes],
            "identical": len(signatures) == 1,
        }, indent=2))
    else:
        for i, o in enumerate(outcomes):
            if len(outcomes) > 1:
                print(f"--- replay {i + 1}/{len(outcomes)}")
            print(dt_result_table(o.result, verbose=args.verbose)
                  if isinstance(o.result, DtBootResult)
                  else result_table(o.result, verbose=args.verbose))
            if o.expectation_met is not None:
                print("expectation: " + ("met" if o.expectation_met else f"NOT met: {o.mismatch}"))
        if len(outcomes) > 1:
            print(f"{len(outcomes)} replays: " + (
                "identical verdicts" if len(signatures) == 1 else "VERDICTS DIFFER"))
    if len(signatures) != 1 or any(o.expectation_met is False for o in outcomes):
        return ExitStatus.FINDING
    if rep.expect is not None:
        return ExitStatus.PASS
    return ExitStatus.PASS if outcomes[0].result.verdict is Verdict.PASS else ExitStatus.FINDING
