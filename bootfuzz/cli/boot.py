"""``bootfuzz boot``: one case through our loader, judged, as a table or JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from bootfuzz.cli.case_args import add_case_arguments, add_guest_timeouts, case_from_args
from bootfuzz.cli.exits import EPILOG, ExitStatus
from bootfuzz.cli.report import coverage_line, interrupted_json, result_json, result_table
from bootfuzz.errors import StorageError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.boot import (
    DEFAULT_SILENCE_TIMEOUT,
    DEFAULT_TIMEOUT,
    LEARNED_SILENCE,
    execute,
    new_run_dir,
    prepare,
)
from bootfuzz.run.coverage import write_coverage


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Lay out a kernel, an initrd and a command line with our own loader, "
                     "run it on a backend, and judge what the kernel saw.")
    p.epilog = EPILOG
    add_case_arguments(p)
    r = p.add_argument_group("run")
    r.add_argument("--backend", default="qemu-tcg", metavar="NAME",
                   help="execution backend: qemu-tcg (QEMU -accel tcg runs our machine state), "
                   "kvm (our own VMM on /dev/kvm), auto (kvm where `bootfuzz doctor` measures "
                   "hardware KVM, else qemu-tcg); default qemu-tcg")
    add_guest_timeouts(r, DEFAULT_TIMEOUT, DEFAULT_SILENCE_TIMEOUT, learned=True)
    r.add_argument("--until", default=None, choices=[p.value for p in StopPoint],
                   help="stop the guest as soon as the oracles of this point can answer "
                   "(ramdisk: e820, cmdline, initrd-placement; unpack: those and "
                   "initrd-unpacked); the rest report unknown")
    r.add_argument("--run-dir", default=None, metavar="DIR",
                   help="parent directory for the run's files (console.log, verdict.json)")
    r.add_argument("--keep-blobs", action="store_true",
                   help="keep the blob files the backend loaded, for inspection")
    r.add_argument("--coverage", action="store_true",
                   help="record the guest kernel's block coverage (qemu-tcg, and qemu-virt for "
                   "arm64/riscv64 kernels) and write "
                   "coverage.json in the run directory: the kernel functions reached, blocks "
                   "per function, decompressor offsets; a kernel's first coverage run boots "
                   "it once more to read its symbols (cached)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the result as JSON")
    o.add_argument("-v", "--verbose", action="store_true",
                   help="show expected and observed values for passing oracles too")


def write_verdict(run_dir: Path, doc: dict[str, Any]) -> None:
    """verdict.json, whole or not at all."""
    path = run_dir / "verdict.json"
    try:
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise StorageError.writing(path, exc) from None


def warn_if_kvm_cannot_boot() -> None:
    """A full boot asked of a /dev/kvm that only emulates would end in a hang after the
    timeout: say so first, with doctor's measurement, and boot as asked (the early
    protocol steps do run there, and --until ramdisk stops when they are done)."""
    from bootfuzz.run.doctor import kvm_cannot_boot

    why = kvm_cannot_boot()
    if why is not None:
        print(f"bootfuzz boot: warning: {why}; this boot will likely end in a hang at "
              "--timeout. --until ramdisk stops where this KVM gets to; --backend qemu-tcg "
              "runs the whole boot", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    case = case_from_args(args, backend=args.backend)
    if case.arch.device_tree:  # arm64, riscv64: our DT loader on QEMU virt
        from bootfuzz.cli.dt_report import run_dt_boot

        dt_run_dir = new_run_dir(case, None if args.run_dir is None else Path(args.run_dir))
        doc, text, status = run_dt_boot(args, case, dt_run_dir)
        write_verdict(dt_run_dir, doc)
        print(text)
        return status
    prepared = prepare(case)  # bad input is told first, without a KVM measurement
    if case.backend == "kvm" and args.until is None:
        warn_if_kvm_cannot_boot()
    run_dir = new_run_dir(case, None if args.run_dir is None else Path(args.run_dir))
    try:
        quiet = LEARNED_SILENCE if args.silence_timeout is None else args.silence_timeout
        result = execute(prepared, run_dir, timeout=args.timeout,
                         silence_timeout=quiet, keep_blobs=args.keep_blobs,
                         until=StopPoint(args.until) if args.until else None,
                         coverage=args.coverage)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM (cli.exits.Terminated)
        # The guest is stopped and the blobs are gone (run.boot); say why no verdict.
        name = signal.Signals(getattr(exc, "signum", signal.SIGINT)).name
        with contextlib.suppress(StorageError):  # the signal is the news, not the disk
            write_verdict(run_dir, interrupted_json(case, run_dir, name))
        raise
    except StorageError:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # nothing got written: leave no empty run behind
        raise
    doc = result_json(result)
    if result.coverage is not None:
        doc["coverage"] = write_coverage(run_dir, result.coverage)
    write_verdict(run_dir, doc)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(result_table(result, verbose=args.verbose))
        if "coverage" in doc:
            print(coverage_line(doc["coverage"]))
    return ExitStatus.PASS if result.verdict is Verdict.PASS else ExitStatus.FINDING

