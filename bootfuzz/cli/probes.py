"""``python -m bootfuzz.cli.probes run|build``: boot a probe guest and check its report.

A probe is a tiny program entered exactly as a kernel is (64-bit, PVH or 16-bit entry) that
prints its registers and the boot information it was given, so every value our loader
planned is checked on the real backend: bootfuzz.guest.probes builds it,
bootfuzz.run.probe runs it and bootfuzz.judge.probe checks the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.errors import BootfuzzError, ConfigError

if TYPE_CHECKING:
    from bootfuzz.run.probe import ProbeResult


def format_results(result: ProbeResult) -> str:
    """One line per check: name, verdict, expected; observed and detail where they say more."""
    from bootfuzz.judge.verdict import Verdict

    width = max(len(r.name) for r in result.oracles)
    lines = []
    for r in result.oracles:
        lines.append(f"{r.name:<{width}}  {r.verdict.value:<7}  expected: {r.expected}")
        if r.verdict is not Verdict.PASS or r.observed != r.expected:
            lines.append(f"{'':<{width}}  {'':<7}  observed: {r.observed}")
        if r.detail:
            lines.append(f"{'':<{width}}  {'':<7}  detail:   {r.detail}")
    lines.append(f"verdict: {result.verdict.value}  (run dir {result.run_dir})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bootfuzz.guest.probes import PROBE_ENTRIES, build_probes
    from bootfuzz.judge.verdict import Verdict, oracle_json
    from bootfuzz.run.probe import PROBE_INITRD, run_probe
    from bootfuzz.units import parse_size

    parser = argparse.ArgumentParser(prog="python -m bootfuzz.cli.probes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a probe through our loader and check its report")
    run.add_argument("--entry", choices=[e.value for e in PROBE_ENTRIES], default="64")
    run.add_argument("--backend", default="qemu-tcg")
    run.add_argument("--mem", default="256M", help="guest RAM (default 256M)")
    run.add_argument("--no-initrd", action="store_true", help="boot without an initrd")
    run.add_argument("--run-dir", type=Path, default=None)
    run.add_argument("--json", action="store_true", help="print the oracles as JSON")
    build = sub.add_parser("build", help="build (or find) the probe images, print their paths")
    build.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            images = build_probes(args.cache_dir)
            print(f"bzimage={images.bzimage}\nprobe64={images.probe64}\n"
                  f"probe16={images.probe16}\npvh_elf={images.pvh_elf}")
            return ExitStatus.PASS
        memory = parse_size(args.mem)
        if args.run_dir is not None:
            args.run_dir.mkdir(parents=True, exist_ok=True)
        result = run_probe(args.entry, args.backend, memory, args.run_dir,
                           initrd=None if args.no_initrd else PROBE_INITRD)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return ExitStatus.USAGE
    except (BootfuzzError, OSError) as e:
        print(e, file=sys.stderr)
        return ExitStatus.INFRASTRUCTURE
    if args.json:
        print(json.dumps({"verdict": result.verdict.value,
                          "oracles": [oracle_json(r) for r in result.oracles]}, indent=1))
    else:
        print(format_results(result))
    return ExitStatus.PASS if result.verdict is Verdict.PASS else ExitStatus.FINDING


if __name__ == "__main__":
    sys.exit(main())
