"""The device-tree campaign's loop with a stand-in boot: deterministic draws, a failure
booted twice, flaky when the second boot differs, one reproducer per signature."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bootfuzz.arch import Arch
from bootfuzz.fuzz import dt_campaign
from bootfuzz.fuzz.reproducer import load_reproducer
from bootfuzz.judge.dt_rules import check_dt_layout
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.dt_image import parse_dt_image
from bootfuzz.loader.dt_plan import plan_dt_boot
from tests.dt_fakes import FakeInitrd, fake_image

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


def _result(failing: tuple[str, ...]) -> Any:
    oracles = tuple(OracleResult(name, Verdict.FAIL if name in failing else Verdict.PASS,
                                 "e", "o") for name in ("boot", "cmdline", "dt-memory"))
    return SimpleNamespace(oracles=oracles, verdict=Verdict.FAIL if failing else Verdict.PASS)


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
                                          max_cases=9, jobs=2, boot=boot)
    assert summary.count("pass") == 3 and summary.count("fail") == 3
    assert summary.count("flaky") == 3
    assert all(boots[n] == (1 if n % 3 == 0 else 2) for n in range(9))
    sigs = {o.signature for o in summary.outcomes if o.status == "fail"}
    assert len(summary.reproducers) == len(sigs) >= 1
    rep = load_reproducer(next(iter(summary.reproducers.values())))
    assert rep.expect is not None and rep.expect.failing == ("cmdline",)
    assert rep.case.arch.device_tree
    lines = (tmp_path / "dt-campaign" / "cases.jsonl").read_text().splitlines()
    assert len(lines) == 9 and json.loads(lines[0])["case"]["arch"] in ("aarch64", "riscv64")
    assert "9 cases: 3 pass, 3 fail, 3 flaky, 0 error" in (
        tmp_path / "dt-campaign" / "summary.md").read_text()


def test_x86_kernels_are_refused(tmp_path: Path) -> None:
    from bootfuzz.errors import ConfigError

    with pytest.raises(ConfigError, match="arm64/riscv64 kernels only"):
        dt_campaign.run_dt_campaign(["debian-6.1-cloud"], seconds=1, seed=0, out=tmp_path)
    assert dataclasses.is_dataclass(dt_campaign.DtCaseOutcome)
