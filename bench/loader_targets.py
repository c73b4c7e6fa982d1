"""Time per boot through each real loader versus ours, one bench run.

Every target boots the same case (a pinned kernel, a 1M gzip initrd with our agent, the
harness command line) through bootfuzz.peers.targets and is judged; the time is the
target's whole run (media from the cache after the first round, firmware, loader,
kernel, agent, judging).  Rounds go target by target (ours, grub-bios, ..., ours, ...)
so drift in the machine's speed hits every target alike; the first round also builds
each target's boot media, so it is reported apart and left out of the medians.

    .venv/bin/python bench/loader_targets.py --kernel debian-6.1-cloud --runs 3

Prints every run, then per target the median seconds and the ratio to ours measured in
this same run, with the load average (the machine is shared: say so with the figures).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bootfuzz.case import HARNESS_CMDLINE, BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers.loaders import Loader
from bootfuzz.peers.targets import parse_target
from bootfuzz.units import parse_size

OURS = "ours:qemu-tcg"


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1-cloud")
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--runs", type=int, default=3, help="timed rounds after the first")
    ap.add_argument("--targets", nargs="+", default=[OURS, *(ld.value for ld in Loader)])
    args = ap.parse_args()
    case = BootCase(kernel=args.kernel, memory=parse_size(args.mem), cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(1 << 20, Compression.GZIP))
    targets = {spec: parse_target(spec) for spec in args.targets}
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-loaders-"))
    times: dict[str, list[float]] = {spec: [] for spec in targets}
    first: dict[str, float] = {}
    for round_ in range(args.runs + 1):
        for spec, target in targets.items():
            run_dir = work / f"{round_}-{spec.replace(':', '_')}"
            start = time.monotonic()
            run = target.run(case, run_dir, timeout=300, silence_timeout=90)
            elapsed = time.monotonic() - start
            if run.verdict is not Verdict.PASS:
                sys.exit(f"{spec}: {run.verdict.value}; see {run_dir}/console.log")
            if round_ == 0:
                first[spec] = elapsed
            else:
                times[spec].append(elapsed)
            print(f"round {round_} {spec:<20} {elapsed:6.2f} s  load {os.getloadavg()[0]:.2f}",
                  flush=True)
    base = statistics.median(times[OURS]) if OURS in times else None
    print(f"\n{args.kernel}, {args.mem}, 1M gzip initrd; {args.runs} timed rounds "
          f"(round 0 builds the media); load average now {os.getloadavg()[0]:.2f}")
    print(f"{'target':<20} {'first s':>8} {'median s':>9} {'x ours':>7}")
    for spec, values in times.items():
        med = statistics.median(values)
        ratio = f"{med / base:7.2f}" if base else "      -"
        print(f"{spec:<20} {first[spec]:8.2f} {med:9.2f} {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
