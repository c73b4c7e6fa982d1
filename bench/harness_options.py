"""Harness command-line options: what each one saves of a boot, and whether the oracles agree.

Boots one kernel with the harness command line as it is (the peer) and with each
candidate option added, alternating peer and candidate so both see the same load,
and prints per candidate the median CPU time of the whole boot (the bootfuzz process
and its QEMU, from wait4), the median and quartiles of the candidate/peer ratio of
each back-to-back pair, and the verdicts of the candidate's and of the peer's boots.
An option is worth keeping only if it passes everywhere and its ratio is clearly
below 1: a no-op option scatters by about +-10% per pair here, so use 20 pairs or more.

    .venv/bin/python bench/harness_options.py --kernel debian-6.1-cloud --pairs 5 \\
        --option noreplace-smp --option "8250.nr_uarts=1"
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.case import HARNESS_CMDLINE


@dataclass(frozen=True)
class Boot:
    cpu: float
    wall: float
    verdict: str


def boot(kernel: str, cmdline: str, run_dir: Path, extra: list[str]) -> Boot:
    argv = [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "boot",
            "--kernel", kernel, "--raw-cmdline", cmdline, "--run-dir", str(run_dir), "--json",
            *extra]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        text = out.read().decode(errors="replace")
    try:
        doc = json.loads(text)
        verdict, wall = str(doc["verdict"]), float(doc["duration"])
    except (ValueError, KeyError):
        verdict, wall = "no-json", 0.0
    return Boot(usage.ru_utime + usage.ru_stime, wall, verdict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="debian-6.1-cloud")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--option", action="append", required=True,
                        help="option(s) added to the harness command line (repeatable)")
    parser.add_argument("--boot-arg", action="append", default=[],
                        help="extra `bootfuzz boot` argument, e.g. --boot-arg=--mem=2G")
    args = parser.parse_args()
    base = HARNESS_CMDLINE
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-options-"))
    print(f"kernel {args.kernel}, {args.pairs} alternating pairs per option, load "
          f"{os.getloadavg()[0]:.2f}; peer command line: {base!r}")
    for option in args.option:
        peer: list[Boot] = []
        cand: list[Boot] = []
        for i in range(args.pairs):
            order = [(peer, base), (cand, f"{base} {option}")]
            for sink, cmdline in order if i % 2 == 0 else order[::-1]:
                sink.append(boot(args.kernel, cmdline, work / f"{len(sink)}", args.boot_arg))
        # Per-pair ratios: the two boots of a pair ran back to back, so a machine that
        # drifts over minutes (this one does, by ~20%) shows in both and cancels out.
        ratios = sorted(c.cpu / p.cpu for p, c in zip(peer, cand, strict=True))
        quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        p_wall = statistics.median(b.wall for b in peer)
        c_wall = statistics.median(b.wall for b in cand)
        print(f"{option:40s} cpu {statistics.median(b.cpu for b in cand):5.2f}s vs "
              f"{statistics.median(b.cpu for b in peer):5.2f}s, pair ratio median "
              f"{statistics.median(ratios):.3f} (quartiles {quart[0]:.3f}-{quart[2]:.3f}) | "
              f"wall {c_wall:5.2f}s vs {p_wall:5.2f}s | verdicts "
              f"{','.join(sorted({b.verdict for b in cand}))} "
              f"(peer {','.join(sorted({b.verdict for b in peer}))}) | "
              f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
