"""Finding the processes a command left behind: every process that carries a marker in
its environment (inherited by workers and by the QEMU they start, whatever re-parented
them), so a test on a shared machine sees only its own."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

MARK_VAR = "BOOTFUZZ_TEST_MARK"


def new_mark() -> dict[str, str]:
    """The environment for a command whose descendants are to be found later."""
    return {**os.environ, MARK_VAR: uuid.uuid4().hex}


def marked(env: dict[str, str]) -> list[tuple[int, str]]:
    """(pid, command line) of the live processes carrying *env*'s marker (zombies are
    dead: they hold nothing but a pid until their new parent reaps them)."""
    needle = f"{MARK_VAR}={env[MARK_VAR]}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if stat[stat.rfind(")") + 2] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def poll(until: Callable[[], bool], seconds: float, step: float = 0.1) -> bool:
    """Whether *until* became true within *seconds* (a bound on waiting, not a timing)."""
    deadline = time.monotonic() + seconds
    while not until():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def sigkill_leaves_nothing(proc: subprocess.Popen[bytes], env: dict[str, str],
                           seconds: float = 15.0) -> bool:
    """SIGKILL *proc* and wait: whether, within *seconds*, no process carrying *env*'s
    marker has bootfuzz or qemu in its command line."""
    proc.kill()
    proc.wait()
    return poll(lambda: not [cmd for _, cmd in marked(env)
                             if "bootfuzz" in cmd or "qemu" in cmd], seconds)


@contextlib.contextmanager
def reaped(env: dict[str, str]) -> Iterator[None]:
    """On the way out, SIGKILL whatever carries *env*'s marker: a failing test leaves
    nothing running on a shared machine."""
    try:
        yield
    finally:
        for pid, _ in marked(env):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
