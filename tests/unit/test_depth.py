"""Campaign depth: a shallow boot is promoted to a full one when it is interesting (any
answer but a pass, or a verdict vector not seen yet), and a case judged at a shallow
depth says so in its record (its reproducer's ``until``), so a replay judges it the same
way.  The boots are fakes that record how they were asked to run."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.cli import fuzz as cli_fuzz
from bootfuzz.fuzz.campaign import (
    BootSettings,
    CampaignOptions,
    CaseOutcome,
    Runtime,
    boot_one,
    run_campaign,
)
from bootfuzz.fuzz.caselog import CaseRecord
from bootfuzz.fuzz.depth import Depth, boot_at_depth, forget_seen, verdict_vector
from bootfuzz.fuzz.floors import no_floors
from bootfuzz.fuzz.reproducer import Expectation, Reproducer
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.oracles import STOP_POINTS, StopPoint
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeResult, FakeTranscript
from tests.unit.test_campaign import fake_kernels

T = TypeVar("T")

EARLY = ("e820", "cmdline", "initrd-placement")
FULL = (*EARLY, "boot", "initrd-unpacked", "payload-digest")


@dataclass
class DepthFake:
    """Answers every oracle of the depth asked with *answer* (the others unknown, not
    asked), *extra* oracles only at an early stop; records (memory, until) per boot."""

    answer: dict[int, Verdict] = field(default_factory=dict)  # by memory; default PASS
    extra: dict[int, str] = field(default_factory=dict)  # by memory: one more early oracle
    boots: list[tuple[int, StopPoint | None]] = field(default_factory=list)

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: object, until: StopPoint | None = None) -> FakeResult:
        self.boots.append((case.memory, until))
        assert run_dir.is_dir()
        (run_dir / "console.log").write_text(f"boot {len(self.boots)}\n")
        verdict = self.answer.get(case.memory, Verdict.PASS)
        if until is None:
            oracles = tuple(OracleResult(n, verdict, "e", "o") for n in FULL)
        else:
            names = EARLY + ((self.extra[case.memory],) if case.memory in self.extra else ())
            oracles = (*(OracleResult(n, verdict, "e", "o") for n in names),
                       OracleResult("boot", Verdict.UNKNOWN, "e", "(not observed)", asked=False))
        exit_ = GuestExit.KILLED if until is not None else GuestExit.POWER_OFF
        return FakeResult(verdict, oracles, parse_transcript(""), exit_, FakeTranscript(""),
                          {"plan": 0.001}, until)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    forget_seen()
    yield
    forget_seen()


def case(memory: int) -> BootCase:
    return BootCase(kernel="k", memory=memory, initrd=InitrdSpec(1 << 20))


def at_depth(boot: DepthFake, memory: int, tmp_path: Path,
             until: StopPoint | None = StopPoint.RAMDISK) -> FakeResult:
    run_dir = tmp_path / f"run-{len(boot.boots)}"
    run_dir.mkdir()
    result, _ = boot_at_depth(boot, case(memory), run_dir, timeout=1, silence_timeout=1,
                              until=until)
    assert isinstance(result, FakeResult)
    return result


def test_depths_stop_where_their_oracles_answer() -> None:
    assert [d.stop for d in Depth] == [StopPoint.RAMDISK, StopPoint.UNPACK, None]
    assert STOP_POINTS[StopPoint.UNPACK][1] == STOP_POINTS[StopPoint.RAMDISK][1] | {
        "initrd-unpacked"}


def test_the_first_pass_of_a_kind_is_promoted_the_next_ones_are_not(tmp_path: Path) -> None:
    boot = DepthFake()
    first = at_depth(boot, 256 << 20, tmp_path)
    assert boot.boots == [(256 << 20, StopPoint.RAMDISK), (256 << 20, None)]
    assert first.until is None and first.verdict is Verdict.PASS  # judged by its full boot
    second = at_depth(boot, 512 << 20, tmp_path)
    assert boot.boots[2:] == [(512 << 20, StopPoint.RAMDISK)]
    assert second.until is StopPoint.RAMDISK


def test_a_new_verdict_vector_is_promoted(tmp_path: Path) -> None:
    boot = DepthFake(extra={512 << 20: "e820-user"})
    at_depth(boot, 256 << 20, tmp_path)
    at_depth(boot, 512 << 20, tmp_path)  # e820-user asked too: another kind of case
    assert [u for _, u in boot.boots] == [StopPoint.RAMDISK, None, StopPoint.RAMDISK, None]


@pytest.mark.parametrize("answer", [Verdict.FAIL, Verdict.UNKNOWN])
def test_anything_but_a_pass_is_promoted_every_time(tmp_path: Path, answer: Verdict) -> None:
    boot = DepthFake(answer={256 << 20: answer})
    for _ in range(2):
        result = at_depth(boot, 256 << 20, tmp_path)
        assert result.until is None
    assert [u for _, u in boot.boots] == [StopPoint.RAMDISK, None] * 2


def test_a_kind_the_campaign_has_seen_is_not_promoted_and_a_new_one_is_named(
        tmp_path: Path) -> None:
    """What a worker does with the campaign's kinds: a pass of a kind another worker
    promoted stays shallow; a pass of a new kind comes back named, a failure does not
    (it is promoted every time anyway)."""
    boot = DepthFake(answer={512 << 20: Verdict.FAIL})
    (tmp_path / "a").mkdir()
    result, kind = boot_at_depth(boot, case(256 << 20), tmp_path / "a", timeout=1,
                                 silence_timeout=1, until=StopPoint.RAMDISK)
    assert result.until is None and kind == tuple((n, "pass") for n in sorted(EARLY))
    forget_seen()  # another worker process: it has not seen the kind itself
    (tmp_path / "b").mkdir()
    result, again = boot_at_depth(boot, case(256 << 20), tmp_path / "b", timeout=1,
                                  silence_timeout=1, until=StopPoint.RAMDISK, seen={kind})
    assert result.until is StopPoint.RAMDISK and again is None
    (tmp_path / "c").mkdir()
    result, failed = boot_at_depth(boot, case(512 << 20), tmp_path / "c", timeout=1,
                                   silence_timeout=1, until=StopPoint.RAMDISK, seen={kind})
    assert result.until is None and failed is None
    assert [u for _, u in boot.boots] == [StopPoint.RAMDISK, None, StopPoint.RAMDISK,
                                          StopPoint.RAMDISK, None]


class WorkerPerCall(Executor):
    """Each call in this process but as a fresh worker would run it (it has seen no
    kind itself): what a campaign with as many workers as cases does."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        forget_seen()
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_a_campaign_promotes_each_kind_once_whatever_worker_boots_it(tmp_path: Path) -> None:
    boot = DepthFake()  # every case passes, every one the same kind
    opts = CampaignOptions(kernels=("debian-6.1-cloud",), seconds=3600, out=tmp_path, seed=7,
                           max_cases=6, max_boots=0, depth=Depth.EARLY)
    summary = run_campaign(opts, io.StringIO(), Runtime(
        boot=boot, kernels=fake_kernels, executor=WorkerPerCall, floors=no_floors))
    assert summary.counts["pass"] == 6
    assert [u for _, u in boot.boots] == [StopPoint.RAMDISK, None] + [StopPoint.RAMDISK] * 5


def test_a_promoted_case_keeps_only_its_full_boots_files(tmp_path: Path) -> None:
    boot = DepthFake()
    at_depth(boot, 256 << 20, tmp_path)
    assert (tmp_path / "run-0" / "console.log").read_text() == "boot 2\n"


def test_full_depth_boots_once_and_asks_no_stop(tmp_path: Path) -> None:
    boot = DepthFake()
    result = at_depth(boot, 256 << 20, tmp_path, until=None)
    assert boot.boots == [(256 << 20, None)] and result.until is None


def test_verdict_vector_is_the_asked_oracles_and_answers() -> None:
    r = FakeResult(Verdict.PASS, (OracleResult("e820", Verdict.PASS, "e", "o"),
                                  OracleResult("boot", Verdict.UNKNOWN, "e", "o", asked=False)),
                   parse_transcript(""), GuestExit.KILLED, FakeTranscript(""), {}, None)
    assert verdict_vector(r) == (("e820", "pass"),)


def test_a_shallow_pass_goes_on_record_with_its_stop_point(tmp_path: Path) -> None:
    """boot_one's outcome carries the depth its verdict came from; the case log's
    reproducer of it replays to that depth (and a promoted case's to the end)."""
    boot = DepthFake()
    settings = BootSettings(tmp_path / "runs", 1.0, 1.0, boot, StopPoint.RAMDISK)
    promoted = boot_one(0, case(256 << 20), settings)
    shallow = boot_one(1, case(512 << 20), settings)
    assert (promoted.status, promoted.until) == ("pass", None)
    assert (shallow.status, shallow.until) == ("pass", StopPoint.RAMDISK)
    assert [u for _, u in boot.boots] == [StopPoint.RAMDISK, None, StopPoint.RAMDISK]
    for outcome in (promoted, shallow):
        assert isinstance(outcome, CaseOutcome)
        rep = Reproducer(case=outcome.case, kernel_sha256=None,
                         expect=Expectation(Verdict.PASS, ()), until=outcome.until)
        record = CaseRecord(outcome.index, outcome.status, rep, Verdict.PASS)
        back = CaseRecord.from_json(record.to_json(), "test")
        assert back.reproducer.until is outcome.until


def test_cli_takes_depth(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli_fuzz.add_arguments(parser)
    base = ["--kernel", "debian-6.1-cloud", "--seed", "1", "--out", str(tmp_path)]
    assert cli_fuzz.options_from_args(parser.parse_args(base)).depth is Depth.FULL
    opts = cli_fuzz.options_from_args(parser.parse_args([*base, "--depth", "early"]))
    assert opts.depth is Depth.EARLY and opts.depth.stop is StopPoint.RAMDISK
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--depth", "deep"])
