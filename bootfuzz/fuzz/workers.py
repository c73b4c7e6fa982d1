"""The campaign's worker processes, and how they end with it whatever kills it.

A campaign boots each case in a pool worker, and each worker runs the backend
(QEMU, or our VMM) as its own child in its own session.  When the campaign is
killed with SIGKILL nothing of it runs any more, so the workers must notice by
themselves: each asks the kernel for a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``) and, on SIGTERM, ends its own children's
process groups (the backend, an lzop encoder) before it exits.  A worker killed
outright still takes its backend along: the backend's console is a pty whose
master only the worker holds, and its closing hangs the backend up (SIGHUP).

Workers ignore SIGINT: a Ctrl-C reaches the whole foreground process group, and
the campaign, not each worker, decides what happens (it stops the workers with
SIGTERM, :func:`stop_workers`, and saves its state).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from types import FrameType

#: linux/prctl.h
PR_SET_PDEATHSIG = 1
#: How long a worker lets its children end after SIGTERM before it kills them.
CHILD_GRACE = 2.0
#: How long the campaign lets its workers end after SIGTERM before it kills them.
WORKER_GRACE = 5.0


def _set_parent_death_signal(sig: signal.Signals) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def children(pid: int) -> list[int]:
    """The live child processes of *pid* (from /proc: no bookkeeping to go stale)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _signal_child(pid: int, sig: signal.Signals) -> None:
    """Signal the process group *pid* leads (a backend is a session leader), or the
    process alone when it leads none (forked, not yet in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            os.kill(pid, sig)


def _reap(pid: int) -> bool:
    """Reap *pid* if it exited; whether it is gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done != 0


def end_children(grace: float = CHILD_GRACE) -> None:
    """SIGTERM every child's process group, SIGKILL what is left after *grace*."""
    pids = children(os.getpid())
    for pid in pids:
        _signal_child(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if not _reap(p)]
        time.sleep(0.02)
    for pid in pids:
        _signal_child(pid, signal.SIGKILL)
        _reap(pid)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    end_children()
    os._exit(128 + signum)


def init_worker(parent: int) -> None:
    """Pool initializer: die with the campaign, leave Ctrl-C to it, end children on exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the campaign died before the line above
        os._exit(128 + signal.SIGTERM)


def worker_pool(jobs: int) -> Executor:
    """A process pool whose workers end when the campaign does (see the module doc)."""
    return ProcessPoolExecutor(max_workers=jobs, initializer=init_worker,
                               initargs=(os.getpid(),))


def stop_workers(pool: Executor, grace: float = WORKER_GRACE) -> None:
    """End *pool* now: running boots are abandoned (their cases stay undone).

    Each worker gets SIGTERM (it ends its backend and exits), then SIGKILL after
    *grace*; the pool is then shut down without waiting for work.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
    pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["children", "end_children", "init_worker", "stop_workers", "worker_pool"]
