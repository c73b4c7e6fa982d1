"""A boot campaign: generated cases booted, judged, failures kept and minimized.

Cases come from the seeded generator (bootfuzz.fuzz.generate: the same edge tables as
the Hypothesis strategies), so ``--seed`` and ``--shard i/n`` fix exactly which
cases run (bootfuzz.fuzz.scheduler).  Each case is booted in a worker process (one
QEMU each) and judged; failures are de-duplicated by signature
(bootfuzz.fuzz.triage), written at once as a reproducer, then minimized and
rewritten.  A hung or crashed guest is a verdict like any other.  The state file
(bootfuzz.fuzz.state), rewritten atomically after every case, lets ``--resume``
continue after a kill; the summary (bootfuzz.fuzz.summary) is written as JSON,
JUnit XML and markdown.

Layout of ``out`` (default corpus/crashes): one ``<signature>.json`` reproducer per
failure; ``out/campaign/`` holds state.json, summary.json, junit.xml, summary.md
and the runs of failing cases.

The side effects (booting, reading the kernels, the worker pool) come in a
:class:`Runtime`, so the whole loop runs in a unit test with a fake boot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from bootfuzz.case import BootCase
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError
from bootfuzz.fuzz.generate import (
    DEFAULT_MAX_MEMORY,
    GeneratorConfig,
    KernelLimits,
    generate_case,
    min_memory,
)
from bootfuzz.fuzz.minimize import DEFAULT_MAX_BOOTS, minimize
from bootfuzz.fuzz.reproducer import Expectation, Reproducer, load_reproducer, write_reproducer
from bootfuzz.fuzz.scheduler import BootCaseNumber, Scheduler
from bootfuzz.fuzz.state import (
    CampaignError,
    CampaignState,
    Finding,
    generator_digest,
    load_state,
    save_state,
)
from bootfuzz.fuzz.summary import CampaignSummary, write_summaries
from bootfuzz.fuzz.triage import BootOutcome, Signature, evidence, signature
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.layout import MiB
from bootfuzz.run.boot import new_run_dir, run_case

DEFAULT_OUT = Path("corpus/crashes")
#: A campaign gives up when this many boots in a row fail for infrastructure reasons.
MAX_CONSECUTIVE_INFRA = 5
DEFAULT_BOOT_TIMEOUT = 180.0
DEFAULT_SILENCE = 60.0
DEFAULT_MAX_INITRD = 8 * MiB
#: Without a terminal, the progress line is printed at most this often (seconds).
PROGRESS_INTERVAL = 30.0
#: The first few refused cases are kept in the summary (a generator bug shows there).
MAX_REJECTIONS_KEPT = 10


# --------------------------------------------------------------------------------------
# Side effects, injectable
# --------------------------------------------------------------------------------------


class BootFunction(Protocol):
    """Boot and judge one case, leaving its files in *run_dir* (bootfuzz.run.boot.run_case)."""

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: float) -> BootOutcome: ...


@dataclass(frozen=True)
class KernelFacts:
    """What a campaign needs of one kernel: its generation limits and file digest."""

    limits: KernelLimits
    sha256: str


def read_kernels(names: tuple[str, ...]) -> dict[str, KernelFacts]:
    """Fetch (if pinned) and read each kernel once, before any worker starts."""
    from bootfuzz.kernel.image import load_kernel_image
    from bootfuzz.kernel.pinned import resolve_kernel

    facts = {}
    for name in names:
        path = resolve_kernel(name)
        facts[name] = KernelFacts(KernelLimits.of(load_kernel_image(path)),
                                  hashlib.sha256(path.read_bytes()).hexdigest())
    return facts


@dataclass(frozen=True)
class Runtime:
    """How a campaign boots, reads kernels and runs its workers.  The boot must be
    picklable for the process pool (a module-level function or class instance)."""

    boot: BootFunction = run_case
    kernels: Callable[[tuple[str, ...]], dict[str, KernelFacts]] = read_kernels
    executor: Callable[[int], Executor] = ProcessPoolExecutor


# --------------------------------------------------------------------------------------
# Workers (separate processes by default: each boot is one QEMU)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootSettings:
    runs: Path
    timeout: float
    silence_timeout: float
    boot: BootFunction = run_case


@dataclass(frozen=True)
class CaseOutcome:
    """What a worker sends back for one case: small and picklable."""

    index: int
    case: BootCase
    status: str  # one of bootfuzz.fuzz.state.STATUSES
    signature: str | None = None
    evidence: str = ""
    message: str = ""
    run_dir: str = ""
    duration: float = 0.0


def boot_one(index: int, case: BootCase, settings: BootSettings) -> CaseOutcome:
    """Boot and judge one case; every failure mode becomes an outcome, never an exception."""
    started = time.monotonic()
    run_dir = new_run_dir(case, settings.runs)
    try:
        result = settings.boot(case, run_dir, timeout=settings.timeout,
                               silence_timeout=settings.silence_timeout)
    except ConfigError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        return CaseOutcome(index, case, "rejected", message=str(exc))
    except (InfrastructureError, HarnessBug) as exc:
        return CaseOutcome(index, case, "infra", message=str(exc), run_dir=str(run_dir),
                           duration=time.monotonic() - started)
    sig = signature(result)
    if sig is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep only what explains a failure
        return CaseOutcome(index, case, "pass", duration=time.monotonic() - started)
    return CaseOutcome(index, case, "fail", sig.key, evidence(result, sig),
                       run_dir=str(run_dir), duration=time.monotonic() - started)


@dataclass(frozen=True)
class MinimizeOutcome:
    key: str
    case: BootCase
    evidence: str
    boots: int
    steps: tuple[str, ...]
    complete: bool


def minimize_one(key: str, case: BootCase, settings: BootSettings, max_boots: int,
                 memory_floor: int, deadline: float) -> MinimizeOutcome:
    def boot(candidate: BootCase) -> BootOutcome:
        return settings.boot(candidate, new_run_dir(candidate, settings.runs / "minimize"),
                             timeout=settings.timeout, silence_timeout=settings.silence_timeout)

    sig = Signature.parse(key)
    try:
        done = minimize(case, sig, boot, max_boots=max_boots, memory_floor=memory_floor,
                        deadline=deadline)
    except (InfrastructureError, HarnessBug) as exc:
        return MinimizeOutcome(key, case, "", 0, (f"stopped: {exc}",), False)
    shown = evidence(done.result, sig) if done.result is not None else ""
    return MinimizeOutcome(key, done.case, shown, done.boots, done.steps, done.complete)


# --------------------------------------------------------------------------------------
# The campaign
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignOptions:
    kernels: tuple[str, ...]
    seconds: float
    jobs: int = 1
    out: Path = DEFAULT_OUT
    seed: int = 0
    shard: tuple[int, int] = (0, 1)
    resume: bool = False
    min_memory: int = 0
    max_memory: int = DEFAULT_MAX_MEMORY
    max_initrd: int = DEFAULT_MAX_INITRD
    max_cmdline: int | None = None
    overrides: bool = False
    timeout: float = DEFAULT_BOOT_TIMEOUT
    silence_timeout: float = DEFAULT_SILENCE
    max_boots: int = DEFAULT_MAX_BOOTS  # per minimization; 0: no minimization
    max_cases: int | None = None

    @property
    def work_dir(self) -> Path:
        return self.out / "campaign"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.json"


class _Progress:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def show(self, state: CampaignState, elapsed: float, running: int, force: bool = False
             ) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        c = state.counts
        done = sum(c.values())
        line = (f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}] {done} cases "
                f"({done / elapsed if elapsed else 0:.2f}/s), {len(state.findings)} failure "
                f"signature(s), {c['fail']} failing, {c['rejected']} refused, {c['infra']} "
                f"infra, {running} running")
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _open_state(opts: CampaignOptions, digest: str) -> CampaignState:
    """The state to continue (--resume) or a fresh one; refuses to mix campaigns."""
    path = opts.state_path
    if not opts.resume:
        if path.exists():
            raise CampaignError(f"{path} exists: continue it with --resume, or give "
                                "another --out")
        return CampaignState(opts.seed, opts.shard, digest, next_index=opts.shard[0])
    if not path.exists():
        raise CampaignError(f"--resume: no state file {path}")
    state = load_state(path)
    if (state.seed, state.shard, state.generator) != (opts.seed, opts.shard, digest):
        raise CampaignError(
            f"--resume: {path} is for seed {state.seed}, shard "
            f"{state.shard[0]}/{state.shard[1]} and other generator options; give the "
            "same --seed, --shard, --kernel and bounds, or another --out")
    return state


@dataclass
class _Campaign:
    """One run's mutable bookkeeping around the state: what to do with each outcome."""

    opts: CampaignOptions
    state: CampaignState
    kernels: dict[str, KernelFacts]
    scheduler: Scheduler
    stream: TextIO
    cases_by_key: dict[str, BootCase] = field(default_factory=dict)
    consecutive_infra: int = 0

    def reproducer(self, case: BootCase, key: str, ev: str, minimized: bool) -> Reproducer:
        how = "minimized" if minimized else "found"
        facts = self.kernels.get(case.kernel)
        return Reproducer(
            case=case, kernel_sha256=None if facts is None else facts.sha256,
            expect=Expectation(Verdict.FAIL, Signature.parse(key).failing), evidence=ev,
            description=f"{how} by bootfuzz fuzz (seed {self.opts.seed}): {key}",
        )

    def memory_floor(self, case: BootCase) -> int:
        return max(self.opts.min_memory, min_memory(self.kernels[case.kernel].limits,
                                                    case.initrd))

    def booted(self, outcome: CaseOutcome) -> None:
        state = self.state
        state.counts[outcome.status] += 1
        infra = outcome.status == "infra"
        self.consecutive_infra = self.consecutive_infra + 1 if infra else 0
        if outcome.status == "rejected" and len(state.rejections) < MAX_REJECTIONS_KEPT:
            state.rejections.append(f"case #{outcome.index}: {outcome.message}")
        if infra:
            self.stream.write(f"\ncase #{outcome.index}: infrastructure: {outcome.message}\n")
        if outcome.status == "fail" and outcome.signature is not None:
            self.failed(outcome, outcome.signature)
        state.mark_done(outcome.index)

    def failed(self, outcome: CaseOutcome, key: str) -> None:
        known = self.state.findings.get(key)
        if known is not None:
            known.count += 1
            return
        path = self.opts.out / f"{Signature.parse(key).slug}.json"
        write_reproducer(self.reproducer(outcome.case, key, outcome.evidence, False), path)
        self.state.findings[key] = Finding(key, str(path), outcome.index)
        self.cases_by_key[key] = outcome.case
        if self.opts.max_boots:
            self.scheduler.add_minimization(key)
        self.stream.write(f"\nnew failure: {key} (case #{outcome.index}) -> {path}\n")

    def minimized(self, outcome: MinimizeOutcome) -> None:
        finding = self.state.findings[outcome.key]
        if outcome.evidence:  # at least one boot still showed the signature
            write_reproducer(self.reproducer(outcome.case, outcome.key, outcome.evidence,
                                             outcome.complete), Path(finding.file))
            self.cases_by_key[outcome.key] = outcome.case
        # Unfinished (out of time or boots): --resume goes on from here.
        finding.minimized = outcome.complete
        finding.boots += outcome.boots
        finding.steps += outcome.steps


def _known_cases(state: CampaignState) -> dict[str, BootCase]:
    """The current case of each finding, read back from its reproducer (a resumed run
    minimizes those not done; one whose file is gone or broken is left as it is)."""
    cases = {}
    for f in state.findings.values():
        try:
            cases[f.key] = load_reproducer(Path(f.file)).case
        except ConfigError:
            continue
    return cases


def run_campaign(opts: CampaignOptions, stream: TextIO = sys.stderr,
                 runtime: Runtime | None = None) -> CampaignSummary:
    """Run (or resume) a campaign; returns its summary, also written to ``out/campaign``."""
    runtime = runtime or Runtime()
    if opts.jobs < 1:
        raise CampaignError(f"--jobs {opts.jobs}: must be at least 1")
    kernels = runtime.kernels(opts.kernels)
    config = GeneratorConfig(
        kernels=tuple((k, kernels[k].limits) for k in opts.kernels), seed=opts.seed,
        min_memory=opts.min_memory, max_memory=opts.max_memory, max_initrd=opts.max_initrd,
        overrides=opts.overrides, max_cmdline=opts.max_cmdline,
    )
    state = _open_state(opts, generator_digest(config))
    cases_by_key = _known_cases(state)
    unminimized = [f.key for f in state.findings.values()
                   if not f.minimized and f.key in cases_by_key] if opts.max_boots else []
    run = _Campaign(opts, state, kernels,
                    Scheduler(state, max_cases=opts.max_cases, minimize=unminimized), stream,
                    cases_by_key)
    settings = BootSettings(opts.work_dir / "runs", opts.timeout, opts.silence_timeout,
                            runtime.boot)
    started = time.monotonic()
    deadline = started + opts.seconds
    progress = _Progress(stream)
    aborted = ""

    def elapsed() -> float:
        return state.elapsed + time.monotonic() - started

    pending: set[Future[CaseOutcome | MinimizeOutcome]] = set()
    pool = runtime.executor(opts.jobs)
    try:
        while True:
            while len(pending) < opts.jobs and time.monotonic() < deadline:
                work = run.scheduler.next()
                if work is None:
                    break
                if isinstance(work, BootCaseNumber):
                    case = generate_case(config, work.index)
                    pending.add(pool.submit(boot_one, work.index, case, settings))
                else:
                    case = run.cases_by_key[work.key]
                    pending.add(pool.submit(minimize_one, work.key, case, settings,
                                            opts.max_boots, run.memory_floor(case), deadline))
            if not pending:
                break
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                outcome = fut.result()
                if isinstance(outcome, CaseOutcome):
                    run.booted(outcome)
                else:
                    run.minimized(outcome)
                save_state(dataclasses.replace(state, elapsed=elapsed()), opts.state_path)
            progress.show(state, elapsed(), len(pending))
            if run.consecutive_infra >= MAX_CONSECUTIVE_INFRA and not aborted:
                aborted = (f"{run.consecutive_infra} boots in a row failed for infrastructure "
                           "reasons")
                deadline = time.monotonic()  # drain what is running, start nothing new
    except KeyboardInterrupt:
        aborted = "interrupted"
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        state.elapsed = elapsed()
        save_state(state, opts.state_path)
        progress.show(state, state.elapsed, 0, force=True)
        progress.done()
        summary = CampaignSummary(
            kernels=opts.kernels, seed=opts.seed, shard=opts.shard, elapsed=state.elapsed,
            counts=dict(state.counts), findings=tuple(state.findings.values()),
            rejections=tuple(state.rejections), aborted=aborted,
        )
        write_summaries(summary, opts.work_dir)
    return summary


__all__ = [
    "BootFunction", "BootSettings", "CampaignOptions", "CaseOutcome", "KernelFacts",
    "MinimizeOutcome", "Runtime", "boot_one", "minimize_one", "read_kernels", "run_campaign",
]
