"""The kernel-clean oracle: a boot that reached our agent printed no BUG, oops or WARNING.

Recorded consoles: a real boot whose SETUP_INDIRECT node made the kernel warn twice and
still run our agent (tests/data/logs/crashes/README.md says how it was made), and a
clean real boot of the same kernel."""

from __future__ import annotations

from pathlib import Path

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.fuzz.triage import crash_title
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.oracles import NO_KERNEL_REPORTS, ExactEvidence, check_kernel_clean, judge
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import MiB
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeInitrd, fake_bzimage

LOGS = Path(__file__).resolve().parent.parent / "data" / "logs"
WARNED = LOGS / "crashes" / "warning-early-ioremap-setup-indirect-6.1-cloud.txt"
CLEAN = LOGS / "boot-6.1-cloud-real-agent-report.txt"
WARNING_LINE = "WARNING: CPU: 0 PID: 0 at mm/early_ioremap.c:141 __early_ioremap+0xb3/0x167"

PLAN = plan_boot(BootCase(kernel="fake", memory=256 * MiB, initrd=InitrdSpec(1 * MiB)),
                 parse_kernel_image(fake_bzimage()), qemu_pc(256 * MiB), FakeInitrd(1 * MiB))


def evidence(console: str) -> ExactEvidence:
    return ExactEvidence(PLAN, parse_transcript(console), GuestExit.POWER_OFF, "powered off")


def text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "replace")


def test_a_warning_before_the_agent_fails_the_boot_with_its_line() -> None:
    result = check_kernel_clean(evidence(text(WARNED)))
    assert result is not None
    assert result.verdict is Verdict.FAIL
    assert result.expected == NO_KERNEL_REPORTS
    assert result.observed == f"{WARNING_LINE} (and 1 more)"


def test_the_warned_boot_fails_only_on_this_oracle_among_boot_and_kernel_clean() -> None:
    # The agent reported and the guest powered off: the boot oracle passes; the
    # warning is what tells this boot from a clean one (and triage titles it).
    results = {r.name: r.verdict for r in judge(evidence(text(WARNED)))}
    assert results["boot"] is Verdict.PASS
    assert results["kernel-clean"] is Verdict.FAIL
    assert crash_title(text(WARNED)) == "WARNING: at mm/early_ioremap.c:141 __early_ioremap"


def test_a_clean_real_boot_passes() -> None:
    result = check_kernel_clean(evidence(text(CLEAN)))
    assert result is not None
    assert (result.verdict, result.observed) == (Verdict.PASS, NO_KERNEL_REPORTS)


def test_an_oops_in_a_boot_that_still_reached_the_agent_fails() -> None:
    oops = "[    0.512000] BUG: kernel NULL pointer dereference, address: 0000000000000008"
    lines = text(CLEAN).splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if "Run /init" in ln)
    result = check_kernel_clean(evidence("".join([*lines[:at], oops + "\n", *lines[at:]])))
    assert result is not None
    assert result.verdict is Verdict.FAIL
    assert result.observed == oops.split("] ", 1)[1]


def test_without_an_agent_report_the_boot_oracle_judges_alone() -> None:
    lines = [ln for ln in text(WARNED).splitlines(keepends=True)
             if not ln.startswith("BOOTFUZZ-AGENT")]
    assert check_kernel_clean(evidence("".join(lines))) is None
