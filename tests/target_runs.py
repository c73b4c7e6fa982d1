"""Shared by the tests that boot peer targets (QEMU -kernel, command templates, real
loaders): the one case they boot and how a failing run is explained."""

from __future__ import annotations

from bootfuzz.case import HARNESS_CMDLINE, BootCase, InitrdSpec
from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers.targets import TargetRun
from bootfuzz.units import parse_size


def case(mem: str, kernel: str = "debian-6.1-cloud") -> BootCase:
    """*kernel* at *mem* with a 1 MiB gzip initrd and the harness command line."""
    return BootCase(kernel=kernel, memory=parse_size(mem), cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(1 << 20))


def explain(run: TargetRun) -> str:
    """The oracles that did not pass, and where the console log is."""
    return "\n".join(f"{r.name}: {r.verdict.value}: expected {r.expected!r}, observed "
                     f"{r.observed!r} {r.detail}" for r in run.oracles
                     if r.verdict is not Verdict.PASS) + f"\nlog: {run.run_dir}/console.log"
