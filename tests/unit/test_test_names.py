"""No two test modules share a file name: tests/unit and tests/integration are not
packages, so pytest imports each module by its bare name and refuses the second one
of a name ("import file mismatch"), silently dropping its tests from a full run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert len(names) > 10
    assert [n for n, count in names.items() if count > 1] == []
