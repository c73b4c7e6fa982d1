"""The campaign without QEMU: seeded generation, shards, signatures, the minimizer with
a fake boot, the state file, the report writers, and run_campaign itself with a fake
boot in this process."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import pytest

from bootfuzz.case import HARNESS_CMDLINE, BootCase, CpuTemplate, InitrdSpec, Overrides
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.fuzz import parse_duration, parse_shard
from bootfuzz.cli.main import main
from bootfuzz.compression import Compression
from bootfuzz.errors import BackendError, HarnessBug, LayoutError
from bootfuzz.fuzz import campaign as campaign_module
from bootfuzz.fuzz.campaign import (
    MAX_CONSECUTIVE_INFRA,
    CampaignOptions,
    KernelFacts,
    Runtime,
    check_backend_runs,
    run_campaign,
)
from bootfuzz.fuzz.caselog import CaseRecord, load_replay_source, read_cases
from bootfuzz.fuzz.draws import misfits
from bootfuzz.fuzz.floors import FloorRequest, FloorsStopped, fixed_floors, no_floors
from bootfuzz.fuzz.generate import (
    DEBIAN_CLOUD_LIMITS,
    GeneratorConfig,
    generate_case,
    min_memory,
    split_cmdline,
)
from bootfuzz.fuzz.merge import merge_campaigns
from bootfuzz.fuzz.minimize import minimize
from bootfuzz.fuzz.reproducer import Expectation, load_reproducer
from bootfuzz.fuzz.scheduler import BootCaseNumber, Minimize, Scheduler, shard_indices
from bootfuzz.fuzz.state import (
    CampaignError,
    CampaignState,
    Finding,
    generator_digest,
    load_state,
    save_state,
)
from bootfuzz.fuzz.summary import CampaignSummary, junit_xml, summary_json, summary_markdown
from bootfuzz.fuzz.triage import Signature, evidence, normalize, signature
from bootfuzz.judge.memory_floor import FloorPoint, MemoryFloor
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.loader.layout import GiB, KiB, MiB
from bootfuzz.loader.placement import check_blobs
from bootfuzz.loader.plan import Blob
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.doctor import BackendStatus
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeResult, FakeTranscript

T = TypeVar("T")
CONFIG = GeneratorConfig(kernels=(("debian-6.1-cloud", DEBIAN_CLOUD_LIMITS),), seed=7)


# -- generation --------------------------------------------------------------------------


def test_generator_same_seed_same_cases() -> None:
    assert [generate_case(CONFIG, i) for i in range(50)] == [
        generate_case(dataclasses.replace(CONFIG), i) for i in range(50)]


def test_generator_other_seed_other_cases() -> None:
    other = dataclasses.replace(CONFIG, seed=8)
    assert [generate_case(CONFIG, i) for i in range(20)] != [
        generate_case(other, i) for i in range(20)]


def test_generator_cases_are_loader_valid() -> None:
    for i in range(300):
        case = generate_case(CONFIG, i)
        assert case.memory >= min_memory(DEBIAN_CLOUD_LIMITS, case.initrd)
        assert case.memory % 4096 == 0 and misfits(CONFIG, case) == []
        ov = case.overrides  # a correct loader's choices only (draws.py), never a wild one
        assert not (ov.fields or ov.initrd_addr is not None or ov.cmdline_raw is not None
                    or ov.start_info)
        assert len(case.cmdline.encode()) <= 2047 and case.cmdline.startswith(HARNESS_CMDLINE)


def test_generator_max_cmdline_bounds_length() -> None:
    bound = len(HARNESS_CMDLINE) + 40
    short = dataclasses.replace(CONFIG, max_cmdline=bound)
    lengths = [len(generate_case(short, i).cmdline.encode()) for i in range(300)]
    assert max(lengths) <= bound and max(lengths) > len(HARNESS_CMDLINE)


def test_shard_partition_disjoint_and_complete() -> None:
    n = 4
    shards = [set(k for k, _ in zip(shard_indices((i, n)), range(25), strict=False))
              for i in range(n)]
    assert set.union(*shards) == set(range(100))
    assert sum(len(s) for s in shards) == 100  # disjoint


def test_shard_indices_resume_from_start() -> None:
    assert list(zip(shard_indices((1, 3), start=7), range(3), strict=False)) == [
        (7, 0), (10, 1), (13, 2)]


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800),
                                                ("2h", 7200), ("1h30m", 5400)])
def test_parse_duration_forms(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "3x", "m"])
def test_parse_duration_bad_is_refused(text: str) -> None:
    with pytest.raises(CampaignError, match="--time"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["4/4", "1", "a/b", "1/0"])
def test_parse_shard_bad_is_refused(text: str) -> None:
    with pytest.raises(CampaignError, match="--shard"):
        parse_shard(text)


# -- signatures --------------------------------------------------------------------------


def fail_result(names: tuple[str, ...], log: str, exit_: GuestExit = GuestExit.RESET
                ) -> FakeResult:
    oracles = (*(OracleResult(n, Verdict.FAIL, "e", "o") for n in names),
               OracleResult("e820", Verdict.PASS, "e", "o"))
    return FakeResult(Verdict.FAIL, oracles, parse_transcript(log), exit_, FakeTranscript(log))


_VFS = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block"
PANIC_A = f"[    1.0] {_VFS}(0,0)\n"
PANIC_B = f"[    2.5] {_VFS}(8,1)\n"


def test_signature_same_panic_other_numbers_dedups() -> None:
    a = signature(fail_result(("boot",), PANIC_A))
    b = signature(fail_result(("boot",), PANIC_B))
    assert a == b and a is not None
    assert a.key == f"boot|{_VFS}(N,N)"


def test_signature_other_failing_oracles_differ() -> None:
    assert signature(fail_result(("boot",), PANIC_A)) != signature(
        fail_result(("boot", "initrd-unpacked"), PANIC_A))


def test_signature_hang_and_mismatch_kinds() -> None:
    hang = signature(fail_result(("boot",), "", GuestExit.KILLED))
    mismatch = signature(fail_result(("cmdline",), "", GuestExit.POWER_OFF))
    assert hang is not None and hang.title == "exit: killed"
    assert mismatch is not None and mismatch.title == "mismatch"


def test_signature_pass_is_none() -> None:
    ok = FakeResult(Verdict.PASS, (), parse_transcript(""), GuestExit.POWER_OFF)
    assert signature(ok) is None


def test_signature_key_round_trips_and_slug_is_file_safe() -> None:
    sig = Signature(("boot", "e820"), "panic: x|y/z")
    assert Signature.parse(sig.key) == sig
    assert all(c.isalnum() or c == "-" for c in sig.slug)


def test_normalize_blanks_addresses_and_numbers() -> None:
    assert normalize("at 0xffff8880 pid 123 ffffffffa0001234") == "at 0x? pid N 0x?"


def test_evidence_picks_panic_and_oracle_lines() -> None:
    log = "[0.1] Command line: console=ttyS0\n[0.2] noise\n" + PANIC_A
    result = fail_result(("boot", "cmdline"), log)
    sig = signature(result)
    assert sig is not None
    shown = evidence(result, sig)
    assert "Command line: console=ttyS0" in shown and "Kernel panic" in shown
    assert "noise" not in shown


# -- minimizer ---------------------------------------------------------------------------


BAD_TOKEN = "bootfuzz.bad=1"


class FakeBoot:
    """Fails with one signature when memory > 1 GiB, BAD_TOKEN is on the command line
    and the type_of_loader override is present; the loader refuses memory < 64 MiB."""

    def __init__(self) -> None:
        self.calls: list[BootCase] = []

    def __call__(self, case: BootCase) -> FakeResult:
        self.calls.append(case)
        if case.memory < 64 * MiB:
            raise LayoutError("too small")
        fields = dict(case.overrides.fields)
        if case.memory > 1 * GiB and BAD_TOKEN in split_cmdline(case.cmdline) and (
            "type_of_loader" in fields
        ):
            return fail_result(("boot",), PANIC_A)
        if case.memory > 1 * GiB:
            return fail_result(("boot", "e820"), PANIC_B + "other")
        return FakeResult(Verdict.PASS, (), parse_transcript(""), GuestExit.POWER_OFF)


FAILING = BootCase(
    kernel="k", memory=6 * GiB,
    cmdline=f'{HARNESS_CMDLINE} foo.a=1 {BAD_TOKEN} foo.q="x y" foo.b=2 -- z',
    initrd=InitrdSpec(4 * MiB, Compression.XZ, 99),
    overrides=Overrides(fields=(("vid_mode", 1), ("type_of_loader", 0)), initrd_addr=0x100000,
                        kernel_load=0x2000000),
)
TARGET = Signature(("boot",), f"{_VFS}(N,N)")


def test_minimize_keeps_only_what_the_failure_needs() -> None:
    boot = FakeBoot()
    assert signature(boot(FAILING)) == TARGET
    done = minimize(FAILING, TARGET, boot, max_boots=100, memory_floor=32 * MiB)
    c = done.case
    assert c.overrides == Overrides(fields=(("type_of_loader", 0),))
    assert c.cmdline == f"{HARNESS_CMDLINE} {BAD_TOKEN}"
    assert c.initrd == InitrdSpec(0, Compression.GZIP, 0)
    assert 1 * GiB < c.memory <= 1 * GiB + 8 * KiB  # bisected to the granule
    assert signature(boot(c)) == TARGET and done.complete


def test_minimize_respects_boot_budget() -> None:
    boot = FakeBoot()
    done = minimize(FAILING, TARGET, boot, max_boots=5)
    assert done.boots <= 5 and not done.complete
    assert len(boot.calls) - done.rejected <= 5


def test_minimize_past_deadline_boots_nothing() -> None:
    done = minimize(FAILING, TARGET, FakeBoot(), deadline=0.0)
    assert done.boots == 0 and done.case == FAILING and not done.complete


def test_minimize_other_signature_is_not_accepted() -> None:
    """Dropping type_of_loader still fails, but differently: that step is refused."""
    done = minimize(FAILING, TARGET, FakeBoot(), max_boots=100)
    assert ("type_of_loader", 0) in done.case.overrides.fields


def test_minimize_refused_candidates_cost_no_boot() -> None:
    boot = FakeBoot()
    done = minimize(FAILING, TARGET, boot, max_boots=100, memory_floor=4 * MiB)
    assert done.rejected >= 1  # the floor itself is refused by the loader
    assert done.boots == len(boot.calls) - done.rejected


# -- state -------------------------------------------------------------------------------


def test_state_round_trips_and_advances(tmp_path: Path) -> None:
    state = CampaignState(seed=3, shard=(1, 4), generator="abc", next_index=1)
    for k in (5, 9, 1):  # out of order, as parallel workers finish
        state.mark_done(k)
    assert state.next_index == 13 and state.done_beyond == set()
    state.mark_done(21)
    state.findings["boot|x"] = Finding("boot|x", "f.json", 5, steps=("a",))
    state.counts["fail"] = 2
    path = tmp_path / "state.json"
    save_state(state, path)
    again = load_state(path)
    assert again == state
    assert list(zip(shard_indices(again.shard, again.next_index), range(2), strict=False)) == [
        (13, 0), (17, 1)]


def test_state_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 2}')
    with pytest.raises(CampaignError, match="not a campaign state file"):
        load_state(path)


def test_scheduler_minimizes_first_then_skips_done_cases() -> None:
    """Work comes from next_index on, without the cases finished beyond it; a queued
    minimization goes before any new case; max_cases bounds the case numbers."""
    state = CampaignState(seed=0, shard=(0, 1), generator="g", next_index=0)
    for k in (0, 1, 3):
        state.mark_done(k)
    sched = Scheduler(state, max_cases=6, minimize=["boot|a"])
    assert sched.next() == Minimize("boot|a")
    assert sched.next() == BootCaseNumber(2)
    sched.add_minimization("boot|b")
    assert [sched.next() for _ in range(5)] == [Minimize("boot|b"), BootCaseNumber(4),
                                                BootCaseNumber(5), None, None]
    sched.add_minimization("boot|c")  # past the bound, minimizations still come
    assert [sched.next(), sched.next()] == [Minimize("boot|c"), None]


def test_scheduler_max_cases_is_the_shards_share_of_case_numbers() -> None:
    """Shard i/n with max_cases N runs exactly its k < N: the shards together run 0..N-1."""
    handed = []
    for i in range(3):
        sched = Scheduler(CampaignState(seed=0, shard=(i, 3), generator="g", next_index=i),
                          max_cases=10)
        while (work := sched.next()) is not None:
            assert isinstance(work, BootCaseNumber)
            handed.append(work.index)
    assert sorted(handed) == list(range(10))


# -- reports -----------------------------------------------------------------------------

SUMMARY = CampaignSummary(
    kernels=("debian-6.1-cloud",), seed=1, shard=(0, 1), elapsed=120.0,
    counts={"pass": 5, "fail": 2, "rejected": 0, "infra": 0},
    findings=(Finding("boot|panic: <x> & \"y\"", "corpus/crashes/a.json", 3, count=2,
                      minimized=True),),
)


def test_report_junit_parses_with_one_failure_per_signature() -> None:
    root = ET.fromstring(junit_xml(SUMMARY).split("?>", 1)[1])
    (suite,) = root.findall("testsuite")
    for element in (root, suite):  # the totals on both levels, as CI systems read either
        assert (element.get("failures"), element.get("tests"), element.get("errors")) == (
            "1", "2", "0")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {"seed": "1", "shard": "0/1", "kernels": "debian-6.1-cloud",
                     "flaky": "0", "below_floor": "0"}
    failing = [tc for tc in root.iter("testcase") if tc.find("failure") is not None]
    assert [tc.get("name") for tc in failing] == ['boot|panic: <x> & "y"']


def test_report_json_and_markdown_carry_counts() -> None:
    doc = summary_json(SUMMARY)
    assert doc["cases"] == 7 and doc["cases_per_second"] == round(7 / 120, 3)
    assert doc["findings"][0]["file"] == "corpus/crashes/a.json"
    md = summary_markdown(SUMMARY)
    assert "7 cases in 120 s" in md and "boot\\|panic" in md


def test_report_markdown_no_failures() -> None:
    md = summary_markdown(dataclasses.replace(SUMMARY, findings=()))
    assert "No failures." in md


# -- the campaign loop, with a fake boot ---------------------------------------------------

FAKE_SHA256 = "ab" * 32


class InlineExecutor(Executor):
    """Runs each call at once, in this process: the campaign's loop without workers, so a
    fake boot's record is visible and an exception from it behaves as in the parent."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # a worker's exception reaches the loop through result()
            future.set_exception(exc)
        return future


def fake_kernels(names: tuple[str, ...]) -> dict[str, KernelFacts]:
    return {n: KernelFacts(DEBIAN_CLOUD_LIMITS, FAKE_SHA256) for n in names}


class CampaignBoot:
    """Cases with more than 1 GiB of RAM panic (all one signature), the others pass.

    ``infra`` says, by campaign boot number, which boots hit an infrastructure error;
    ``interrupt_at`` raises KeyboardInterrupt at that campaign boot (a Ctrl-C mid-run);
    the cases of CONFIG numbered in ``passes`` pass whatever their memory (a failure
    that does not repeat).
    Campaign boots, the campaign's second boots of a failure (the same case right after
    it failed: ``again``) and minimization boots (run dirs under runs/minimize) are
    recorded apart; a boot is recorded once it finished.
    """

    def __init__(self, infra: Callable[[int], bool] = lambda n: False,
                 interrupt_at: int | None = None, passes: frozenset[int] | set[int] = frozenset(),
                 flaky: frozenset[int] | set[int] = frozenset()) -> None:
        self.infra = infra
        self.interrupt_at = interrupt_at
        self.passes = {generate_case(CONFIG, i) for i in passes}
        self.flaky = {generate_case(CONFIG, i) for i in flaky}  # pass when booted again
        self.cases: list[BootCase] = []
        self.again: list[BootCase] = []
        self.minimizing: list[BootCase] = []
        self.failed: BootCase | None = None  # the last campaign boot, if it failed

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: float) -> FakeResult:
        result = self.result(case, run_dir)
        if "minimize" not in run_dir.parts:
            self.failed = case if result.verdict is Verdict.FAIL else None
        return result

    def result(self, case: BootCase, run_dir: Path) -> FakeResult:
        if "minimize" in run_dir.parts:
            self.minimizing.append(case)
        elif case == self.failed:
            self.again.append(case)
        else:
            n = len(self.cases)
            if n == self.interrupt_at:
                raise KeyboardInterrupt
            if self.infra(n):
                self.cases.append(case)
                raise BackendError("qemu-system-x86_64 vanished")
            self.cases.append(case)
        again = self.again and self.again[-1] is case and "minimize" not in run_dir.parts
        if case.memory > 1 * GiB and case not in self.passes and not (
                again and case in self.flaky):
            return fail_result(("boot",), PANIC_A)
        return PASSED


PASSED = FakeResult(Verdict.PASS, (), parse_transcript(""), GuestExit.POWER_OFF)


def campaign_options(out: Path, **changes: Any) -> CampaignOptions:
    """Seed 7 with default bounds: CONFIG's cases, in order."""
    opts = CampaignOptions(kernels=("debian-6.1-cloud",), seconds=3600, out=out, seed=7,
                           max_cases=12, max_boots=40)
    return dataclasses.replace(opts, **changes)


def run_fake(opts: CampaignOptions, boot: CampaignBoot) -> CampaignSummary:
    return run_campaign(opts, io.StringIO(), Runtime(boot=boot, kernels=fake_kernels,
                                                     executor=InlineExecutor,
                                                     floors=no_floors))


def fails(case: BootCase) -> bool:
    return case.memory > 1 * GiB


def test_campaign_new_failure_minimized_and_repeats_counted(tmp_path: Path) -> None:
    boot = CampaignBoot()
    summary = run_fake(campaign_options(tmp_path), boot)
    cases = [generate_case(CONFIG, i) for i in range(12)]
    assert boot.cases == cases  # case k of the seed, in order, each once
    failing = [i for i, c in enumerate(cases) if fails(c)]
    assert 2 <= len(failing) < 12  # the seed gives repeats and passes
    assert summary.counts == {"pass": 12 - len(failing), "fail": len(failing), "flaky": 0,
                              "below-floor": 0, "rejected": 0, "infra": 0}
    assert boot.again == [cases[i] for i in failing]  # each failure booted again
    (finding,) = summary.findings  # the repeats are counted, not new findings
    assert (finding.count, finding.first_index) == (len(failing), failing[0])
    assert finding.minimized and 0 < finding.boots == len(boot.minimizing) <= 40
    rep = load_reproducer(Path(finding.file))
    assert Path(finding.file).parent == tmp_path
    assert rep.expect == Expectation(Verdict.FAIL, ("boot",))
    assert rep.kernel_sha256 == FAKE_SHA256 and "minimized" in rep.description
    small = rep.case  # what the minimizer kept: only the memory matters to this bug
    assert small.cmdline == HARNESS_CMDLINE and small.initrd == InitrdSpec(0, Compression.GZIP)
    assert 1 * GiB < small.memory <= 1 * GiB + 4 * MiB + 4096
    assert "Kernel panic" in rep.evidence
    doc = json.loads((tmp_path / "campaign" / "summary.json").read_text())
    assert doc["cases"] == 12 and len(doc["findings"]) == 1 and doc["aborted"] is None


def test_campaign_aborts_after_consecutive_infrastructure_errors(tmp_path: Path) -> None:
    boot = CampaignBoot(infra=lambda n: n >= 2)
    summary = run_fake(campaign_options(tmp_path, max_cases=50), boot)
    assert len(boot.cases) == 2 + MAX_CONSECUTIVE_INFRA  # nothing started after the abort
    assert summary.counts["infra"] == MAX_CONSECUTIVE_INFRA
    assert "in a row failed for infrastructure" in summary.aborted
    suite = ET.parse(tmp_path / "campaign" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("errors") == "1"


def test_campaign_goes_on_when_infrastructure_errors_are_not_consecutive(
    tmp_path: Path,
) -> None:
    boot = CampaignBoot(infra=lambda n: n % 2 == 1)
    summary = run_fake(campaign_options(tmp_path, max_cases=20, max_boots=0), boot)
    assert len(boot.cases) == 20 and summary.counts["infra"] == 10
    assert summary.aborted == "" and not boot.minimizing  # max_boots 0: no minimization


def test_campaign_resume_after_interrupt_does_not_redo_finished_cases(tmp_path: Path) -> None:
    first = CampaignBoot(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        run_fake(campaign_options(tmp_path), first)
    state_path = tmp_path / "campaign" / "state.json"
    state = load_state(state_path)
    assert state.next_index == 4 and sum(state.counts.values()) == 4
    # A worker had also finished case 6 before the kill (parallel jobs finish out of order).
    state.mark_done(6)
    state.counts["fail" if fails(generate_case(CONFIG, 6)) else "pass"] += 1
    save_state(state, state_path)
    with pytest.raises(CampaignError, match="exists: continue it with --resume"):
        run_fake(campaign_options(tmp_path), CampaignBoot())

    second = CampaignBoot()
    summary = run_fake(campaign_options(tmp_path, resume=True, max_cases=10), second)
    assert second.cases == [generate_case(CONFIG, i) for i in (4, 5, 7, 8, 9)]
    assert load_state(state_path).next_index == 10 and summary.cases == 10
    (finding,) = summary.findings  # found before the interrupt, counted across both runs
    # Case 6 was counted by hand above, in the counts only.
    assert finding.count == sum(fails(generate_case(CONFIG, i)) for i in range(10) if i != 6)
    assert finding.minimized and not second.minimizing  # minimized once, in the first run


def test_campaign_resume_refuses_another_seed(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path, max_cases=1), CampaignBoot())
    with pytest.raises(CampaignError, match="is for seed 7"):
        run_fake(campaign_options(tmp_path, resume=True, seed=8), CampaignBoot())


# -- the backend every case runs on --------------------------------------------------------


def test_campaign_on_kvm_generates_the_same_cases_for_our_vmm(tmp_path: Path) -> None:
    """--backend kvm --cpu-template host: the seed's cases, each recorded with them (so a
    replay boots our VMM with that CPU); resuming on another backend is refused."""
    boot = CampaignBoot()
    opts = campaign_options(tmp_path, max_cases=4, max_boots=0, backend="kvm",
                            cpu_template=CpuTemplate.HOST)
    run_fake(opts, boot)
    assert boot.cases == [dataclasses.replace(generate_case(CONFIG, i), backend="kvm",
                                              cpu_template=CpuTemplate.HOST)
                          for i in range(4)]
    records = read_cases(tmp_path / "campaign" / "cases.jsonl")
    assert {(r.reproducer.case.backend, r.reproducer.case.cpu_template) for r in records} == {
        ("kvm", CpuTemplate.HOST)}
    with pytest.raises(CampaignError, match="--backend and --cpu-template"):
        run_fake(dataclasses.replace(opts, resume=True, backend="qemu-tcg",
                                     cpu_template=CpuTemplate.BASELINE), CampaignBoot())


def test_generator_digest_of_a_qemu_tcg_campaign_is_the_one_before_backends() -> None:
    """A campaign begun before --backend existed resumes: the digest of a default
    configuration is the one the earlier code gave (b74231db9bff0ded, computed by it)."""
    assert generator_digest(CONFIG) == "b74231db9bff0ded"
    assert generator_digest(dataclasses.replace(CONFIG, backend="kvm")) != "b74231db9bff0ded"


@pytest.mark.parametrize(("changes", "message"), [
    ({"backend": "firecracker"}, "a campaign runs on qemu-tcg or kvm"),
    ({"cpu_template": CpuTemplate.HOST}, "add --backend kvm"),
    ({"backend": "kvm", "coverage": True, "guided": True}, "QEMU-TCG's plugin"),
    ({"backend": "kvm", "target": "qemu-pc"}, "a --target campaign boots the peer"),
])
def test_campaign_refuses_backend_options_that_do_not_go_together(
        tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    boot = CampaignBoot()
    with pytest.raises(CampaignError, match=re.escape(message)):
        run_fake(campaign_options(tmp_path, **changes), boot)
    assert boot.cases == [] and not (tmp_path / "campaign" / "state.json").exists()


def test_kvm_that_only_emulates_is_refused_before_any_boot() -> None:
    emulated = BackendStatus("kvm", True, "/dev/kvm runs guests at 2.1 M instructions/s "
                             "(emulated (software) KVM: guests run far too slowly)", 2.1e6,
                             False)
    hardware = dataclasses.replace(emulated, detail="fast", guest_ips=3e9, hardware=True)
    with mock.patch("bootfuzz.run.backends.kvm.KvmBackend.check_available"):
        with pytest.raises(CampaignError, match=r"--backend kvm: /dev/kvm runs guests at 2\.1 M"):
            check_backend_runs("kvm", lambda: emulated)
        check_backend_runs("kvm", lambda: hardware)  # accepted
    with (mock.patch("bootfuzz.run.backends.kvm.KvmBackend.check_available",
                     side_effect=BackendError("/dev/kvm: no such file")),
          pytest.raises(CampaignError, match=r"--backend kvm: .*no such file")):
        check_backend_runs("kvm", lambda: hardware)


def test_fuzz_backend_kvm_is_refused_here_unless_kvm_is_hardware(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI measures /dev/kvm (bootfuzz doctor's calibration guest) before it boots."""
    from bootfuzz.run.doctor import kvm_status

    status = kvm_status()
    if status.fast:
        pytest.skip(reason=f"hardware KVM here, a kvm campaign runs: {status.detail}")
    code = main(["fuzz", "--backend", "kvm", "--kernel", "debian-6.1-cloud", "--time", "5s",
                 "--out", str(tmp_path)])
    assert code == ExitStatus.USAGE
    err = capsys.readouterr().err
    assert "--backend kvm:" in err and "qemu-tcg" in err
    assert not (tmp_path / "campaign" / "cases.jsonl").exists()


# -- no noise: flaky, below the memory floor, the loader's refusals ---------------------------


def test_campaign_failure_that_does_not_repeat_is_flaky_not_a_finding(tmp_path: Path) -> None:
    """Every failure is booted again; the ones that pass then are flaky: their own
    summary section (markdown, JSON, a skipped JUnit case), status flaky in the case log,
    never a finding, no reproducer."""
    cases = [generate_case(CONFIG, i) for i in range(12)]
    failing = [i for i, c in enumerate(cases) if fails(c)]
    boot = CampaignBoot(flaky=set(failing[:2]))
    summary = run_fake(campaign_options(tmp_path, max_boots=0), boot)
    assert boot.again == [cases[i] for i in failing]
    assert summary.counts["flaky"] == 2 and summary.counts["fail"] == len(failing) - 2
    (finding,) = summary.findings
    assert finding.first_index == failing[2] and finding.count == len(failing) - 2
    (row,) = summary.flaky
    assert row.signature == finding.key and row.cases == tuple(failing[:2])
    assert row.detail == "did not repeat: booted again, it passed"
    records = {r.index: r for r in read_cases(tmp_path / "campaign" / "cases.jsonl")}
    for i in failing[:2]:
        assert (records[i].status, records[i].signature) == ("flaky", finding.key)
    assert len(list(tmp_path.glob("*.json"))) == 1  # the finding's reproducer only
    work = tmp_path / "campaign"
    md = (work / "summary.md").read_text()
    assert "Flaky (failed once, not when booted again; never findings):" in md
    assert f"| 2 | #{failing[0]} | did not repeat" in md
    doc = json.loads((work / "summary.json").read_text())
    assert doc["flaky"] == [{"signature": finding.key, "cases": failing[:2],
                             "detail": "did not repeat: booted again, it passed"}]
    suite = ET.parse(work / "junit.xml").getroot().find("testsuite")
    assert suite is not None and (suite.get("failures"), suite.get("skipped")) == ("1", "1")
    (skipped,) = [tc for tc in suite.iter("testcase") if tc.find("skipped") is not None]
    assert skipped.get("name") == f"flaky: {finding.key}"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["flaky"] == "2"


def test_campaign_all_failures_flaky_is_no_finding(tmp_path: Path) -> None:
    cases = [generate_case(CONFIG, i) for i in range(12)]
    boot = CampaignBoot(flaky={i for i, c in enumerate(cases) if fails(c)})
    summary = run_fake(campaign_options(tmp_path), boot)
    assert summary.findings == () and summary.counts["fail"] == 0
    assert summary.counts["flaky"] == sum(map(fails, cases)) >= 2
    assert not boot.minimizing  # nothing to minimize: no finding


DEADLOCKED = ("[    1.16] Kernel panic - not syncing: System is deadlocked on memory\n")
#: The fake kernel's floor: points as bootfuzz.fuzz.floors measures them.
FAKE_FLOOR = MemoryFloor(FAKE_SHA256, (FloorPoint(0, 80 * MiB, 79 * MiB),
                                       FloorPoint(2 * MiB, 84 * MiB, 83 * MiB),
                                       FloorPoint(8 * MiB, 96 * MiB, 95 * MiB)))


class ShortOfMemoryBoot(CampaignBoot):
    """A kernel that runs out of memory below FAKE_FLOOR's floor for the initrd, and fails
    the e820 oracle (a loader bug, at any memory) when its command line has ``foo.bar``."""

    def result(self, case: BootCase, run_dir: Path) -> FakeResult:
        super().result(case, run_dir)
        if case.memory < FAKE_FLOOR.floor(case.initrd):
            if "foo.bar" in case.cmdline:
                return fail_result(("e820",), "", GuestExit.POWER_OFF)
            return fail_result(("boot", "initrd-unpacked"), DEADLOCKED)
        return PASSED


def run_floored(opts: CampaignOptions, boot: CampaignBoot) -> CampaignSummary:
    return run_campaign(opts, io.StringIO(), Runtime(
        boot=boot, kernels=fake_kernels, executor=InlineExecutor,
        floors=fixed_floors({"debian-6.1-cloud": FAKE_FLOOR})))


def test_campaign_generates_at_or_above_the_kernels_floor(tmp_path: Path) -> None:
    """By default every case gets at least the kernel's floor for its initrd: nothing
    runs short of memory, and the floors are kept in the state for --resume."""
    boot = ShortOfMemoryBoot()
    summary = run_floored(campaign_options(tmp_path, max_cases=40, max_memory=256 * MiB,
                                           max_boots=0), boot)
    assert len(boot.cases) == 40 and summary.counts["pass"] == 40
    assert all(c.memory >= FAKE_FLOOR.floor(c.initrd) for c in boot.cases)
    assert any(c.memory == FAKE_FLOOR.floor(c.initrd) for c in boot.cases)  # right at it
    state = load_state(tmp_path / "campaign" / "state.json")
    assert state.floors == {"debian-6.1-cloud": FAKE_FLOOR}


def test_campaign_below_the_floor_is_below_floor_not_a_finding(tmp_path: Path) -> None:
    """With --below-floor, cases start at the loader's least memory; those that run
    short of memory under the kernel's floor are below-floor (the floor in the detail),
    never findings and not booted again; a loader bug below the floor (e820 failing)
    is still a finding."""
    boot = ShortOfMemoryBoot()
    opts = campaign_options(tmp_path, max_cases=40, max_memory=256 * MiB, max_boots=0,
                            below_floor=True)
    summary = run_floored(opts, boot)
    records = read_cases(tmp_path / "campaign" / "cases.jsonl")
    below = [r for r in records if r.status == "below-floor"]
    assert below and summary.counts["below-floor"] == len(below)
    for r in below:
        case = r.reproducer.case
        assert case.memory < FAKE_FLOOR.floor(case.initrd) and "foo.bar" not in case.cmdline
        assert r.failing == ("boot", "initrd-unpacked")
        assert FAKE_FLOOR.describe(case.initrd) in r.message and "below the kernel" in r.message
        assert case not in boot.again  # short of memory: not booted again
    e820 = [r for r in records if r.status == "fail"]
    assert e820 and all(r.failing == ("e820",) for r in e820)  # found below the floor too
    assert [f.key for f in summary.findings] == ["e820|mismatch"]
    assert summary.counts["pass"] + len(below) + len(e820) == 40
    md = (tmp_path / "campaign" / "summary.md").read_text()
    assert "Below the memory floor (the kernel short of memory; never findings):" in md
    (row,) = summary.below_floor
    assert row.signature == ("boot,initrd-unpacked|Kernel panic - not syncing: System is "
                             "deadlocked on memory") and len(row.cases) == len(below)
    doc = json.loads((tmp_path / "campaign" / "summary.json").read_text())
    assert doc["below_floor"][0]["cases"] == [r.index for r in below]
    assert doc["counts"]["below-floor"] == len(below)


class RefusingBoot(CampaignBoot):
    """Our loader refuses cases whose command line has ``foo.bar`` (LayoutError), and
    finds its own layout inconsistent (HarnessBug from bootfuzz.loader.placement) for
    those with ``bootfuzz.a``; a case with overrides it refuses whatever it holds."""

    def result(self, case: BootCase, run_dir: Path) -> FakeResult:
        super().result(case, run_dir)
        if not case.overrides.empty:
            raise LayoutError(f"setup_data at {case.memory:#x} ends past 2**64")
        if "foo.bar" in case.cmdline:
            raise LayoutError(f"initrd of {case.memory:#x} bytes does not fit below "
                              "initrd_addr_max")
        if "bootfuzz.a" in case.cmdline:
            check_blobs([Blob("initrd", 0x100000, 0x2000, bytes(0x2000)),
                         Blob("cmdline", 0x101000, 0x100, bytes(0x100))],
                        qemu_pc(256 * MiB), own_layout=True)
        return PASSED


def test_campaign_loader_refusal_without_overrides_is_a_finding(tmp_path: Path) -> None:
    """A case without overrides that the loader refuses (its bounds, or its own
    consistency check) is a finding about the loader: one signature per refusal (numbers
    blanked), a reproducer, no minimization; nothing is quietly rejected."""
    cases = [generate_case(CONFIG, i) for i in range(30)]
    # A case with a correct loader's overrides (draws.py: relocated, setup_data ...) is
    # refused by the fake for them: a finding of its own (no --overrides).
    plain = [i for i, c in enumerate(cases) if c.overrides.empty]
    refused = [i for i in plain if "foo.bar" in cases[i].cmdline]
    inconsistent = [i for i in plain if "bootfuzz.a" in cases[i].cmdline and i not in refused]
    assert refused and inconsistent
    boot = RefusingBoot()
    summary = run_fake(campaign_options(tmp_path, max_cases=30), boot)
    assert summary.counts["rejected"] == 0 and not boot.again and not boot.minimizing
    keys = {f.key: f for f in summary.findings}
    bounds = "loader-refused|loader: initrd of 0x? bytes does not fit below initrd_addr_max"
    assert keys[bounds].count == len(refused) and keys[bounds].first_index == refused[0]
    (own,) = [k for k in keys if k.startswith("loader-refused|bootfuzz: our loader's own")]
    assert keys[own].count == len(inconsistent)
    # Without --overrides every override is a correct loader's: refused, it is a finding.
    overridden = [i for i, c in enumerate(cases) if not c.overrides.empty]
    (sound,) = [k for k in keys if "ends past" in k]
    assert overridden and keys[sound].count == len(overridden)
    rep = load_reproducer(Path(keys[bounds].file))
    assert rep.case == cases[refused[0]] and "does not fit below" in rep.evidence
    assert rep.expect == Expectation(Verdict.FAIL, ("loader-refused",))
    records = {r.index: r for r in read_cases(tmp_path / "campaign" / "cases.jsonl")}
    assert (records[refused[0]].status, records[refused[0]].verdict) == ("fail", None)


def test_campaign_harness_bug_outside_the_loader_stays_infrastructure(tmp_path: Path) -> None:
    class Broken(CampaignBoot):
        def result(self, case: BootCase, run_dir: Path) -> FakeResult:
            super().result(case, run_dir)
            raise HarnessBug("the agent build is broken")

    summary = run_fake(campaign_options(tmp_path, max_cases=3), Broken())
    assert summary.counts["infra"] == 3 and summary.findings == ()


def test_campaign_overrides_the_loader_cannot_represent_are_rejected(tmp_path: Path) -> None:
    """With --overrides, a case whose overrides the loader cannot represent is rejected:
    counted, and the first few shown with the loader's reason; never a finding."""
    config = dataclasses.replace(CONFIG, overrides=True)
    cases = [generate_case(config, i) for i in range(20)]
    with_ov = [i for i, c in enumerate(cases) if not c.overrides.empty]
    assert with_ov
    summary = run_fake(campaign_options(tmp_path, max_cases=20, overrides=True),
                       RefusingBoot())
    assert summary.counts["rejected"] == len(with_ov)
    assert all(not k.startswith("loader-refused|loader: setup_data")
               for k in (f.key for f in summary.findings))
    assert summary.rejections[0].startswith(f"case #{with_ov[0]}: loader: setup_data at")
    md = (tmp_path / "campaign" / "summary.md").read_text()
    assert (f"Rejected: {len(with_ov)} case(s) with overrides the loader cannot represent"
            in md)


def test_campaign_resume_generates_from_the_floors_it_began_with(tmp_path: Path) -> None:
    """The floors are kept in the state: a resumed campaign generates from them, whatever
    the floor source says by then (a cache cleared, a kernel measured again)."""
    first = ShortOfMemoryBoot()
    opts = campaign_options(tmp_path, max_cases=10, max_memory=256 * MiB, max_boots=0)
    run_floored(dataclasses.replace(opts, max_cases=5), first)
    second = ShortOfMemoryBoot()
    summary = run_campaign(dataclasses.replace(opts, resume=True), io.StringIO(), Runtime(
        boot=second, kernels=fake_kernels, executor=InlineExecutor, floors=no_floors))
    assert summary.cases == 10 and summary.counts["pass"] == 10
    assert len(second.cases) == 5
    assert all(c.memory >= FAKE_FLOOR.floor(c.initrd) for c in second.cases)


def test_campaign_stopped_while_measuring_floors_starts_nothing(tmp_path: Path) -> None:
    """A stop signal while the floors are measured: no case, no state to resume (the
    points measured are cached by then); the summary says what happened."""
    def stopping(request: FloorRequest) -> dict[str, MemoryFloor]:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.stopped()
        raise FloorsStopped

    boot = CampaignBoot()
    summary = run_campaign(campaign_options(tmp_path), io.StringIO(), Runtime(
        boot=boot, kernels=fake_kernels, executor=InlineExecutor, floors=stopping))
    assert summary.stop_signal == signal.SIGTERM and summary.cases == 0 and not boot.cases
    assert "while measuring memory floors" in summary.aborted
    assert not (tmp_path / "campaign" / "state.json").exists()
    assert "while measuring memory floors" in (tmp_path / "campaign" / "summary.md").read_text()


# -- the case log ----------------------------------------------------------------------------


def test_campaign_logs_every_case_with_its_outcome(tmp_path: Path) -> None:
    """One line per case: its reproducer (the generated case, expecting what it showed),
    status, verdict, failing oracles, signature and title, duration and its phases; no
    coverage key (nothing measures it)."""
    summary = run_fake(campaign_options(tmp_path, max_boots=0), CampaignBoot())
    log = tmp_path / "campaign" / "cases.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 12
    records = read_cases(log)
    assert [r.index for r in records] == list(range(12))
    for rec, line in zip(records, lines, strict=True):
        case = generate_case(CONFIG, rec.index)
        assert rec.reproducer.case == case and rec.reproducer.kernel_sha256 == FAKE_SHA256
        assert "coverage" not in json.loads(line) and rec.duration >= 0
        assert rec.phases == (("plan", 0.25),)  # the boot's phases, read back
        if fails(case):
            (finding,) = summary.findings
            assert (rec.status, rec.verdict, rec.failing) == ("fail", Verdict.FAIL, ("boot",))
            assert rec.signature == finding.key and rec.title == finding.key.split("|", 1)[1]
            assert rec.reproducer.expect == Expectation(Verdict.FAIL, ("boot",))
            assert "Kernel panic" in rec.reproducer.evidence and rec.run_dir
        else:
            assert (rec.status, rec.verdict, rec.signature) == ("pass", Verdict.PASS, None)
            assert rec.reproducer.expect == Expectation(Verdict.PASS, ())


def test_case_log_replay_source_finds_case_n(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path, max_boots=0, max_cases=5), CampaignBoot())
    log = tmp_path / "campaign" / "cases.jsonl"
    rep = load_replay_source(f"{log}:3")
    assert rep.case == generate_case(CONFIG, 3) and rep.expect is not None
    with pytest.raises(CampaignError, match=r"no case 7; it has 5 case\(s\), numbered 0 to 4"):
        load_replay_source(f"{log}:7")
    with pytest.raises(CampaignError, match="'x' is not a case number"):
        load_replay_source(f"{log}:x")
    with pytest.raises(CampaignError, match="name one case as"):
        load_replay_source(str(log))
    with pytest.raises(CampaignError, match="no such case log"):
        load_replay_source(f"{tmp_path / 'nope.jsonl'}:1")


def test_case_log_bad_line_is_named(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path, max_boots=0, max_cases=3), CampaignBoot())
    log = tmp_path / "campaign" / "cases.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(CampaignError, match=r"cases.jsonl line 2: not a JSON case record"):
        load_replay_source(f"{log}:2")
    doc = json.loads(lines[1])
    doc["reproducer"]["memory"] = "lots"
    log.write_text("\n".join([lines[0], json.dumps(doc)]) + "\n")
    with pytest.raises(CampaignError, match=r"line 2: reproducer: memory: 'lots' is not an "):
        load_replay_source(f"{log}:0")


def test_summary_table_by_kernel_and_entry(tmp_path: Path) -> None:
    opts = campaign_options(tmp_path, kernels=("debian-6.1-cloud", "debian-6.12-cloud"),
                            max_boots=0, max_cases=30)
    summary = run_fake(opts, CampaignBoot())
    records = read_cases(tmp_path / "campaign" / "cases.jsonl")
    expected: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r.reproducer.case.kernel, r.reproducer.case.entry.value)
        expected[key] = expected.get(key, 0) + 1
    assert {(row.kernel, row.entry): row.cases for row in summary.table} == expected
    assert len({k for k, _ in expected}) == 2 and sum(expected.values()) == summary.cases
    for row in summary.table:
        assert row.slowest >= row.median >= 0 and row.seconds >= row.slowest
    doc = json.loads((tmp_path / "campaign" / "summary.json").read_text())
    assert [(r["kernel"], r["entry"], r["cases"]) for r in doc["by_kernel_and_entry"]] == [
        (row.kernel, row.entry, row.cases) for row in summary.table]
    md = (tmp_path / "campaign" / "summary.md").read_text()
    row = summary.table[0]
    assert f"| {row.kernel} | {row.entry} | {row.cases} | {row.counts['pass']} |" in md


# -- stopping, killing, resuming --------------------------------------------------------------


class SignalBoot(CampaignBoot):
    """Sends *signum* to this process while booting campaign boot *at* (the signal a
    runner or a Ctrl-C delivers mid-boot)."""

    def __init__(self, signum: int, at: int) -> None:
        super().__init__()
        self.signum, self.at = signum, at

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: float) -> FakeResult:
        if ("minimize" not in run_dir.parts and case != self.failed
                and len(self.cases) == self.at):
            os.kill(os.getpid(), self.signum)
        return super().__call__(case, run_dir, timeout=timeout,
                                silence_timeout=silence_timeout)


def _comparable(summary: CampaignSummary) -> tuple[Any, ...]:
    return (summary.counts, [(f.key, f.count, f.first_index, f.minimized)
                             for f in summary.findings])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_campaign_stops_cleanly_on_signal_and_resume_finishes(tmp_path: Path,
                                                              signum: int) -> None:
    whole = run_fake(campaign_options(tmp_path / "whole"), CampaignBoot())
    out = tmp_path / "stopped"
    first = run_fake(campaign_options(out), SignalBoot(signum, at=5))
    name = signal.Signals(signum).name
    assert first.stop_signal == signum and f"stopped by {name}" in first.aborted
    assert first.cases == 6  # the boot in progress finished, nothing new started
    assert load_state(out / "campaign" / "state.json").next_index == 6
    assert signal.getsignal(signum) is not None  # the campaign's handler is gone again
    second = run_fake(campaign_options(out, resume=True), CampaignBoot())
    assert second.stop_signal == 0 and second.aborted == ""
    assert _comparable(second) == _comparable(whole)
    assert [r.index for r in read_cases(out / "campaign" / "cases.jsonl")] == list(range(12))


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even a finally's save."""


def test_campaign_killed_between_reproducer_and_state_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reproducer of a new failure is written, the state that counts it is not: the
    resumed campaign counts the case from the log and the finding is there, once."""
    whole = run_fake(campaign_options(tmp_path / "whole"), CampaignBoot())
    out = tmp_path / "killed"
    first_failing = whole.findings[0].first_index
    real_save = campaign_module.save_state

    def save(state: CampaignState, path: Path) -> None:
        if state.findings:  # the first save after the new failure: the kill
            raise Killed
        real_save(state, path)

    monkeypatch.setattr(campaign_module, "save_state", save)
    with pytest.raises(Killed):
        run_fake(campaign_options(out), CampaignBoot())
    monkeypatch.setattr(campaign_module, "save_state", real_save)
    (repro,) = out.glob("*.json")  # written before the kill ...
    state = load_state(out / "campaign" / "state.json")
    assert not state.findings and state.next_index == first_failing  # ... not counted
    assert len(read_cases(out / "campaign" / "cases.jsonl")) == first_failing + 1

    # Booted again, that case would pass (a failure that does not repeat): only the log
    # keeps it.  The resumed run counts it from there and does not boot it.
    second = CampaignBoot(passes={first_failing})
    resumed = run_fake(campaign_options(out, resume=True), second)
    assert _comparable(resumed) == _comparable(whole)
    assert Path(resumed.findings[0].file) == repro
    assert generate_case(CONFIG, first_failing) not in second.cases


def test_campaign_resume_cuts_a_torn_log_line(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path, max_cases=4, max_boots=0), CampaignBoot())
    log = tmp_path / "campaign" / "cases.jsonl"
    whole = log.read_bytes()
    with log.open("ab") as fh:
        fh.write(b'{"case": 4, "stat')  # a line cut by a kill
    summary = run_fake(campaign_options(tmp_path, resume=True, max_cases=6, max_boots=0),
                       CampaignBoot())
    assert summary.cases == 6
    assert [r.index for r in read_cases(log)] == list(range(6))
    assert log.read_bytes().startswith(whole)


def test_campaign_refuses_an_out_another_campaign_holds(tmp_path: Path) -> None:
    """A second campaign on the same --out refuses, naming the holder's pid, and changes
    nothing there; once the holder is gone the out is free."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib\n"
         "from bootfuzz.fuzz.campaign import campaign_lock\n"
         "with campaign_lock(pathlib.Path(sys.argv[1])):\n"
         "    print('locked', flush=True); sys.stdin.read()\n",
         str(tmp_path / "campaign")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(CampaignError, match=rf"another campaign \(pid {holder.pid}\) is "
                           "running on this --out"):
            run_fake(campaign_options(tmp_path), CampaignBoot())
        assert not (tmp_path / "campaign" / "state.json").exists()
    finally:
        holder.communicate("")
    assert run_fake(campaign_options(tmp_path, max_cases=1), CampaignBoot()).cases == 1


@pytest.mark.parametrize(("ref", "problem"), [
    (":99", "no case 99; it has 3 case(s), numbered 0 to 2"),
    (":-1", "'-1' is not a case number"),
    ("", "a case log; name one case as"),
])
def test_replay_cli_bad_case_reference_is_one_usage_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: str, problem: str,
) -> None:
    """``bootfuzz replay cases.jsonl:N`` with a bad N: exit 2, one line naming it, no boot."""
    run_fake(campaign_options(tmp_path, max_boots=0, max_cases=3), CampaignBoot())
    log = tmp_path / "campaign" / "cases.jsonl"
    assert main(["replay", f"{log}{ref}"]) == ExitStatus.USAGE
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("bootfuzz: error: fuzz: ") and problem in line


# -- merging shards ----------------------------------------------------------------------------


def _same_record(rec: CaseRecord) -> CaseRecord:
    """A record without what differs between any two runs (wall time, run directory)."""
    return dataclasses.replace(rec, duration=0.0, run_dir="")


def _finding_view(f: Finding) -> tuple[Any, ...]:
    return (f.key, f.count, f.first_index, f.minimized, f.boots, f.steps,
            load_reproducer(Path(f.file)))


def test_merge_of_two_shards_equals_the_single_run(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Shards 0/2 and 1/2 with --max-cases 16, merged, are the single run of the seed with
    --max-cases 16: the same cases with the same outcomes, the same findings (counts, first
    case, minimized reproducer), the same table."""
    single = run_fake(campaign_options(tmp_path / "single", max_cases=16), CampaignBoot())
    shards = [tmp_path / f"shard{i}" for i in range(2)]
    for i, out in enumerate(shards):
        run_fake(campaign_options(out, shard=(i, 2), max_cases=16), CampaignBoot())
    assert main(["merge", str(shards[1]), str(shards[0]), "--out",
                 str(tmp_path / "merged")]) == ExitStatus.FINDING
    assert "shard 0/2+1/2 (merged from 2 shard outputs)" in capsys.readouterr().out
    doc = json.loads((tmp_path / "merged" / "campaign" / "summary.json").read_text())
    single_doc = json.loads((tmp_path / "single" / "campaign" / "summary.json").read_text())

    merged = read_cases(tmp_path / "merged" / "campaign" / "cases.jsonl")
    alone = read_cases(tmp_path / "single" / "campaign" / "cases.jsonl")
    assert [_same_record(r) for r in merged] == [_same_record(r) for r in alone]
    assert [r.index for r in merged] == list(range(16))
    assert doc["counts"] == single_doc["counts"] == single.counts and doc["cases"] == 16
    (finding,) = single.findings
    assert finding.count >= 2  # the repeats were split between the shards
    (merged_finding,) = [Finding(**{**f, "steps": tuple(f["steps"])}) for f in doc["findings"]]
    assert Path(merged_finding.file).parent == tmp_path / "merged"
    assert _finding_view(merged_finding) == _finding_view(finding)
    drop = ("seconds", "median_seconds", "slowest_seconds")
    assert [{k: v for k, v in row.items() if k not in drop}
            for row in doc["by_kernel_and_entry"]] == [
        {k: v for k, v in row.items() if k not in drop}
        for row in single_doc["by_kernel_and_entry"]]
    junit_names = [
        [tc.get("name") for tc in ET.parse(tmp_path / d / "campaign" / "junit.xml").iter(
            "testcase")] for d in ("merged", "single")]
    assert junit_names[0] == junit_names[1] == ["campaign", finding.key]


def test_merge_of_one_shard_says_which_are_missing(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path / "s1", shard=(1, 3), max_cases=9), CampaignBoot())
    summary = merge_campaigns([tmp_path / "s1"], tmp_path / "m")
    assert summary.missing_shards == ("0/3", "2/3") and summary.cases == 3
    assert "**not merged:** 0/3, 2/3" in (tmp_path / "m" / "campaign" / "summary.md").read_text()


def test_merge_refuses_what_is_not_one_campaign(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path / "a", shard=(0, 2), max_cases=4), CampaignBoot())
    run_fake(campaign_options(tmp_path / "b", shard=(1, 2), max_cases=4, seed=8),
             CampaignBoot())
    run_fake(campaign_options(tmp_path / "c", shard=(0, 3), max_cases=4), CampaignBoot())
    with pytest.raises(CampaignError, match=r"are not shards of one campaign"):
        merge_campaigns([tmp_path / "a", tmp_path / "b"], tmp_path / "m")
    with pytest.raises(CampaignError, match=r"are not shards of one campaign"):
        merge_campaigns([tmp_path / "a", tmp_path / "c"], tmp_path / "m")
    with pytest.raises(CampaignError, match=r"are both shard 0/2"):
        merge_campaigns([tmp_path / "a", tmp_path / "a"], tmp_path / "m")
    with pytest.raises(CampaignError, match=r"is one of the outputs to merge"):
        merge_campaigns([tmp_path / "a"], tmp_path / "a")
    with pytest.raises(CampaignError, match=r"no campaign state"):
        merge_campaigns([tmp_path / "a", tmp_path / "nothing"], tmp_path / "m")
    assert not (tmp_path / "m").exists()  # nothing written before every check passed


def test_merge_refuses_a_shard_still_running(tmp_path: Path) -> None:
    run_fake(campaign_options(tmp_path / "a", max_cases=2), CampaignBoot())
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib\n"
         "from bootfuzz.fuzz.campaign import campaign_lock\n"
         "with campaign_lock(pathlib.Path(sys.argv[1])):\n"
         "    print('locked', flush=True); sys.stdin.read()\n",
         str(tmp_path / "a" / "campaign")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(CampaignError, match=rf"a campaign \(pid {holder.pid}\) is still "
                           "running there"):
            merge_campaigns([tmp_path / "a"], tmp_path / "m")
    finally:
        holder.communicate("")
    assert merge_campaigns([tmp_path / "a"], tmp_path / "m").cases == 2
