"""How a backend process's end tells how the guest ended: one ``classify_exit`` for
our backends and every peer target.

Each backend declares what its own exit statuses mean (an :data:`ExitStatuses`
table: QEMU's isa-debug-exit power-off and -no-reboot reset, our VMM's statuses);
the rules that do not depend on the backend live here once.
"""

from __future__ import annotations

from collections.abc import Mapping

from bootfuzz.transcript import SESSION_KILLED, GuestExit, SessionEnd, Transcript

#: A backend's exit statuses that say something about the guest; any other status
#: is the backend failing on its own (BACKEND_ERROR).
ExitStatuses = Mapping[int, GuestExit]


def classify_exit(transcript: Transcript, statuses: ExitStatuses) -> GuestExit:
    """How the guest ended, from how the backend process ended.

    A process the session stopped (its deadline, silence, a stop pattern, or still
    running at the end) says nothing about the guest: QEMU exits 0 on SIGTERM.  One
    it stopped because the backend saw the guest halted for good is HUNG.
    """
    if transcript.end is SessionEnd.HALTED:
        return GuestExit.HUNG
    if transcript.killed or transcript.end in SESSION_KILLED or transcript.signal is not None:
        return GuestExit.KILLED
    status = transcript.exit_status
    if status is None:  # neither a status nor a signal: the process was not reaped
        return GuestExit.UNKNOWN if transcript.end is SessionEnd.EXITED else GuestExit.KILLED
    return statuses.get(status, GuestExit.BACKEND_ERROR)
