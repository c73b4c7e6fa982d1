"""tests/fuzz/run.py: the nightly atheris runner counts executions and coverage from libFuzzer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fuzz import run
from tests.fuzz._common import atheris


@pytest.mark.skipif(atheris is None, reason="atheris is not installed in this venv")
def test_fuzz_runner_runs_a_target_and_reports_libfuzzer_figures(tmp_path: Path) -> None:
    assert run.main([str(tmp_path), "--runs", "400", "--targets", "cpio", "--jobs", "1"]) == 0
    [result] = json.loads((tmp_path / "atheris-summary.json").read_text())
    assert result["target"] == "cpio" and result["ok"] and result["crashes"] == []
    assert result["executions"] >= 400
    assert result["coverage"] > 0 and result["corpus"] > 0
    assert "| cpio | " in (tmp_path / "atheris-summary.md").read_text()
    assert "Done 400 in" in (tmp_path / "atheris-cpio.log").read_text()


def test_fuzz_runner_refuses_an_unknown_target(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run.main([str(tmp_path), "--targets", "cpio,nope"])


def test_fuzz_runner_short_run_is_not_ok() -> None:
    short = run.TargetResult("cpio", 1000, 999, 1, 1, 1, 1, 1.0, (), 0)
    crashed = run.TargetResult("cpio", 10, 10, 1, 1, 1, 1, 1.0, ("atheris-cpio-crash-x",), 1)
    assert not short.ok and not crashed.ok
    assert run.TargetResult("cpio", 10, 10, 1, 1, 1, 1, 1.0, (), 0).ok
