"""What every backend provides: its platform, a command that runs a plan, and how
to read that command's exit."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import ClassVar, Protocol

from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.platform import Platform


class GuestExit(enum.StrEnum):
    """How the guest ended, as the backend saw it."""

    POWER_OFF = "power-off"  # our agent asked the machine to stop
    RESET = "reset"  # triple fault, or a reboot (panic=-1) under -no-reboot
    BACKEND_ERROR = "backend-error"  # the backend process failed on its own
    KILLED = "killed"  # the session ended it (timeout, silence, early stop)
    UNKNOWN = "unknown"


class Backend(Protocol):
    name: ClassVar[str]

    def check_available(self) -> None:
        """Raise BackendError naming what is missing."""

    def platform(self, memory: int) -> Platform:
        """Where this backend's machine has RAM for *memory* bytes."""

    def prepare(self, plan: BootPlan, harness: HarnessArtifacts, run_dir: Path) -> list[str]:
        """Write what the run needs into *run_dir* and return the argv that runs it."""

    def classify_exit(self, exit_status: int | None, signal: int | None) -> GuestExit:
        """Translate the process's exit into a GuestExit."""
