"""A campaign against a peer target: each case booted through the target's loader.

``bootfuzz fuzz --target grub-bios`` boots every generated case (and every minimizer
candidate) through :func:`bootfuzz.peers.targets.parse_target`'s target instead of our
loader, judged by the validity oracles the target's promises allow.  :class:`TargetBoot`
is the campaign's boot function (picklable: the spec is parsed in the worker), and
:class:`TargetOutcome` shows a peer's run as triage, the minimizer and the campaign read
a boot (bootfuzz.fuzz.triage.BootOutcome).  A peer always boots to the end: there is no
early stop on a loader we do not drive.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.case import BootCase
from bootfuzz.fuzz.campaign import KernelFacts, read_kernels
from bootfuzz.fuzz.floors import FloorRequest, learn_floors
from bootfuzz.judge.memory_floor import MemoryFloor
from bootfuzz.judge.observation import Observation
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.peers.loaders import RealLoader
from bootfuzz.peers.targets import TargetRun, parse_target
from bootfuzz.run.silence import LearnedSilence, Silence
from bootfuzz.transcript import GuestExit, Transcript


@dataclass(frozen=True)
class TargetOutcome:
    """A peer target's run, read as a boot."""

    run: TargetRun

    @property
    def verdict(self) -> Verdict:
        return self.run.verdict

    @property
    def oracles(self) -> Sequence[OracleResult]:
        return self.run.oracles

    @property
    def observation(self) -> Observation:
        return self.run.observation

    @property
    def guest_exit(self) -> GuestExit:
        return self.run.guest_exit

    @property
    def transcript(self) -> Transcript:
        return self.run.transcript

    @property
    def phases(self) -> Mapping[str, float]:
        return {"target": self.run.duration}

    @property
    def until(self) -> StopPoint | None:
        return None

    @property
    def coverage(self) -> None:
        return None


@dataclass(frozen=True)
class TargetBoot:
    """Boot a case through the target *spec* (``grub-bios``, ``efi-stub``, ...)."""

    spec: str

    def __post_init__(self) -> None:
        parse_target(self.spec)  # a bad spec is one ConfigError before any worker starts

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: Silence, until: StopPoint | None = None,
                 coverage: bool = False) -> TargetOutcome:
        quiet = (silence_timeout.unseen if isinstance(silence_timeout, LearnedSilence)
                 else silence_timeout)
        target = parse_target(self.spec)
        return TargetOutcome(target.run(case, run_dir, timeout=timeout, silence_timeout=quiet))


@dataclass(frozen=True)
class TargetKernels:
    """The campaign's kernels with room left on the command line for what the harness
    adds for the target (``efi=debug `` on EFI loaders): a case at the kernel's
    cmdline_size would otherwise overflow by our own bytes, not the loader's."""

    overhead: int

    def __call__(self, names: tuple[str, ...]) -> dict[str, KernelFacts]:
        facts = read_kernels(names)
        return {n: dataclasses.replace(f, limits=dataclasses.replace(
            f.limits, cmdline_size=f.limits.cmdline_size - self.overhead))
            for n, f in facts.items()}


def harness_overhead(spec: str) -> int:
    """Bytes the harness adds to every case's command line on target *spec*."""
    target = parse_target(spec)
    loader = getattr(target, "loader", None)
    return len(loader.loader_cmdline(b"")) if isinstance(loader, RealLoader) else 0


def learn_floors_with_ours(request: FloorRequest) -> dict[str, MemoryFloor]:
    """The kernels' memory floors as our loader measures them (cached per kernel):
    what a kernel needs to unpack its initrd does not depend on who loaded it, and
    bisecting through a slow firmware and loader would cost minutes per kernel."""
    from bootfuzz.run.boot import run_case

    return learn_floors(dataclasses.replace(request, boot=run_case))


#: Where a campaign against a target records it (a resume must use the same one).
TARGET_FILE = "target"


def check_campaign_target(work_dir: Path, spec: str | None, resume: bool) -> None:
    """Record the campaign's target in *work_dir*; a resume against another is refused."""
    from bootfuzz.fuzz.state import CampaignError

    path = work_dir / TARGET_FILE
    recorded = path.read_text().strip() if path.exists() else None
    if resume and (recorded or None) != spec and (recorded or spec):
        raise CampaignError(f"--resume: the campaign in {work_dir} ran against "
                            f"{recorded or 'our loader'}, not {spec or 'our loader'}")
    work_dir.mkdir(parents=True, exist_ok=True)
    if spec:
        path.write_text(spec + "\n")
    else:
        path.unlink(missing_ok=True)


__all__ = ["TARGET_FILE", "TargetBoot", "TargetKernels", "TargetOutcome",
           "check_campaign_target", "harness_overhead", "learn_floors_with_ours"]
