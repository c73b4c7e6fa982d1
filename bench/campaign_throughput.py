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

With ``--before DIR`` (a checkout of earlier code, e.g. ``git worktree add
/tmp/before <commit>``) the bench also runs that code's ``bootfuzz fuzz`` at full
depth, and runs the two in alternation for ``--rounds`` rounds (ABBA...: the order
flips each round), each round on its own seed, both sides of a round on the same one.
This machine's speed drifts by ~20% within the hour, so a before/after ratio is only
worth something when both were measured in the same minutes.  Each side builds its
initrds into a fresh cache of its own (the kernels and learned data are shared), so
neither finds the other's images.

With ``--ceiling`` the bench also asks how fast any campaign of this entry mix could
be on this machine: for each (kernel, entry path) the campaigns above drew, it boots
the cheapest case a campaign can make of it (256 MiB, a 4 KiB uncompressed payload,
the harness command line alone) ``--ceiling-boots`` times at each depth, through the
boot function the campaign's workers call, and weighs their CPU time by how often the
campaigns drew that pair.  60 x jobs / that weighted CPU per verdict is the rate a
campaign of the same kernels and entry paths would reach if every other dimension took
its cheapest value and the cores did nothing else: a bound, from the same minutes as
the rates it is set beside.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from bootfuzz.cache import cache_root
from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec
from bootfuzz.cli.fuzz import parse_duration
from bootfuzz.compression import Compression
from bootfuzz.fuzz.campaign import CampaignOptions, run_campaign
from bootfuzz.fuzz.depth import Depth
from bootfuzz.run.boot import run_case

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


def cache_for(side: str, work: Path) -> Path:
    """A cache root for one side: the real cache's entries linked, its initrds not."""
    real = cache_root()
    root = work / f"cache-{side}"
    root.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        link = root / entry.name
        if entry.name != "initrd" and not link.exists():
            link.symlink_to(entry)
    return root


#: The earlier code's flag that turns minimization off (this code's run has
#: max_boots=0): a rate of boots of new cases on both sides.
MINIMIZE_OFF = ("--minimize-boots", "0")


def run_before(code: Path, seconds: float, jobs: int, seed: int, work: Path,
               tag: str) -> dict[str, Any]:
    """The earlier code's campaign, as a user ran it then (its CLI, full depth)."""
    out = work / f"out-before-{tag}"
    env = {**os.environ, "PYTHONPATH": str(code), "BOOTFUZZ_CACHE": str(cache_for("before", work))}
    argv = [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "fuzz",
            *(a for k in KERNELS for a in ("--kernel", k)), "--time", f"{seconds:.0f}s",
            "--jobs", str(jobs), "--seed", str(seed), "--out", str(out), *MINIMIZE_OFF]
    before = load()
    started = time.monotonic()
    with open(work / f"progress-before-{tag}.txt", "w") as progress:
        proc = subprocess.Popen(argv, cwd=code, env=env, stdout=progress, stderr=progress)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    summary_path = out / "campaign" / "summary.json"
    # Exit status 1 is a campaign that found something (the earlier code reported
    # "System is deadlocked on memory" below a kernel's floor as a finding).
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) > 1 or not summary_path.exists():
        raise SystemExit(f"the earlier code's campaign failed (wait status {status}): "
                         f"see {work / f'progress-before-{tag}.txt'}")
    summary = json.loads(summary_path.read_text())
    counts = summary["counts"]
    verdicts = int(counts.get("pass", 0)) + int(counts.get("fail", 0))
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "depth": f"full, code before ({code})", "wall": wall, "cases": int(summary["cases"]),
        "verdicts": verdicts, "per_minute": 60.0 * verdicts / wall,
        "full_verdicts": verdicts, "full_per_minute": 60.0 * verdicts / wall,
        "statuses": dict(sorted(counts.items())), "median_case": 0.0, "phases": {},
        "load_before": before, "load_after": load(), "findings": len(summary["findings"]),
        "cpu": cpu, "cpu_per_verdict": cpu / verdicts if verdicts else 0.0,
    }


def run_depth(depth: str, seconds: float, jobs: int, seed: int, work: Path,
              tag: str = "", backend: str = "qemu-tcg") -> dict[str, Any]:
    out = work / f"out-{depth}{tag}"
    opts: dict[str, Any] = dict(kernels=KERNELS, seconds=seconds, jobs=jobs, out=out,
                                seed=seed, max_boots=0)
    if backend != "qemu-tcg":  # a field of CampaignOptions since fuzz --backend
        opts["backend"] = backend
    if "depth" in {f.name for f in fields(CampaignOptions)}:  # absent before --depth
        from bootfuzz.fuzz.depth import Depth

        opts["depth"] = Depth(depth)
    before = load()
    cpu_before = children_cpu()
    started = time.monotonic()
    with open(work / f"progress-{depth}{tag}.txt", "w") as progress:
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
        "mix": entry_mix(verdicts),
    }


def entry_mix(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many of *records* each (kernel, entry path) had, keyed "kernel entry"."""
    mix: dict[str, int] = {}
    for rec in records:
        rep = rec["reproducer"]
        key = f"{rep['kernel']['name']} {rep.get('entry', EntryProtocol.BOOT64.value)}"
        mix[key] = mix.get(key, 0) + 1
    return dict(sorted(mix.items()))


#: The cheapest case of a kernel and entry path a campaign can draw: the least of each
#: other dimension that costs guest time (RAM to initialise, payload to decompress,
#: unpack and hash).
CHEAPEST_MEMORY = 256 * 1024 * 1024
CHEAPEST_INITRD = InitrdSpec(size=4096, compression=Compression.NONE)


def cpu_now() -> float:
    """CPU seconds of this process and its reaped children (the QEMUs run_case starts)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cheapest_cpu(kernel: str, entry: str, depth: Depth, boots: int, work: Path,
                 backend: str) -> float:
    """The median CPU seconds of *boots* boots of the cheapest case of (kernel, entry)
    at *depth*, boot pipeline and QEMU together; a boot that does not pass is an error
    (a bound from a boot that failed would say nothing)."""
    case = BootCase(kernel=kernel, memory=CHEAPEST_MEMORY, initrd=CHEAPEST_INITRD,
                    entry=EntryProtocol(entry), backend=backend)
    spent = []
    for i in range(boots):
        run_dir = work / f"ceiling-{kernel}-{entry}-{depth.value}-{i}"
        before = cpu_now()
        result = run_case(case, run_dir, until=depth.stop)
        spent.append(cpu_now() - before)
        if result.verdict.value != "pass":
            raise SystemExit(f"the cheapest case {kernel} {entry} at {depth.value} did not "
                             f"pass ({result.verdict.value}): see {run_dir}")
    return statistics.median(spent)


def run_ceiling(mix: dict[str, int], depths: list[str], jobs: int, boots: int,
                work: Path, backend: str) -> dict[str, Any]:
    """The rate bound of the entry mix *mix* at each depth (see the module's text)."""
    total = sum(mix.values())
    per_pair: dict[str, dict[str, float]] = {}
    bounds: dict[str, float] = {}
    for depth in depths:
        weighted = 0.0
        for key, count in mix.items():
            kernel, entry = key.split(" ")
            cpu = cheapest_cpu(kernel, entry, Depth(depth), boots, work, backend)
            per_pair.setdefault(key, {})[depth] = cpu
            weighted += cpu * count / total
        bounds[depth] = 60.0 * jobs / weighted
    return {"mix": mix, "cheapest_cpu": per_pair, "bound_per_minute": bounds,
            "jobs": jobs, "boots": boots, "load": load()}


def show_ceiling(c: dict[str, Any], depths: list[str]) -> None:
    total = sum(c["mix"].values())
    print(f"ceiling: the cheapest case of each (kernel, entry) the campaigns drew, median CPU "
          f"of {c['boots']} boot(s) per depth; {c['load']}")
    for key, count in c["mix"].items():
        cpus = ", ".join(f"{d} {c['cheapest_cpu'][key][d]:.2f} s" for d in depths)
        print(f"  {key:28s} drawn {100.0 * count / total:5.1f}%  CPU {cpus}")
    for depth in depths:
        print(f"  bound at {depth}: {c['bound_per_minute'][depth]:.1f} verdicts/min with "
              f"--jobs {c['jobs']} (every case its pair's cheapest, cores never idle)")


def show(r: dict[str, Any]) -> None:
    print(f"depth {r['depth']}: {r['verdicts']} verdicts in {r['wall']:.0f} s = "
          f"{r['per_minute']:.1f} verdicts/min ({r['cases']} cases: "
          + ", ".join(f"{n} {s}" for s, n in r["statuses"].items())
          + f"; {r['findings']} finding signature(s)); {r['load_before']} before, "
          f"{r['load_after']} after")
    if not r["depth"].startswith("full"):  # "full" or "full, code before (...)"
        print(f"  of which {r['full_verdicts']} judged by a full boot (promoted): "
              f"{r['full_per_minute']:.1f}/min")
    print(f"  median case {r['median_case'] or float('nan'):.2f} s; CPU of the workers and "
          f"their QEMUs {r['cpu']:.0f} s ({r['cpu'] / (r['wall'] or 1):.2f} cores busy), "
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
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout of earlier code: its full-depth campaign runs in "
                    "alternation with this code's, for --rounds rounds")
    ap.add_argument("--rounds", type=int, default=2,
                    help="with --before: rounds of (before, each depth), order flipped "
                    "each round (default 2)")
    ap.add_argument("--ceiling", action="store_true",
                    help="then boot the cheapest case of each (kernel, entry) drawn and "
                    "print the rate bound of that entry mix (see the text above)")
    ap.add_argument("--ceiling-boots", type=int, default=3,
                    help="boots per (kernel, entry, depth) for --ceiling (default 3)")
    ap.add_argument("--backend", default="qemu-tcg",
                    help="this code's backend (fuzz --backend): kvm on a machine with "
                    "hardware KVM; not with --before (whose code runs QEMU-TCG)")
    args = ap.parse_args()
    if args.before is not None and args.backend != "qemu-tcg":
        ap.error("--before compares with earlier code on QEMU-TCG: leave --backend out")
    seconds = parse_duration(args.time)
    work = Path(args.work or tempfile.mkdtemp(prefix="bootfuzz-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"seed {args.seed}, kernels {', '.join(KERNELS)}, backend {args.backend}, "
          f"--jobs {args.jobs}, "
          f"{seconds:.0f} s per depth, outputs in {work}; {load()}")
    depths = [d.strip() for d in args.depths.split(",")]
    results = []
    if args.before is None:
        for depth in depths:
            results.append(run_depth(depth, seconds, args.jobs, args.seed, work,
                                     backend=args.backend))
            show(results[-1])
    else:
        os.environ["BOOTFUZZ_CACHE"] = str(cache_for("after", work))
        for rnd in range(args.rounds):
            seed, tag = args.seed + rnd, f"-round{rnd}"
            sides: list[str | None] = [None, *depths]  # None: the earlier code
            for side in sides if rnd % 2 == 0 else sides[::-1]:
                print(f"round {rnd} (seed {seed}):")
                if side is None:
                    results.append(run_before(args.before, seconds, args.jobs, seed, work,
                                              tag.lstrip("-")))
                else:
                    results.append(run_depth(side, seconds, args.jobs, seed, work, tag))
                results[-1].update(round=rnd, side=side or "before")
                show(results[-1])
        print("totals over the rounds (verdicts / wall, CPU per verdict):")
        for name in ["before", *depths]:
            mine = [r for r in results if r["side"] == name]
            verdicts = sum(r["verdicts"] for r in mine)
            wall = sum(r["wall"] for r in mine)
            cpu = sum(r["cpu"] for r in mine)
            full = sum(r["full_verdicts"] for r in mine)
            print(f"  {name:>6}: {60.0 * verdicts / wall:6.1f} verdicts/min "
                  f"({60.0 * full / wall:.1f}/min by a full boot), "
                  f"{cpu / max(verdicts, 1):.2f} CPU-s per verdict, {len(mine)} run(s)")
    output: dict[str, Any] = {"runs": results}
    if args.ceiling:
        mix: dict[str, int] = {}
        for r in results:
            for key, count in r.get("mix", {}).items():
                mix[key] = mix.get(key, 0) + count
        output["ceiling"] = run_ceiling(mix, depths, args.jobs, args.ceiling_boots, work,
                                        args.backend)
        show_ceiling(output["ceiling"], depths)
    (work / "results.json").write_text(json.dumps(output, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
