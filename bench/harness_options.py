"""Harness command-line options: what each one saves of a boot, and whether the oracles agree.

Boots one kernel with the harness command line as it is (the peer) and with each
candidate option added, alternating peer and candidate so both see the same load,
and prints per candidate the median CPU time of the whole boot (the bootfuzz process
and its QEMU, from wait4) and its ratio to the peer's median in the same run, plus
whether every boot passed every oracle.  An option is worth keeping only if it passes
everywhere and its ratio is clearly below 1.

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
        p_cpu = statistics.median(b.cpu for b in peer)
        c_cpu = statistics.median(b.cpu for b in cand)
        p_wall = statistics.median(b.wall for b in peer)
        c_wall = statistics.median(b.wall for b in cand)
        verdicts = sorted({b.verdict for b in peer + cand})
        print(f"{option:40s} cpu {c_cpu:5.2f}s vs {p_cpu:5.2f}s ratio {c_cpu / p_cpu:.2f} | "
              f"wall {c_wall:5.2f}s vs {p_wall:5.2f}s ratio {c_wall / p_wall:.2f} | "
              f"verdicts {','.join(verdicts)} | load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
