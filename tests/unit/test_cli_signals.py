"""SIGTERM to ``bootfuzz boot`` is handled as Ctrl-C is (issue 13: it left the guest's
blobs behind, said nothing and wrote no verdict.json).

The boot runs as a real subprocess with a stand-in QEMU ($BOOTFUZZ_QEMU): a script
that records its pid, prints our firmware's line and waits, as a guest that is
still booting does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.guest.protocol import FIRMWARE_ENTERING_MESSAGE
from tests.fakes import fake_bzimage

ENTRY = "from bootfuzz.cli.main import entry; entry()"
STANDIN_QEMU = """#!/bin/sh
echo $$ > "{pidfile}"
printf '{entering}'
exec sleep 120
"""


def _as_from_a_terminal() -> None:
    # A background job of a non-interactive shell (CI started with `&`, nohup) starts
    # with SIGINT ignored, and an ignored signal stays ignored across exec: Python then
    # installs no KeyboardInterrupt handler, as it should.  The test is about Ctrl-C at
    # a terminal, so the boot starts with SIGINT at its default whoever runs the tests.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(("signum", "status", "said"), [
    (signal.SIGTERM, ExitStatus.TERMINATED, "bootfuzz: terminated (SIGTERM)"),
    (signal.SIGINT, ExitStatus.INTERRUPTED, "bootfuzz: interrupted"),
])
def test_boot_signal_stops_the_guest_removes_blobs_and_says_so(
    signum: signal.Signals, status: ExitStatus, said: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "qemu.pid"
    qemu = tmp_path / "qemu"
    qemu.write_text(STANDIN_QEMU.format(pidfile=pidfile, entering=FIRMWARE_ENTERING_MESSAGE
                                        .replace("\n", "\\n")))
    qemu.chmod(0o755)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage(init_size=0x3378000))
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "boot", "--kernel", str(kernel),
         "--initrd-compression", "none-initrd", "--run-dir", str(runs)],
        env={**os.environ, "BOOTFUZZ_QEMU": str(qemu)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_from_a_terminal,
    )
    try:
        deadline = time.monotonic() + 120  # a first run builds the harness
        while not (pidfile.exists() and pidfile.read_text().strip()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stand-in QEMU never started"
            time.sleep(0.05)
        guest = int(pidfile.read_text())
        (run_dir,) = runs.iterdir()
        assert list(run_dir.glob("*.bin"))  # the blobs the backend loads are there now
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pidfile.exists() and pidfile.read_text().strip():  # never leave the stand-in
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pidfile.read_text()), signal.SIGKILL)
    assert proc.returncode == status
    assert err.decode().strip() == said and out == b""
    assert not _alive(guest)  # the backend's whole process group is gone
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "command.json", "console.log", "verdict.json"]
    doc = json.loads((run_dir / "verdict.json").read_text())
    assert doc["verdict"] is None and doc["interrupted"] == signum.name
    assert doc["case"]["kernel"] == str(kernel)
