"""A short real campaign: generated valid cases on debian-6.1-cloud, no failures."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bootfuzz.fuzz.campaign import CampaignOptions, run_campaign
from bootfuzz.loader.layout import GiB, MiB
from tests.integration.test_boot_properties import PRINTK_SAFE_CMDLINE

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def test_campaign_one_minute_on_cloud_kernel_finishes_without_failures(tmp_path: Path) -> None:
    """One minute, one job: a summary in three formats, every case passing."""
    opts = CampaignOptions(
        kernels=("debian-6.1-cloud",), seconds=60, jobs=1, out=tmp_path, seed=2024,
        min_memory=160 * MiB, max_memory=1 * GiB, max_initrd=2 * MiB,
        max_cmdline=PRINTK_SAFE_CMDLINE, timeout=240,
    )
    summary = run_campaign(opts)
    work = tmp_path / "campaign"
    doc = json.loads((work / "summary.json").read_text())
    assert doc["cases"] == summary.cases >= 1
    assert ET.parse(work / "junit.xml").getroot().get("failures") == "0"
    assert "No failures." in (work / "summary.md").read_text()
    assert summary.findings == () and summary.counts["pass"] == summary.cases, doc
    state = json.loads((work / "state.json").read_text())
    assert state["next_index"] == summary.cases  # every case done, in order
