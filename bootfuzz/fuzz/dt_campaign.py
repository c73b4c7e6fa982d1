"""A seeded fuzz campaign on the device-tree machines (``bootfuzz fuzz`` with arm64 or
riscv64 kernels).

Cases are drawn by bootfuzz.fuzz.dt_draws from ``random.Random(seed)`` and the case
number, so case k of a seed is always the same case: memory layouts with holes, cell
sizes, initrds and placements, bootargs; with ``overrides`` a third of them are made
faulty (a fault of bootfuzz.fuzz.dt_draws.DtFault on top of our plan). Each case is
booted through our loader on qemu-virt and judged by every rule and oracle. A failing
case is booted again: the same signature twice is a finding, else flaky. A signature is
the x86 campaign's (bootfuzz.fuzz.triage: the failing oracles and the crash's title,
arm64's and riscv64's oops formats included), with the architecture and the fault the
case was made with; the first case of each signature is written as a reproducer, with
its expectation, under OUT/reproducers/, and then minimized (bootfuzz.fuzz.minimize,
the x86 campaign's minimizer: overrides, holes, command line, initrd and memory in
QEMU virt's MiB, each step kept only while the same signature fails) before any new
case starts; the reproducer is rewritten with the smaller case, and a line of
OUT/dt-campaign/minimized.jsonl says it is done. A case of our own layout (no fault)
that our loader refuses is a finding too (``loader-refused``); a faulty one it refuses is
``rejected``; trouble of the machine (QEMU missing, a full disk) is ``infra``. Every case
is a line of OUT/dt-campaign/cases.jsonl (the x86 campaign's format: ``bootfuzz replay
OUT/dt-campaign/cases.jsonl:N`` boots case N again), the summary is
OUT/dt-campaign/summary.md (and junit.xml for CI), and two campaigns on one ``--out``
refuse to run together (the x86 campaign's lock); a signal stops it with what ended on
record, and ``resume`` continues it from the log (OUT/dt-campaign/state.json holds what
decides its cases: seed, kernels, bounds; a finding whose minimization is not on
record is minimized again from its reproducer).

``--shard i/n`` splits a seed's cases as the x86 campaign does; bootfuzz.fuzz.dt_merge
takes the shards together.  Smaller than the x86 campaign (bootfuzz.fuzz.campaign): no
coverage guidance, and no measured memory floors: the draws keep every case above what
the pinned kernels need (at least 112 MiB of RAM left by holes, and the top of RAM free
of them for the kernels' largest early allocation: dt_draws.TOP_ROOM).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bootfuzz import junit
from bootfuzz.arch import Arch
from bootfuzz.case import BootCase
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.campaign import Progress, StopSignals, campaign_lock, clock
from bootfuzz.fuzz.caselog import CASES_NAME, CaseRecord, read_tail, truncate
from bootfuzz.fuzz.dt_draws import (
    DT_MAX_MEMORY,
    DT_MIN_MEMORY,
    DtFault,
    draw_dt_case,
    draw_fault,
)
from bootfuzz.fuzz.minimize import DEFAULT_MAX_BOOTS, minimize
from bootfuzz.fuzz.reproducer import (
    Expectation,
    Reproducer,
    load_reproducer,
    write_reproducer,
)
from bootfuzz.fuzz.scheduler import shard_indices
from bootfuzz.fuzz.state import CampaignError
from bootfuzz.fuzz.triage import (
    LOADER_REFUSED,
    JudgedBoot,
    Signature,
    evidence,
    refusal_signature,
    signature,
)
from bootfuzz.fuzz.workers import end_children
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.pinned import load_manifest
from bootfuzz.run.dt_boot import DtBootResult, execute_dt, prepare_dt

#: The share of cases made faulty with ``overrides``.
FAULT_SHARE = 1 / 3
DEFAULT_SILENCE = 30.0
DEFAULT_TIMEOUT = 240.0
#: How often (seconds) the loop looks for a stop signal while boots run.
STOP_POLL = 0.5
#: A case's status, in the summary's order.
STATUSES = ("pass", "fail", "flaky", "rejected", "infra")
#: The campaign's own files in its --out (reproducers go beside it, in reproducers/).
WORK_DIR = "dt-campaign"


def reproducer_path(out: Path, number: int) -> Path:
    """Where the reproducer of the finding first seen as case *number* goes."""
    return out / "reproducers" / f"dt-{number:06d}.json"


@dataclass(frozen=True)
class DtCaseOutcome:
    number: int
    case: BootCase
    fault: DtFault | None
    status: str  # one of STATUSES
    verdict: Verdict = Verdict.PASS
    failing: tuple[str, ...] = ()
    detail: str = ""
    duration: float = 0.0
    run_dir: str = ""
    title: str | None = None  # the triage signature's title (a crash's, or how it ended)
    evidence: str = ""  # the console lines that show the failure

    @property
    def signature(self) -> str:
        fault = self.fault.value if self.fault else "our-layout"
        key = Signature(self.failing, self.title or "").key
        return f"{self.case.arch.value}:{fault}:{key}"


@dataclass(frozen=True)
class MinimizationRecord:
    """A finding's line of OUT/dt-campaign/minimized.jsonl: how its minimization went."""

    signature: str  # the campaign's signature (DtCaseOutcome.signature)
    complete: bool  # False: the budget, the deadline or the machine ended it early
    boots: int
    steps: tuple[str, ...]  # what was kept, in order

    def line(self) -> bytes:
        return (json.dumps({"signature": self.signature, "complete": self.complete,
                            "boots": self.boots, "steps": list(self.steps)}) + "\n").encode()


@dataclass(frozen=True)
class DtMinimized:
    """A minimization's result: the smallest case that still failed the same way."""

    record: MinimizationRecord
    case: BootCase
    #: Whether a boot showed the signature (the case itself may not fail again).
    reproduced: bool
    evidence: str  # the console lines of the last boot that showed it


@dataclass
class DtCampaignSummary:
    seed: int
    outcomes: list[DtCaseOutcome] = field(default_factory=list)
    reproducers: dict[str, Path] = field(default_factory=dict)
    #: Each finding's minimization on record (this run's or, resumed, an earlier one's).
    minimized: dict[str, MinimizationRecord] = field(default_factory=dict)
    shard: tuple[int, int] = (0, 1)
    #: A merge's (bootfuzz.fuzz.dt_merge): the shards taken, and those not given.
    merged: tuple[str, ...] = ()
    missing_shards: tuple[str, ...] = ()
    #: The signal that stopped the campaign (SIGINT, SIGTERM, SIGHUP); None: it ran out.
    stop_signal: int | None = None

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


def run_case(number: int, case: BootCase, fault: DtFault | None, out: Path, boot: Booter
             ) -> DtCaseOutcome:
    """Boot one case (twice when it fails); never raises for the case's own trouble."""
    run_dir = out / WORK_DIR / "runs" / f"{number:06d}"
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def outcome(status: str, verdict: Verdict = Verdict.PASS, failing: tuple[str, ...] = (),
                title: str | None = None, detail: str = "", shown: str = "") -> DtCaseOutcome:
        return DtCaseOutcome(number, case, fault, status, verdict, failing, detail,
                             time.monotonic() - started, str(run_dir), title, shown)

    try:
        first = boot(case, run_dir)
        sig = signature(first)
        if sig is None:
            return outcome("pass")
        again_dir = run_dir / "again"
        again_dir.mkdir(exist_ok=True)
        second = boot(case, again_dir)
    except ConfigError as exc:  # our loader (or a rule of the case) refused it
        if fault is not None:
            return outcome("rejected", Verdict.UNKNOWN, detail=str(exc))
        refused = refusal_signature(str(exc))
        return outcome("fail", Verdict.FAIL, refused.failing, refused.title,
                       detail=str(exc)[:500], shown=str(exc))
    except (InfrastructureError, HarnessBug) as exc:
        return outcome("infra", Verdict.UNKNOWN, detail=str(exc))
    detail = "; ".join(f"{r.name}: {r.observed.splitlines()[0] if r.observed else ''}"
                       for r in first.oracles if r.verdict is not Verdict.PASS)[:500]
    return outcome("fail" if signature(second) == sig else "flaky", first.verdict,
                   sig.failing, sig.title, detail, evidence(first, sig))


def case_record(o: DtCaseOutcome, kernel_sha256: str | None, seed: int) -> CaseRecord:
    """The case's line in the log, in the x86 campaign's format (bootfuzz.fuzz.caselog),
    so ``bootfuzz replay OUT/dt-campaign/cases.jsonl:N`` boots it again and checks it
    ends the same way."""
    judged = o.status in ("pass", "fail", "flaky") and LOADER_REFUSED not in o.failing
    fault = f", fault {o.fault.value}" if o.fault else ""
    rep = Reproducer(
        o.case, kernel_sha256,
        expect=Expectation(o.verdict, o.failing) if judged else None, evidence=o.evidence,
        description=f"case #{o.number} of the device-tree campaign (seed {seed}){fault}")
    return CaseRecord(
        index=o.number, status=o.status, reproducer=rep,
        verdict=o.verdict if judged else None, failing=o.failing,
        signature=o.signature if o.status in ("fail", "flaky") else None, title=o.title,
        duration=o.duration, message=o.detail, run_dir=o.run_dir)


def summary_markdown(s: DtCampaignSummary) -> str:
    part = f", shard {s.shard[0]}/{s.shard[1]}" if s.shard[1] > 1 else ""
    lines = [f"# bootfuzz device-tree campaign (seed {s.seed}{part})", ""]
    if s.merged:
        lines += [f"Merged from shards {', '.join(s.merged)}"
                  + (f"; not given: {', '.join(s.missing_shards)}" if s.missing_shards else "")
                  + ".", ""]
    lines += [f"{len(s.outcomes)} cases: " + ", ".join(f"{s.count(x)} {x}" for x in STATUSES),
              ""]
    if s.stop_signal is not None:
        lines += [f"Stopped by signal {s.stop_signal}: the boots then running were "
                  "abandoned, not judged.", ""]
    if s.reproducers:
        lines += ["## Findings (one reproducer per signature)", ""]
        lines += [f"- `{sig}`: {path}{_minimized_note(s.minimized.get(sig), sig)}"
                  for sig, path in sorted(s.reproducers.items())]
    flaky = [o for o in s.outcomes if o.status == "flaky"]
    if flaky:
        lines += ["", "## Flaky (failed once, not again)", ""]
        lines += [f"- case {o.number}: {', '.join(o.failing)} ({o.title})" for o in flaky]
    troubled = [o for o in s.outcomes if o.status in ("rejected", "infra")]
    if troubled:
        lines += ["", "## Not judged (rejected faulty cases, trouble of the machine)", ""]
        lines += [f"- case {o.number}, {o.status}: {o.detail.splitlines()[0] if o.detail else ''}"
                  for o in troubled[:20]]
    return "\n".join(lines) + "\n"


def _minimized_note(m: MinimizationRecord | None, signature: str) -> str:
    if m is None:
        refusal = f":{LOADER_REFUSED}|" in signature
        return " (a refusal: no boot to minimize)" if refusal else " (not minimized)"
    how = "minimized" if m.complete else "minimization unfinished"
    return f" ({how} in {m.boots} boots: {'; '.join(m.steps) or 'nothing to remove'})"


def summary_junit(s: DtCampaignSummary, elapsed: float) -> str:
    """JUnit for CI (bootfuzz.junit, as the x86 campaign's): the campaign itself, one
    failure per finding's signature, a skipped case per flaky signature."""
    counts = ", ".join(f"{s.count(x)} {x}" for x in STATUSES)
    campaign = junit.Case("bootfuzz.fuzz.dt", "campaign", system_out=f"{len(s.outcomes)} "
                          f"cases: {counts}" + (f"; stopped by signal {s.stop_signal}"
                                                 if s.stop_signal else ""))
    by_signature: dict[str, list[DtCaseOutcome]] = {}
    for o in s.outcomes:
        if o.status in ("fail", "flaky"):
            by_signature.setdefault(o.signature, []).append(o)
    cases = [campaign]
    for sig, found in sorted(by_signature.items()):
        first = found[0]
        if sig in s.reproducers:
            cases.append(junit.Case("bootfuzz.fuzz.dt", sig, junit.Outcome.FAILURE,
                                    f"{len(found)} case(s); reproducer {s.reproducers[sig]}",
                                    text=first.evidence or first.detail))
        elif all(o.status == "flaky" for o in found):
            cases.append(junit.Case("bootfuzz.fuzz.dt", f"flaky: {sig}", junit.Outcome.SKIPPED,
                                    f"failed once, not when booted again: {len(found)} "
                                    f"case(s), first #{first.number}"))
    return junit.junit_xml(junit.Suite("bootfuzz-fuzz-dt", cases, elapsed,
                                       properties=(("seed", str(s.seed)),)))


def _draw(seed: int, number: int, kernels: dict[str, Arch], overrides: bool,
          max_memory: int) -> tuple[BootCase, DtFault | None]:
    """Case *number*; where our loader refuses to plan our own layout (the fault is drawn
    on that plan), the case without a fault, whose boot then shows the refusal."""
    try:
        return draw_case(seed, number, kernels, overrides, max_memory)
    except (ConfigError, InfrastructureError):
        return draw_case(seed, number, kernels, False, max_memory)


STATE_NAME = "state.json"
STATE_VERSION = 1
MINIMIZED_NAME = "minimized.jsonl"


def read_minimized(path: Path) -> dict[str, MinimizationRecord]:
    """The minimizations on record in *path* (none when it is missing); a line a kill
    tore, or any line that is not one, is no record: that finding is minimized again."""
    done: dict[str, MinimizationRecord] = {}
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return done
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read the minimization log ({exc})") from None
    for raw in lines:
        try:
            doc = json.loads(raw)
            entry = MinimizationRecord(str(doc["signature"]), bool(doc["complete"]),
                                       int(doc["boots"]), tuple(str(x) for x in doc["steps"]))
        except (ValueError, KeyError, TypeError):
            continue
        done[entry.signature] = entry
    return done


def _next_run_number(runs: Path) -> int:
    """The first boot number after those already in *runs*: a minimization a signal
    stopped left its boots there, and the resumed one adds its own beside them."""
    try:
        taken = [int(p.name) for p in runs.iterdir() if p.name.isdigit()]
    except FileNotFoundError:
        return 0
    return max(taken, default=-1) + 1


def minimize_finding(o: DtCaseOutcome, case: BootCase, out: Path, boot: Booter,
                     max_boots: int, deadline: float, cancelled: Callable[[], bool]
                     ) -> DtMinimized:
    """Minimize the finding first seen as *o*, starting from *case* (its reproducer's);
    never raises for the machine's trouble (the minimization is then unfinished)."""
    runs = out / WORK_DIR / "runs" / f"min-{o.number:06d}"
    count = itertools.count(_next_run_number(runs))

    def boot_one(candidate: BootCase) -> JudgedBoot:
        run_dir = runs / f"{next(count):03d}"
        run_dir.mkdir(parents=True)
        return boot(candidate, run_dir)

    target = Signature(o.failing, o.title or "")
    try:
        done = minimize(case, target, boot_one, max_boots=max_boots,
                        memory_floor=DT_MIN_MEMORY, deadline=deadline, cancelled=cancelled)
    except (InfrastructureError, HarnessBug) as exc:
        return DtMinimized(MinimizationRecord(o.signature, False, 0, (f"stopped: {exc}",)),
                           case, False, "")
    shown = evidence(done.result, target) if done.result is not None else ""
    return DtMinimized(MinimizationRecord(o.signature, done.complete, done.boots, done.steps),
                       done.case, done.result is not None, shown)


def _state_doc(seed: int, kernels: Sequence[str], overrides: bool, max_memory: int,
               shard: tuple[int, int] = (0, 1)) -> dict[str, object]:
    """What decides the campaign's cases: a resumed one must have the same.  The shard
    is there only when the seed's cases are split (a whole campaign's file is the same
    as before shards were added, so one begun then resumes)."""
    doc: dict[str, object] = {"version": STATE_VERSION, "seed": seed,
                              "kernels": sorted(kernels), "overrides": overrides,
                              "max_memory": max_memory}
    if shard[1] > 1:
        doc["shard"] = list(shard)
    return doc


def read_seed(out: Path) -> int | None:
    """The seed of the device-tree campaign in *out* (None: none there, or unreadable)."""
    try:
        doc = json.loads((out / WORK_DIR / STATE_NAME).read_text())
        seed = doc["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seed if isinstance(seed, int) else None


def _open_log(work: Path, state: dict[str, object], resume: bool) -> list[CaseRecord]:
    """The cases already on record (a resumed campaign's; none for a new one); refuses
    to mix two campaigns in one --out.  A line a kill tore is cut off."""
    state_path, log_path = work / STATE_NAME, work / CASES_NAME
    if not resume:
        if state_path.exists() or log_path.exists():
            raise CampaignError(f"{work}: a device-tree campaign is there: continue it with "
                                "--resume, or give another --out")
        atomic_write_text(state_path, json.dumps(state) + "\n")
        return []
    try:
        recorded = json.loads(state_path.read_text())
    except FileNotFoundError:
        raise CampaignError(f"--resume: no device-tree campaign in {work}") from None
    except (OSError, ValueError) as exc:
        raise CampaignError(f"{state_path}: not a campaign state file ({exc})") from None
    if recorded != state:
        raise CampaignError(f"--resume: {state_path} is for {recorded}; give the same "
                            "--seed, --kernel, --overrides, --mem-max and --shard, or "
                            "another --out")
    tail = read_tail(log_path, 0)
    if tail.torn:
        truncate(log_path, tail.end)
    return [record for _, record in tail.records]


def outcome_of(record: CaseRecord) -> DtCaseOutcome:
    """A case on record, as the summary counts it (its fault read from its signature)."""
    fault = None
    if record.signature is not None:
        name = record.signature.split(":", 2)[1]
        fault = DtFault(name) if name in {f.value for f in DtFault} else None
    rep = record.reproducer
    return DtCaseOutcome(record.index, rep.case, fault, record.status,
                         record.verdict or Verdict.UNKNOWN, record.failing, record.message,
                         record.duration, record.run_dir, record.title, rep.evidence or "")


def _work_order(fut: Future[DtCaseOutcome | DtMinimized]) -> tuple[int, int]:
    """Ended work in a fixed order: cases by number, then minimizations."""
    result = fut.result()
    return (0, result.number) if isinstance(result, DtCaseOutcome) else (1, 0)


def run_dt_campaign(kernels: Sequence[str], *, seconds: float, seed: int, out: Path,
                    overrides: bool = False, jobs: int = 1, max_cases: int | None = None,
                    max_memory: int = DT_MAX_MEMORY, timeout: float = DEFAULT_TIMEOUT,
                    silence: float = DEFAULT_SILENCE, boot: Booter | None = None,
                    resume: bool = False, minimize_boots: int = DEFAULT_MAX_BOOTS,
                    shard: tuple[int, int] = (0, 1), stream: TextIO = sys.stderr
                    ) -> DtCampaignSummary:
    """Draw and boot cases for *seconds* (or *max_cases*); write findings as reproducers.

    *jobs* boots run at once, a new case starting as soon as one ends.  SIGINT, SIGTERM
    or SIGHUP stop it: what ended is on record, what ran is abandoned (its backend
    ended), the summary names the signal.  ``resume`` continues the campaign in *out*:
    the cases on record count and are not booted again.  Each new finding is minimized
    in at most *minimize_boots* boots (0: not at all) before the next case starts.
    *shard* ``(i, n)`` runs the cases k with k % n == i (the x86 campaign's split,
    bootfuzz.fuzz.scheduler): n machines share one seed's cases, and ``bootfuzz merge``
    takes their outputs together.  A progress line goes to *stream* (the x86
    campaign's: in place on a terminal, every 30 s else)."""
    if not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"shard {shard[0]}/{shard[1]}: use i/n with 0 <= i < n")
    archs = dt_kernels(kernels)
    if not archs or len(archs) != len(kernels):
        raise ConfigError("a device-tree campaign takes pinned arm64/riscv64 kernels only "
                          f"(got {', '.join(kernels)})")
    booter: Booter = boot or (lambda c, d: _boot(c, d, timeout, silence))
    work = out / WORK_DIR
    summary = DtCampaignSummary(seed, shard=shard)
    started = time.monotonic()
    deadline = started + seconds
    manifest = load_manifest()
    done: set[int] = set()
    minimized_path = work / MINIMIZED_NAME
    summary.minimized = read_minimized(minimized_path) if resume else {}
    to_minimize: deque[DtCaseOutcome] = deque()
    progress = Progress(stream)

    minimizations: set[Future[DtCaseOutcome | DtMinimized]] = set()

    def show(running: set[Future[DtCaseOutcome | DtMinimized]], force: bool = False) -> None:
        elapsed = time.monotonic() - started
        n = len(summary.outcomes)
        minimizing = len(running & minimizations)
        progress.show(f"{clock(elapsed)} {n} cases ({n / elapsed if elapsed else 0:.2f}/s), "
                      f"{summary.findings} finding signature(s), {summary.count('fail')} "
                      f"failing, {summary.count('flaky')} flaky, {summary.count('rejected')} "
                      f"rejected, {summary.count('infra')} infra, {len(running)} running"
                      + (f" ({minimizing} minimizing)" if minimizing else ""), force)

    def reproduce(o: DtCaseOutcome) -> None:
        """The first case of each signature as a reproducer (after its log line: a
        resumed campaign writes one a kill left out), queued for minimization unless
        one is on record (a refusal is not minimized: its candidates boot nothing)."""
        if o.status == "fail" and o.signature not in summary.reproducers:
            path = reproducer_path(out, o.number)
            summary.reproducers[o.signature] = path
            done_before = summary.minimized.get(o.signature)
            if (minimize_boots and LOADER_REFUSED not in o.failing
                    and not (done_before and done_before.complete)):
                to_minimize.append(o)
            if path.exists():  # written before a resume
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            write_reproducer(Reproducer(
                o.case, manifest[o.case.kernel].vmlinuz_sha256,
                expect=Expectation(o.verdict, o.failing),
                description=f"device-tree campaign seed {seed} case {o.number}"
                + (f", fault {o.fault.value}" if o.fault else "")
                + (f": {o.title}" if o.title else ""),
                evidence=o.evidence or o.detail), path)

    def record(o: DtCaseOutcome) -> None:
        summary.outcomes.append(o)
        log.write(case_record(o, manifest[o.case.kernel].vmlinuz_sha256, seed).line())
        log.flush()
        new = o.status == "fail" and o.signature not in summary.reproducers
        reproduce(o)
        if new:
            stream.write(f"\nnew failure: {o.signature} (case #{o.number}) -> "
                         f"{summary.reproducers[o.signature]}\n")

    def start_minimization(o: DtCaseOutcome) -> Future[DtCaseOutcome | DtMinimized]:
        path = summary.reproducers[o.signature]
        try:
            case = load_reproducer(path).case  # an earlier run may have shrunk it
        except ConfigError:
            case = o.case
        return pool.submit(minimize_finding, o, case, out, booter, minimize_boots, deadline,
                           lambda: stop.signum is not None)

    def record_minimized(m: DtMinimized) -> None:
        """The smaller case into the reproducer, then the line that says it is done."""
        first = next(x for x in summary.outcomes if x.signature == m.record.signature)
        if m.reproduced:
            write_reproducer(Reproducer(
                m.case, manifest[m.case.kernel].vmlinuz_sha256,
                expect=Expectation(first.verdict, first.failing),
                description=f"device-tree campaign seed {seed} case {first.number}"
                + (f", fault {first.fault.value}" if first.fault else "")
                + (f": {first.title}" if first.title else "")
                + f"; {'minimized' if m.record.complete else 'partly minimized'} "
                + f"({'; '.join(m.record.steps) or 'nothing to remove'})",
                evidence=m.evidence or first.evidence or first.detail),
                summary.reproducers[m.record.signature])
        summary.minimized[m.record.signature] = m.record
        with minimized_path.open("ab") as mlog:
            mlog.write(m.record.line())
        r = m.record
        stream.write(f"\n{'minimized' if r.complete else 'minimization unfinished:'} "
                     f"{r.signature} in {r.boots} boots: "
                     f"{'; '.join(r.steps) or 'nothing to remove'}\n")

    with campaign_lock(work), StopSignals() as stop:
        state = _state_doc(seed, kernels, overrides, max_memory, shard)
        for rec in _open_log(work, state, resume):
            done.add(rec.index)
            summary.outcomes.append(outcome_of(rec))
            reproduce(summary.outcomes[-1])
        candidates = shard_indices(shard)
        if max_cases is not None:
            candidates = itertools.takewhile(lambda k: k < max_cases, candidates)
        numbers = (n for n in candidates if n not in done)
        with (work / CASES_NAME).open("ab") as log, ThreadPoolExecutor(max(1, jobs)) as pool:
            running: set[Future[DtCaseOutcome | DtMinimized]] = set()
            while stop.signum is None:
                while len(running) < max(1, jobs) and time.monotonic() < deadline:
                    if to_minimize:  # a finding gets small before the next case starts
                        fut = start_minimization(to_minimize.popleft())
                        minimizations.add(fut)
                        running.add(fut)
                        continue
                    number = next(numbers, None)
                    if number is None:
                        break
                    case, fault = _draw(seed, number, archs, overrides, max_memory)
                    running.add(pool.submit(run_case, number, case, fault, out, booter))
                if not running:
                    break
                ended, running = wait(running, timeout=STOP_POLL,
                                      return_when=FIRST_COMPLETED)
                if stop.signum is not None:
                    # A minimization the stop cut short is not on record (a resume
                    # does it again); a case that ended is a true outcome.
                    ended = {f for f in ended if isinstance(f.result(), DtCaseOutcome)}
                for fut in sorted(ended, key=_work_order):
                    result = fut.result()
                    if isinstance(result, DtCaseOutcome):
                        record(result)  # ended before the stop was seen: a true outcome
                    else:
                        record_minimized(result)
                minimizations -= ended
                show(running)
            if stop.signum is not None:
                # Stopped: the boots still running are abandoned, not judged (their
                # QEMUs, in sessions of their own that Ctrl-C does not reach, are ended).
                summary.stop_signal = stop.signum
                end_children()
                wait(running)
    show(set(), force=True)
    progress.done()
    summary.outcomes.sort(key=lambda o: o.number)
    atomic_write_text(work / "summary.md", summary_markdown(summary))
    atomic_write_text(work / "junit.xml", summary_junit(summary, time.monotonic() - started))
    return summary
