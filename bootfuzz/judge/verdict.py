"""The verdict model: one oracle's answer, and what a run's answers add up to.

Apart from the oracles themselves so that every judge (exact oracles, validity
rules, layout rules, probe checks) and every report speaks the same shapes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class OracleResult:
    """One oracle's answer, with the expected and observed values written out so a
    report can be read without the code."""

    name: str
    verdict: Verdict
    expected: str
    observed: str
    detail: str = ""
    #: False for an oracle a run stopped before (--until): reported, never counted.
    asked: bool = True


def judged(name: str, ok: bool, expected: str, observed: str, detail: str = "") -> OracleResult:
    """Pass if *ok*, else fail."""
    return OracleResult(name, Verdict.PASS if ok else Verdict.FAIL, expected, observed, detail)


def unknown(name: str, expected: str, why: str) -> OracleResult:
    """The oracle could not tell (the boot never got that far): *why* says so."""
    return OracleResult(name, Verdict.UNKNOWN, expected, "(not observed)", why)


def overall(results: Sequence[OracleResult]) -> Verdict:
    """Fail if any oracle failed; pass only if every oracle asked for passed."""
    results = [r for r in results if r.asked]
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.UNKNOWN in verdicts or not results:
        return Verdict.UNKNOWN
    return Verdict.PASS


def oracle_json(result: OracleResult) -> dict[str, str]:
    """One oracle's answer as the JSON reports of every command write it."""
    return {
        "name": result.name,
        "verdict": result.verdict.value,
        "expected": result.expected,
        "observed": result.observed,
        "detail": result.detail,
    }
