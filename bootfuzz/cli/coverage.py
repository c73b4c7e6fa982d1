"""``bootfuzz coverage report OUT``: a guided campaign's coverage as an HTML page and JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from bootfuzz.cli.exits import EPILOG, ExitStatus


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Report the guest-kernel coverage of a `bootfuzz fuzz --coverage` campaign: the "
        "boot-path functions reached per kernel and entry path, which case first reached "
        "each, and the growth of coverage over the campaign (OUT/campaign/coverage.jsonl).")
    p.epilog = EPILOG
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    r = sub.add_parser("report", help="write report.html and report.json",
                       description="Write report.html (tables and growth plots, one "
                       "self-contained page) and report.json from OUT/campaign/coverage.jsonl.")
    r.add_argument("out", metavar="OUT", help="the campaign's --out directory")
    r.add_argument("--dest", default=None, metavar="DIR",
                   help="where the report goes (default OUT/campaign/coverage-report)")


def run(args: argparse.Namespace) -> int:
    from bootfuzz.fuzz.coverage_report import write_report

    json_path, html_path, report = write_report(
        Path(args.out), None if args.dest is None else Path(args.dest))
    total = report.growth[-1] if report.growth else None
    print(f"{len(report.paths)} kernel/entry paths, "
          f"{0 if total is None else total.functions} kernel functions, "
          f"{0 if total is None else total.blocks} blocks")
    print(f"wrote {html_path}")
    print(f"wrote {json_path}")
    return ExitStatus.PASS
