"""Every reproducer under corpus/regressions/ is a regression test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bootfuzz.case import DtOverrides, Overrides
from bootfuzz.fuzz.replay import replay
from bootfuzz.fuzz.reproducer import load_reproducer
from bootfuzz.judge.verdict import Verdict

pytestmark = pytest.mark.qemu
CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "regressions"
FILES = sorted(CORPUS.glob("*.json"))


def test_corpus_is_not_empty() -> None:
    assert FILES, f"no reproducers in {CORPUS}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_reproducer_still_shows_its_bug(path: Path, tmp_path: Path) -> None:
    """Replaying gives the recorded verdict and exactly the recorded failing oracles."""
    rep = load_reproducer(path)
    assert rep.expect is not None, f"{path.name} states no expectation"
    outcome = replay(rep, tmp_path, timeout=120)
    assert outcome.expectation_met, f"{outcome.mismatch}; log {tmp_path / 'console.log'}"


def _overridden(path: Path) -> bool:
    case = load_reproducer(path).case
    return not (case.overrides.empty and case.dt.empty)


@pytest.mark.parametrize("path", [p for p in FILES if _overridden(p)], ids=lambda p: p.stem)
def test_same_case_with_the_loaders_own_layout_passes(path: Path, tmp_path: Path) -> None:
    """The bug is the override: our loader's layout of the same case passes every oracle."""
    rep = load_reproducer(path)
    fixed = dataclasses.replace(rep, case=dataclasses.replace(
        rep.case, overrides=Overrides(), dt=DtOverrides()), expect=None)
    outcome = replay(fixed, tmp_path, timeout=120)
    failing = [r.name for r in outcome.result.oracles if r.verdict is not Verdict.PASS]
    assert outcome.result.verdict is Verdict.PASS, failing
