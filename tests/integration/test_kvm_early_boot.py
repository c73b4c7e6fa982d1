"""Our VMM on /dev/kvm, entered through PVH and the 16-bit entry, up to the kernel's
RAMDISK line, with the default CPU template.

This runs on any usable /dev/kvm, the emulating nested KVM of this machine kind
included (about 1 M guest instructions per second: PVH reaches RAMDISK in under a
minute there, a full boot would not finish).  The 16-bit entry runs our firmware
as the BIOS in real mode, then the kernel's setup code and its decompressor: with
the LZ4-compressed cloud kernel that takes about 3 minutes there (an xz kernel's
decompressor would take far longer).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootfuzz.abi.e820 import E820Type
from bootfuzz.case import BootCase, CpuTemplate, EntryProtocol, InitrdSpec
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.layout import FOUR_GIB, GiB, MiB
from bootfuzz.run.boot import run_case

pytestmark = [pytest.mark.kvm, pytest.mark.usefixtures("any_kvm")]
EARLY = {"e820", "cmdline", "initrd-placement"}


@pytest.mark.parametrize("memory", [256 * MiB, 5 * GiB], ids=["256M", "5G"])
def test_kvm_pvh_until_ramdisk_early_oracles_pass(tmp_path: Path, memory: int) -> None:
    """Command line, BIOS-e820 and RAMDISK read through our VMM match the plan exactly."""
    case = BootCase(kernel="debian-6.1-amd64", memory=memory, backend="kvm",
                    entry=EntryProtocol.PVH, initrd=InitrdSpec(1 * MiB))
    result = run_case(case, tmp_path, until=StopPoint.RAMDISK, timeout=240,
                      silence_timeout=120)
    verdicts = {r.name: r.verdict for r in result.oracles if r.asked}
    assert all(verdicts[name] is Verdict.PASS for name in EARLY), verdicts
    assert result.verdict is Verdict.PASS, verdicts
    assert result.observation.command_line == case.cmdline
    assert case.cpu_template is CpuTemplate.BASELINE
    manifest = json.loads((tmp_path / "kvm-manifest.json").read_text())
    assert (manifest["cpu_template"], manifest["firmware"]) == ("baseline", None)
    if memory > 4 * GiB:
        high = [(ln.start, ln.end) for ln in result.observation.bios_e820
                if ln.type == E820Type.RAM and ln.start >= FOUR_GIB]
        assert high == [(FOUR_GIB, FOUR_GIB + 2 * GiB - 1)]


def test_kvm_real16_until_ramdisk_early_oracles_pass(tmp_path: Path) -> None:
    """The 16-bit entry on our VMM: the firmware from the reset vector in real mode, the
    kernel's setup code asking its BIOS for the memory map, then the decompressor; the
    BIOS-e820 lines the kernel prints are its own INT 15h probe of our firmware."""
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB, backend="kvm",
                    entry=EntryProtocol.REAL16, initrd=InitrdSpec(1 * MiB))
    result = run_case(case, tmp_path, until=StopPoint.RAMDISK, timeout=900,
                      silence_timeout=600)
    verdicts = {r.name: r.verdict for r in result.oracles if r.asked}
    assert all(verdicts[name] is Verdict.PASS for name in EARLY), verdicts
    assert result.verdict is Verdict.PASS, verdicts
    assert result.observation.firmware_entered
    assert result.observation.command_line == case.cmdline
    manifest = json.loads((tmp_path / "kvm-manifest.json").read_text())
    assert manifest["cpu_template"] == "baseline"
    assert manifest["firmware"] is not None
