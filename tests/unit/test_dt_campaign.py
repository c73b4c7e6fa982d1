"""The device-tree campaign's loop with a stand-in boot: deterministic draws, a failure
booted twice, flaky when the second boot differs, one reproducer per signature (crash
titles in it) minimized before the next case, refusals, a rolling pool and the --out
lock."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bootfuzz.arch import Arch
from bootfuzz.case import harness_cmdline
from bootfuzz.errors import BackendError, LayoutError
from bootfuzz.fuzz import dt_campaign, dt_merge
from bootfuzz.fuzz.campaign import campaign_lock
from bootfuzz.fuzz.caselog import load_replay_source, read_cases
from bootfuzz.fuzz.reproducer import Expectation, load_reproducer
from bootfuzz.fuzz.state import CampaignError
from bootfuzz.judge.dt_rules import check_dt_layout
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.dt_image import parse_dt_image
from bootfuzz.loader.dt_plan import plan_dt_boot
from bootfuzz.transcript import GuestExit
from tests.dt_fakes import FakeInitrd, fake_image

MiB, GiB = 1 << 20, 1 << 30
KERNELS = {"debian-6.12-cloud-arm64": Arch.ARM64, "debian-6.12-riscv64": Arch.RISCV64}


def _fake_plan(case):  # type: ignore[no-untyped-def]
    initrd = None if case.initrd is None else FakeInitrd(max(case.initrd.size, 1) + 300)
    return plan_dt_boot(case, parse_dt_image(fake_image(case.arch)), initrd)


@pytest.fixture(autouse=True)
def no_real_prepare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dt_campaign, "prepare_dt",
                        lambda case: SimpleNamespace(plan=_fake_plan(case)))


def test_case_k_of_a_seed_is_always_the_same_and_valid_or_faulty_by_its_rule() -> None:
    for n in range(40):
        case, fault = dt_campaign.draw_case(7, n, KERNELS, overrides=True)
        assert (case, fault) == dt_campaign.draw_case(7, n, KERNELS, overrides=True)
        failing = {r.name for r in check_dt_layout(_fake_plan(case))
                   if r.verdict is not Verdict.PASS}
        assert (fault.rule in failing) if fault else not failing, (n, fault, failing)
    assert any(dt_campaign.draw_case(7, n, KERNELS, True)[1] for n in range(40))


def _result(failing: tuple[str, ...], console: str = "") -> Any:
    oracles = tuple(OracleResult(name, Verdict.FAIL if name in failing else Verdict.PASS,
                                 "e", "o") for name in ("boot", "cmdline", "dt-memory"))
    return SimpleNamespace(oracles=oracles, verdict=Verdict.FAIL if failing else Verdict.PASS,
                           transcript=SimpleNamespace(text=console),
                           guest_exit=GuestExit.POWER_OFF if not console else GuestExit.HUNG)


def test_failures_repeat_before_they_count_and_each_signature_has_one_reproducer(
        tmp_path: Path) -> None:
    boots: dict[int, int] = {}

    def boot(case: Any, run_dir: Path) -> Any:
        n = int(run_dir.name if run_dir.name != "again" else run_dir.parent.name)
        boots[n] = boots.get(n, 0) + 1
        if n % 3 == 1:
            return _result(("cmdline",))  # the same failure twice: a finding
        if n % 3 == 2:
            return _result(("dt-memory",) if boots[n] == 1 else ())  # flaky
        return _result(())

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=9, jobs=2, boot=boot, minimize_boots=0)
    assert summary.count("pass") == 3 and summary.count("fail") == 3
    assert summary.count("flaky") == 3
    assert all(boots[n] == (1 if n % 3 == 0 else 2) for n in range(9))
    sigs = {o.signature for o in summary.outcomes if o.status == "fail"}
    assert len(summary.reproducers) == len(sigs) >= 1
    rep = load_reproducer(next(iter(summary.reproducers.values())))
    assert rep.expect is not None and rep.expect.failing == ("cmdline",)
    assert rep.case.arch.device_tree
    records = read_cases(tmp_path / "dt-campaign" / "cases.jsonl")
    assert sorted(r.index for r in records) == list(range(9))
    assert all(r.reproducer.case.arch.device_tree for r in records)
    found = next(r for r in records if r.status == "fail")
    assert found.reproducer.expect == Expectation(Verdict.FAIL, ("cmdline",))
    assert load_replay_source(f"{tmp_path}/dt-campaign/cases.jsonl:{found.index}") == (
        found.reproducer)
    assert "9 cases: 3 pass, 3 fail, 3 flaky, 0 rejected, 0 infra" in (
        tmp_path / "dt-campaign" / "summary.md").read_text()


def test_x86_kernels_are_refused(tmp_path: Path) -> None:
    from bootfuzz.errors import ConfigError

    with pytest.raises(ConfigError, match="arm64/riscv64 kernels only"):
        dt_campaign.run_dt_campaign(["debian-6.1-cloud"], seconds=1, seed=0, out=tmp_path)
    assert dataclasses.is_dataclass(dt_campaign.DtCaseOutcome)


def _arm64_oops(func: str, address: str) -> str:
    """An arm64 kernel page fault as 6.12's die() and __show_regs() print it."""
    return (f"[    1.250000] Unable to handle kernel paging request at virtual address {address}\n"
            "[    1.250100] Internal error: Oops: 0000000096000004 [#1] SMP\n"
            f"[    1.250200] pc : {func}+0x2c/0x70\n"
            "[    1.250300] lr : early_init_dt_scan_nodes+0x10/0x40\n")


def test_crash_sites_split_signatures_and_kaslr_does_not(tmp_path: Path) -> None:
    consoles = {0: _arm64_oops("of_fdt_unflatten", "ffff00003fe00000"),
                1: _arm64_oops("of_fdt_unflatten", "ffff80007fe00000"),  # another KASLR
                2: _arm64_oops("memblock_add_range", "ffff00003fe00000")}

    def boot(case: Any, run_dir: Path) -> Any:
        n = int(run_dir.name if run_dir.name != "again" else run_dir.parent.name)
        return _result(("boot",), consoles[n])

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=3, jobs=1, boot=boot, minimize_boots=0)
    titles = [o.title for o in summary.outcomes]
    assert titles == ["Unable to handle kernel paging request in of_fdt_unflatten"] * 2 + [
        "Unable to handle kernel paging request in memblock_add_range"]
    same_arch = summary.outcomes[0].case.arch == summary.outcomes[1].case.arch
    assert (summary.outcomes[0].signature == summary.outcomes[1].signature) == same_arch
    assert summary.outcomes[0].signature != summary.outcomes[2].signature
    rep = load_reproducer(summary.reproducers[summary.outcomes[2].signature])
    assert "pc : memblock_add_range+0x2c/0x70" in (rep.evidence or "")
    record = read_cases(tmp_path / "dt-campaign" / "cases.jsonl")[0]
    assert record.title == titles[record.index]
    assert record.signature is not None and record.signature.endswith(titles[record.index])


def test_refusals_of_our_layout_are_findings_and_of_a_fault_rejected(tmp_path: Path) -> None:
    def boot(case: Any, run_dir: Path) -> Any:
        n = int(run_dir.name)
        if n == 0:
            raise LayoutError("initrd [0x48000000, 0x48100000) overlaps the kernel")
        raise BackendError("qemu-system-aarch64 not found")

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=2, jobs=1, boot=boot)
    refused, infra = summary.outcomes
    assert refused.fault is None and refused.status == "fail"
    assert refused.failing == ("loader-refused",)
    assert refused.title == "loader: initrd [0x?, 0x?) overlaps the kernel"
    assert infra.status == "infra" and "not found" in infra.detail
    assert len(summary.reproducers) == 1
    records = read_cases(tmp_path / "dt-campaign" / "cases.jsonl")
    assert [r.status for r in records] == ["fail", "infra"]
    assert records[0].reproducer.expect is None  # a refusal: no boot to expect anything of
    assert "(a refusal: no boot to minimize)" in (tmp_path / "dt-campaign" / "summary.md"
                                                  ).read_text()

    faulty = next(n for n in range(40) if dt_campaign.draw_case(3, n, KERNELS, True)[1])
    out = tmp_path / "faulty"

    def refuse(case: Any, run_dir: Path) -> Any:
        raise LayoutError("no")

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=out,
                                          overrides=True, max_cases=faulty + 1, jobs=1,
                                          boot=refuse)
    assert summary.outcomes[faulty].status == "rejected"
    assert not summary.reproducers or all(
        o.fault is None for o in summary.outcomes if o.status == "fail")


def test_a_slow_case_does_not_hold_the_other_job(tmp_path: Path) -> None:
    """Case 0 waits until case 3 has booted: only a pool that starts a case as soon as
    one ends (not in batches of --jobs) gets there."""
    case3_booted = threading.Event()

    def boot(case: Any, run_dir: Path) -> Any:
        n = int(run_dir.name)
        if n == 0:
            assert case3_booted.wait(timeout=20), "case 3 never started while case 0 ran"
        if n == 3:
            case3_booted.set()
        return _result(())

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=4, jobs=2, boot=boot)
    assert summary.count("pass") == 4
    assert [o.number for o in summary.outcomes] == [0, 1, 2, 3]


def test_two_campaigns_on_one_out_refuse(tmp_path: Path) -> None:
    with campaign_lock(tmp_path / "dt-campaign"), pytest.raises(CampaignError,
                                                                match="another campaign"):
        dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                    max_cases=1, boot=lambda c, d: _result(()))


def test_a_signal_stops_the_campaign_with_what_ended_on_record(tmp_path: Path) -> None:
    """SIGTERM during case 1 (the handler only notes it): no case starts after it, the
    cases that ended are on record, the summary names the signal, and the handler that
    was there before is back."""
    before = signal.getsignal(signal.SIGTERM)
    started: list[int] = []

    def boot(case: Any, run_dir: Path) -> Any:
        started.append(int(run_dir.name))
        if started[-1] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return _result(())

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=20, jobs=1, boot=boot)
    assert summary.stop_signal == signal.SIGTERM and started == [0, 1]
    assert [r.index for r in read_cases(tmp_path / "dt-campaign" / "cases.jsonl")] == [0, 1]
    assert f"Stopped by signal {int(signal.SIGTERM)}" in (
        tmp_path / "dt-campaign" / "summary.md").read_text()
    assert signal.getsignal(signal.SIGTERM) == before


def test_resume_boots_only_what_is_not_on_record_and_loses_no_finding(tmp_path: Path) -> None:
    """Cases 0..3, then --resume to 0..7: the first four are not booted again and count;
    a reproducer a kill left unwritten (its log line is there) and a torn last line are
    mended; another seed, or a second start without --resume, is refused."""
    booted: list[int] = []

    def boot(case: Any, run_dir: Path) -> Any:
        n = int(run_dir.name if run_dir.name != "again" else run_dir.parent.name)
        booted.append(n)
        return _result(("cmdline",) if n in (1, 6) else ())

    first = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                        max_cases=4, jobs=2, boot=boot, minimize_boots=0)
    assert first.count("fail") == 1 and len(first.reproducers) == 1
    (lost,) = first.reproducers.values()
    lost.unlink()  # as if killed after the log line, before the reproducer
    log = tmp_path / "dt-campaign" / "cases.jsonl"
    with log.open("ab") as fh:
        fh.write(b'{"case":9,"status":"pa')  # a torn line
    with pytest.raises(CampaignError, match="continue it with --resume"):
        dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                    max_cases=8, boot=boot, minimize_boots=0)
    with pytest.raises(CampaignError, match="give the same --seed"):
        dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=4, out=tmp_path,
                                    max_cases=8, boot=boot, resume=True, minimize_boots=0)
    booted.clear()
    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=8, jobs=2, boot=boot, resume=True,
                                          minimize_boots=0)
    assert sorted(set(booted)) == [4, 5, 6, 7]
    assert [o.number for o in summary.outcomes] == list(range(8))
    assert summary.count("fail") == 2 and lost.exists()
    assert sorted(r.index for r in read_cases(log)) == list(range(8))
    assert dt_campaign.read_seed(tmp_path) == 3


def test_junit_has_a_failure_per_finding_and_skips_flaky_ones(tmp_path: Path) -> None:
    boots: dict[int, int] = {}

    def boot(case: Any, run_dir: Path) -> Any:
        n = int(run_dir.name if run_dir.name != "again" else run_dir.parent.name)
        boots[n] = boots.get(n, 0) + 1
        if n == 1:
            return _result(("cmdline",))
        if n == 2:
            return _result(("dt-memory",) if boots[n] == 1 else ())
        return _result(())

    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=3, jobs=1, boot=boot, minimize_boots=0)
    root = ET.parse(tmp_path / "dt-campaign" / "junit.xml").getroot()
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("3", "1", "1")
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and str(summary.reproducers[summary.outcomes[1].signature]) in (
        failure.get("message") or "")


@pytest.mark.parametrize(("extra", "named"), [
    (["--depth", "early"], "--depth"), (["--below-floor"], "--below-floor"),
    (["--mem-min", "1G", "--max-initrd", "1M"], "--mem-min, --max-initrd"),
    (["--backend", "kvm"], "--backend and --cpu-template")])
def test_options_a_device_tree_campaign_lacks_are_refused_not_ignored(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
        named: str) -> None:
    from bootfuzz.cli.exits import ExitStatus
    from bootfuzz.cli.main import main

    code = main(["fuzz", "--kernel", "debian-6.12-riscv64", "--time", "5s", "--out",
                 str(tmp_path), *extra])
    assert code == ExitStatus.USAGE and named in capsys.readouterr().err
    assert not (tmp_path / "dt-campaign").exists()


THRESHOLD = 700 * MiB


class _Minimizable:
    """riscv64 boots fail ("cmdline") above THRESHOLD of memory, whatever else the case
    holds; each boot is logged as the case number, or ("min", k) for a minimization's.
    *stop_at_min* sends SIGTERM from that minimization boot."""

    def __init__(self, stop_at_min: int | None = None) -> None:
        self.log: list[object] = []
        self.stop_at_min = stop_at_min

    def __call__(self, case: Any, run_dir: Path) -> Any:
        if run_dir.parent.name.startswith("min-"):
            k = int(run_dir.name)
            self.log.append(("min", k))
            if k == self.stop_at_min:
                # A real boot lasts seconds: the campaign's handler (main thread) has seen
                # the signal before it ends.  Here: wait until it has.
                stop = signal.getsignal(signal.SIGTERM).__self__  # type: ignore[union-attr]
                os.kill(os.getpid(), signal.SIGTERM)
                deadline = time.monotonic() + 20
                while stop.signum is None and time.monotonic() < deadline:
                    time.sleep(0.01)
        else:
            self.log.append(int(run_dir.name if run_dir.name != "again"
                                else run_dir.parent.name))
        failing = case.arch is Arch.RISCV64 and case.memory > THRESHOLD
        return _result(("cmdline",) if failing else ())


def _min_lines(out: Path) -> list[dict[str, Any]]:
    path = out / "dt-campaign" / "minimized.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_finding_is_minimized_before_the_next_case_starts(tmp_path: Path) -> None:
    """Case 2 (riscv64, 3 GiB, three holes, a bootargs token) fails: before case 3 boots,
    the minimizer shrinks it to one MiB above the threshold with no holes and the bare
    harness line; the reproducer holds the smaller case, its log line the case found."""
    boot = _Minimizable()
    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=4, jobs=1, boot=boot)
    found = summary.outcomes[2]
    assert found.status == "fail" and found.case.mem_holes and found.case.memory > 2 * GiB
    mins = [i for i, x in enumerate(boot.log) if isinstance(x, tuple)]
    assert mins and boot.log[:4] == [0, 1, 2, 2] and boot.log[-1] == 3
    assert mins == list(range(4, len(boot.log) - 1))  # all of them before case 3
    rep = load_reproducer(summary.reproducers[found.signature])
    assert THRESHOLD < rep.case.memory <= THRESHOLD + MiB and rep.case.memory % MiB == 0
    assert rep.case.mem_holes == () and rep.case.cmdline == harness_cmdline(Arch.RISCV64)
    assert rep.expect == Expectation(Verdict.FAIL, ("cmdline",))
    assert "minimized" in (rep.description or "")
    (line,) = _min_lines(tmp_path)
    assert line["signature"] == found.signature and line["complete"] is True
    assert line["boots"] == len(mins)
    assert "minimized in" in (tmp_path / "dt-campaign" / "summary.md").read_text()
    logged = load_replay_source(f"{tmp_path}/dt-campaign/cases.jsonl:2")
    assert logged.case == found.case  # the log keeps the case as it was found


def test_a_stopped_minimization_is_not_on_record_and_a_resume_finishes_it(
        tmp_path: Path) -> None:
    boot = _Minimizable(stop_at_min=2)
    first = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                        max_cases=4, jobs=1, boot=boot)
    assert first.stop_signal == signal.SIGTERM
    assert boot.log[-1] == ("min", 2) and 3 not in boot.log
    assert _min_lines(tmp_path) == []  # cut short: not done
    (path,) = first.reproducers.values()
    assert load_reproducer(path).case == first.outcomes[2].case  # untouched

    boot = _Minimizable()
    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=4, jobs=1, boot=boot, resume=True)
    # The resumed minimization's boots go beside the stopped one's, not over them.
    assert summary.stop_signal is None and boot.log[0] == ("min", 3) and boot.log[-1] == 3
    runs = tmp_path / "dt-campaign" / "runs" / "min-000002"
    assert {"000", "001", "002", "003"} <= {p.name for p in runs.iterdir()}
    assert THRESHOLD < load_reproducer(path).case.memory <= THRESHOLD + MiB
    assert [line["complete"] for line in _min_lines(tmp_path)] == [True]

    boot = _Minimizable()
    dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                max_cases=5, jobs=1, boot=boot, resume=True)
    assert boot.log == [4, 4]  # done is done: only the new case (a riscv64 failure) boots


def _comparable(records: list[Any]) -> list[tuple[object, ...]]:
    """What a case's log line says of it, where it ran and how long aside."""
    return [(r.index, r.status, r.signature, r.title, r.verdict, r.failing, r.reproducer.case,
             r.reproducer.expect) for r in records]


def test_shards_merged_are_the_single_run(tmp_path: Path) -> None:
    """Shards 0/2 and 1/2 of seed 3 (with --overrides, findings minimized), merged, are
    the single run of the same seed and case count: the same cases, the same findings
    with the same minimized reproducers, the same summary counts."""
    def run(out: Path, shard: tuple[int, int]) -> dt_campaign.DtCampaignSummary:
        return dt_campaign.run_dt_campaign(list(KERNELS), seconds=120, seed=3, out=out,
                                           overrides=True, max_cases=10, jobs=2,
                                           boot=_Minimizable(), minimize_boots=8,
                                           shard=shard)

    single = run(tmp_path / "single", (0, 1))
    assert len(single.reproducers) >= 2  # several signatures: the test can tell them apart
    parts = [run(tmp_path / f"s{i}", (i, 2)) for i in (0, 1)]
    assert [o.number for o in parts[0].outcomes] == [0, 2, 4, 6, 8]
    merged = dt_merge.merge_dt_campaigns([tmp_path / "s1", tmp_path / "s0"], tmp_path / "m")
    assert merged.merged == ("0/2", "1/2") and merged.missing_shards == ()

    def cases(out: Path) -> list[tuple[object, ...]]:  # a log is in the order cases ended
        return sorted(_comparable(read_cases(out / "dt-campaign" / "cases.jsonl")),
                      key=lambda c: str(c[0]).zfill(9))

    assert cases(tmp_path / "m") == cases(tmp_path / "single")
    assert merged.reproducers.keys() == single.reproducers.keys()
    for sig, path in single.reproducers.items():
        mine, theirs = load_reproducer(path), load_reproducer(merged.reproducers[sig])
        assert (mine.case, mine.expect) == (theirs.case, theirs.expect), sig
        assert merged.reproducers[sig].parent == tmp_path / "m" / "reproducers"
    assert _min_lines(tmp_path / "m") == sorted(_min_lines(tmp_path / "single"),
                                                key=lambda d: d["signature"])
    counts = "10 cases: " + ", ".join(f"{single.count(x)} {x}" for x in dt_campaign.STATUSES)
    assert counts in (tmp_path / "m" / "dt-campaign" / "summary.md").read_text()
    root = ET.parse(tmp_path / "m" / "dt-campaign" / "junit.xml").getroot()
    assert root.get("failures") == str(len(single.reproducers))


def test_merge_refuses_what_is_not_one_campaign_and_names_a_missing_shard(
        tmp_path: Path) -> None:
    def run(out: Path, seed: int, shard: tuple[int, int]) -> None:
        dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=seed, out=tmp_path / out,
                                    max_cases=4, boot=_Minimizable(), shard=shard)

    run(Path("a0"), 3, (0, 2))
    run(Path("a1"), 3, (1, 2))
    run(Path("b1"), 4, (1, 2))
    run(Path("c0"), 3, (0, 2))
    with pytest.raises(CampaignError, match="not shards of one campaign"):
        dt_merge.merge_dt_campaigns([tmp_path / "a0", tmp_path / "b1"], tmp_path / "m")
    with pytest.raises(CampaignError, match="both shard 0/2"):
        dt_merge.merge_dt_campaigns([tmp_path / "a0", tmp_path / "c0"], tmp_path / "m")
    with pytest.raises(CampaignError, match="is one of the outputs"):
        dt_merge.merge_dt_campaigns([tmp_path / "a0", tmp_path / "a1"], tmp_path / "a1")
    with campaign_lock(tmp_path / "a1" / "dt-campaign"), pytest.raises(
            CampaignError, match="still running"):
        dt_merge.merge_dt_campaigns([tmp_path / "a0", tmp_path / "a1"], tmp_path / "m")
    # A kill left shard 0's reproducer unwritten: the merge takes the case from its line.
    (lost,) = (tmp_path / "a0" / "reproducers").iterdir()
    lost.unlink()
    alone = dt_merge.merge_dt_campaigns([tmp_path / "a0"], tmp_path / "m")
    assert alone.missing_shards == ("1/2",)
    assert "not given: 1/2" in (tmp_path / "m" / "dt-campaign" / "summary.md").read_text()
    (path,) = alone.reproducers.values()
    found = next(o for o in alone.outcomes if o.status == "fail")
    assert load_reproducer(path).case == found.case


def test_a_sharded_campaign_resumes_as_its_shard_only(tmp_path: Path) -> None:
    boot = _Minimizable()
    dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                max_cases=4, boot=boot, shard=(1, 2), minimize_boots=0)
    with pytest.raises(CampaignError, match="--shard"):
        dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                    max_cases=8, boot=boot, shard=(0, 2), resume=True)
    boot.log.clear()
    summary = dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                          max_cases=8, boot=boot, shard=(1, 2), resume=True,
                                          minimize_boots=0)
    assert [o.number for o in summary.outcomes] == [1, 3, 5, 7]
    assert {n for n in boot.log if isinstance(n, int)} == {5, 7}
    assert "shard 1/2" in (tmp_path / "dt-campaign" / "summary.md").read_text()


def test_merge_cli_takes_device_tree_shards_and_refuses_a_mix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bootfuzz.cli.exits import ExitStatus
    from bootfuzz.cli.main import main

    for i in (0, 1):
        dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path / f"s{i}",
                                    max_cases=4, boot=_Minimizable(), shard=(i, 2))
    code = main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out",
                 str(tmp_path / "m")])
    assert code == ExitStatus.FINDING and "4 cases" in capsys.readouterr().out
    (tmp_path / "x86" / "campaign").mkdir(parents=True)
    code = main(["merge", str(tmp_path / "s0"), str(tmp_path / "x86"), "--out",
                 str(tmp_path / "m2")])
    assert code == ExitStatus.USAGE and "some not" in capsys.readouterr().err


def test_a_progress_line_says_where_the_campaign_is(tmp_path: Path) -> None:
    """Not on a terminal: the first line at once, then one per interval, and the last
    one forced at the end with every case counted; a new failure and its minimization
    are said when they happen."""
    import io

    stream = io.StringIO()
    dt_campaign.run_dt_campaign(list(KERNELS), seconds=60, seed=3, out=tmp_path,
                                max_cases=4, jobs=1, boot=_Minimizable(), stream=stream)
    text = stream.getvalue()
    lines = [line for line in text.splitlines() if line.startswith("[")]
    assert 2 <= len(lines) < 8  # throttled: not one per case and minimization boot
    assert lines[-1].startswith("[00:") and " 4 cases (" in lines[-1]
    assert "1 finding signature(s), 1 failing, 0 flaky, 0 rejected, 0 infra, 0 running" in (
        lines[-1])
    sig = "riscv64:our-layout:cmdline|mismatch"
    assert f"\nnew failure: {sig} (case #2) -> {tmp_path}/reproducers/dt-000002.json\n" in text
    assert f"\nminimized {sig} in " in text  # the finding's minimization as it ends
