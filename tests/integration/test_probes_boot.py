"""The probe guests booted through our loader on each backend: every probe oracle passes.

A probe prints its entry registers, the boot information it was handed and
the bytes behind every pointer; check_probe compares all of it with the plan.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootfuzz.case import EntryProtocol
from bootfuzz.errors import BootfuzzError
from bootfuzz.guest.probes import PROBE_ENTRIES
from bootfuzz.judge.probe import ProbeReport
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.layout import GiB, MiB
from bootfuzz.run.backends import get_backend
from bootfuzz.run.probe import ProbeResult, run_probe
from bootfuzz.transcript import GuestExit

MEMORIES = [pytest.param(256 * MiB, id="256M"), pytest.param(5 * GiB, id="5G")]
ENTRIES = [pytest.param(e, id=e.value) for e in PROBE_ENTRIES]


def assert_all_pass(result: ProbeResult) -> None:
    failed = [f"{r.name}: expected {r.expected}, observed {r.observed} {r.detail}"
              for r in result.oracles if r.verdict is not Verdict.PASS]
    log = result.run_dir / "console.log"
    assert failed == [], f"log: {log}"
    assert isinstance(result.report, ProbeReport)
    assert result.guest_exit is GuestExit.POWER_OFF
    assert result.verdict is Verdict.PASS
    # The report was checked, not only found: every entry's probe has these checks.
    checked = {"probe-entry", "probe-cs", "probe-interrupts", "probe-memory-map",
               "probe-cmdline", "probe-ramdisk"}
    assert checked <= {r.name for r in result.oracles}
    assert len(result.oracles) >= 15


@pytest.mark.qemu
@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("entry", ENTRIES)
def test_probe_qemu_tcg_all_oracles_pass(entry: EntryProtocol, memory: int,
                                         tmp_path: Path) -> None:
    result = run_probe(entry, "qemu-tcg", memory, tmp_path)
    assert_all_pass(result)
    assert result.plan.initrd is not None  # the ramdisk fields were exercised


@pytest.mark.qemu
@pytest.mark.parametrize("entry", ENTRIES)
def test_probe_qemu_tcg_without_initrd_all_oracles_pass(entry: EntryProtocol,
                                                        tmp_path: Path) -> None:
    result = run_probe(entry, "qemu-tcg", 256 * MiB, tmp_path, initrd=None)
    assert_all_pass(result)
    assert isinstance(result.report, ProbeReport)
    assert (result.report.ramdisk_head, result.report.ramdisk_tail) == (b"", b"")


def _kvm_unusable() -> str | None:
    """Why the kvm backend cannot run here, or None."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    try:
        get_backend("kvm").check_available()
    except (BootfuzzError, ImportError) as e:
        return f"the kvm backend is not usable: {e}"
    return None


@pytest.mark.kvm
@pytest.mark.parametrize("memory", MEMORIES)
@pytest.mark.parametrize("entry", ENTRIES)
def test_probe_kvm_all_oracles_pass(entry: EntryProtocol, memory: int, tmp_path: Path) -> None:
    why = _kvm_unusable()
    if why is not None:
        pytest.skip(reason=why)
    assert_all_pass(run_probe(entry, "kvm", memory, tmp_path))
