"""Hypothesis settings profiles, chosen with HYPOTHESIS_PROFILE (default: ci), and the
fixtures unit and integration tests share.

ci: fast and derandomized, so a CI failure reproduces on the next run;
nightly: many more examples, random, for scheduled runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fakes import FAKE_AGENT

settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None,
                          print_blob=True)
settings.register_profile("nightly", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def agent(tmp_path: Path) -> Path:
    """A stand-in agent binary in a file, as build_initrd takes it."""
    path = tmp_path / "agent"
    path.write_bytes(FAKE_AGENT)
    return path
