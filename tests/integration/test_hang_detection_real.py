"""Hangs on real QEMU: a CPU halted with interrupts off is seen over QMP at once, one
that can still be woken or that spins is not, and a real kernel whose decompressor
halts is judged hung without waiting for the silence timeout.

The tiny guests are the firmware tests' long-mode set-up with a two-instruction
payload, run through the qemu-tcg backend's own argv pieces (its -qmp option and its
probe).  None of these tests times anything: each asserts how the session ended, and
every silence timeout a halt could hide behind is far longer than the test waits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.fuzz.reproducer import load_reproducer
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader import layout
from bootfuzz.run.backends.qemu_tcg import QEMU_BINARY, QemuTcgBackend, qmp_socket
from bootfuzz.run.boot import new_run_dir, run_case
from bootfuzz.run.console import run_console
from bootfuzz.run.exits import classify_exit
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript
from tests.integration.test_firmware import GDT_CODE64, gdt, handoff, identity_tables_1gib
from tests.payloads import PAYLOAD_ADDR, assemble

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which(QEMU_BINARY) is None, reason=f"{QEMU_BINARY} missing"),
]
DATA = Path(__file__).resolve().parent.parent / "data"


def run_tiny(harness: HarnessArtifacts, tmp: Path, body: str, silence: float) -> Transcript:
    """The long-mode payload *body* after our firmware, with QMP and the halt probe."""
    payload = assemble(tmp, f"    .code64\n    .globl _start\n_start:\n{body}\n")
    blobs = {layout.GDT_ADDR: gdt(GDT_CODE64), layout.HANDOFF_ADDR: handoff(HandoffMode.LONG_64),
             layout.PML4_ADDR: identity_tables_1gib(), PAYLOAD_ADDR: payload}
    backend = QemuTcgBackend()
    argv = [QEMU_BINARY, "-machine", "pc,accel=tcg", "-m", "64M", "-nodefaults",
            "-display", "none", "-serial", "stdio", "-no-reboot", "-bios", str(harness.firmware),
            "-qmp", f"unix:{qmp_socket(tmp)},server=on,wait=off"]
    for i, (addr, data) in enumerate(sorted(blobs.items())):
        path = tmp / f"blob{i}.bin"
        path.write_bytes(data)
        argv += ["-device", f"loader,file={path},addr={addr:#x},force-raw=on"]
    return run_console(argv, timeout=120, silence_timeout=silence,
                       probe=backend.halt_probe(tmp))


def test_cli_hlt_is_hung_at_once(harness: HarnessArtifacts, tmp_path: Path) -> None:
    t = run_tiny(harness, tmp_path, "cli\nhlt\njmp _start", silence=100)
    assert t.end is SessionEnd.HALTED, t.end_detail
    assert "halted with interrupts off at RIP 0x100002" in t.end_detail  # after cli; hlt
    assert classify_exit(t, QemuTcgBackend.exit_statuses) is GuestExit.HUNG
    assert not qmp_socket(tmp_path).exists()  # the probe removed its socket


@pytest.mark.parametrize(("body", "why"), [
    ("sti\nhlt\njmp _start", "halted with interrupts on: an interrupt can wake it"),
    ("jmp _start", "spinning with interrupts off: not halted"),
])
def test_a_cpu_that_is_not_halted_for_good_is_left_to_the_silence_timeout(
        harness: HarnessArtifacts, tmp_path: Path, body: str, why: str) -> None:
    t = run_tiny(harness, tmp_path, body, silence=4)
    assert t.end is SessionEnd.SILENCE, why
    assert classify_exit(t, QemuTcgBackend.exit_statuses) is GuestExit.KILLED


def test_a_kernel_whose_decompressor_halts_is_judged_hung_not_silent(tmp_path: Path) -> None:
    """The initrd written over the compressed kernel: the decompressor prints "Decoding
    failed", "-- System halted" and halts.  The silence timeout is 300 s: only the
    probe can have ended the session."""
    rep = load_reproducer(DATA / "hangs" / "decompressor-halt-initrd-over-payload-6.1-cloud.json")
    result = run_case(rep.case, new_run_dir(rep.case, tmp_path), silence_timeout=300.0)
    assert result.transcript.end is SessionEnd.HALTED, result.transcript.end_detail
    assert result.guest_exit is GuestExit.HUNG
    assert "Decoding failed" in result.transcript.text
    assert "-- System halted" in result.transcript.text
    boot = next(r for r in result.oracles if r.name == "boot")
    assert "guest exit: hung" in boot.observed
    assert rep.expect is not None
    assert sorted(r.name for r in result.oracles if r.verdict is Verdict.FAIL) == sorted(
        rep.expect.failing)


def test_a_healthy_boot_is_never_probed_into_a_hang(tmp_path: Path) -> None:
    """A passing boot has quiet stretches (the decompressor's, the unpack's) during
    which the probe asks: it must find the CPU running every time."""
    case = BootCase(kernel="debian-6.1-cloud", memory=256 << 20, initrd=InitrdSpec(1 << 20))
    result = run_case(case, new_run_dir(case, tmp_path))
    assert result.guest_exit is GuestExit.POWER_OFF, result.transcript.end_detail
    assert result.transcript.end is SessionEnd.AGENT_REPORT
