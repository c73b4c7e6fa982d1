"""The record of one guest run: what the console showed and how the run ended.

Pure data, written by the run stage (the console session and the backend's exit)
and read by the judge, so the judge never imports the code that ran the guest.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SessionEnd(enum.Enum):
    """Why the console session ended."""

    AGENT_REPORT = "agent-report"  # our agent printed its report: the boot worked
    KERNEL_PANIC = "kernel-panic"
    KERNEL_OOPS = "kernel-oops"  # BUG/Oops/GPF: the boot is broken even if no panic follows
    REBOOT = "reboot"  # the guest reset and started booting again
    FIRMWARE_ERROR = "firmware-error"  # our firmware stub refused to enter the kernel
    EARLY_STOP = "early-stop"  # a caller's stop pattern matched
    SILENCE = "silence"  # no output for silence_timeout seconds
    #: The backend said the guest stopped for good (QEMU: its CPU halted with
    #: interrupts off, asked over QMP while the console was quiet).
    HALTED = "halted"
    TIMEOUT = "timeout"  # the overall deadline passed
    EXITED = "exited"  # the backend process ended by itself


#: Session ends at which the session itself stopped the backend: how the killed
#: process exits then says nothing about the guest (HALTED says it for the exit).
SESSION_KILLED = frozenset({SessionEnd.EARLY_STOP, SessionEnd.SILENCE, SessionEnd.TIMEOUT,
                            SessionEnd.HALTED})


class GuestExit(enum.StrEnum):
    """How the guest ended, as the backend's exit shows it."""

    POWER_OFF = "power-off"  # our agent asked the machine to stop
    RESET = "reset"  # triple fault, or a reboot (panic=-1) under -no-reboot
    BACKEND_ERROR = "backend-error"  # the backend process failed on its own
    KILLED = "killed"  # the session ended it (timeout, silence, early stop)
    #: The backend saw the guest halted with interrupts off: nothing can wake it
    #: (our VMM exits so at once; QEMU's session asks it over QMP: SessionEnd.HALTED).
    HUNG = "hung"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Transcript:
    """Every byte a backend process printed, and why and how its session ended."""

    text: str  # decoded with replacement, line ends ("\r\n", "\r\r\n") -> "\n"
    raw: bytes  # exactly what the process wrote
    end: SessionEnd
    exit_status: int | None
    signal: int | None  # the signal that ended the process, ours included
    duration: float  # seconds from start until the process was gone
    first_output_after: float | None
    firmware_entered: bool
    end_detail: str
    #: The process was still running when the session ended and we signalled it
    #: (QEMU exits 0 on SIGTERM, so exit_status alone cannot tell).
    killed: bool
    #: When each "\n"-ended line of *text* arrived, in seconds since the start.
    line_times: tuple[float, ...] = ()
