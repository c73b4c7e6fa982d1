"""A seeded fuzz campaign on the device-tree machines (``bootfuzz fuzz`` with arm64 or
riscv64 kernels).

Cases are drawn by bootfuzz.fuzz.dt_draws from ``random.Random(seed)`` and the case
number, so case k of a seed is always the same case: memory layouts with holes, cell
sizes, initrds and placements, bootargs; with ``overrides`` a third of them are made
faulty (a fault of bootfuzz.fuzz.dt_draws.DtFault on top of our plan). Each case is
booted through our loader on qemu-virt and judged by every rule and oracle. A failing
case is booted again: the same failing oracles twice is a finding, else flaky. A
finding's signature is the architecture and its failing oracles (and the fault it was
made with); the first case of each signature is written as a reproducer, with its
expectation, under OUT/reproducers/. Every case is a line of OUT/dt-campaign/cases.jsonl
and the summary is OUT/dt-campaign/summary.md.

Smaller than the x86 campaign (bootfuzz.fuzz.campaign): no resume, no minimization, no
memory floors, no coverage guidance yet.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase
from bootfuzz.errors import BootfuzzError, ConfigError, InfrastructureError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.dt_draws import DT_MAX_MEMORY, DtFault, draw_dt_case, draw_fault
from bootfuzz.fuzz.reproducer import Expectation, Reproducer, write_reproducer
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.pinned import load_manifest
from bootfuzz.run.dt_boot import DtBootResult, execute_dt, prepare_dt

#: The share of cases made faulty with ``overrides``.
FAULT_SHARE = 1 / 3
DEFAULT_SILENCE = 30.0
DEFAULT_TIMEOUT = 240.0


@dataclass(frozen=True)
class DtCaseOutcome:
    number: int
    case: BootCase
    fault: DtFault | None
    status: str  # pass, fail, flaky, error
    verdict: Verdict = Verdict.PASS
    failing: tuple[str, ...] = ()
    detail: str = ""
    duration: float = 0.0
    run_dir: str = ""

    @property
    def signature(self) -> str:
        fault = self.fault.value if self.fault else "our-layout"
        return f"{self.case.arch.value}:{fault}:{'+'.join(self.failing)}"


@dataclass
class DtCampaignSummary:
    seed: int
    outcomes: list[DtCaseOutcome] = field(default_factory=list)
    reproducers: dict[str, Path] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def findings(self) -> int:
        return len(self.reproducers)


def dt_kernels(names: Sequence[str]) -> dict[str, Arch]:
    """The device-tree kernels among *names* and their architectures (pinned names only)."""
    manifest = load_manifest()
    out = {}
    for name in names:
        pin = manifest.get(name)
        if pin is not None and Arch.parse(pin.arch).device_tree:
            out[name] = Arch.parse(pin.arch)
    return out


def draw_case(seed: int, number: int, kernels: dict[str, Arch], overrides: bool,
              max_memory: int = DT_MAX_MEMORY) -> tuple[BootCase, DtFault | None]:
    """Case *number* of *seed*: always the same case (the fault drawn on our own plan)."""
    src = random.Random(f"{seed}:{number}")
    kernel = src.choice(sorted(kernels))
    case = draw_dt_case(src, kernels[kernel], kernel, max_memory)
    if not overrides or src.random() >= FAULT_SHARE:
        return case, None
    plan = prepare_dt(case).plan
    fault, dt = draw_fault(src, plan)
    return dataclasses.replace(case, dt=dt), fault


Booter = Callable[[BootCase, Path], DtBootResult]


def _boot(case: BootCase, run_dir: Path, timeout: float, silence: float) -> DtBootResult:
    return execute_dt(prepare_dt(case), run_dir, timeout=timeout, silence_timeout=silence)


def _failing(result: DtBootResult) -> tuple[str, ...]:
    return tuple(sorted(r.name for r in result.oracles if r.verdict is Verdict.FAIL))


def run_case(number: int, case: BootCase, fault: DtFault | None, out: Path, boot: Booter
             ) -> DtCaseOutcome:
    """Boot one case (twice when it fails); never raises for the case's own trouble."""
    run_dir = out / "dt-campaign" / "runs" / f"{number:06d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        first = boot(case, run_dir)
        if first.verdict is Verdict.PASS:
            return DtCaseOutcome(number, case, fault, "pass", Verdict.PASS, (), "",
                                 time.monotonic() - started, str(run_dir))
        again_dir = run_dir / "again"
        again_dir.mkdir(exist_ok=True)
        second = boot(case, again_dir)
    except (ConfigError, InfrastructureError) as exc:
        return DtCaseOutcome(number, case, fault, "error", Verdict.UNKNOWN, (), str(exc),
                             time.monotonic() - started, str(run_dir))
    same = (_failing(first), first.verdict) == (_failing(second), second.verdict)
    detail = "; ".join(f"{r.name}: {r.observed.splitlines()[0] if r.observed else ''}"
                       for r in first.oracles if r.verdict is not Verdict.PASS)[:500]
    return DtCaseOutcome(number, case, fault, "fail" if same else "flaky", first.verdict,
                         _failing(first), detail, time.monotonic() - started, str(run_dir))


def case_line(o: DtCaseOutcome) -> str:
    from bootfuzz.fuzz.reproducer import reproducer_json

    doc = {"n": o.number, "status": o.status, "fault": o.fault.value if o.fault else None,
           "failing": list(o.failing), "detail": o.detail, "duration": round(o.duration, 3),
           "run_dir": o.run_dir, "case": reproducer_json(Reproducer(o.case))}
    return json.dumps(doc)


def summary_markdown(s: DtCampaignSummary) -> str:
    lines = [f"# bootfuzz device-tree campaign (seed {s.seed})", "",
             f"{len(s.outcomes)} cases: " + ", ".join(
                 f"{s.count(x)} {x}" for x in ("pass", "fail", "flaky", "error")), ""]
    if s.reproducers:
        lines += ["## Findings (one reproducer per signature)", ""]
        lines += [f"- `{sig}`: {path}" for sig, path in sorted(s.reproducers.items())]
    flaky = [o for o in s.outcomes if o.status == "flaky"]
    if flaky:
        lines += ["", "## Flaky (failed once, not again)", ""]
        lines += [f"- case {o.number}: {', '.join(o.failing)}" for o in flaky]
    return "\n".join(lines) + "\n"


def run_dt_campaign(kernels: Sequence[str], *, seconds: float, seed: int, out: Path,
                    overrides: bool = False, jobs: int = 1, max_cases: int | None = None,
                    max_memory: int = DT_MAX_MEMORY, timeout: float = DEFAULT_TIMEOUT,
                    silence: float = DEFAULT_SILENCE, boot: Booter | None = None
                    ) -> DtCampaignSummary:
    """Draw and boot cases for *seconds* (or *max_cases*); write findings as reproducers."""
    archs = dt_kernels(kernels)
    if not archs or len(archs) != len(kernels):
        raise ConfigError("a device-tree campaign takes pinned arm64/riscv64 kernels only "
                          f"(got {', '.join(kernels)})")
    booter: Booter = boot or (lambda c, d: _boot(c, d, timeout, silence))
    work = out / "dt-campaign"
    work.mkdir(parents=True, exist_ok=True)
    summary = DtCampaignSummary(seed)
    deadline = time.monotonic() + seconds
    number = 0
    manifest = load_manifest()
    with (work / "cases.jsonl").open("a") as log, ThreadPoolExecutor(max(1, jobs)) as pool:
        while time.monotonic() < deadline and (max_cases is None or number < max_cases):
            batch = []
            for _ in range(max(1, jobs)):
                if max_cases is not None and number >= max_cases:
                    break
                try:
                    case, fault = draw_case(seed, number, archs, overrides, max_memory)
                except BootfuzzError as exc:  # our loader refused our own draw: a finding
                    summary.outcomes.append(DtCaseOutcome(
                        number, BootCase("?", 0), None, "error", Verdict.UNKNOWN, (), str(exc)))
                    number += 1
                    continue
                batch.append(pool.submit(run_case, number, case, fault, out, booter))
                number += 1
            for fut in batch:
                o = fut.result()
                summary.outcomes.append(o)
                log.write(case_line(o) + "\n")
                log.flush()
                if o.status == "fail" and o.signature not in summary.reproducers:
                    path = out / "reproducers" / f"dt-{o.number:06d}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_reproducer(Reproducer(
                        o.case, manifest[o.case.kernel].vmlinuz_sha256,
                        expect=Expectation(o.verdict, o.failing),
                        description=f"device-tree campaign seed {seed} case {o.number}"
                        + (f", fault {o.fault.value}" if o.fault else ""),
                        evidence=o.detail), path)
                    summary.reproducers[o.signature] = path
    atomic_write_text(work / "summary.md", summary_markdown(summary))
    return summary
