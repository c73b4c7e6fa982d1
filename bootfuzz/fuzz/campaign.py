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

No noise: a failure is booted again before it counts; one that does not repeat is
``flaky`` (its own section of the summary, never a finding).  Each kernel's memory
floor is learned first (bootfuzz.fuzz.floors, cached per kernel): cases get at least
the floor for their initrd, and a boot below it that fails short of memory is
``below-floor``, never a finding.  The other way round, a case without overrides that
our loader refuses (its own bounds or consistency check) is a finding about the
loader (``loader-refused``), never a quiet ``rejected``: that status is kept for
cases with overrides the loader cannot represent.

Every case goes on record in the case log (bootfuzz.fuzz.caselog), in this order:
its log line, then its reproducer (a new failure), then the state that counts it.
The log is the journal: a resume counts the lines a killed campaign wrote past the
state's mark, so no finding is lost between the reproducer and the state.

One campaign at a time per ``out``: ``out/campaign/lock`` is held (flock) while it
runs.  SIGINT, SIGTERM and SIGHUP stop it at the next case boundary: its workers
and their QEMUs are ended (bootfuzz.fuzz.workers), the state and the summary saved.
SIGKILL cannot be caught, but the workers notice their parent died and end too.

Layout of ``out`` (default corpus/crashes): one ``<signature>.json`` reproducer per
failure; ``out/campaign/`` holds state.json, cases.jsonl, summary.json, junit.xml,
summary.md, the lock and the runs of failing cases.

The side effects (booting, reading the kernels, the worker pool) come in a
:class:`Runtime`, so the whole loop runs in a unit test with a fake boot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Protocol, TextIO

from bootfuzz.case import BootCase, CpuTemplate
from bootfuzz.errors import (
    BootfuzzError,
    ConfigError,
    HarnessBug,
    InfrastructureError,
)
from bootfuzz.fuzz.caselog import CASES_NAME, CaseLog, CaseRecord, read_cases, read_tail, truncate
from bootfuzz.fuzz.corpus import CORPUS_DIR, Corpus, Signals, console_features, verdict_text
from bootfuzz.fuzz.coverage_log import COVERAGE_LOG_NAME, CoverageLog
from bootfuzz.fuzz.depth import Depth, VerdictVector, boot_at_depth, verdict_vector
from bootfuzz.fuzz.floors import (
    FloorKernel,
    FloorRequest,
    FloorsStopped,
    learn_floors,
)
from bootfuzz.fuzz.generate import (
    DEFAULT_MAX_MEMORY,
    GeneratorConfig,
    KernelLimits,
    generate_case,
    min_memory,
)
from bootfuzz.fuzz.minimize import DEFAULT_MAX_BOOTS, minimize
from bootfuzz.fuzz.mutate import MUTANT_SHARE, pick_and_mutate
from bootfuzz.fuzz.reproducer import (
    TARGET_KEY,
    Expectation,
    Reproducer,
    load_reproducer,
    write_reproducer,
)
from bootfuzz.fuzz.scheduler import BootCaseNumber, Scheduler
from bootfuzz.fuzz.state import (
    STATUSES,
    CampaignError,
    CampaignState,
    Finding,
    generator_digest,
    load_state,
    save_state,
)
from bootfuzz.fuzz.summary import CampaignSummary, case_table, noise_tables, write_summaries
from bootfuzz.fuzz.triage import (
    LOADER_REFUSED,
    BootOutcome,
    Signature,
    evidence,
    refusal_signature,
    signature,
)
from bootfuzz.fuzz.workers import stop_workers, worker_pool
from bootfuzz.judge.memory_floor import MemoryFloor, below_floor, below_floor_detail
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.symbols import SymbolTable
from bootfuzz.loader.layout import MiB
from bootfuzz.run.boot import new_run_dir, run_case
from bootfuzz.run.coverage import BlockCoverage
from bootfuzz.run.silence import LearnedSilence, Silence

if TYPE_CHECKING:
    from bootfuzz.run.doctor import BackendStatus

DEFAULT_OUT = Path("corpus/crashes")
#: A campaign gives up when this many boots in a row fail for infrastructure reasons.
MAX_CONSECUTIVE_INFRA = 5
DEFAULT_BOOT_TIMEOUT = 180.0
#: The silence timeout for a kernel with too few passing boots on record; after
#: those, it is learned per kernel (bootfuzz.run.silence).
DEFAULT_SILENCE = 60.0
DEFAULT_MAX_INITRD = 8 * MiB
#: Without a terminal, the progress line is printed at most this often (seconds).
PROGRESS_INTERVAL = 30.0
#: The first few refused cases are kept in the summary (a generator bug shows there).
MAX_REJECTIONS_KEPT = 10
LOCK_NAME = "lock"
#: The backends a campaign of our loader runs on.
CAMPAIGN_BACKENDS = ("qemu-tcg", "kvm")
#: The signals that stop a campaign cleanly (state and summary saved).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# --------------------------------------------------------------------------------------
# Side effects, injectable
# --------------------------------------------------------------------------------------


class BootFunction(Protocol):
    """Boot and judge one case, leaving its files in *run_dir* (bootfuzz.run.boot.run_case)."""

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: Silence, until: StopPoint | None = None,
                 coverage: bool = False) -> BootOutcome: ...


@dataclass(frozen=True)
class KernelFacts:
    """What a campaign needs of one kernel: its generation limits and file digest."""

    limits: KernelLimits
    sha256: str


def kernel_symbols_of(name: str) -> SymbolTable:
    """A kernel's symbols for the coverage log: the worker's coverage boot dumped and
    cached them already (bootfuzz.run.kallsyms), so this reads the cache."""
    from bootfuzz.kernel.pinned import resolve_kernel
    from bootfuzz.run.kallsyms import kernel_symbols

    return kernel_symbols(resolve_kernel(name))


def read_kernels(names: tuple[str, ...]) -> dict[str, KernelFacts]:
    """Fetch (if pinned) and read each kernel once, before any worker starts."""
    from bootfuzz.kernel.capabilities import read_capabilities
    from bootfuzz.kernel.image import load_kernel_image
    from bootfuzz.kernel.pinned import resolve_kernel

    facts = {}
    for name in names:
        path = resolve_kernel(name)
        image = load_kernel_image(path)
        try:  # the entry paths it has: its vmlinux, decompressed once here
            limits = KernelLimits.of(image, read_capabilities(image))
        except ConfigError:  # a payload we cannot read: its 64-bit entry only
            limits = KernelLimits.of(image)
        facts[name] = KernelFacts(limits, hashlib.sha256(path.read_bytes()).hexdigest())
    return facts


@dataclass(frozen=True)
class Runtime:
    """How a campaign boots, reads kernels, learns their memory floors and runs its
    workers.  The boot must be picklable for the process pool (a module-level function
    or class instance); the floors are learned with it (bootfuzz.fuzz.floors)."""

    boot: BootFunction = run_case
    kernels: Callable[[tuple[str, ...]], dict[str, KernelFacts]] = read_kernels
    executor: Callable[[int], Executor] = worker_pool
    floors: Callable[[FloorRequest], dict[str, MemoryFloor]] = learn_floors
    #: A kernel's symbols by name (a guided campaign's coverage log names functions).
    symbols: Callable[[str], SymbolTable] = kernel_symbols_of


# --------------------------------------------------------------------------------------
# Workers (separate processes by default: each boot is one QEMU)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootSettings:
    runs: Path
    timeout: float
    silence_timeout: Silence
    boot: BootFunction = run_case
    #: Where a case's first boot stops (bootfuzz.fuzz.depth; None: a full boot).
    until: StopPoint | None = None
    #: Boot with block coverage (the QEMU-TCG plugin, bootfuzz.run.coverage).
    coverage: bool = False
    #: Send back what each boot showed (bootfuzz.fuzz.corpus.Signals): a guided campaign.
    signals: bool = False
    #: Loader decisions are taken over deliberately (--overrides): a refusal is then
    #: ``rejected``; otherwise every override is a correct loader's and a refusal a finding.
    wild: bool = False


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
    verdict: Verdict | None = None  # None: never judged (refused, infrastructure)
    failing: tuple[str, ...] = ()
    coverage: int | None = None  # None: not measured
    phases: tuple[tuple[str, float], ...] = ()  # seconds per phase (bootfuzz.run.phases)
    until: StopPoint | None = None  # where the boot judged stopped (None: its end)
    signals: Signals | None = None  # what the boot showed (a guided campaign's)
    #: The kind of pass this case's shallow boot was promoted for, new to the campaign
    #: (bootfuzz.fuzz.depth): the campaign hands it to later cases.
    promoted_kind: VerdictVector | None = None


def _raised_by_loader(exc: BaseException) -> bool:
    """Whether *exc* was raised inside bootfuzz.loader (its own consistency check)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith(
        "bootfuzz.loader.")


def _refused(index: int, case: BootCase, exc: Exception, started: float) -> CaseOutcome:
    """A case without overrides that bootfuzz refused: generated within the generator's
    bounds, so the loader (or the generator) is wrong: a finding, titled by the
    message with its numbers blanked (one bug, one signature)."""
    message = str(exc)
    sig = refusal_signature(message or type(exc).__name__)
    return CaseOutcome(index, case, "fail", sig.key, message, message=message,
                       duration=time.monotonic() - started, failing=sig.failing)


def boot_one(index: int, case: BootCase, settings: BootSettings,
             floor: MemoryFloor | None = None,
             kinds: frozenset[VerdictVector] = frozenset()) -> CaseOutcome:
    """Boot and judge one case; every failure mode becomes an outcome, never an exception.

    A failure is booted again before it is reported: ``fail`` only when the second boot
    shows the same signature, ``flaky`` otherwise.  A failure short of memory below the
    kernel's *floor* is ``below-floor`` (not booted again).  A refusal is a finding for
    a case without overrides, ``rejected`` for one with them.  *kinds*: the kinds of
    pass the campaign has promoted to a full boot already (a shallow campaign's).
    """
    started = time.monotonic()
    run_dir = new_run_dir(case, settings.runs)
    boot: BootFunction = (functools.partial(settings.boot, coverage=True)
                          if settings.coverage else settings.boot)
    sound = case.overrides.empty or not settings.wild  # a correct loader's layout
    try:
        result, promoted_kind = boot_at_depth(
            boot, case, run_dir, timeout=settings.timeout,
            silence_timeout=settings.silence_timeout, until=settings.until, seen=kinds)
    except ConfigError as exc:
        shutil.rmtree(run_dir, ignore_errors=True)
        if sound:
            return _refused(index, case, exc, started)
        return CaseOutcome(index, case, "rejected", message=str(exc),
                           duration=time.monotonic() - started)
    except HarnessBug as exc:
        if sound and _raised_by_loader(exc):
            shutil.rmtree(run_dir, ignore_errors=True)
            return _refused(index, case, exc, started)
        return CaseOutcome(index, case, "infra", message=str(exc), run_dir=str(run_dir),
                           duration=time.monotonic() - started)
    except InfrastructureError as exc:
        return CaseOutcome(index, case, "infra", message=str(exc), run_dir=str(run_dir),
                           duration=time.monotonic() - started)
    outcome = _judged(index, case, settings, result, run_dir, started, floor)
    if promoted_kind is not None:
        outcome = dataclasses.replace(outcome, promoted_kind=promoted_kind)
    if not settings.signals:
        return outcome
    blocks = getattr(getattr(result, "coverage", None), "blocks", None)
    shown = Signals(verdict_text(verdict_vector(result)),
                    console_features(case, result.transcript.text), blocks)
    return dataclasses.replace(outcome, signals=shown,
                               coverage=None if blocks is None else len(blocks))


def _judged(index: int, case: BootCase, settings: BootSettings, result: BootOutcome,
            run_dir: Path, started: float, floor: MemoryFloor | None) -> CaseOutcome:
    """The outcome of a booted case: pass, or a failure booted again (fail, flaky),
    or below the kernel's memory floor."""
    sig = signature(result)
    phases = tuple(result.phases.items())
    if sig is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep only what explains a failure
        return CaseOutcome(index, case, "pass", duration=time.monotonic() - started,
                           verdict=result.verdict, phases=phases, until=result.until)
    shown = evidence(result, sig)
    if floor is not None and below_floor(case.memory, floor.floor(case.initrd), sig.failing):
        return CaseOutcome(index, case, "below-floor", sig.key, shown,
                           message=below_floor_detail(case.memory, floor, case.initrd),
                           run_dir=str(run_dir), duration=time.monotonic() - started,
                           verdict=result.verdict, failing=sig.failing, phases=phases)
    again_dir = new_run_dir(case, settings.runs)
    try:
        again = signature(settings.boot(case, again_dir, timeout=settings.timeout,
                                        silence_timeout=settings.silence_timeout))
    except (ConfigError, InfrastructureError, HarnessBug) as exc:
        return CaseOutcome(index, case, "infra", sig.key, shown,
                           message=f"failed ({sig.key}), then could not be booted again "
                           f"to confirm it: {exc}", run_dir=str(run_dir),
                           duration=time.monotonic() - started, verdict=result.verdict,
                           failing=sig.failing, phases=phases)
    if again == sig:
        shutil.rmtree(again_dir, ignore_errors=True)
        return CaseOutcome(index, case, "fail", sig.key, shown, run_dir=str(run_dir),
                           duration=time.monotonic() - started, verdict=result.verdict,
                           failing=sig.failing, phases=phases)
    if again is None:
        shutil.rmtree(again_dir, ignore_errors=True)
        how = "passed"
    else:
        how = f"failed otherwise: {again.key} (run {again_dir})"
    return CaseOutcome(index, case, "flaky", sig.key, shown,
                       message=f"did not repeat: booted again, it {how}",
                       run_dir=str(run_dir), duration=time.monotonic() - started,
                       verdict=result.verdict, failing=sig.failing, phases=phases)


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
    silence_timeout: float | None = None  # None: learned per kernel (bootfuzz.run.silence)
    #: How far each case is booted; interesting ones are booted to the end too.
    depth: Depth = Depth.FULL
    max_boots: int = DEFAULT_MAX_BOOTS  # per minimization; 0: no minimization
    #: Only the seed's cases 0..max_cases-1 (this shard's share of them); None: no bound.
    max_cases: int | None = None
    #: Generate from the loader's least memory, under the kernels' floors too (a boot
    #: there that fails short of memory is below-floor).
    below_floor: bool = False
    #: Keep a corpus (OUT/campaign/corpus) of the cases that showed a new verdict
    #: vector, console line or (with coverage) kernel block (bootfuzz.fuzz.corpus) ...
    guided: bool = False
    #: ... and mutate its entries, one dimension at a time, between fresh cases
    #: (False: the corpus is only recorded, every case is fresh).
    mutate: bool = True
    #: Boot with guest block coverage (the QEMU-TCG plugin, bootfuzz.run.coverage).
    coverage: bool = False
    #: Earlier corpora whose entries seed this one (--corpus DIR).
    corpus: tuple[Path, ...] = ()
    #: Boot through this peer target (bootfuzz.fuzz.target_boot) instead of our loader:
    #: only what a loader is given is drawn (64-bit, top, one archive: no dimension a
    #: real loader decides itself).
    target: str | None = None
    #: Our loader's backend for every case (``qemu-tcg`` or ``kvm``: our VMM, which on
    #: hardware KVM boots a case in a fraction of TCG's time), and the CPU template our
    #: VMM shows (kvm only).
    backend: str = "qemu-tcg"
    cpu_template: CpuTemplate = CpuTemplate.BASELINE

    @property
    def work_dir(self) -> Path:
        return self.out / "campaign"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.json"

    @property
    def cases_path(self) -> Path:
        return self.work_dir / CASES_NAME


class Progress:
    """A campaign's progress line: rewritten in place on a terminal, else a line every
    PROGRESS_INTERVAL seconds (a CI log stays short)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def show(self, line: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        self.stream.write(("\r" + line + "\033[K") if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def clock(elapsed: float) -> str:
    """Elapsed seconds as a progress line's [mm:ss]."""
    return f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}]"


def _progress_line(state: CampaignState, elapsed: float, running: int,
                   corpus: Corpus | None) -> str:
    c = state.counts
    done = sum(c.values())
    line = (f"{clock(elapsed)} {done} cases "
            f"({done / elapsed if elapsed else 0:.2f}/s), {len(state.findings)} failure "
            f"signature(s), {c['fail']} failing, {c['flaky']} flaky, "
            f"{c['below-floor']} below floor, {c['rejected']} refused, {c['infra']} "
            f"infra, {running} running")
    if corpus is not None:
        line += f"; corpus {len(corpus.entries)} ({corpus.block_count()} blocks)"
    return line


@contextlib.contextmanager
def campaign_lock(work_dir: Path) -> Iterator[None]:
    """Hold ``work_dir/lock`` for the campaign's life; refuse when another process does.

    flock, not a pid file: the kernel drops it when the holder dies however it dies
    (workers inherit it, so it is held until the last of them is gone too).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    fh: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise CampaignError(
                f"{work_dir.parent}: another campaign (pid {holder}) is running on this "
                "--out; wait for it to end, or give another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


class StopSignals:
    """SIGINT/SIGTERM/SIGHUP ask the loop to stop at the next case boundary (a handler
    that only sets a flag, so no outcome is ever half applied)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def _open_state(opts: CampaignOptions, digest: str, floors: dict[str, MemoryFloor]
                ) -> CampaignState:
    """The state to continue (--resume) or a fresh one; refuses to mix campaigns."""
    path = opts.state_path
    if not opts.resume:
        if path.exists():
            raise CampaignError(f"{path} exists: continue it with --resume, or give "
                                "another --out")
        if opts.cases_path.exists():
            raise CampaignError(f"{opts.cases_path} exists without a state file: remove "
                                "it, or give another --out")
        return CampaignState(opts.seed, opts.shard, digest, next_index=opts.shard[0],
                             kernels=opts.kernels, floors=floors)
    if not path.exists():
        raise CampaignError(f"--resume: no state file {path}")
    state = load_state(path)
    if (state.seed, state.shard, state.generator) != (opts.seed, opts.shard, digest):
        raise CampaignError(
            f"--resume: {path} is for seed {state.seed}, shard "
            f"{state.shard[0]}/{state.shard[1]} and other generator options; give the "
            "same --seed, --shard, --kernel, bounds, --below-floor, --backend and "
            "--cpu-template, or another --out")
    return state


@dataclass
class _Campaign:
    """One run's mutable bookkeeping around the state: what to do with each outcome."""

    opts: CampaignOptions
    state: CampaignState
    kernels: dict[str, KernelFacts]
    stream: TextIO
    cases_by_key: dict[str, BootCase] = field(default_factory=dict)
    scheduler: Scheduler | None = None  # None while recovering: minimizations wait
    consecutive_infra: int = 0
    floors: dict[str, MemoryFloor] = field(default_factory=dict)  # by kernel name
    corpus: Corpus | None = None  # a guided campaign's
    #: The parent entry and dimension of each mutant running, by case number.
    origins: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: With --coverage: OUT/campaign/coverage.jsonl, what each case reached first per
    #: kernel and entry path (bootfuzz.fuzz.coverage_log; `bootfuzz coverage report`).
    coverage_log: CoverageLog | None = None
    symbols_of: Callable[[str], SymbolTable] = kernel_symbols_of
    _symbols: dict[str, SymbolTable] = field(default_factory=dict)

    def case_for(self, config: GeneratorConfig, index: int) -> BootCase:
        """Case *index*: in a guided campaign with a corpus, half the time a mutant of
        an entry (bootfuzz.fuzz.mutate), else the seed's fresh case."""
        if self.corpus is not None and config.mutants and self.corpus.entries:
            src = random.Random(f"bootfuzz-mutant:{config.seed}:{index}")
            if src.random() < MUTANT_SHARE:
                mutant = pick_and_mutate(src, config, [
                    (e.name, e.case, len(e.new.blocks) + len(e.new.lines))
                    for e in self.corpus.entries])
                if mutant is not None:
                    self.origins[index] = (mutant.parent, mutant.dimension)
                    # A seed corpus may come from a campaign on another backend.
                    return dataclasses.replace(mutant.case, backend=config.backend,
                                               cpu_template=config.cpu_template)
        return generate_case(config, index)

    def kernel_sha256(self, case: BootCase) -> str | None:
        facts = self.kernels.get(case.kernel)
        return None if facts is None else facts.sha256

    def reproducer(self, case: BootCase, key: str, ev: str, minimized: bool) -> Reproducer:
        how = "minimized" if minimized else "found"
        return Reproducer(
            case=case, kernel_sha256=self.kernel_sha256(case),
            expect=Expectation(Verdict.FAIL, Signature.parse(key).failing), evidence=ev,
            description=f"{how} by bootfuzz fuzz{self.against} (seed {self.opts.seed}): {key}",
            extra=self.target_extra,
        )

    @property
    def against(self) -> str:
        return "" if self.opts.target is None else f" --target {self.opts.target}"

    @property
    def target_extra(self) -> dict[str, str]:
        """A campaign against a peer records it in every reproducer (TARGET_KEY)."""
        return {} if self.opts.target is None else {TARGET_KEY: self.opts.target}

    def record(self, outcome: CaseOutcome, origin: tuple[str, str] | None = None
               ) -> CaseRecord:
        """The case log's line for *outcome*: the case as a reproducer that expects
        what the case showed."""
        expect = (None if outcome.verdict is None
                  else Expectation(outcome.verdict, outcome.failing))
        how = "" if origin is None else f", a mutant of {origin[0]} ({origin[1]})"
        rep = Reproducer(
            case=outcome.case, kernel_sha256=self.kernel_sha256(outcome.case), expect=expect,
            evidence=outcome.evidence, until=outcome.until,
            description=f"case #{outcome.index} of bootfuzz fuzz{self.against} "
            f"(seed {self.opts.seed}){how}", extra=self.target_extra,
        )
        title = None if outcome.signature is None else outcome.signature.partition("|")[2]
        return CaseRecord(
            index=outcome.index, status=outcome.status, reproducer=rep,
            verdict=outcome.verdict, failing=outcome.failing, signature=outcome.signature,
            title=title, duration=outcome.duration, coverage=outcome.coverage,
            message=outcome.message, run_dir=outcome.run_dir, phases=outcome.phases,
        )

    def memory_floor(self, case: BootCase) -> int:
        """The least memory the minimizer tries: the loader's, and the kernel's floor
        (below it the kernel fails otherwise: other signature, wasted boots)."""
        floor = max(self.opts.min_memory, min_memory(self.kernels[case.kernel].limits,
                                                     case.initrd))
        kernel_floor = self.floors.get(case.kernel)
        return floor if kernel_floor is None else max(floor, kernel_floor.floor(case.initrd))

    def booted(self, outcome: CaseOutcome, log: CaseLog, elapsed: float = 0.0) -> None:
        """Keep the case in the corpus if it showed something new, journal the outcome
        in the case log, then count it."""
        origin = self.origins.pop(outcome.index, None)
        record = self.record(outcome, origin)
        self.keep(outcome, record, origin, elapsed)
        self.apply(record, log.append(record))
        infra = outcome.status == "infra"
        self.consecutive_infra = self.consecutive_infra + 1 if infra else 0
        if infra:
            self.stream.write(f"\ncase #{outcome.index}: infrastructure: {outcome.message}\n")

    def keep(self, outcome: CaseOutcome, record: CaseRecord, origin: tuple[str, str] | None,
             elapsed: float) -> None:
        """A corpus entry for a case that showed a feature no entry has (written before
        its log line: a kill between the two keeps the entry, the case runs again)."""
        if self.corpus is None or outcome.signals is None:
            return
        self.log_coverage(outcome)
        new = self.corpus.novelty(outcome.case.kernel, outcome.signals)
        if new.empty:
            return
        self.corpus.add(outcome.case, outcome.index, elapsed, new,
                        kernel_sha256=self.kernel_sha256(outcome.case),
                        expect=record.reproducer.expect, blocks=outcome.coverage,
                        parent=None if origin is None else origin[0],
                        mutated=None if origin is None else origin[1],
                        description=record.reproducer.description)

    def log_coverage(self, outcome: CaseOutcome) -> None:
        """The case's first-reached blocks and functions in the coverage log (before
        its corpus entry and log line: a kill in between boots the case again, and the
        log, which knows what it has seen, adds nothing twice)."""
        blocks = None if outcome.signals is None else outcome.signals.blocks
        sha = self.kernel_sha256(outcome.case)
        if self.coverage_log is None or blocks is None or sha is None:
            return
        symbols = self._symbols.get(sha)
        if symbols is None:
            symbols = self._symbols[sha] = self.symbols_of(outcome.case.kernel)
        self.coverage_log.record(outcome.index, outcome.case.kernel, outcome.case.entry.value,
                                 BlockCoverage(sha, frozenset(blocks), symbols))

    def apply(self, record: CaseRecord, log_end: int) -> None:
        """Count a logged case in the state (*log_end*: the log offset past its line).

        What can fail (writing a new failure's reproducer) goes first; the state
        changes after it, so it never holds half a case."""
        state = self.state
        if not state.is_done(record.index):
            if record.status == "fail" and record.signature is not None:
                self.failed(record, record.signature)
            state.counts[record.status] += 1
            if record.status == "rejected" and len(state.rejections) < MAX_REJECTIONS_KEPT:
                state.rejections.append(f"case #{record.index}: {record.message}")
            state.mark_done(record.index)
        state.cases_bytes = log_end

    def failed(self, record: CaseRecord, key: str) -> None:
        known = self.state.findings.get(key)
        if known is not None:
            known.count += 1
            return
        case = record.reproducer.case
        path = self.opts.out / f"{Signature.parse(key).slug}.json"
        write_reproducer(self.reproducer(case, key, record.reproducer.evidence, False), path)
        self.state.findings[key] = Finding(key, str(path), record.index)
        self.cases_by_key[key] = case
        if self.opts.max_boots and self.scheduler is not None and minimizable(key):
            self.scheduler.add_minimization(key)
        self.stream.write(f"\nnew failure: {key} (case #{record.index}) -> {path}\n")

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

    def recover(self) -> int:
        """Count the log's lines past the state's mark (booted by a campaign killed
        before it saved them); cut a torn last line.  Returns how many were counted."""
        path = self.opts.cases_path
        tail = read_tail(path, self.state.cases_bytes)
        if tail.torn:
            truncate(path, tail.end)
        for end, record in tail.records:
            self.apply(record, end)
        return len(tail.records)


def minimizable(key: str) -> bool:
    """Whether the minimizer can shrink a finding: not a refusal (the minimizer's
    candidates the loader refuses are no verdict, so it would boot nothing)."""
    return LOADER_REFUSED not in Signature.parse(key).failing


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


Pending = set[Future[CaseOutcome | MinimizeOutcome]]


def _finished(pending: Pending) -> list[CaseOutcome | MinimizeOutcome]:
    """Outcomes of work that ended while the campaign was stopping (counted, not lost)."""
    return [f.result() for f in pending
            if f.done() and not f.cancelled() and f.exception() is None]


def check_backend(opts: CampaignOptions) -> None:
    """Refuse backend options that do not go together: an unknown backend, a CPU
    template or coverage the backend does not have, a backend with --target."""
    if opts.backend not in CAMPAIGN_BACKENDS:
        raise CampaignError(f"--backend {opts.backend!r}: a campaign runs on "
                            f"{' or '.join(CAMPAIGN_BACKENDS)} (or auto)")
    kvm = opts.backend == "kvm"
    if opts.target is not None and (kvm or opts.cpu_template is not CpuTemplate.BASELINE):
        raise CampaignError("--backend and --cpu-template are our loader's; a --target "
                            "campaign boots the peer instead")
    if opts.cpu_template is not CpuTemplate.BASELINE and not kvm:
        raise CampaignError(f"--cpu-template {opts.cpu_template.value} is what our KVM VMM "
                            f"shows its guest; {opts.backend} shows QEMU's own CPU: add "
                            "--backend kvm")
    if opts.coverage and kvm:
        raise CampaignError("--coverage is measured by QEMU-TCG's plugin: not on kvm")


def check_backend_runs(backend: str,
                       measure_kvm: Callable[[], BackendStatus] | None = None) -> None:
    """Refuse, before anything is booted, a backend that cannot run the campaign's boots
    here: missing, or kvm where /dev/kvm only emulates (measured: no full boot would
    finish, and every case would end as a hang)."""
    from bootfuzz.run.backends import get_backend
    from bootfuzz.run.doctor import kvm_status

    try:
        get_backend(backend).check_available()
    except BootfuzzError as exc:
        raise CampaignError(f"--backend {backend}: {exc}") from None
    if backend == "kvm":
        status = (measure_kvm or kvm_status)()
        if not status.fast:
            raise CampaignError(f"--backend kvm: {status.detail}; run the campaign on "
                                "qemu-tcg here")


def run_campaign(opts: CampaignOptions, stream: TextIO | None = None,
                 runtime: Runtime | None = None) -> CampaignSummary:
    """Run (or resume) a campaign; returns its summary, also written to ``out/campaign``.

    Stopped by a signal (SIGINT, SIGTERM, SIGHUP), it returns a summary whose
    ``stop_signal`` names it; the state is saved and ``--resume`` continues.
    """
    runtime = runtime or Runtime()
    stream = stream or sys.stderr  # the one of now, not of import time (tests capture it)
    if opts.jobs < 1:
        raise CampaignError(f"--jobs {opts.jobs}: must be at least 1")
    check_backend(opts)
    if runtime.boot is run_case and opts.target is None:  # our loader's real boots
        check_backend_runs(opts.backend)
    kernels = runtime.kernels(opts.kernels)
    with campaign_lock(opts.work_dir), StopSignals() as stop:
        try:
            floors = _floors(opts, runtime, kernels, stream, stop)
        except FloorsStopped:
            return _stopped_learning(opts, stop)
        config = GeneratorConfig(
            kernels=tuple((k, kernels[k].limits) for k in opts.kernels), seed=opts.seed,
            min_memory=opts.min_memory, max_memory=opts.max_memory,
            max_initrd=opts.max_initrd, overrides=opts.overrides, max_cmdline=opts.max_cmdline,
            floors=() if opts.below_floor else tuple(
                (k, floors[k]) for k in opts.kernels if k in floors),
            mutants=opts.guided and opts.mutate, dimensions=opts.target is None,
            backend=opts.backend, cpu_template=opts.cpu_template,
        )
        return _run_locked(opts, stream, runtime, kernels, floors, config, stop)


def _open_corpus(opts: CampaignOptions, stream: TextIO) -> Corpus | None:
    """A guided campaign's corpus (a resumed one's as it was), seeded from --corpus."""
    if not opts.guided:
        if opts.corpus:
            raise CampaignError("--corpus seeds a guided campaign: add --coverage")
        return None
    corpus = Corpus.open(opts.work_dir / CORPUS_DIR)
    for seeds in opts.corpus:
        added = corpus.seed_from(seeds, opts.kernels)
        stream.write(f"corpus: {added} entries from {seeds}\n")
    return corpus


def _floors(opts: CampaignOptions, runtime: Runtime, kernels: dict[str, KernelFacts],
            stream: TextIO, stop: StopSignals) -> dict[str, MemoryFloor]:
    """The kernels' memory floors: a resumed campaign's from its state (its cases come
    from them), a new one's learned (cached points, the others measured)."""
    if opts.resume and opts.state_path.exists():
        return dict(load_state(opts.state_path).floors)
    return runtime.floors(FloorRequest(
        kernels=tuple(FloorKernel(k, kernels[k].sha256, kernels[k].limits)
                      for k in dict.fromkeys(opts.kernels)),
        max_initrd=opts.max_initrd, boot=runtime.boot, executor=runtime.executor,
        jobs=opts.jobs, runs=opts.work_dir / "runs", stream=stream,
        stopped=lambda: stop.signum is not None,
    ))


def _stopped_learning(opts: CampaignOptions, stop: StopSignals) -> CampaignSummary:
    """A campaign stopped before its first case: no state (nothing to resume)."""
    name = signal.Signals(stop.signum or signal.SIGINT).name
    summary = CampaignSummary(
        kernels=opts.kernels, seed=opts.seed, shard=opts.shard, elapsed=0.0,
        counts=dict.fromkeys(STATUSES, 0), findings=(),
        aborted=f"stopped by {name} while measuring memory floors (the points measured "
        "so far are cached); start the campaign again", stop_signal=stop.signum or 0)
    write_summaries(summary, opts.work_dir)
    return summary


def _run_locked(opts: CampaignOptions, stream: TextIO, runtime: Runtime,
                kernels: dict[str, KernelFacts], floors: dict[str, MemoryFloor],
                config: GeneratorConfig, stop: StopSignals) -> CampaignSummary:
    state = _open_state(opts, generator_digest(config), floors)
    run = _Campaign(opts, state, kernels, stream, _known_cases(state), floors=state.floors,
                    corpus=_open_corpus(opts, stream),
                    coverage_log=(CoverageLog(opts.work_dir / COVERAGE_LOG_NAME)
                                  if opts.coverage else None),
                    symbols_of=runtime.symbols)
    recovered = run.recover() if opts.resume else 0
    if recovered:
        stream.write(f"counted {recovered} case(s) the last run booted but did not save\n")
    # After recovery: the scheduler skips what it counted and minimizes what it found.
    unminimized = [f.key for f in state.findings.values()
                   if not f.minimized and f.key in run.cases_by_key and minimizable(f.key)
                   ] if opts.max_boots else []
    scheduler = run.scheduler = Scheduler(state, max_cases=opts.max_cases,
                                          minimize=unminimized)
    save_state(state, opts.state_path)  # from here on, the state exists: --resume
    quiet = (LearnedSilence(DEFAULT_SILENCE) if opts.silence_timeout is None
             else opts.silence_timeout)
    settings = BootSettings(opts.work_dir / "runs", opts.timeout, quiet, runtime.boot,
                            opts.depth.stop, coverage=opts.coverage, signals=opts.guided,
                            wild=opts.overrides)
    started = time.monotonic()
    deadline = started + opts.seconds
    progress = Progress(stream)
    aborted = ""
    log = CaseLog(opts.cases_path)

    def elapsed() -> float:
        return state.elapsed + time.monotonic() - started

    kinds: set[VerdictVector] = set()  # promoted to a full boot (bootfuzz.fuzz.depth)

    def take(outcome: CaseOutcome | MinimizeOutcome) -> None:
        if isinstance(outcome, CaseOutcome):
            if outcome.promoted_kind is not None:
                kinds.add(outcome.promoted_kind)
            run.booted(outcome, log, elapsed())
        else:
            run.minimized(outcome)
        save_state(dataclasses.replace(state, elapsed=elapsed()), opts.state_path)

    pending: Pending = set()
    pool: Executor | None = None
    try:
        pool = runtime.executor(opts.jobs)
        while stop.signum is None:
            while len(pending) < opts.jobs and time.monotonic() < deadline:
                work = scheduler.next()
                if work is None:
                    break
                if isinstance(work, BootCaseNumber):
                    case = run.case_for(config, work.index)
                    pending.add(pool.submit(boot_one, work.index, case, settings,
                                            run.floors.get(case.kernel), frozenset(kinds)))
                else:
                    case = run.cases_by_key[work.key]
                    pending.add(pool.submit(minimize_one, work.key, case, settings,
                                            opts.max_boots, run.memory_floor(case), deadline))
            if not pending:
                break
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                take(fut.result())
            progress.show(_progress_line(state, elapsed(), len(pending), run.corpus))
            if run.consecutive_infra >= MAX_CONSECUTIVE_INFRA and not aborted:
                aborted = (f"{run.consecutive_infra} boots in a row failed for infrastructure "
                           "reasons")
                deadline = time.monotonic()  # drain what is running, start nothing new
        if stop.signum is not None:
            name = signal.Signals(stop.signum).name
            aborted = f"stopped by {name}; continue with --resume"
            stream.write(f"\n{name}: stopping {len(pending)} running boot(s), saving the "
                         "state\n")
            for outcome in _finished(pending):
                take(outcome)
    except KeyboardInterrupt:
        aborted = "interrupted"
        raise
    finally:
        if pool is not None:
            if pending:
                stop_workers(pool)  # abandoned boots stay undone: --resume runs them
            else:
                pool.shutdown(wait=True)
        log.close()
        state.elapsed = elapsed()
        save_state(state, opts.state_path)
        progress.show(_progress_line(state, state.elapsed, 0, run.corpus), force=True)
        progress.done()
        if run.corpus is not None:
            c = run.corpus
            stream.write(f"corpus: {len(c.entries)} entries, {c.block_count()} kernel blocks, "
                         f"{len(c.verdicts)} verdict vectors, {len(c.lines)} console lines "
                         f"in {c.directory}\n")
        records = read_cases(opts.cases_path, state.cases_bytes)
        flaky, below = noise_tables(records)
        summary = CampaignSummary(
            kernels=opts.kernels, seed=opts.seed, shard=opts.shard, elapsed=state.elapsed,
            counts=dict(state.counts), findings=tuple(state.findings.values()),
            rejections=tuple(state.rejections), aborted=aborted, table=case_table(records),
            stop_signal=stop.signum or 0, flaky=flaky, below_floor=below,
        )
        write_summaries(summary, opts.work_dir)
    return summary


__all__ = [
    "LOCK_NAME", "BootFunction", "BootSettings", "CampaignOptions", "CaseOutcome",
    "KernelFacts", "MinimizeOutcome", "Runtime", "boot_one", "campaign_lock", "minimize_one",
    "read_kernels", "run_campaign",
]
