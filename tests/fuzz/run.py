"""Run every atheris target for a number of executions and summarize them.

    python -m tests.fuzz.run OUT [--runs 1000000] [--targets image,cpio,...] [--jobs N]

Each target runs as its own libFuzzer process over a working corpus in
OUT/atheris-TARGET (seeded from corpus/atheris/TARGET), its log in
OUT/atheris-TARGET.log and any crashing input as OUT/atheris-TARGET-crash-*.
libFuzzer's last status line gives the figures the summary reports: edge
coverage (``cov``), features (``ft``), corpus size; atheris's ``Done N`` line gives
the executions.  ``planner-real``
is the planner target on a pinned kernel's image (BOOTFUZZ_FUZZ_KERNEL).
Exit status 1 when any target crashed or stopped short of its runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "corpus" / "atheris"

#: name -> (module, seed directory, extra environment, libFuzzer options)
TARGETS: dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]] = {
    "cpio": ("fuzz_cpio", "cpio", {}, ()),
    "image": ("fuzz_image", "image", {}, ()),
    # The parser is line-based; 12 KiB inputs hold every kind of line the long seeds
    # have (their head and tail are seeds of their own; the agent report line is 8.7 KiB)
    # at half the cost of the 24 KiB whole transcripts.
    "kernel_log": ("fuzz_kernel_log", "kernel_log", {}, ("-max_len=12288",)),
    "dt_log": ("fuzz_dt_log", "dt_log", {}, ("-max_len=16384",)),
    "reproducer": ("fuzz_reproducer", "reproducer", {}, ()),
    "planner": ("fuzz_planner", "planner", {}, ()),
    "planner-real": ("fuzz_planner", "planner", {"BOOTFUZZ_FUZZ_KERNEL": "debian-6.12-cloud"}, ()),
}

#: atheris's last line when -atheris_runs is reached
_DONE = re.compile(r"^Done (\d+) in (\d+) second", re.MULTILINE)
#: libFuzzer's status lines (INITED, NEW, REDUCE, pulse, DONE)
_STAT = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


@dataclass(frozen=True)
class TargetResult:
    target: str
    runs: int
    executions: int
    coverage: int
    features: int
    corpus: int
    execs_per_second: int
    seconds: float
    crashes: tuple[str, ...]
    status: int

    @property
    def ok(self) -> bool:
        return self.status == 0 and not self.crashes and self.executions >= self.runs


def run_target(name: str, out: Path, runs: int) -> TargetResult:
    module, seeds, env, options = TARGETS[name]
    work = out / f"atheris-{name}"
    work.mkdir(parents=True, exist_ok=True)
    log = out / f"atheris-{name}.log"
    prefix = out / f"atheris-{name}-"
    argv = [sys.executable, "-m", f"tests.fuzz.{module}", str(work), str(SEEDS / seeds),
            f"-atheris_runs={runs}", f"-artifact_prefix={prefix}", "-print_final_stats=1",
            *options]
    start = time.monotonic()
    with log.open("w") as sink:
        status = subprocess.run(argv, cwd=REPO, env={**os.environ, **env}, stdout=sink,
                                stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.monotonic() - start
    crashes = tuple(sorted(p.name for p in out.glob(f"atheris-{name}-crash-*")))
    return read_log(name, runs, log.read_text(errors="replace"), seconds, status, crashes)


def read_log(name: str, runs: int, text: str, seconds: float, status: int,
             crashes: tuple[str, ...]) -> TargetResult:
    """The figures of one target's run, from its libFuzzer log."""
    stats = _STAT.findall(text)
    executions, cov, ft, corp = (int(g) for g in stats[-1]) if stats else (0, 0, 0, 0)
    done = _DONE.search(text)
    if done:  # else it crashed: the last status line says how far it got
        executions = int(done.group(1))
    speed = int(executions / seconds) if seconds else 0
    return TargetResult(name, runs, executions, cov, ft, corp, speed, round(seconds, 1),
                        crashes, status)


def markdown(results: list[TargetResult]) -> str:
    lines = ["| target | executions | cov (edges) | ft | corpus | exec/s | time | crashes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        crashes = ", ".join(r.crashes) or ("none" if r.status == 0 else f"exit {r.status}")
        lines.append(f"| {r.target} | {r.executions:,} | {r.coverage} | {r.features} | {r.corpus} "
                     f"| {r.execs_per_second} | {r.seconds:.0f} s | {crashes} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    names = [t for t in args.targets.split(",") if t]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)} (known: {', '.join(TARGETS)})")
    args.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda t: run_target(t, args.out, args.runs), names))
    table = markdown(results)
    (args.out / "atheris-summary.md").write_text(table)
    (args.out / "atheris-summary.json").write_text(
        json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2) + "\n")
    print(table, end="")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
