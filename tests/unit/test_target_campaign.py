"""A campaign against a peer target (bootfuzz fuzz --target), with a fake boot: only
cases a real loader can be given are drawn, and every reproducer names the target."""

from __future__ import annotations

import dataclasses
import io
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

import pytest

from bootfuzz.case import BootCase, EntryProtocol, InitrdPlacement, Overrides
from bootfuzz.fuzz.campaign import CampaignOptions, KernelFacts, Runtime, run_campaign
from bootfuzz.fuzz.draws import DEBIAN_CLOUD_LIMITS
from bootfuzz.fuzz.floors import no_floors
from bootfuzz.fuzz.replay import replay
from bootfuzz.fuzz.reproducer import TARGET_KEY, ReproducerError, load_reproducer
from bootfuzz.fuzz.state import CampaignError
from bootfuzz.fuzz.target_boot import TARGET_FILE, TargetBoot, check_campaign_target
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.loader.layout import GiB
from bootfuzz.run.silence import Silence
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeResult, FakeTranscript

PANIC = "[    1.0] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"


def _panicked() -> FakeResult:
    oracles = (OracleResult("boot", Verdict.FAIL, "e", "o"),)
    return FakeResult(Verdict.FAIL, oracles, parse_transcript(PANIC), GuestExit.RESET,
                      FakeTranscript(PANIC))


class PeerBoot:
    """Fails above 1 GiB; records every case it is given."""

    def __init__(self) -> None:
        self.cases: list[BootCase] = []

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: Silence, until: object = None,
                 coverage: bool = False) -> FakeResult:
        self.cases.append(case)
        if case.memory > 1 * GiB:
            return _panicked()
        return FakeResult(Verdict.PASS, (), parse_transcript(""), GuestExit.POWER_OFF)


def _kernels(names: tuple[str, ...]) -> dict[str, KernelFacts]:
    return {n: KernelFacts(DEBIAN_CLOUD_LIMITS, "ab" * 32) for n in names}


def _pool(jobs: int) -> Executor:
    return ThreadPoolExecutor(max_workers=1)


def test_target_campaign_draws_what_a_loader_is_given_and_records_the_target(
        tmp_path: Path) -> None:
    boot = PeerBoot()
    opts = CampaignOptions(kernels=("debian-6.1-cloud",), seconds=3600, out=tmp_path, seed=7,
                           max_cases=30, max_boots=5, target="grub-bios")
    summary = run_campaign(opts, io.StringIO(), Runtime(boot=boot, kernels=_kernels,
                                                        executor=_pool, floors=no_floors))
    assert boot.cases
    for case in boot.cases:
        assert case.entry is EntryProtocol.BOOT64
        assert case.initrd_placement is InitrdPlacement.TOP
        assert case.overrides == Overrides()
    assert summary.findings
    rep = load_reproducer(Path(summary.findings[0].file))
    assert rep.extra[TARGET_KEY] == "grub-bios"
    assert "--target grub-bios" in rep.description
    with pytest.raises(ReproducerError, match="peer target grub-bios"):
        replay(rep)
    # The same seed for our loader draws the other dimensions too.
    ours = dataclasses.replace(opts, out=tmp_path / "ours", target=None)
    boot_ours = PeerBoot()
    run_campaign(ours, io.StringIO(), Runtime(boot=boot_ours, kernels=_kernels,
                                              executor=_pool, floors=no_floors))
    assert {c.entry for c in boot_ours.cases} != {EntryProtocol.BOOT64}


def test_resume_against_another_target_is_refused(tmp_path: Path) -> None:
    check_campaign_target(tmp_path, "efi-stub", resume=False)
    assert (tmp_path / TARGET_FILE).read_text() == "efi-stub\n"
    check_campaign_target(tmp_path, "efi-stub", resume=True)
    with pytest.raises(CampaignError, match="ran against efi-stub, not grub-bios"):
        check_campaign_target(tmp_path, "grub-bios", resume=True)
    with pytest.raises(CampaignError, match="not our loader"):
        check_campaign_target(tmp_path, None, resume=True)


def test_target_boot_refuses_a_bad_spec_at_once() -> None:
    from bootfuzz.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown target"):
        TargetBoot("lilo")


def test_efi_targets_leave_room_for_efi_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    from bootfuzz.fuzz import target_boot

    assert target_boot.harness_overhead("efi-stub") == len(b"efi=debug ")
    assert target_boot.harness_overhead("grub-bios") == 0
    assert target_boot.harness_overhead("ours:qemu-tcg") == 0
    monkeypatch.setattr(target_boot, "read_kernels", _kernels)
    facts = target_boot.TargetKernels(10)(("debian-6.1-cloud",))
    assert facts["debian-6.1-cloud"].limits.cmdline_size == DEBIAN_CLOUD_LIMITS.cmdline_size - 10
