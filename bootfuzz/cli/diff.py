"""``bootfuzz diff``: one case on two loaders, and where the kernels' views differ."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bootfuzz.case import BootCase
from bootfuzz.cli.case_args import add_case_arguments, add_guest_timeouts, case_from_args
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.errors import ConfigError
from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers.differential import report_json, report_table, run_diff
from bootfuzz.peers.targets import parse_target
from bootfuzz.run.boot import DEFAULT_SILENCE_TIMEOUT, DEFAULT_TIMEOUT, default_runs_dir

DEFAULT_TARGET = "ours:qemu-tcg"
EPILOG = """\
exit status: 0 both targets pass their oracles (differences alone are not failures
unless --fail-on-diff), 1 a target failed an oracle (or a difference with
--fail-on-diff), 2 bad input or usage, 3 infrastructure trouble."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Boot the same kernel, initrd, command line and memory through two loaders and "
        "compare what each kernel saw: e820 lines, RAMDISK, command line, firmware memmap, "
        "boot_params fields; every difference with its console lines.")
    p.epilog = EPILOG
    add_case_arguments(p)
    t = p.add_argument_group("targets")
    t.add_argument("--peer", required=True, metavar="TARGET",
                   help="qemu-direct:pc|microvm[:tcg|kvm], command:FILE, or ours[:BACKEND]; "
                   "for an arm64 or riscv64 kernel: qemu-kernel:virt (QEMU's own -kernel), "
                   "qemu-kernel:virt:dtb (the same, given our DTB with -dtb), u-boot:virt "
                   "(U-Boot's booti) or, arm64 only, efi-stub:virt (edk2 starting the "
                   "kernel's EFI stub)")
    t.add_argument("--target", default=DEFAULT_TARGET, metavar="TARGET",
                   help=f"the left-hand target; default {DEFAULT_TARGET}")
    r = p.add_argument_group("run")
    add_guest_timeouts(r, DEFAULT_TIMEOUT, DEFAULT_SILENCE_TIMEOUT)
    r.add_argument("--run-dir", default=None, metavar="DIR",
                   help="parent directory for the runs (each target's console.log, diff.json)")
    r.add_argument("--sequential", action="store_true",
                   help="boot one target after the other (default: both at once)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report as JSON")
    o.add_argument("--all", action="store_true", help="show equal items too")
    o.add_argument("--fail-on-diff", action="store_true",
                   help="exit 1 when the kernels' views differ at all")


def run(args: argparse.Namespace) -> int:
    case = case_from_args(args)
    if case.arch.device_tree:  # arm64, riscv64: ours on qemu-virt against QEMU's -kernel
        return _run_dt(args, case)
    left, right = parse_target(args.target), parse_target(args.peer)
    parent = Path(args.run_dir) if args.run_dir else default_runs_dir()
    report = run_diff(case, left, right, parent, timeout=args.timeout,
                      silence_timeout=args.silence_timeout, parallel=not args.sequential)
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(report_table(report, show_all=args.all))
    ok = report.left.verdict is Verdict.PASS and report.right.verdict is Verdict.PASS
    if args.fail_on_diff and report.differences:
        ok = False
    return ExitStatus.PASS if ok else ExitStatus.FINDING


def _run_dt(args: argparse.Namespace, case: BootCase) -> int:
    from bootfuzz.peers.dt_diff import PEERS, report_json, report_table, run_dt_diff

    if args.peer not in PEERS or args.target not in (DEFAULT_TARGET, "ours:qemu-virt"):
        raise ConfigError(f"an {case.arch.value} case is compared as --target ours:qemu-virt "
                          f"--peer {' or '.join(PEERS)}")
    parent = Path(args.run_dir) if args.run_dir else default_runs_dir()
    quiet = DEFAULT_SILENCE_TIMEOUT if args.silence_timeout is None else args.silence_timeout
    report = run_dt_diff(case, parent, timeout=args.timeout, silence_timeout=quiet,
                         parallel=not args.sequential, peer=args.peer)
    print(json.dumps(report_json(report), indent=2) if args.json
          else report_table(report, show_all=args.all))
    ok = report.left.verdict is Verdict.PASS and report.right.verdict is Verdict.PASS
    if args.fail_on_diff and report.differences:
        ok = False
    return ExitStatus.PASS if ok else ExitStatus.FINDING
