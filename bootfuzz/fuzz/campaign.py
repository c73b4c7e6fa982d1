"""``bootfuzz fuzz``: a boot campaign.

Cases come from the seeded generator (bootfuzz.fuzz.generate: the same edge tables as
the Hypothesis strategies), so ``--seed`` and ``--shard i/n`` fix exactly which
cases run: case *k* belongs to shard ``k % n``.  Each case is booted in a worker
process (one QEMU each) and judged; failures are de-duplicated by signature
(bootfuzz.fuzz.minimize.Signature), written at once as a reproducer, then minimized and
rewritten.  A hung or crashed guest is a verdict like any other.  A state file,
rewritten atomically after every case, lets ``--resume`` continue after a kill;
the summary is written as JSON, JUnit XML and markdown.

Layout of ``--out DIR`` (default corpus/crashes): one ``<signature>.json``
reproducer per failure; ``DIR/campaign/`` holds state.json, summary.json,
junit.xml, summary.md and the runs of failing cases.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootfuzz.case import BootCase
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.generate import DEFAULT_MAX_MEMORY, GeneratorConfig, KernelLimits, generate_case
from bootfuzz.fuzz.minimize import DEFAULT_MAX_BOOTS, Signature, evidence, minimize, signature
from bootfuzz.fuzz.reproducer import Expectation, Reproducer, write_reproducer
from bootfuzz.judge.oracles import Verdict
from bootfuzz.loader.layout import MiB
from bootfuzz.units import parse_size

STATE_VERSION = 1
DEFAULT_OUT = Path("corpus/crashes")
#: A campaign gives up when this many boots in a row fail for infrastructure reasons.
MAX_CONSECUTIVE_INFRA = 5
DEFAULT_BOOT_TIMEOUT = 180.0
DEFAULT_SILENCE = 60.0


class CampaignError(ConfigError):
    """Bad campaign options or a state file that does not match them."""

    component = "fuzz"


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "30m", "2h", "1h30m"."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None or m.end() == pos:
            raise CampaignError(f"--time {text!r}: use a duration like 90s, 30m, 2h or 1h30m")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if total <= 0:
        raise CampaignError(f"--time {text!r}: must be longer than zero")
    return total


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise CampaignError(f"--shard {text!r}: use i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def shard_indices(shard: tuple[int, int], start: int = 0) -> Iterator[int]:
    """Case numbers of *shard* from *start* on: every k with k % n == i."""
    i, n = shard
    k = start + (i - start) % n
    while True:
        yield k
        k += n


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One failure signature: where its reproducer is and how far it was minimized."""

    key: str
    file: str
    first_index: int
    count: int = 1
    minimized: bool = False
    boots: int = 0
    steps: tuple[str, ...] = ()


@dataclass
class CampaignState:
    """Everything --resume needs: which cases are done and which failures are known."""

    seed: int
    shard: tuple[int, int]
    generator: str  # a digest of the generator's configuration
    next_index: int  # every case of the shard below this is done
    done_beyond: set[int] = field(default_factory=set)
    findings: dict[str, Finding] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: {
        "pass": 0, "fail": 0, "rejected": 0, "infra": 0})
    elapsed: float = 0.0  # seconds spent before this run
    rejections: list[str] = field(default_factory=list)  # first few messages

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "seed": self.seed, "shard": list(self.shard),
            "generator": self.generator, "next_index": self.next_index,
            "done_beyond": sorted(self.done_beyond), "counts": self.counts,
            "elapsed": self.elapsed, "rejections": self.rejections,
            "findings": [dataclasses.asdict(f) for f in self.findings.values()],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str) -> CampaignState:
        try:
            if doc["version"] != STATE_VERSION:
                raise CampaignError(f"{where}: state version {doc['version']}, "
                                    f"this bootfuzz reads {STATE_VERSION}")
            findings = {}
            for f in doc["findings"]:
                finding = Finding(**{**f, "steps": tuple(f.get("steps", ()))})
                findings[finding.key] = finding
            return cls(
                seed=int(doc["seed"]), shard=(int(doc["shard"][0]), int(doc["shard"][1])),
                generator=str(doc["generator"]), next_index=int(doc["next_index"]),
                done_beyond={int(i) for i in doc["done_beyond"]}, findings=findings,
                counts={k: int(v) for k, v in doc["counts"].items()},
                elapsed=float(doc["elapsed"]), rejections=list(doc.get("rejections", [])),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CampaignError(f"{where}: not a campaign state file ({exc!r})") from None

    def mark_done(self, index: int) -> None:
        """Record case *index* and move next_index past every finished case."""
        self.done_beyond.add(index)
        n = self.shard[1]
        while self.next_index in self.done_beyond:
            self.done_beyond.discard(self.next_index)
            self.next_index += n


def save_state(state: CampaignState, path: Path) -> None:
    atomic_write_text(path, json.dumps(state.to_json(), indent=1) + "\n")


def load_state(path: Path) -> CampaignState:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read the state file: {exc.strerror}") from None
    except ValueError as exc:
        raise CampaignError(f"{path}: the state file is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CampaignError(f"{path}: not a campaign state file")
    return CampaignState.from_json(doc, str(path))


def generator_digest(config: GeneratorConfig) -> str:
    """Identifies what the generator produces; --resume refuses a different one."""
    doc = dataclasses.asdict(config)
    doc.pop("seed")
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------
# Workers (separate processes: each boot is one QEMU)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseOutcome:
    """What a worker sends back for one case: small and picklable."""

    index: int
    case: BootCase
    status: str  # pass | fail | rejected | infra
    signature: str | None = None
    evidence: str = ""
    message: str = ""
    run_dir: str = ""
    duration: float = 0.0


@dataclass(frozen=True)
class BootSettings:
    runs: Path
    timeout: float
    silence_timeout: float


def boot_one(index: int, case: BootCase, settings: BootSettings) -> CaseOutcome:
    """Boot and judge one case; every failure mode becomes an outcome, never an exception."""
    from bootfuzz.run.boot import new_run_dir, run_case

    started = time.monotonic()
    run_dir = new_run_dir(case, settings.runs)
    try:
        result = run_case(case, run_dir, timeout=settings.timeout,
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
        return CaseOutcome(index, case, "pass", duration=result.duration)
    return CaseOutcome(index, case, "fail", sig.key, evidence(result, sig),
                       run_dir=str(run_dir), duration=result.duration)


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
    from bootfuzz.run.boot import new_run_dir, run_case

    def boot(candidate: BootCase) -> Any:
        return run_case(candidate, new_run_dir(candidate, settings.runs / "minimize"),
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
# Reports
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignSummary:
    kernels: tuple[str, ...]
    seed: int
    shard: tuple[int, int]
    elapsed: float
    counts: dict[str, int]
    findings: tuple[Finding, ...]
    rejections: tuple[str, ...] = ()
    aborted: str = ""

    @property
    def cases(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.cases / self.elapsed if self.elapsed > 0 else 0.0


def summary_json(s: CampaignSummary) -> dict[str, Any]:
    return {
        "kernels": list(s.kernels), "seed": s.seed, "shard": f"{s.shard[0]}/{s.shard[1]}",
        "elapsed_seconds": round(s.elapsed, 1), "cases": s.cases,
        "cases_per_second": round(s.rate, 3), "counts": s.counts, "aborted": s.aborted or None,
        "findings": [dataclasses.asdict(f) for f in s.findings],
        "rejections": list(s.rejections),
    }


def junit_xml(s: CampaignSummary) -> str:
    """One testcase per failure signature, plus one for the cases that passed."""
    suite = ET.Element("testsuite", {
        "name": "bootfuzz-fuzz", "tests": str(len(s.findings) + 1),
        "failures": str(len(s.findings)), "errors": str(1 if s.aborted else 0),
        "time": f"{s.elapsed:.1f}",
    })
    props = ET.SubElement(suite, "properties")
    for name, value in (("seed", str(s.seed)), ("shard", f"{s.shard[0]}/{s.shard[1]}"),
                        ("kernels", ",".join(s.kernels))):
        ET.SubElement(props, "property", {"name": name, "value": value})
    ok = ET.SubElement(suite, "testcase", {"classname": "bootfuzz.fuzz", "name": "campaign"})
    ET.SubElement(ok, "system-out").text = (
        f"{s.cases} cases: " + ", ".join(f"{k} {v}" for k, v in s.counts.items()))
    if s.aborted:
        ET.SubElement(ok, "error", {"message": s.aborted})
    for f in s.findings:
        tc = ET.SubElement(suite, "testcase", {"classname": "bootfuzz.fuzz", "name": f.key})
        failure = ET.SubElement(tc, "failure", {"message": f"{f.count} case(s); reproducer "
                                                           f"{f.file}"})
        failure.text = f"first case #{f.first_index}; minimized: {f.minimized}"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(s: CampaignSummary) -> str:
    lines = [
        "# bootfuzz campaign",
        "",
        f"Kernels {', '.join(s.kernels)}; seed {s.seed}; shard {s.shard[0]}/{s.shard[1]}; "
        f"{s.cases} cases in {s.elapsed:.0f} s ({s.rate:.2f}/s): "
        + ", ".join(f"{v} {k}" for k, v in s.counts.items()) + ".",
        "",
    ]
    if s.aborted:
        lines += [f"**Aborted:** {_md(s.aborted)}", ""]
    if s.findings:
        lines += ["| signature | cases | first | minimized | reproducer |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_md(f.key)} | {f.count} | #{f.first_index} | "
                  f"{'yes' if f.minimized else 'no'} | `{f.file}` |" for f in s.findings]
    else:
        lines.append("No failures.")
    if s.rejections:
        lines += ["", "Cases the loader refused (a generator bug):", ""]
        lines += [f"- {_md(r)}" for r in s.rejections]
    return "\n".join(lines) + "\n"


def write_summaries(s: CampaignSummary, directory: Path) -> None:
    atomic_write_text(directory / "summary.json", json.dumps(summary_json(s), indent=2) + "\n")
    atomic_write_text(directory / "junit.xml", junit_xml(s))
    atomic_write_text(directory / "summary.md", summary_markdown(s))


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
    max_initrd: int = 8 * MiB
    max_cmdline: int | None = None
    overrides: bool = False
    timeout: float = DEFAULT_BOOT_TIMEOUT
    silence_timeout: float = DEFAULT_SILENCE
    max_boots: int = DEFAULT_MAX_BOOTS  # per minimization; 0: no minimization
    max_cases: int | None = None


class _Progress:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.last = 0.0

    def show(self, state: CampaignState, elapsed: float, running: int, force: bool = False
             ) -> None:
        now = time.monotonic()
        if not force and not self.tty and now - self.last < 30:
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


def _kernel_limits(names: tuple[str, ...]) -> tuple[dict[str, KernelLimits], dict[str, str]]:
    from bootfuzz.kernel.image import load_kernel_image
    from bootfuzz.kernel.pinned import resolve_kernel

    limits, digests = {}, {}
    for name in names:
        path = resolve_kernel(name)
        limits[name] = KernelLimits.of(load_kernel_image(path))
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return limits, digests


def run_campaign(opts: CampaignOptions, stream: Any = sys.stderr) -> CampaignSummary:
    """Run (or resume) a campaign; returns its summary, also written to --out."""
    if opts.jobs < 1:
        raise CampaignError(f"--jobs {opts.jobs}: must be at least 1")
    limits, digests = _kernel_limits(opts.kernels)
    config = GeneratorConfig(
        kernels=tuple((k, limits[k]) for k in opts.kernels), seed=opts.seed,
        min_memory=opts.min_memory, max_memory=opts.max_memory, max_initrd=opts.max_initrd,
        overrides=opts.overrides, max_cmdline=opts.max_cmdline,
    )
    work = opts.out / "campaign"
    state_path = work / "state.json"
    digest = generator_digest(config)
    if opts.resume:
        if not state_path.exists():
            raise CampaignError(f"--resume: no state file {state_path}")
        state = load_state(state_path)
        if (state.seed, state.shard, state.generator) != (opts.seed, opts.shard, digest):
            raise CampaignError(
                f"--resume: {state_path} is for seed {state.seed}, shard "
                f"{state.shard[0]}/{state.shard[1]} and other generator options; give the "
                "same --seed, --shard, --kernel and bounds, or another --out")
    else:
        if state_path.exists():
            raise CampaignError(f"{state_path} exists: continue it with --resume, or give "
                                "another --out")
        state = CampaignState(opts.seed, opts.shard, digest, next_index=opts.shard[0])
    settings = BootSettings(work / "runs", opts.timeout, opts.silence_timeout)
    started = time.monotonic()
    deadline = started + opts.seconds
    progress = _Progress(stream)
    aborted = ""
    consecutive_infra = 0
    submitted = 0
    indices = (k for k in shard_indices(opts.shard, state.next_index)
               if k not in state.done_beyond)
    to_minimize = [f.key for f in state.findings.values() if not f.minimized and opts.max_boots]
    cases_by_key: dict[str, BootCase] = {}
    for f in state.findings.values():
        try:
            from bootfuzz.fuzz.reproducer import load_reproducer

            cases_by_key[f.key] = load_reproducer(Path(f.file)).case
        except ConfigError:
            to_minimize = [k for k in to_minimize if k != f.key]

    def elapsed() -> float:
        return state.elapsed + time.monotonic() - started

    def reproducer(case: BootCase, key: str, ev: str, minimized: bool) -> Reproducer:
        sig = Signature.parse(key)
        how = "minimized" if minimized else "found"
        return Reproducer(
            case=case, kernel_sha256=digests.get(case.kernel),
            expect=Expectation(Verdict.FAIL, sig.failing), evidence=ev,
            description=f"{how} by bootfuzz fuzz (seed {opts.seed}): {key}",
        )

    pending: dict[Future[Any], tuple[str, Any]] = {}
    pool = ProcessPoolExecutor(max_workers=opts.jobs)
    try:
        while True:
            now = time.monotonic()
            while len(pending) < opts.jobs and now < deadline:
                if to_minimize:
                    key = to_minimize.pop(0)
                    case = cases_by_key[key]
                    floor = opts.min_memory or 0
                    from bootfuzz.fuzz.generate import min_memory as _floor

                    floor = max(floor, _floor(limits[case.kernel], case.initrd))
                    fut: Future[Any] = pool.submit(minimize_one, key, case, settings,
                                                   opts.max_boots, floor, deadline)
                    pending[fut] = ("minimize", key)
                    continue
                if opts.max_cases is not None and submitted >= opts.max_cases:
                    break
                index = next(indices)
                fut = pool.submit(boot_one, index, generate_case(config, index), settings)
                pending[fut] = ("boot", index)
                submitted += 1
            if not pending:
                break
            done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                what, _tag = pending.pop(fut)
                outcome = fut.result()
                if what == "boot":
                    assert isinstance(outcome, CaseOutcome)
                    state.counts[outcome.status] += 1
                    consecutive_infra = consecutive_infra + 1 if outcome.status == "infra" else 0
                    if outcome.status == "rejected" and len(state.rejections) < 10:
                        state.rejections.append(f"case #{outcome.index}: {outcome.message}")
                    if outcome.status == "infra":
                        stream.write(f"\ncase #{outcome.index}: infrastructure: "
                                     f"{outcome.message}\n")
                    if outcome.status == "fail" and outcome.signature is not None:
                        key = outcome.signature
                        if key in state.findings:
                            state.findings[key].count += 1
                        else:
                            path = opts.out / f"{Signature.parse(key).slug}.json"
                            write_reproducer(reproducer(outcome.case, key, outcome.evidence,
                                                        False), path)
                            state.findings[key] = Finding(key, str(path), outcome.index)
                            cases_by_key[key] = outcome.case
                            if opts.max_boots:
                                to_minimize.append(key)
                            stream.write(f"\nnew failure: {key} (case #{outcome.index}) -> "
                                         f"{path}\n")
                    state.mark_done(outcome.index)
                else:
                    assert isinstance(outcome, MinimizeOutcome)
                    finding = state.findings[outcome.key]
                    if outcome.evidence:  # at least one boot still showed the signature
                        write_reproducer(reproducer(outcome.case, outcome.key, outcome.evidence,
                                                    outcome.complete), Path(finding.file))
                        cases_by_key[outcome.key] = outcome.case
                    # Unfinished (out of time or boots): --resume goes on from here.
                    finding.minimized = outcome.complete
                    finding.boots += outcome.boots
                    finding.steps += outcome.steps
                save_state(dataclasses.replace(state, elapsed=elapsed()), state_path)
            progress.show(state, elapsed(), len(pending))
            if consecutive_infra >= MAX_CONSECUTIVE_INFRA and not aborted:
                aborted = f"{consecutive_infra} boots in a row failed for infrastructure reasons"
                deadline = time.monotonic()  # drain what is running, start nothing new
    except KeyboardInterrupt:
        aborted = "interrupted"
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        state.elapsed = elapsed()
        save_state(state, state_path)
        progress.show(state, state.elapsed, 0, force=True)
        progress.done()
        summary = CampaignSummary(
            kernels=opts.kernels, seed=opts.seed, shard=opts.shard, elapsed=state.elapsed,
            counts=dict(state.counts), findings=tuple(state.findings.values()),
            rejections=tuple(state.rejections), aborted=aborted,
        )
        write_summaries(summary, work)
    return summary


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fuzz`` to the ``bootfuzz`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "fuzz", help="run a boot campaign: generated cases, judged, failures minimized",
        description="Generate boot cases from the boot protocol's edge values (seeded: "
        "--seed and --shard choose exactly which cases run), boot each in its own QEMU, "
        "judge it, de-duplicate failures by signature, minimize each new one and write it "
        "as a reproducer.  Resumable with --resume; summaries in OUT/campaign/.",
    )
    g = p.add_argument_group("campaign")
    g.add_argument("--kernel", action="append", required=True, metavar="NAME",
                   help="a pinned kernel name or bzImage path; repeat for several")
    g.add_argument("--time", default="30m", metavar="DURATION",
                   help="how long to generate new cases, e.g. 90s, 30m, 2h; default 30m")
    g.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="boots at once (one QEMU process each); default 1")
    g.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                   help=f"reproducers go here, state and summaries in DIR/campaign; "
                   f"default {DEFAULT_OUT}")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="generator seed; default a random one (printed, and kept for --resume)")
    g.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run only cases k with k %% N == I; default 0/1")
    g.add_argument("--resume", action="store_true",
                   help="continue the campaign whose state is in DIR/campaign")
    g.add_argument("--max-cases", type=int, default=None, metavar="N",
                   help="stop after N new cases even if time is left")
    c = p.add_argument_group("cases")
    c.add_argument("--mem-min", type=_size, default=0, metavar="SIZE",
                   help="smallest guest RAM (QEMU -m); default the least the loader accepts")
    c.add_argument("--mem-max", type=_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                   help="largest guest RAM; default 8G")
    c.add_argument("--max-initrd", type=_size, default=8 * MiB, metavar="SIZE",
                   help="largest initrd payload; default 8M")
    c.add_argument("--max-cmdline", type=int, default=None, metavar="BYTES",
                   help="longest command line; default each kernel's cmdline_size")
    c.add_argument("--overrides", action="store_true",
                   help="also take loader decisions over (deliberately invalid layouts)")
    r = p.add_argument_group("boots")
    r.add_argument("--timeout", type=float, default=DEFAULT_BOOT_TIMEOUT, metavar="SECONDS",
                   help=f"give up on one guest after this long; default {DEFAULT_BOOT_TIMEOUT:.0f}")
    r.add_argument("--silence-timeout", type=float, default=DEFAULT_SILENCE, metavar="SECONDS",
                   help="give up after this long without console output (a hang)")
    r.add_argument("--minimize-boots", type=int, default=DEFAULT_MAX_BOOTS, metavar="N",
                   help=f"boots per minimization, 0 to skip it; default {DEFAULT_MAX_BOOTS}")
    p.set_defaults(func=run)
    return p


def options_from_args(args: argparse.Namespace) -> CampaignOptions:
    out = Path(args.out)
    seed = args.seed
    if seed is None:
        state_path = out / "campaign" / "state.json"
        seed = (load_state(state_path).seed if args.resume and state_path.exists()
                else int.from_bytes(os.urandom(4), "little"))
    return CampaignOptions(
        kernels=tuple(args.kernel), seconds=parse_duration(args.time), jobs=args.jobs,
        out=out, seed=seed, shard=parse_shard(args.shard), resume=args.resume,
        min_memory=args.mem_min, max_memory=args.mem_max, max_initrd=args.max_initrd,
        max_cmdline=args.max_cmdline, overrides=args.overrides, timeout=args.timeout,
        silence_timeout=args.silence_timeout, max_boots=args.minimize_boots,
        max_cases=args.max_cases,
    )


def run(args: argparse.Namespace) -> int:
    """``bootfuzz fuzz``: 0 no failure, 1 failures found, 3 aborted for infrastructure.
    Bad options raise CampaignError (exit 2 through the CLI)."""
    opts = options_from_args(args)
    print(f"bootfuzz fuzz: seed {opts.seed}, shard {opts.shard[0]}/{opts.shard[1]}, "
          f"{opts.jobs} job(s), {opts.seconds:.0f} s, out {opts.out}", file=sys.stderr)
    summary = run_campaign(opts)
    print(summary_markdown(summary))
    if summary.findings:
        return 1
    return 3 if summary.aborted else 0


__all__ = [
    "CampaignOptions", "CampaignState", "CampaignSummary", "CaseOutcome", "Finding",
    "add_parser", "boot_one", "junit_xml", "load_state", "parse_duration", "parse_shard",
    "run", "run_campaign", "save_state", "shard_indices", "summary_json",
    "summary_markdown", "write_summaries",
]
