"""Campaign throughput: verdicts per minute and where a case's time goes.

Runs the real campaign loop (bootfuzz.fuzz.campaign.run_campaign: generated cases,
worker processes, one QEMU per case) for a fixed seed on the two cloud kernels,
once per depth asked, each for the same wall time, and reads the case log it wrote
(OUT/campaign/cases.jsonl).  Minimization is off: every boot is a new case, so the
figure is the boot pipeline's, not the minimizer's share of it.

    .venv/bin/python bench/campaign_throughput.py --time 3m --jobs 2

Prints, per depth: cases, verdicts (judged cases: pass or fail) per minute of wall
time, and the median time per case in each phase the boot recorded (plan, initrd
build, QEMU start, guest to RAMDISK, to unpack, to agent, judge; a phase a case did
not reach is left out of that phase's median), and the CPU time the workers and
their QEMUs used per verdict, which, unlike the rate, leaves out the time the cores
gave to other work (the same code measured 61 and 51 verdicts/min within a quarter
of an hour here).  The machine's load average is
printed with each figure: the cores may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from bootfuzz.cli.fuzz import parse_duration
from bootfuzz.fuzz.campaign import CampaignOptions, run_campaign

KERNELS = ("debian-6.1-cloud", "debian-6.12-cloud")
SEED = 4242


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def read_log(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def phase_medians(records: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each phase over the cases that recorded it, in log order."""
    seen: dict[str, list[float]] = {}
    for rec in records:
        for name, seconds in (rec.get("phases") or {}).items():
            seen.setdefault(name, []).append(float(seconds))
    return {name: statistics.median(values) for name, values in seen.items()}


def children_cpu() -> float:
    """CPU seconds of this process's ended children and what they waited for: the
    campaign's workers and, through them, their QEMUs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_depth(depth: str, seconds: float, jobs: int, seed: int, work: Path) -> dict[str, Any]:
    out = work / f"out-{depth}"
    opts: dict[str, Any] = dict(kernels=KERNELS, seconds=seconds, jobs=jobs, out=out,
                                seed=seed, max_boots=0)
    if "depth" in {f.name for f in fields(CampaignOptions)}:  # absent before --depth
        from bootfuzz.fuzz.depth import Depth

        opts["depth"] = Depth(depth)
    before = load()
    cpu_before = children_cpu()
    started = time.monotonic()
    with open(work / f"progress-{depth}.txt", "w") as progress:
        summary = run_campaign(CampaignOptions(**opts), stream=progress)
    wall = time.monotonic() - started
    cpu = children_cpu() - cpu_before  # the workers have ended: run_campaign joined them
    records = read_log(out / "campaign" / "cases.jsonl")
    verdicts = [r for r in records if r.get("verdict") is not None]
    # A shallow campaign's cases judged by a full boot were promoted (bootfuzz.fuzz.depth).
    full = [r for r in verdicts if r["reproducer"].get("until") is None]
    return {
        "depth": depth, "wall": wall, "cases": len(records), "verdicts": len(verdicts),
        "per_minute": 60.0 * len(verdicts) / wall,
        "full_verdicts": len(full), "full_per_minute": 60.0 * len(full) / wall,
        "statuses": {s: sum(r["status"] == s for r in records)
                     for s in sorted({r["status"] for r in records})},
        "median_case": statistics.median(r["duration"] for r in verdicts) if verdicts else 0.0,
        "phases": phase_medians(verdicts), "load_before": before, "load_after": load(),
        "findings": len(summary.findings),
        "cpu": cpu, "cpu_per_verdict": cpu / len(verdicts) if verdicts else 0.0,
    }


def show(r: dict[str, Any]) -> None:
    print(f"depth {r['depth']}: {r['verdicts']} verdicts in {r['wall']:.0f} s = "
          f"{r['per_minute']:.1f} verdicts/min ({r['cases']} cases: "
          + ", ".join(f"{n} {s}" for s, n in r["statuses"].items())
          + f"; {r['findings']} finding signature(s)); {r['load_before']} before, "
          f"{r['load_after']} after")
    if r["depth"] != "full":
        print(f"  of which {r['full_verdicts']} judged by a full boot (promoted): "
              f"{r['full_per_minute']:.1f}/min")
    print(f"  median case {r['median_case']:.2f} s; CPU of the workers and their QEMUs "
          f"{r['cpu']:.0f} s ({r['cpu'] / (r['wall'] or 1):.2f} cores busy), "
          f"{r['cpu_per_verdict']:.2f} s per verdict")
    for name, seconds in r["phases"].items():
        print(f"  {name:>16}: {seconds:7.3f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time", default="3m", help="wall time per depth (default 3m)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--depths", default="full,early",
                    help="comma-separated campaign depths to run in turn (default full,early)")
    ap.add_argument("--work", default=None, help="directory for the campaigns' outputs")
    args = ap.parse_args()
    seconds = parse_duration(args.time)
    work = Path(args.work or tempfile.mkdtemp(prefix="bootfuzz-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"seed {args.seed}, kernels {', '.join(KERNELS)}, --jobs {args.jobs}, "
          f"{seconds:.0f} s per depth, outputs in {work}; {load()}")
    results = []
    for depth in args.depths.split(","):
        results.append(run_depth(depth.strip(), seconds, args.jobs, args.seed, work))
        show(results[-1])
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
