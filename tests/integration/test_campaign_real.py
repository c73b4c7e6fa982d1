"""Short real campaigns on debian-6.1-cloud: generated valid cases without failures; a
campaign killed with SIGKILL leaves nothing running and resumes without losing a finding."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bootfuzz.fuzz.campaign import CampaignOptions, run_campaign
from bootfuzz.fuzz.caselog import read_cases
from bootfuzz.loader.layout import GiB, MiB
from tests.integration.test_boot_properties import PRINTK_SAFE_CMDLINE
from tests.processes import marked, new_mark, poll, reaped, sigkill_leaves_nothing

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


def _fuzz(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "fuzz",
            "--kernel", "debian-6.1-cloud", "--jobs", "2", "--max-cases", "4",
            "--time", "20m", "--out", str(out), "--mem-min", "160M", "--mem-max", "1G",
            "--max-initrd", "2M", "--max-cmdline", str(PRINTK_SAFE_CMDLINE),
            "--minimize-boots", "0", "--timeout", "240", *extra]


def _qemus(env: dict[str, str]) -> list[str]:
    return [cmd for _, cmd in marked(env) if "qemu" in cmd.split(" ", 1)[0]]


def test_campaign_sigkilled_leaves_no_process_and_resume_loses_no_finding(
    tmp_path: Path,
) -> None:
    """A real campaign (two jobs, two QEMUs running) killed with SIGKILL: within seconds no
    process of it is left (none with bootfuzz or qemu in its command line, found by the
    marker its descendants inherit); --resume then finishes its four cases, each on
    record once, and every failure logged before the kill is still a finding."""
    env = new_mark()
    log = tmp_path / "campaign" / "cases.jsonl"
    proc = subprocess.Popen(_fuzz(tmp_path, "--seed", "2024"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with reaped(env):
        def one_logged_two_running() -> bool:
            assert proc.poll() is None, "the campaign ended before it was killed"
            return bool(log.exists() and log.read_bytes()) and len(_qemus(env)) == 2

        assert poll(one_logged_two_running, 600, step=0.2), marked(env)
        assert sigkill_leaves_nothing(proc, env), marked(env)
    before = read_cases(log)
    assert 1 <= len(before) < 4

    resumed = subprocess.run(_fuzz(tmp_path, "--resume"), env=env, capture_output=True,
                             text=True, timeout=1800)
    assert resumed.returncode in (0, 1), resumed.stderr
    records = read_cases(log)
    assert sorted(r.index for r in records) == [0, 1, 2, 3]  # each case once
    summary = json.loads((tmp_path / "campaign" / "summary.json").read_text())
    assert summary["cases"] == 4 and summary["counts"]["infra"] == 0, summary
    findings = {f["key"]: f for f in summary["findings"]}
    failing = {r.signature for r in records if r.status == "fail"}
    assert set(findings) == failing
    assert {r.signature for r in before if r.status == "fail"} <= set(findings)
    assert all(Path(f["file"]).is_file() for f in findings.values())
    assert not marked(env)


def test_campaign_on_hardware_kvm_boots_every_case_with_our_vmm(tmp_path: Path) -> None:
    """--backend kvm: the seed's cases booted by our VMM, two at a time, all passing."""
    from bootfuzz.run.doctor import kvm_status

    status = kvm_status()
    if not status.fast:
        pytest.skip(reason=f"a kvm campaign needs hardware KVM: {status.detail}")
    opts = CampaignOptions(
        kernels=("debian-6.1-cloud",), seconds=600, jobs=2, out=tmp_path, seed=2024,
        min_memory=160 * MiB, max_memory=1 * GiB, max_initrd=2 * MiB, max_cases=6,
        max_cmdline=PRINTK_SAFE_CMDLINE, timeout=240, backend="kvm",
    )
    summary = run_campaign(opts)
    records = read_cases(tmp_path / "campaign" / "cases.jsonl")
    assert sorted(r.index for r in records) == list(range(6))
    assert {r.reproducer.case.backend for r in records} == {"kvm"}
    assert summary.findings == () and summary.counts["pass"] == 6, summary.counts
