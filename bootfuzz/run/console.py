"""Run a backend process, read the guest's serial console, and decide when the boot is over.

Backend-agnostic: the caller passes an argv (QEMU today, our own VMM later) and
gets back a :class:`Transcript`: every byte the guest printed plus *why* the
session ended.  A panicking or hanging guest is a normal outcome here, not an
exception; only failing to start the program raises (:class:`BackendError`).

Lines are matched against one table of :class:`ConsolePattern` (LAVA's
KERNEL_MESSAGES idea), specific patterns first; the kernel's messages in it are the
judge's (bootfuzz.judge.patterns), so the session stops on exactly what the
observation records.  The console is read with
``read_nonblocking`` rather than ``expect()`` because an ``expect()`` timeout
spans the whole call and so cannot tell "the guest went silent" from "no
pattern yet"; reading ourselves also makes every pattern see whole lines.

Each line's arrival time is kept (``Transcript.line_times``: how long each boot
phase took, and the gaps a healthy boot leaves, bootfuzz.run.silence).  A backend
that can tell a halted guest from a busy one gives a :class:`HaltProbe`: asked
while the console is quiet, it ends the session at once on a guest that can never
run again, instead of after the whole silence timeout.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import signal
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import pexpect

from bootfuzz.errors import BackendError, HarnessBug
from bootfuzz.judge.patterns import (
    AGENT_PREFIX,
    FIRMWARE_ENTERED,
    FIRMWARE_ERRORS,
    LINUX_VERSION,
    OOPS,
    PANIC,
    PANIC_END,
    KernelMessage,
    line_body,
)
from bootfuzz.transcript import SessionEnd, Transcript


class PatternKind(enum.Enum):
    AGENT_REPORT = "agent-report"
    KERNEL_PANIC = "kernel-panic"
    KERNEL_OOPS = "kernel-oops"
    FIRMWARE_ERROR = "firmware-error"
    LINUX_VERSION = "linux-version"
    FIRMWARE_ENTERED = "firmware-entered"
    EARLY_STOP = "early-stop"


@dataclass(frozen=True)
class ConsolePattern:
    """One console line the session reacts to.

    After a hit that ends the session, reading goes on until a line matches
    ``tail_end``, the process exits, or ``tail_time`` seconds pass, so the whole
    panic text or the guest's own power-off is captured.
    """

    kind: PatternKind
    #: Matched at the start of the line's message body (a kernel message, whatever
    #: its timestamp) if ``in_body``, else searched in the raw line; "\r" stripped.
    regex: re.Pattern[str]
    ends: SessionEnd | None  # None: only noted, the session goes on
    meaning: str
    nth: int = 1  # ends the session at this occurrence
    tail_end: KernelMessage | None = None
    tail_time: float = 0.0
    in_body: bool = False

    @classmethod
    def kernel(cls, kind: PatternKind, message: KernelMessage, ends: SessionEnd, *,
               nth: int = 1, tail_end: KernelMessage | None = None,
               tail_time: float = 0.0) -> ConsolePattern:
        """A pattern for one of the judge's kernel messages (bootfuzz.judge.patterns)."""
        return cls(kind, message.regex, ends, message.meaning, nth, tail_end, tail_time,
                   in_body=True)


CONSOLE_PATTERNS: tuple[ConsolePattern, ...] = (
    ConsolePattern(
        PatternKind.AGENT_REPORT,
        re.compile("^" + re.escape(AGENT_PREFIX)),
        SessionEnd.AGENT_REPORT,
        "the guest agent reported; it powers the guest off next",
        tail_time=5.0,
    ),
    ConsolePattern.kernel(PatternKind.KERNEL_PANIC, PANIC, SessionEnd.KERNEL_PANIC,
                          tail_end=PANIC_END, tail_time=5.0),
    # An oops in early boot usually ends in "Attempted to kill the idle task":
    # wait for that panic's end, or give up on more output after a while.
    ConsolePattern.kernel(PatternKind.KERNEL_OOPS, OOPS, SessionEnd.KERNEL_OOPS,
                          tail_end=PANIC_END, tail_time=10.0),
    ConsolePattern(
        PatternKind.FIRMWARE_ERROR,
        re.compile("^(?:" + "|".join(map(re.escape, FIRMWARE_ERRORS)) + ")"),
        SessionEnd.FIRMWARE_ERROR,
        "our firmware stub refused the hand-off block and halted",
    ),
    # A second kernel banner: the guest reset and booted again.
    ConsolePattern.kernel(PatternKind.LINUX_VERSION, LINUX_VERSION, SessionEnd.REBOOT, nth=2),
    ConsolePattern(
        PatternKind.FIRMWARE_ENTERED,
        re.compile("^" + re.escape(FIRMWARE_ENTERED)),
        None,
        "our firmware stub jumped to the kernel",
    ),
)

class HaltProbe(Protocol):
    """Asks the backend whether its guest has stopped for good (QEMU: over QMP)."""

    def halted(self) -> str | None:
        """Why the guest can never run again (e.g. halted with interrupts off), or None."""

    def close(self) -> None:
        """Release what the probe holds; called once, when the session is over."""


#: A quiet console is probed after this long, then at most this often (seconds).
PROBE_AFTER = 0.5
PROBE_EVERY = 0.5

_KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
#: The pty reports end-of-file a moment before the exiting process becomes a zombie.
_EXIT_AFTER_EOF = 1.0
_READ_SIZE = 65536
#: After a short read, wait this long before the next: a guest's serial port arrives a
#: few dozen bytes at a time, and each read costs ~0.3 ms of Python (pexpect's select,
#: waitpid and bookkeeping), a tenth of a campaign case's own CPU time here.  It delays
#: what the session sees by at most this, far below any timeout or phase it measures.
_COALESCE = 0.01
_DETAIL_MAX = 200
#: The guest's serial driver sends "\r\n" and the pty's ONLCR adds another "\r".
_CRLF = re.compile(r"\r+\n")


class _ReadEnd(enum.Enum):
    QUIET = "quiet"
    CLOSED = "closed"


@dataclass(frozen=True)
class ConsoleReply:
    """What to type once the console shows *prompt* (searched in the raw output since
    the previous reply): a loader driven through its own console, as a user would."""

    prompt: re.Pattern[bytes]
    send: bytes


@dataclass(frozen=True)
class Replies:
    """Replies typed in order, each once; *again* seen after the last one (the loader
    back at its prompt: what it was told to do failed) ends the session as EARLY_STOP."""

    replies: tuple[ConsoleReply, ...]
    again: re.Pattern[bytes] | None = None


class _Session:
    """The state of one running console: buffers, clocks, pattern counts."""

    def __init__(
        self,
        child: pexpect.spawn,
        patterns: Sequence[ConsolePattern],
        log: BinaryIO | None,
        start: float,
        deadline: float,
        silence_timeout: float,
        probe: HaltProbe | None = None,
        replies: Replies | None = None,
    ) -> None:
        self.child = child
        self.replies = deque(() if replies is None else replies.replies)
        self.again = None if replies is None else replies.again
        self.replied_at = 0  # raw[:replied_at] has been answered
        self.patterns = patterns
        self.log = log
        self.start = start
        self.deadline = deadline
        self.silence_timeout = silence_timeout
        self.probe = probe
        self.next_probe = start + PROBE_AFTER
        self.raw = bytearray()
        self.scanned = 0  # raw[:scanned] has been split into lines
        self.last_output = start
        self.first_output: float | None = None
        #: When each whole line arrived, in seconds since *start*.
        self.line_times: list[float] = []
        self.seen: Counter[PatternKind] = Counter()
        self.closed = False  # the process closed its side of the pty

    def run(self) -> tuple[SessionEnd, str | None]:
        """Read until a pattern, a timer or the process ends the session."""
        while True:
            for line in self._new_lines():
                hit = self._classify(line)
                if hit is not None and hit.ends is not None:
                    self._read_tail(hit)
                    return hit.ends, line.strip()[:_DETAIL_MAX]
            if self._answer():
                return SessionEnd.EARLY_STOP, "the loader came back to its prompt"
            now = time.monotonic()
            quiet_until = self.last_output + self.silence_timeout
            if now >= self.deadline:
                return SessionEnd.TIMEOUT, "no end of boot before the deadline"
            if now >= quiet_until:
                return SessionEnd.SILENCE, f"no output for {self.silence_timeout:g} s"
            if self.probe is not None and now >= self.next_probe:
                self.next_probe = now + PROBE_EVERY
                why = self.probe.halted()
                if why is not None:
                    return SessionEnd.HALTED, why
            wake = min(self.deadline, quiet_until)
            if self.probe is not None:
                wake = min(wake, self.next_probe)
            if self._read(wake - now) is _ReadEnd.CLOSED:
                return SessionEnd.EXITED, None

    def _answer(self) -> bool:
        """Type the replies whose prompts have shown; whether the loader, all replies
        typed, showed its prompt again."""
        while self.replies:
            m = self.replies[0].prompt.search(self.raw, self.replied_at)
            if m is None:
                return False
            reply = self.replies.popleft()
            with contextlib.suppress(OSError):  # the process went away: its end is read next
                self.child.send(reply.send)
            self.replied_at = m.end()
        return self.again is not None and self.again.search(self.raw, self.replied_at) is not None

    def _classify(self, line: str) -> ConsolePattern | None:
        """Count every pattern the line matches; return the first one that ends the session."""
        body = line_body(line)
        for pattern in self.patterns:
            if pattern.regex.match(body) if pattern.in_body else pattern.regex.search(line):
                self.seen[pattern.kind] += 1
                if pattern.ends is not None and self.seen[pattern.kind] >= pattern.nth:
                    return pattern
        return None

    def _read_tail(self, pattern: ConsolePattern) -> None:
        """Read the rest of a report, until its last line, the tail time, or a guest
        the probe finds halted (the early exception handler halts without a panic's
        end line)."""
        until = min(self.deadline, time.monotonic() + pattern.tail_time)
        while True:
            if pattern.tail_end is not None and any(
                pattern.tail_end.match(line) for line in self._new_lines()
            ):
                return
            now = time.monotonic()
            if self.probe is not None and now >= self.next_probe:
                self.next_probe = now + PROBE_EVERY
                if self.probe.halted() is not None:
                    return
            wake = until if self.probe is None else min(until, self.next_probe)
            if until - now <= 0 or self._read(wake - now) is _ReadEnd.CLOSED:
                return

    def _read(self, timeout: float) -> bytes | _ReadEnd:
        """The one place pexpect's TIMEOUT and EOF are translated."""
        try:
            chunk: bytes = self.child.read_nonblocking(_READ_SIZE, timeout=max(timeout, 0.0))
        except pexpect.TIMEOUT:
            return _ReadEnd.QUIET
        except pexpect.EOF:
            self.closed = True
            return _ReadEnd.CLOSED
        now = time.monotonic()
        if len(chunk) < _READ_SIZE:
            time.sleep(_COALESCE)
        if self.first_output is None:
            self.first_output = now
        self.last_output = now
        self.next_probe = now + PROBE_AFTER  # a guest that prints is not halted
        self.raw += chunk
        if self.log is not None:
            try:
                self.log.write(chunk)
            except OSError as e:
                raise BackendError(f"cannot write console log {self.log.name}: {e}") from None
        return chunk

    def _new_lines(self) -> Iterator[str]:
        """Whole lines not yet scanned; each is timed by the read that completed it."""
        while (newline := self.raw.find(b"\n", self.scanned)) >= 0:
            line = self.raw[self.scanned : newline]
            self.scanned = newline + 1
            self.line_times.append(self.last_output - self.start)
            yield line.decode("utf-8", "replace").rstrip("\r")

    def finish_lines(self) -> None:
        """Time the lines read after the session's end was decided (a panic's tail)."""
        for _ in self._new_lines():
            pass


def run_console(
    argv: Sequence[str],
    *,
    timeout: float,
    silence_timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    stop_patterns: Sequence[str] = (),
    patterns: Sequence[ConsolePattern] = CONSOLE_PATTERNS,
    probe: HaltProbe | None = None,
    replies: Replies | None = None,
) -> Transcript:
    """Run *argv* (never through a shell) and read its console until the boot is over.

    ``log_path`` receives the raw output as it arrives, so a run that crashes
    bootfuzz still leaves its console log.  ``stop_patterns`` (regexes searched
    in each line) end the session early as EARLY_STOP.  ``probe`` is asked while
    the console is quiet and ends the session as HALTED when the guest has stopped
    for good; it is closed here.  ``replies`` are typed at the prompts they wait for.
    Whatever happens, the process group is gone when this returns or raises.
    """
    if not argv:
        raise HarnessBug("run_console: empty argv")
    if timeout <= 0 or silence_timeout <= 0:
        raise HarnessBug(f"run_console: timeouts must be positive ({timeout}, {silence_timeout})")
    try:
        stops = [
            ConsolePattern(PatternKind.EARLY_STOP, re.compile(p), SessionEnd.EARLY_STOP, "stop")
            for p in stop_patterns
        ]
    except re.error as e:
        raise HarnessBug(f"run_console: bad stop pattern: {e}") from None
    try:
        log = None if log_path is None else log_path.open("wb", buffering=0)  # no lag, no loss
    except OSError as e:
        if probe is not None:
            probe.close()
        raise BackendError(f"cannot write console log {log_path}: {e.strerror}") from None
    try:
        start = time.monotonic()
        child = _spawn(argv, env, cwd)
        session = _Session(child, (*patterns, *stops), log, start, start + timeout,
                           silence_timeout, probe, replies)
        try:
            end, detail = session.run()
        finally:
            killed = _stop(child, session.closed)
        finished = time.monotonic()
        session.finish_lines()
    finally:
        if log is not None:
            log.close()
        if probe is not None:
            probe.close()
    exit_status, sig = child.exitstatus, child.signalstatus
    if detail is None:
        detail = f"exit status {exit_status}" if sig is None else f"killed by signal {sig}"
    raw = bytes(session.raw)
    return Transcript(
        text=_CRLF.sub("\n", raw.decode("utf-8", "replace")),
        raw=raw,
        end=end,
        exit_status=exit_status,
        signal=sig,
        duration=finished - start,
        first_output_after=None if session.first_output is None else session.first_output - start,
        firmware_entered=session.seen[PatternKind.FIRMWARE_ENTERED] > 0,
        end_detail=detail,
        killed=killed,
        line_times=tuple(session.line_times),
    )


def _spawn(argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None) -> pexpect.spawn:
    try:
        child = pexpect.spawn(
            argv[0],
            list(argv[1:]),
            env=None if env is None else dict(env),
            cwd=None if cwd is None else str(cwd),
            encoding=None,  # bytes: the transcript keeps them exactly
        )
    except (pexpect.ExceptionPexpect, OSError) as e:
        raise BackendError(f"cannot start {argv[0]}: {e}") from None
    child.ptyproc.delayafterclose = 0  # we reap before closing; no need to wait
    return child


def _stop(child: pexpect.spawn, closed: bool) -> bool:
    """End the child's whole process group (it is a session leader) and reap it.

    Returns whether the leader was still running.  The final SIGKILL sweeps
    leftovers of the group; after our SIGTERM it goes out while the leader is
    still an unreaped zombie, so its pid (the group id) cannot have been reused.
    """
    killed = False
    try:
        if closed:
            _wait_exited(child.pid, _EXIT_AFTER_EOF)
        if not child.terminated and not _exited(child.pid):
            killed = True
            _signal_group(child.pid, signal.SIGTERM)
            _wait_exited(child.pid, _KILL_GRACE)
        _signal_group(child.pid, signal.SIGKILL)  # stragglers, e.g. a child that forked
        child.wait()
    finally:
        child.close()
    return killed


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pgid, sig)


def _exited(pid: int) -> bool:
    """Whether our child *pid* has exited, without reaping it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exited(pid: int, grace: float) -> None:
    until = time.monotonic() + grace
    while not _exited(pid) and time.monotonic() < until:
        time.sleep(0.01)
