"""``bootfuzz minimize FILE``: shrink a failing reproducer while it fails the same way
(x86 cases on their backend, arm64/riscv64 cases through the device-tree loader)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from bootfuzz.case import BootCase
from bootfuzz.cli.case_args import count, seconds
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.fuzz.dt_draws import DT_MIN_MEMORY
from bootfuzz.fuzz.generate import KernelLimits, min_memory
from bootfuzz.fuzz.minimize import DEFAULT_MAX_BOOTS, minimize
from bootfuzz.fuzz.reproducer import (
    Expectation,
    Reproducer,
    check_kernel_sha256,
    load_reproducer,
    write_reproducer,
)
from bootfuzz.fuzz.triage import JudgedBoot, evidence, signature
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.run.boot import new_run_dir, run_case
from bootfuzz.run.dt_boot import execute_dt, prepare_dt

DEFAULT_TIMEOUT = 180.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Boot the reproducer, take its failure signature (failing oracles and how the guest "
        "ended), then shrink overrides, command line, initrd and memory while the same "
        "signature still fails.  Writes the smaller reproducer.")
    p.epilog = ("exit status: 0 a smaller reproducer was written, 1 the case passes (nothing "
                "to minimize),\n2 bad input or usage, 3 infrastructure trouble.")
    p.add_argument("file", metavar="FILE", help="a reproducer JSON file that fails")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="where to write the result; default FILE with .min.json")
    p.add_argument("--max-boots", type=count, default=DEFAULT_MAX_BOOTS, metavar="N",
                   help=f"boot at most N candidates; default {DEFAULT_MAX_BOOTS}")
    p.add_argument("--timeout", type=seconds, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"give up on one guest after this long; default {DEFAULT_TIMEOUT:.0f}")


def _booter(rep: Reproducer, kernel_path: Path, timeout: float
            ) -> tuple[Callable[[BootCase], JudgedBoot], int]:
    """How a candidate of *rep* boots, and the least memory worth trying: a device-tree
    case on QEMU virt from the device-tree campaign's floor, an x86 case on its backend
    from what the loader needs for the kernel and the initrd."""
    if rep.case.arch.device_tree:
        def boot_dt(case: BootCase) -> JudgedBoot:
            return execute_dt(prepare_dt(case), new_run_dir(case), timeout=timeout)
        return boot_dt, DT_MIN_MEMORY

    def boot(case: BootCase) -> JudgedBoot:
        return run_case(case, timeout=timeout, until=rep.until)
    limits = KernelLimits.of(load_kernel_image(kernel_path))
    return boot, min_memory(limits, rep.case.initrd)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    rep = load_reproducer(path)
    kernel_path = resolve_kernel(rep.case.kernel)
    check_kernel_sha256(rep, kernel_path)
    boot, floor = _booter(rep, kernel_path, args.timeout)

    first = boot(rep.case)
    sig = signature(first)
    if sig is None:
        print(f"{path}: the case passes; nothing to minimize", file=sys.stderr)
        return ExitStatus.FINDING
    print(f"{path}: fails as {sig.key}", file=sys.stderr)
    done = minimize(rep.case, sig, boot, max_boots=args.max_boots, memory_floor=floor)
    shown = done.result or first
    out = Path(args.out) if args.out else path.with_suffix(".min.json")
    write_reproducer(dataclasses.replace(
        rep, case=done.case, expect=Expectation(Verdict.FAIL, sig.failing),
        evidence=evidence(shown, sig),
        description=rep.description or f"minimized from {path.name}: {sig.key}",
    ), out)
    print(f"{out}: {len(done.steps)} steps kept in {done.boots} boots "
          f"({done.rejected} refused by the loader): {'; '.join(done.steps) or 'none'}")
    return ExitStatus.PASS
