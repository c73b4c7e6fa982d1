"""Our VMM on /dev/kvm, entered through PVH, up to the kernel's RAMDISK line.

This runs on any usable /dev/kvm, the emulating nested KVM of this machine kind
included (about 1 M guest instructions per second: PVH reaches RAMDISK in under a
minute there, a full boot would not finish).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.abi.e820 import E820Type
from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec
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
    if memory > 4 * GiB:
        high = [(ln.start, ln.end) for ln in result.observation.bios_e820
                if ln.type == E820Type.RAM and ln.start >= FOUR_GIB]
        assert high == [(FOUR_GIB, FOUR_GIB + 2 * GiB - 1)]
