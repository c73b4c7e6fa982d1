"""Process hygiene of a campaign with real worker processes and a stand-in for QEMU.

Each boot runs ``sleep`` through bootfuzz.run.console.run_console, as a backend runs
(in a pty, in its own session), and never returns; the campaign runs in a child
process.  SIGKILL of the campaign leaves none of its workers or "QEMUs" behind;
SIGTERM stops it with its state saved; a second campaign on the same --out refuses.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.processes import marked, new_mark, poll

CAMPAIGN = """
import pathlib, sys
from bootfuzz.fuzz.campaign import CampaignOptions, KernelFacts, Runtime, run_campaign
from bootfuzz.fuzz.floors import no_floors
from bootfuzz.fuzz.generate import DEBIAN_CLOUD_LIMITS
from bootfuzz.run.console import run_console

def kernels(names):
    return {n: KernelFacts(DEBIAN_CLOUD_LIMITS, "ab" * 32) for n in names}

class Boot:
    def __call__(self, case, run_dir, *, timeout, silence_timeout):
        run_console(["sleep", "3600"], timeout=3600, silence_timeout=3600)
        raise AssertionError("the stand-in QEMU ended by itself")

summary = run_campaign(
    CampaignOptions(kernels=("debian-6.1-cloud",), seconds=3600, jobs=2,
                    out=pathlib.Path(sys.argv[1]), seed=1, max_cases=4),
    runtime=Runtime(boot=Boot(), kernels=kernels, floors=no_floors))
sys.exit(128 + summary.stop_signal if summary.stop_signal else 0)
"""


Started = tuple[subprocess.Popen[str], dict[str, str]]


def _is_sleep(cmdline: str) -> bool:
    return cmdline.split(" ", 1)[0].endswith("/sleep")


@pytest.fixture
def start() -> Iterator[Callable[[Path], Started]]:
    """Starts a campaign and returns once both its workers run a stand-in QEMU; at the
    end, whatever the test asserted, ends every process it left (by pid)."""
    started: list[Started] = []

    def run(out: Path) -> Started:
        env = new_mark()
        proc = subprocess.Popen([sys.executable, "-c", CAMPAIGN, str(out)], env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append((proc, env))

        def two_sleeping() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the campaign ended: {proc.communicate()[0]}")
            return sum(_is_sleep(cmd) for _, cmd in marked(env)) == 2

        assert poll(two_sleeping, 60), marked(env)
        return proc, env

    yield run
    for proc, env in started:
        for pid, _ in marked(env):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_sigkill_leaves_no_worker_and_no_backend(tmp_path: Path,
                                                  start: Callable[[Path], Started]) -> None:
    proc, env = start(tmp_path)
    campaign_and_workers = [p for p, cmd in marked(env) if not _is_sleep(cmd)]
    assert len(campaign_and_workers) == 3  # the campaign and its two workers
    proc.kill()
    proc.wait()
    assert poll(lambda: not marked(env), 15), marked(env)


def test_sigterm_stops_cleanly_with_state_saved(tmp_path: Path,
                                                start: Callable[[Path], Started]) -> None:
    proc, env = start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "SIGTERM: stopping 2 running boot(s), saving the state" in output
    assert poll(lambda: not marked(env), 15), marked(env)
    state = json.loads((tmp_path / "campaign" / "state.json").read_text())
    assert state["next_index"] == 0 and state["cases_bytes"] == 0  # nothing finished
    summary = json.loads((tmp_path / "campaign" / "summary.json").read_text())
    assert summary["aborted"] == "stopped by SIGTERM; continue with --resume"


def test_second_campaign_on_the_same_out_refuses(tmp_path: Path,
                                                 start: Callable[[Path], Started]) -> None:
    proc, _ = start(tmp_path)
    second = subprocess.run(
        [sys.executable, "-c", "from bootfuzz.cli.main import entry; entry()", "fuzz",
         "--kernel", "debian-6.1-cloud", "--out", str(tmp_path), "--seed", "1", "--resume"],
        capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"another campaign (pid {proc.pid}) is running on this --out" in second.stderr
    assert second.stderr.strip().splitlines()[-1].startswith("bootfuzz: error: fuzz: ")
    assert "Traceback" not in second.stderr
