"""Replaying a reproducer: the same case, the same overrides, judged again."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.fuzz.reproducer import (
    TARGET_KEY,
    Reproducer,
    ReproducerError,
    check_kernel_sha256,
)
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.pinned import load_manifest, resolve_kernel
from bootfuzz.run.boot import DEFAULT_TIMEOUT, BootResult, execute, new_run_dir, prepare
from bootfuzz.run.dt_boot import DtBootResult, execute_dt, prepare_dt


@dataclass(frozen=True)
class ReplayOutcome:
    result: BootResult | DtBootResult
    #: None when the reproducer states no expectation.
    expectation_met: bool | None
    mismatch: str = ""

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.result.oracles if r.verdict is Verdict.FAIL)


def compare_expectation(rep: Reproducer, result: BootResult | DtBootResult
                        ) -> tuple[bool | None, str]:
    """Whether *result* shows what *rep* expects: its verdict and exactly its failing oracles."""
    if rep.expect is None:
        return None, ""
    failing = sorted(r.name for r in result.oracles if r.verdict is Verdict.FAIL)
    problems = []
    if result.verdict is not rep.expect.verdict:
        problems.append(f"verdict {result.verdict.value}, expected {rep.expect.verdict.value}")
    if rep.expect.failing and failing != sorted(rep.expect.failing):
        problems.append(f"failing oracles {failing}, expected {sorted(rep.expect.failing)}")
    return not problems, "; ".join(problems)


def replay(rep: Reproducer, run_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT
           ) -> ReplayOutcome:
    """Boot *rep*'s case once (on its own kernel: the sha256 is checked) and judge it.

    A pinned name whose pin has moved on since the reproducer was recorded replays on
    the recorded kernel, found in the cache by its sha256.
    """
    target = rep.extra.get(TARGET_KEY)
    if target is not None:
        raise ReproducerError(
            f"recorded against the peer target {target}: its boot is that loader's, not "
            f"ours; boot the case there (bootfuzz diff --peer {target} with the case's "
            "options, or bootfuzz fuzz --target)")
    kernel = resolve_kernel(rep.case.kernel, sha256=rep.kernel_sha256)
    check_kernel_sha256(rep, kernel)
    pin = load_manifest().get(rep.case.kernel)
    moved = pin is not None and rep.kernel_sha256 not in (None, pin.vmlinuz_sha256)
    case = dataclasses.replace(rep.case, kernel=str(kernel)) if moved else rep.case
    result: BootResult | DtBootResult
    if case.arch.device_tree:  # arm64, riscv64: the device-tree loader on QEMU virt
        result = execute_dt(prepare_dt(case), run_dir or new_run_dir(rep.case),
                            timeout=timeout)
    else:
        result = execute(prepare(case), run_dir or new_run_dir(rep.case), until=rep.until,
                         timeout=timeout)
    met, mismatch = compare_expectation(rep, result)
    return ReplayOutcome(result, met, mismatch)
