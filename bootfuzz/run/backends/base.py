"""What every backend provides: its platform, a command that runs a plan, and how
to read that command's exit."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.platform import Platform
from bootfuzz.run.console import HaltProbe
from bootfuzz.run.exits import ExitStatuses


class Backend(Protocol):
    name: ClassVar[str]
    #: What the process's exit statuses say about the guest (bootfuzz.run.exits).
    exit_statuses: ClassVar[ExitStatuses]

    def check_available(self) -> None:
        """Raise BackendError naming what is missing."""

    def platform(self, memory: int) -> Platform:
        """Where this backend's machine has RAM for *memory* bytes."""

    def prepare(self, plan: BootPlan, harness: HarnessArtifacts, run_dir: Path) -> list[str]:
        """Write what the run needs into *run_dir* and return the argv that runs it."""


@runtime_checkable
class HaltProbing(Protocol):
    """A backend whose process keeps running when its guest halts for good (QEMU),
    but can be asked whether it did (our VMM exits with its own status instead)."""

    def halt_probe(self, run_dir: Path) -> HaltProbe:
        """A probe for the process that prepare()'s argv for *run_dir* starts."""
