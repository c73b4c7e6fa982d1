"""Harness command-line options: what each one saves of a boot, and whether the oracles agree.

Boots one kernel with the harness command line as it is (the peer) and with each
candidate option added, alternating peer and candidate so both see the same load,
and prints per candidate the median CPU time of the whole boot (the bootfuzz process
and its QEMU, from wait4), the median and quartiles of the candidate/peer ratio of
each back-to-back pair, and the verdicts of the candidate's and of the peer's boots.
An option is worth keeping only if it passes everywhere and its ratio is clearly
below 1: a no-op option scatters by about +-10% per pair here, so use 20 pairs or more,
booted side by side (--together: a pair shares the machine's speed of the moment).
--icount runs QEMU counting guest instructions instead (one virtual nanosecond each),
and compares the kernel's timestamp of "Run /init": the work an option removes from
the kernel's start, the same from run to run, so one pair answers; CPU time still
decides (translation, the host's page clearing and I/O are not instructions).

    .venv/bin/python bench/harness_options.py --kernel debian-6.1-cloud --pairs 20 \\
        --together --option noreplace-smp --option "8250.nr_uarts=1"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bootfuzz.case import HARNESS_CMDLINE
from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend


@dataclass(frozen=True)
class Boot:
    cpu: float
    wall: float
    verdict: str
    #: The kernel's timestamp of "Run /init" (seconds); under --icount, guest
    #: instructions in units of 10^9 (plus the idle time QEMU skips to the next timer).
    init_at: float | None = None


#: printk's line as the kernel starts our agent (init/main.c run_init_process).
_RUN_INIT = re.compile(rb"^\[ *(\d+\.\d+)\] Run /init", re.MULTILINE)


def _init_at(run_dir: Path) -> float | None:
    for log in run_dir.glob("*/console.log"):
        if m := _RUN_INIT.search(log.read_bytes()):
            return float(m.group(1))
    return None


def icount_qemu(work: Path) -> Path:
    """A QEMU that counts instead of timing (-icount shift=0: one virtual ns per guest
    instruction, idle time skipped): the kernel's timestamps then measure the work
    an option removes, the same on a busy machine as on a quiet one."""
    wrapper = work / "qemu-icount"
    qemu = shlex.quote(QemuTcgBackend().binary)  # $BOOTFUZZ_QEMU's build, if one is set
    wrapper.write_text(f"#!/bin/sh\nexec {qemu} \"$@\" -icount shift=0,sleep=off\n")
    wrapper.chmod(0o755)
    return wrapper


def _argv(kernel: str, cmdline: str, run_dir: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "boot",
            "--kernel", kernel, "--raw-cmdline", cmdline, "--run-dir", str(run_dir), "--json",
            *extra]


def _result(out: BinaryIO, usage: Any, run_dir: Path) -> Boot:
    out.seek(0)
    text = out.read().decode(errors="replace")
    try:
        doc = json.loads(text)
        verdict, wall = str(doc["verdict"]), float(doc["duration"])
    except (ValueError, KeyError):
        verdict, wall = "no-json", 0.0
    return Boot(usage.ru_utime + usage.ru_stime, wall, verdict, _init_at(run_dir))


def boot_together(kernel: str, jobs: list[tuple[str, Path]], extra: list[str]) -> list[Boot]:
    """Boot each (command line, run dir) at the same time, one process each: on a machine
    whose speed drifts, boots that share the same seconds see the same machine."""
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(tempfile.TemporaryFile()) for _ in jobs]
        procs = [subprocess.Popen(_argv(kernel, cmdline, run_dir, extra), stdout=out,
                                  stderr=subprocess.DEVNULL)
                 for (cmdline, run_dir), out in zip(jobs, outs, strict=True)]
        return [_result(out, os.wait4(proc.pid, 0)[2], run_dir)
                for proc, out, (_, run_dir) in zip(procs, outs, jobs, strict=True)]


def boot(kernel: str, cmdline: str, run_dir: Path, extra: list[str]) -> Boot:
    return boot_together(kernel, [(cmdline, run_dir)], extra)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="debian-6.1-cloud")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--option", action="append", required=True,
                        help="option(s) added to the harness command line (repeatable)")
    parser.add_argument("--boot-arg", action="append", default=[],
                        help="extra `bootfuzz boot` argument, e.g. --boot-arg=--mem=2G")
    parser.add_argument("--peer", default=HARNESS_CMDLINE,
                        help="the peer's whole command line (default: the harness's)")
    parser.add_argument("--together", action="store_true",
                        help="boot each pair's two at the same time (one core each) rather "
                        "than one after the other: the pair then shares the machine's speed "
                        "of the moment")
    parser.add_argument("--icount", action="store_true",
                        help="run QEMU with -icount and compare the kernel's instructions to "
                        "'Run /init' (deterministic: one boot each is enough)")
    args = parser.parse_args()
    base = args.peer
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-options-"))
    if args.icount:
        os.environ["BOOTFUZZ_QEMU"] = str(icount_qemu(work))
    print(f"kernel {args.kernel}, {args.pairs} alternating pairs per option, load "
          f"{os.getloadavg()[0]:.2f}; peer command line: {base!r}")
    for option in args.option:
        peer: list[Boot] = []
        cand: list[Boot] = []
        for i in range(args.pairs):
            if args.together:
                p, c = boot_together(args.kernel, [(base, work / f"p{i}"),
                                                   (f"{base} {option}", work / f"c{i}")],
                                     args.boot_arg)
                peer.append(p)
                cand.append(c)
                continue
            order = [(peer, base), (cand, f"{base} {option}")]
            for sink, cmdline in order if i % 2 == 0 else order[::-1]:
                sink.append(boot(args.kernel, cmdline, work / f"{len(sink)}", args.boot_arg))
        # Per-pair ratios: the two boots of a pair ran back to back (or side by side), so
        # a machine that drifts over minutes (this one does, by ~20%) shows in both.
        ratios = sorted(c.cpu / p.cpu for p, c in zip(peer, cand, strict=True))
        quart = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        inits = [(p.init_at, c.init_at) for p, c in zip(peer, cand, strict=True)
                 if p.init_at is not None and c.init_at is not None]
        if args.icount and inits:
            p_ins = statistics.median(p for p, _ in inits)
            c_ins = statistics.median(c for _, c in inits)
            print(f"{option:40s} instructions to Run /init {c_ins * 1e3:7.1f} M vs "
                  f"{p_ins * 1e3:7.1f} M, ratio {c_ins / p_ins:.3f}")
        p_wall = statistics.median(b.wall for b in peer)
        c_wall = statistics.median(b.wall for b in cand)
        # A guest that waits (a timer, a grace period) costs wall time, not CPU time:
        # with one boot per core, that is throughput lost too.
        # A boot without JSON (wall 0) has no wall ratio.
        walls = [c.wall / p.wall for p, c in zip(peer, cand, strict=True) if p.wall and c.wall]
        wall_ratio = statistics.median(walls) if walls else float("nan")
        print(f"{option:40s} cpu {statistics.median(b.cpu for b in cand):5.2f}s vs "
              f"{statistics.median(b.cpu for b in peer):5.2f}s, pair ratio median "
              f"{statistics.median(ratios):.3f} (quartiles {quart[0]:.3f}-{quart[2]:.3f}) | "
              f"wall {c_wall:5.2f}s vs {p_wall:5.2f}s, pair ratio {wall_ratio:.3f} | verdicts "
              f"{','.join(sorted({b.verdict for b in cand}))} "
              f"(peer {','.join(sorted({b.verdict for b in peer}))}) | "
              f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
