"""bootfuzz.run.exits: one classify_exit for every backend's and peer's exit statuses."""

from __future__ import annotations

import dataclasses

import pytest

from bootfuzz.peers.targets import CommandTemplate
from bootfuzz.run.backends.kvm import KvmBackend
from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend
from bootfuzz.run.exits import classify_exit
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript

EXITED = Transcript(text="", raw=b"", end=SessionEnd.EXITED, exit_status=0, signal=None,
                    duration=1.0, first_output_after=0.1, firmware_entered=True,
                    end_detail="exit status 0", killed=False)


def ended(status: int | None, signal: int | None = None, *, end: SessionEnd = SessionEnd.EXITED,
          killed: bool = False) -> Transcript:
    return dataclasses.replace(EXITED, exit_status=status, signal=signal, end=end, killed=killed)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(99, GuestExit.POWER_OFF), (0, GuestExit.RESET), (1, GuestExit.BACKEND_ERROR),
     (4, GuestExit.BACKEND_ERROR)],
)
def test_qemu_statuses(status: int, expected: GuestExit) -> None:
    assert classify_exit(ended(status), QemuTcgBackend.exit_statuses) is expected


def test_the_vmm_halted_guest_is_hung_where_qemu_sees_a_backend_error() -> None:
    assert classify_exit(ended(4), KvmBackend.exit_statuses) is GuestExit.HUNG
    assert classify_exit(ended(4), QemuTcgBackend.exit_statuses) is GuestExit.BACKEND_ERROR


@pytest.mark.parametrize("end", [SessionEnd.TIMEOUT, SessionEnd.SILENCE, SessionEnd.EARLY_STOP])
def test_a_session_that_stopped_the_backend_says_killed_whatever_the_status(
    end: SessionEnd,
) -> None:
    # QEMU exits 0 on SIGTERM: without this rule a timeout would read as a reset.
    assert classify_exit(ended(0, end=end), QemuTcgBackend.exit_statuses) is GuestExit.KILLED


def test_a_process_still_running_at_the_end_was_killed() -> None:
    transcript = ended(99, end=SessionEnd.AGENT_REPORT, killed=True)
    assert classify_exit(transcript, QemuTcgBackend.exit_statuses) is GuestExit.KILLED


def test_a_process_that_powered_off_after_the_report_is_a_power_off() -> None:
    transcript = ended(99, end=SessionEnd.AGENT_REPORT)
    assert classify_exit(transcript, QemuTcgBackend.exit_statuses) is GuestExit.POWER_OFF


def test_a_signal_is_killed() -> None:
    assert classify_exit(ended(None, 9), QemuTcgBackend.exit_statuses) is GuestExit.KILLED


def test_no_status_is_unknown_only_if_the_process_ended_by_itself() -> None:
    assert classify_exit(ended(None), KvmBackend.exit_statuses) is GuestExit.UNKNOWN
    transcript = ended(None, end=SessionEnd.KERNEL_PANIC)
    assert classify_exit(transcript, KvmBackend.exit_statuses) is GuestExit.KILLED


def test_a_command_template_names_its_power_off_status() -> None:
    statuses = CommandTemplate(("vmm", "{kernel}"), poweroff_exit_status=7).exit_statuses
    assert classify_exit(ended(7), statuses) is GuestExit.POWER_OFF
    assert classify_exit(ended(0), statuses) is GuestExit.RESET
    assert classify_exit(ended(99), statuses) is GuestExit.BACKEND_ERROR


def test_a_template_power_off_status_of_zero_is_a_power_off() -> None:
    statuses = CommandTemplate(("vmm", "{kernel}"), poweroff_exit_status=0).exit_statuses
    assert classify_exit(ended(0), statuses) is GuestExit.POWER_OFF
