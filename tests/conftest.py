"""Hypothesis settings profiles, chosen with HYPOTHESIS_PROFILE (default: ci).

ci: fast and derandomized, so a CI failure reproduces on the next run;
nightly: many more examples, random, for scheduled runs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None,
                          print_blob=True)
settings.register_profile("nightly", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
