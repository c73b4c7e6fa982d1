"""Layouts a faulty loader makes, replayed through overrides on a real kernel under
QEMU-TCG: the case runs (nothing refuses it), and the validity rule that names the
mistake fails (docs/platform-rules.md).  One boot per class of mistake."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from bootfuzz.case import BootCase, InitrdSpec, Overrides
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.loader.layout import CMDLINE_ADDR, FOUR_GIB, MiB
from bootfuzz.run.boot import run_case
from bootfuzz.transcript import GuestExit

pytestmark = pytest.mark.qemu

KERNEL = "debian-6.1-cloud"
MEMORY = 256 * MiB  # RAM below the gap ends at 0x10000000


class Mistake(NamedTuple):
    overrides: Overrides
    oracle: str
    observed: str  # words the oracle's observation must contain
    kernel_ran: bool  # the kernel printed its banner (else it died in the decompressor)


MISTAKES = {
    # The initrd in the 32-bit MMIO gap: its bytes are not stored; the kernel finds
    # the RAMDISK outside mapped memory, copies 0xff bytes down, and has no /init.
    "initrd-where-no-ram-is": Mistake(
        Overrides(initrd_addr=0xC0000000), "valid-initrd-in-ram",
        "reaches the 32-bit MMIO gap", kernel_ran=True),
    # ramdisk_size says half a MiB of a larger initrd: the unpacker reads a cut archive.
    "size-field-contradicts-the-initrd": Mistake(
        Overrides(fields=(("ramdisk_size", 0x80000),)), "valid-initrd-fields",
        "0x80000 bytes from ramdisk_image", kernel_ran=True),
    # ext_ramdisk_image = 1: the kernel looks for the initrd 4 GiB above where it is.
    "initrd-pointer-high-half-set": Mistake(
        Overrides(fields=(("ext_ramdisk_image", 1),)), "valid-initrd-fields",
        "ext_ramdisk_image 0x1", kernel_ran=True),
    # ext_cmd_line_ptr = 1: the decompressor reads the command line past our 4 GiB
    # identity map and faults before it has an IDT: the guest resets.
    "cmdline-pointer-high-half-set": Mistake(
        Overrides(fields=(("ext_cmd_line_ptr", 1),)), "valid-cmdline-pointer",
        f"the kernel reads its command line at {FOUR_GIB + CMDLINE_ADDR:#x}", kernel_ran=False),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_override_layout_runs_and_its_rule_fails(name: str, tmp_path: Path) -> None:
    mistake = MISTAKES[name]
    case = BootCase(kernel=KERNEL, memory=MEMORY, initrd=InitrdSpec(1 * MiB, seed=1),
                    overrides=mistake.overrides)
    result = run_case(case, tmp_path, timeout=180)  # planned and run: nothing refused it
    log = tmp_path / "console.log"
    assert result.observation.firmware_entered, f"the guest never started; log {log}"
    assert (result.observation.linux_version_count > 0) is mistake.kernel_ran, log
    if not mistake.kernel_ran:
        assert result.guest_exit is GuestExit.RESET, (result.guest_exit, log)
    oracles: dict[str, OracleResult] = {r.name: r for r in result.oracles}
    named = oracles[mistake.oracle]
    assert named.verdict is Verdict.FAIL, named
    assert mistake.observed in named.observed, named.observed
    assert result.verdict is Verdict.FAIL
