"""A guided campaign (issue 10 item 3) with a fake boot: cases that showed a new verdict
vector, console line or block are kept as reproducer files in OUT/campaign/corpus;
mutants of them run between fresh cases; the corpus survives a resume, a SIGKILL,
seeds another campaign (--corpus) and merges across shards."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bootfuzz.case import BootCase, EntryProtocol, InitrdPlacement
from bootfuzz.errors import ConfigError
from bootfuzz.fuzz import campaign as campaign_module
from bootfuzz.fuzz.campaign import CampaignOptions, KernelFacts, Runtime, run_campaign
from bootfuzz.fuzz.caselog import read_cases
from bootfuzz.fuzz.corpus import (
    CORPUS_DIR,
    Corpus,
    Novelty,
    Signals,
    console_features,
    load_entry,
    read_entries,
)
from bootfuzz.fuzz.coverage_log import COVERAGE_LOG_NAME, read_coverage_log
from bootfuzz.fuzz.draws import misfits
from bootfuzz.fuzz.floors import no_floors
from bootfuzz.fuzz.generate import DEBIAN_CLOUD_LIMITS, GeneratorConfig, generate_case
from bootfuzz.fuzz.merge import merge_campaigns
from bootfuzz.fuzz.reproducer import load_reproducer
from bootfuzz.fuzz.state import CampaignError, CampaignState, load_state
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.loader.layout import GiB
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeResult, FakeTranscript
from tests.processes import poll
from tests.unit.test_campaign import InlineExecutor

KERNEL = "debian-6.1-cloud"
SHA = "ab" * 32
VFS = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"


def fake_kernels(names: tuple[str, ...]) -> dict[str, KernelFacts]:
    return {n: KernelFacts(DEBIAN_CLOUD_LIMITS, SHA) for n in names}


@dataclasses.dataclass(frozen=True)
class FakeCoverage:
    blocks: frozenset[int]


@dataclasses.dataclass(frozen=True)
class CoveredResult(FakeResult):
    coverage: FakeCoverage | None = None


def blocks_of(case: BootCase) -> frozenset[int]:
    """The "kernel blocks" a case reaches: one per value of each dimension it has."""
    ov = case.overrides
    spec = case.initrd
    return frozenset({
        10 + list(EntryProtocol).index(case.entry),
        20 + list(InitrdPlacement).index(case.initrd_placement),
        30 + (case.memory >= 4 * GiB), 40 + (ov.kernel_load is not None),
        50 + bool(ov.setup_data), 60 + (ov.e820 is not None),
        70 + (ov.cmdline_addr is not None),
        80 + (0 if spec is None else 1 + spec.split + 2 * spec.raw),
    })


class GuidedBoot:
    """Passes below 1 GiB of RAM, panics above (one signature); prints one console line
    per entry path; reaches blocks_of(case).  Records every case it booted."""

    def __init__(self) -> None:
        self.cases: list[BootCase] = []
        self.coverage_asked: list[bool] = []

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: float, coverage: bool = False) -> CoveredResult:
        self.cases.append(case)
        self.coverage_asked.append(coverage)
        text = f"[    0.1] entered by the {case.entry.name} path\n"
        ok = case.memory <= 1 * GiB
        if not ok:
            text += f"[    1.0] {VFS}\n"
        oracles = (OracleResult("boot", Verdict.PASS if ok else Verdict.FAIL, "e", "o"),)
        return CoveredResult(Verdict.PASS if ok else Verdict.FAIL, oracles,
                             parse_transcript(text),
                             GuestExit.POWER_OFF if ok else GuestExit.RESET,
                             FakeTranscript(text),
                             coverage=FakeCoverage(blocks_of(case)) if coverage else None)


def options(out: Path, **changes: Any) -> CampaignOptions:
    opts = CampaignOptions(kernels=(KERNEL,), seconds=3600, out=out, seed=3, max_cases=60,
                           max_boots=0, guided=True, coverage=True)
    return dataclasses.replace(opts, **changes)


def run(opts: CampaignOptions, boot: GuidedBoot) -> Any:
    return run_campaign(opts, io.StringIO(), Runtime(boot=boot, kernels=fake_kernels,
                                                     executor=InlineExecutor,
                                                     floors=no_floors))


def config(opts: CampaignOptions) -> GeneratorConfig:
    return GeneratorConfig(kernels=((KERNEL, DEBIAN_CLOUD_LIMITS),), seed=opts.seed,
                           mutants=opts.guided and opts.mutate)


def _logged(out: Path) -> list[BootCase]:
    return [r.reproducer.case for r in sorted(read_cases(out / "campaign" / "cases.jsonl"),
                                              key=lambda r: r.index)]


def _union(cases: list[BootCase]) -> frozenset[int]:
    return frozenset().union(*(blocks_of(c) for c in cases))


def test_guided_campaign_keeps_what_is_new_and_mutates_it(tmp_path: Path) -> None:
    boot = GuidedBoot()
    summary = run(options(tmp_path), boot)
    assert summary.cases == 60 and sum(boot.coverage_asked) == 60  # first boots only
    corpus = Corpus.open(tmp_path / "campaign" / CORPUS_DIR)
    # Every block, verdict vector and console line any boot showed is in the corpus,
    # and every entry added something.
    assert corpus.blocks[KERNEL] == set(_union(boot.cases))
    assert {v for _, v in corpus.verdicts} == {"boot=pass", "boot=fail"}
    assert all(not e.new.empty for e in corpus.entries)
    assert len(corpus.entries) < 60
    # Entries are reproducers: replayable, expecting what the case showed.
    first = load_reproducer(corpus.entries[0].path)
    assert first.expect is not None and first.kernel_sha256 == SHA
    # Mutants ran between fresh cases; each changed one dimension of its parent and is
    # a sound case of the campaign's space.
    records = read_cases(tmp_path / "campaign" / "cases.jsonl")
    mutants = [r for r in records if "a mutant of" in r.reproducer.description]
    fresh = [r for r in records if r not in mutants]
    assert len(mutants) > 10 and len(fresh) > 10
    space = config(options(tmp_path))
    for r in mutants:
        assert misfits(space, r.reproducer.case) == []
    for r in fresh:
        assert r.reproducer.case == generate_case(space, r.index)
    assert all(r.coverage == len(blocks_of(r.reproducer.case)) for r in records)
    names = {e.name for e in corpus.entries}
    kept_mutants = [e for e in corpus.entries if e.parent is not None]
    assert all(e.parent in names and e.mutated for e in kept_mutants)


def test_blind_campaign_keeps_no_corpus_and_boots_without_coverage(tmp_path: Path) -> None:
    boot = GuidedBoot()
    run(options(tmp_path, guided=False, coverage=False, max_cases=10), boot)
    assert not (tmp_path / "campaign" / CORPUS_DIR).exists()
    assert not any(boot.coverage_asked)
    space = GeneratorConfig(kernels=((KERNEL, DEBIAN_CLOUD_LIMITS),), seed=3)
    assert _logged(tmp_path) == [generate_case(space, i) for i in range(10)]


def test_recorded_corpus_without_mutation_keeps_cases_fresh(tmp_path: Path) -> None:
    """guided without mutate (the bench's blind side): a corpus is recorded, every case
    is the seed's fresh one."""
    boot = GuidedBoot()
    run(options(tmp_path, mutate=False, max_cases=20), boot)
    space = GeneratorConfig(kernels=((KERNEL, DEBIAN_CLOUD_LIMITS),), seed=3)
    assert _logged(tmp_path) == [generate_case(space, i) for i in range(20)]
    assert read_entries(tmp_path / "campaign" / CORPUS_DIR)


def test_verdicts_and_console_lines_guide_without_coverage(tmp_path: Path) -> None:
    boot = GuidedBoot()
    run(options(tmp_path, coverage=False, max_cases=30), boot)
    corpus = Corpus.open(tmp_path / "campaign" / CORPUS_DIR)
    assert corpus.block_count() == 0 and not any(boot.coverage_asked)
    lines = {ln for _, ln in corpus.lines}
    assert {f"entered by the {c.entry.name} path" for c in boot.cases} <= lines


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_resumed_guided_campaign_loses_no_entry(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between a new entry and the log line of its case: the entry stays, the
    case number runs again on --resume, and no feature is kept twice."""
    real_append = campaign_module.CaseLog.append
    calls = 0

    def append(self: Any, record: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 25:
            raise Killed
        return real_append(self, record)

    monkeypatch.setattr(campaign_module.CaseLog, "append", append)
    with pytest.raises(Killed):
        run(options(tmp_path), GuidedBoot())
    monkeypatch.setattr(campaign_module.CaseLog, "append", real_append)
    before = {p.name: p.read_bytes() for p in (tmp_path / "campaign" / CORPUS_DIR).iterdir()}
    assert before
    boot = GuidedBoot()
    run(options(tmp_path, resume=True), boot)
    after = {p.name: p.read_bytes() for p in (tmp_path / "campaign" / CORPUS_DIR).iterdir()}
    assert before.items() <= after.items()
    corpus = Corpus.open(tmp_path / "campaign" / CORPUS_DIR)
    kept = [b for e in corpus.entries for b in e.new.blocks]
    assert len(kept) == len(set(kept))  # each block in one entry only
    assert [r.index for r in read_cases(tmp_path / "campaign" / "cases.jsonl")] == list(
        range(60))


def test_corpus_seeds_a_new_campaign(tmp_path: Path) -> None:
    run(options(tmp_path / "night1"), GuidedBoot())
    earlier = tmp_path / "night1" / "campaign" / CORPUS_DIR
    boot = GuidedBoot()
    run(options(tmp_path / "night2", seed=4, corpus=(earlier,), max_cases=20), boot)
    night2 = Corpus.open(tmp_path / "night2" / "campaign" / CORPUS_DIR)
    old = {e.name for e in read_entries(earlier)}
    assert old <= {e.name for e in night2.entries}
    # Nothing the first night saw is new to the second: its entries add other features.
    new = [e for e in night2.entries if e.name not in old]
    seen = set().union(*(set(e.new.blocks) for e in read_entries(earlier)))
    assert all(not (set(e.new.blocks) & seen) for e in new)


def test_corpus_without_guidance_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="--corpus seeds a guided campaign"):
        run(options(tmp_path, guided=False, corpus=(tmp_path,)), GuidedBoot())


def test_merge_takes_every_shards_corpus(tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        out = tmp_path / f"shard{i}"
        run(options(out, shard=(i, 2), max_cases=30), GuidedBoot())
        outs.append(out)
    merge_campaigns(outs, tmp_path / "merged")
    merged = {e.name for e in read_entries(tmp_path / "merged" / "campaign" / CORPUS_DIR)}
    shards = {e.name for o in outs for e in read_entries(o / "campaign" / CORPUS_DIR)}
    assert merged == shards and merged


def test_corpus_entry_round_trip_and_a_broken_one(tmp_path: Path) -> None:
    corpus = Corpus.open(tmp_path / "c")
    case = generate_case(GeneratorConfig(kernels=((KERNEL, DEBIAN_CLOUD_LIMITS),)), 0)
    signals = Signals("boot=pass", frozenset({"a line"}), frozenset({1, 2}))
    new = corpus.novelty(KERNEL, signals)
    assert new == Novelty(("boot=pass",), ("a line",), (1, 2))
    entry = corpus.add(case, 7, 1.5, new, blocks=2, parent=None)
    assert corpus.novelty(KERNEL, signals).empty
    assert corpus.novelty("other", signals) == new  # features are per kernel
    again = load_entry(entry.path)
    assert (again.case, again.index, again.new, again.blocks) == (case, 7, new, 2)
    (tmp_path / "c" / "broken.json").write_text('{"bootfuzz_reproducer": 1}')
    with pytest.raises(ConfigError, match=r"broken\.json"):
        Corpus.open(tmp_path / "c")


def test_console_features_drop_the_cases_own_tokens() -> None:
    case = dataclasses.replace(
        generate_case(GeneratorConfig(kernels=((KERNEL, DEBIAN_CLOUD_LIMITS),)), 0),
        cmdline="console=ttyS0 bootfuzz.a17=value")
    text = ("[    0.000000] Command line: console=ttyS0 bootfuzz.a17=value\r\n"
            "[    0.004000] Memory: 123456K/262144K available\n"
            "BOOTFUZZ-AGENT {\"v\":1}\n")
    assert console_features(case, text) == frozenset({"Memory: NK/NK available"})


# -- SIGKILL -----------------------------------------------------------------------------

CAMPAIGN = """
import dataclasses, pathlib, sys, time
from bootfuzz.case import EntryProtocol
from bootfuzz.fuzz.campaign import CampaignOptions, KernelFacts, Runtime, run_campaign
from bootfuzz.fuzz.floors import no_floors
from bootfuzz.fuzz.generate import DEBIAN_CLOUD_LIMITS
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.symbols import SymbolTable
from bootfuzz.transcript import GuestExit
from tests.unit.test_fuzz_corpus import CoveredResult, FakeCoverage, blocks_of
from tests.fakes import FakeTranscript

VFS = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"

def kernels(names):
    return {n: KernelFacts(DEBIAN_CLOUD_LIMITS, "ab" * 32) for n in names}

def symbols(name):  # a function every 10 "blocks": fn0 at 0, fn1 at 10, ...
    return SymbolTable(tuple(range(0, 10_000, 10)), tuple(f"fn{i}" for i in range(1000)),
                       10_000, 0, 0)

class Boot:
    def __call__(self, case, run_dir, *, timeout, silence_timeout, until=None,
                 coverage=False):
        time.sleep(0.05)
        text = f"[    0.1] entered by the {case.entry.name} path\\n"
        ok = case.entry is not EntryProtocol.BOOT32
        if not ok:
            text += f"[    1.0] {VFS} {case.initrd_placement.value}\\n"
        oracles = (OracleResult("boot", Verdict.PASS if ok else Verdict.FAIL, "e", "o"),)
        return CoveredResult(Verdict.PASS if ok else Verdict.FAIL, oracles,
                             parse_transcript(text),
                             GuestExit.POWER_OFF if ok else GuestExit.RESET,
                             FakeTranscript(text), coverage=FakeCoverage(blocks_of(case)))

summary = run_campaign(
    CampaignOptions(kernels=("debian-6.1-cloud",), seconds=3600, jobs=2,
                    out=pathlib.Path(sys.argv[1]), seed=1, max_cases=int(sys.argv[2]),
                    max_boots=0, guided=True, coverage=True, resume=sys.argv[3] == "1"),
    runtime=Runtime(boot=Boot(), kernels=kernels, floors=no_floors, symbols=symbols))
sys.exit(128 + summary.stop_signal if summary.stop_signal else 0)
"""


def _start(out: Path, cases: int, resume: bool) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen([sys.executable, "-c", CAMPAIGN, str(out), str(cases),
                             "1" if resume else "0"], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _findings_seen(out: Path) -> set[str]:
    """Every failure signature on record: the log's lines and the state's findings."""
    keys = {r.signature for r in read_cases(out / "campaign" / "cases.jsonl")
            if r.status == "fail" and r.signature}
    state_path = out / "campaign" / "state.json"
    if state_path.exists():
        keys |= set(load_state(state_path).findings)
    return keys


def test_guided_campaign_killed_with_sigkill_and_resumed_loses_nothing(tmp_path: Path) -> None:
    """A guided campaign with two worker processes, SIGKILLed once its corpus holds
    entries and it has found failures: resumed, every corpus entry written before the
    kill is there unchanged, every finding logged before it is a finding after, and
    the corpus's features are the union of all boots' (nothing lost, nothing twice)."""
    proc = _start(tmp_path, 400, resume=False)
    corpus_dir = tmp_path / "campaign" / CORPUS_DIR
    try:
        assert poll(lambda: proc.poll() is None and corpus_dir.is_dir() and len(
            list(corpus_dir.glob("*.json"))) >= 8 and _findings_seen(tmp_path), 120)
        time.sleep(0.3)  # mid-case: workers busy, the loop between writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = {p.name: p.read_bytes() for p in corpus_dir.glob("*.json")}
    findings = _findings_seen(tmp_path)
    state = load_state(tmp_path / "campaign" / "state.json")
    assert isinstance(state, CampaignState) and sum(state.counts.values()) < 400

    resumed = _start(tmp_path, 400, resume=True)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output
    after = {p.name: p.read_bytes() for p in corpus_dir.glob("*.json")}
    assert before.items() <= after.items()  # no entry lost or changed
    final = load_state(tmp_path / "campaign" / "state.json")
    assert findings <= set(final.findings)
    for f in final.findings.values():
        assert Path(f.file).is_file()
    records = read_cases(tmp_path / "campaign" / "cases.jsonl")
    assert sorted(r.index for r in records) == list(range(400))
    corpus = Corpus.open(corpus_dir)
    kept = [b for e in corpus.entries for b in e.new.blocks]
    assert len(kept) == len(set(kept))
    assert set(kept) == set(_union([r.reproducer.case for r in records]))
    # The coverage log: what each case reached first per kernel and entry path, named;
    # across the kill no block is logged twice for a path, and none is missing.
    logged = read_coverage_log(tmp_path / "campaign" / COVERAGE_LOG_NAME)
    by_path: dict[str, list[int]] = {}
    for line in logged:
        by_path.setdefault(line.entry, []).extend(line.new_blocks)
        assert all(f.startswith("fn") for f in line.new_functions)
    assert logged[0].new_functions
    for blocks in by_path.values():
        assert len(blocks) == len(set(blocks))
    assert set().union(*map(set, by_path.values())) == set(_union(
        [r.reproducer.case for r in records]))
    json.loads((tmp_path / "campaign" / "summary.json").read_text())
