"""Guided versus blind: kernel blocks and functions a campaign reaches in the same time.

Runs the real campaign (bootfuzz.fuzz.campaign.run_campaign: worker processes, one
QEMU-TCG per boot, the coverage plugin on every boot) twice on the same kernels with
the same seed, jobs and wall time:

* guided: ``bootfuzz fuzz --coverage``, half the cases mutants of corpus entries;
* blind: the same generator's fresh cases only (the corpus is recorded, never
  mutated: coverage is measured the same way, it does not steer).

Minimization is off on both sides (every boot is a case).  By default the two sides
run side by side, each as its own process with its own jobs, so both see the same
machine load over the same minutes (the cores may be shared with other work; the
load average is printed); ``--sequential`` runs blind, then guided.

    .venv/bin/python bench/guided_vs_blind.py --time 20m --jobs 2 --work DIR

Prints, per side and kernel: cases booted, corpus entries, distinct kernel blocks
(KASLR-normalized offsets, bootfuzz.run.coverage) and functions reached (named with
the kernel's own kallsyms, bootfuzz.run.kallsyms), those in .init.text, and the
growth of blocks over the campaign's time; then the ratio guided / blind.  The
campaigns stay in DIR/guided and DIR/blind (``bootfuzz coverage report DIR/guided``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bootfuzz.cli.fuzz import parse_duration
from bootfuzz.fuzz.campaign import CampaignOptions, run_campaign
from bootfuzz.fuzz.caselog import read_cases
from bootfuzz.fuzz.corpus import CORPUS_DIR, read_entries
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.run.kallsyms import kernel_symbols

KERNELS = ("debian-6.1-cloud", "debian-6.12-cloud")
SEED = 1010
SIDES = ("blind", "guided")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def run_side(side: str, seconds: float, jobs: int, seed: int, work: Path) -> None:
    """One campaign; its progress goes to DIR/<side>.progress."""
    opts = CampaignOptions(kernels=KERNELS, seconds=seconds, jobs=jobs, out=work / side,
                           seed=seed, max_boots=0, guided=True, coverage=True,
                           mutate=side == "guided")
    with (work / f"{side}.progress").open("w") as progress:
        progress.write(f"{side}: start {time.strftime('%H:%M:%S')} {load()}\n")
        progress.flush()
        run_campaign(opts, stream=progress)
        progress.write(f"{side}: end {time.strftime('%H:%M:%S')} {load()}\n")


def measure(side: str, work: Path, growth_at: list[float]) -> dict[str, Any]:
    """Blocks and functions the side's corpus holds (its entries' new features add up
    to every block any of its boots reached), per kernel."""
    out = work / side / "campaign"
    entries = read_entries(out / CORPUS_DIR)
    records = read_cases(out / "cases.jsonl")
    per_kernel: dict[str, Any] = {}
    for kernel in KERNELS:
        mine = [e for e in entries if e.case.kernel == kernel]
        blocks = {b for e in mine for b in e.new.blocks}
        table = kernel_symbols(resolve_kernel(kernel))
        functions, init = set(), set()
        for offset in blocks:
            fn = table.function_at(offset)
            if fn is not None:
                functions.add(fn.name)
                if fn.init:
                    init.add(fn.name)
        per_kernel[kernel] = {
            "cases": sum(r.reproducer.case.kernel == kernel for r in records),
            "entries": len(mine), "blocks": len(blocks), "functions": len(functions),
            "init_functions": len(init),
            "growth": [len({b for e in mine if e.elapsed <= t for b in e.new.blocks})
                       for t in growth_at],
        }
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    return {
        "side": side, "out": str(work / side), "cases": len(records),
        "mutants": sum("a mutant of" in r.reproducer.description for r in records),
        "statuses": statuses, "entries": len(entries),
        "blocks": sum(k["blocks"] for k in per_kernel.values()),
        "functions": sum(k["functions"] for k in per_kernel.values()),
        "init_functions": sum(k["init_functions"] for k in per_kernel.values()),
        "kernels": per_kernel,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--time", default="20m", help="wall time of each side (default 20m)")
    ap.add_argument("--jobs", type=int, default=2, help="boots at once per side (default 2)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--work", default=None, help="where the two campaigns go")
    ap.add_argument("--sequential", action="store_true",
                    help="blind first, then guided (default: side by side)")
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # a child's
    args = ap.parse_args()
    seconds = parse_duration(args.time)
    work = Path(args.work or f"/tmp/bootfuzz-guided-vs-blind-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.side:
        run_side(args.side, seconds, args.jobs, args.seed, work)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    for kernel in KERNELS:  # symbols first (a one-off boot each), not on either clock
        kernel_symbols(resolve_kernel(kernel))
    mode = "sequential" if args.sequential else "side by side (concurrently)"
    print(f"guided vs blind: kernels {', '.join(KERNELS)}, seed {args.seed}, {args.jobs} "
          f"jobs per side, {seconds:.0f} s per side, {mode}; {os.cpu_count()} CPUs, "
          f"{load()}; out {work}", flush=True)
    started = time.strftime("%H:%M:%S")
    argv = [sys.executable, __file__, "--time", args.time, "--jobs", str(args.jobs),
            "--seed", str(args.seed), "--work", str(work)]
    if args.sequential:
        for side in SIDES:
            subprocess.run([*argv, "--side", side], check=True)
    else:
        procs = [subprocess.Popen([*argv, "--side", side]) for side in SIDES]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit(f"a side failed (exit {p.returncode})")
    print(f"ran {started} to {time.strftime('%H:%M:%S')}, {load()}")
    growth_at = [seconds * q for q in (0.25, 0.5, 0.75, 1.0)]
    results = {side: measure(side, work, growth_at) for side in SIDES}
    for side in SIDES:
        r = results[side]
        print(f"\n{side} ({r['out']}): {r['cases']} cases ({r['mutants']} mutants), "
              f"statuses {r['statuses']}, {r['entries']} corpus entries")
        print(f"  {r['blocks']} distinct kernel blocks, {r['functions']} functions "
              f"({r['init_functions']} in .init.text)")
        for kernel, k in r["kernels"].items():
            grow = ", ".join(f"{t / 60:.1f} min {n}" for t, n in zip(growth_at, k["growth"],
                                                                       strict=True))
            print(f"  {kernel}: {k['cases']} cases, {k['entries']} entries, {k['blocks']} "
                  f"blocks, {k['functions']} functions ({k['init_functions']} init); "
                  f"blocks by time: {grow}")
    g, b = results["guided"], results["blind"]
    for what in ("blocks", "functions", "init_functions"):
        ratio = g[what] / b[what] if b[what] else float("nan")
        print(f"guided / blind {what}: {g[what]} / {b[what]} = {ratio:.3f} "
              f"({100 * (ratio - 1):+.1f} %)")
    doc = {"kernels": KERNELS, "seed": args.seed, "jobs": args.jobs, "seconds": seconds,
           "mode": mode, "results": results}
    (work / "guided_vs_blind.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written {work / 'guided_vs_blind.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
