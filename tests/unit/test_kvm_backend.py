"""The kvm backend's manifest and exit classification (no /dev/kvm needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import BootCase, CpuTemplate, EntryProtocol, Overrides
from bootfuzz.errors import BackendError, LayoutError
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import HANDOFF_ADDR, ZERO_PAGE_ADDR, MiB
from bootfuzz.loader.plan import BootPlan, CpuState
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.backends import get_backend
from bootfuzz.run.backends.kvm import KvmBackend
from bootfuzz.run.backends.qemu_tcg import handoff_block
from bootfuzz.run.exits import classify_exit
from bootfuzz.run.kvm.cpu import firmware_reset_state
from bootfuzz.run.kvm.vmm import Manifest, ManifestBlob, ManifestError
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript
from tests.fakes import fake_bzimage

CPU = CpuState(mode=HandoffMode.PROTECTED_32, rip=0x1000000, rsi=0, rbx=0x6000, rsp=0x8FF0,
               cr0=0x11, cr3=0, cr4=0, efer=0, gdt_base=0x500, gdt_limit=31,
               code_selector=0x10, data_selector=0x18)


def test_backend_registered_as_kvm() -> None:
    assert isinstance(get_backend("kvm"), KvmBackend)


def test_backend_platform_is_qemu_pc_split() -> None:
    assert KvmBackend().platform(5 << 30) == qemu_pc(5 << 30)


@pytest.mark.parametrize(
    ("status", "signal", "expected"),
    [
        (99, None, GuestExit.POWER_OFF),
        (0, None, GuestExit.RESET),
        (4, None, GuestExit.HUNG),
        (124, None, GuestExit.KILLED),
        (5, None, GuestExit.BACKEND_ERROR),
        (3, None, GuestExit.BACKEND_ERROR),
        (None, 15, GuestExit.KILLED),
        (None, None, GuestExit.UNKNOWN),
    ],
)
def test_backend_classify_exit(status: int | None, signal: int | None,
                               expected: GuestExit) -> None:
    transcript = Transcript(text="", raw=b"", end=SessionEnd.EXITED, exit_status=status,
                            signal=signal, duration=1.0, first_output_after=None,
                            firmware_entered=True, end_detail="", killed=False)
    assert classify_exit(transcript, KvmBackend.exit_statuses) is expected


def manifest() -> Manifest:
    return Manifest(64 << 20, ((0, 64 << 20),), (ManifestBlob("gdt", 0x500, 32, "/x"),), CPU)


def test_manifest_round_trips_through_json() -> None:
    assert Manifest.from_json(manifest().to_json()) == manifest()


def test_manifest_unknown_mode_is_refused() -> None:
    raw = json.loads(manifest().to_json())
    raw["cpu"]["mode"] = "NO_SUCH_MODE"
    with pytest.raises(ManifestError, match=r"cpu\.mode: 'NO_SUCH_MODE' is not one of "):
        Manifest.from_json(json.dumps(raw))


def test_manifest_missing_register_names_its_path() -> None:
    raw = json.loads(manifest().to_json())
    del raw["cpu"]["rip"]
    with pytest.raises(ManifestError) as info:
        Manifest.from_json(json.dumps(raw), "run/kvm-manifest.json")
    assert str(info.value) == "kvm manifest: run/kvm-manifest.json: cpu.rip: missing"


def test_manifest_not_json_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"\(top level\): not JSON: "):
        Manifest.from_json("{")


def test_manifest_ram_not_adding_up_is_refused() -> None:
    raw = json.loads(manifest().to_json())
    raw["memory"] += 4096
    with pytest.raises(ManifestError, match="do not add up"):
        Manifest.from_json(json.dumps(raw))


def test_manifest_blob_at_end_of_ram_is_accepted(tmp_path: Path) -> None:
    m = Manifest(64 << 20, ((0, 64 << 20),), (ManifestBlob("b", (64 << 20) - 4, 4, "/x"),), CPU)
    assert Manifest.from_json(m.to_json()) == m


def test_manifest_blob_one_byte_past_ram_is_refused() -> None:
    m = Manifest(64 << 20, ((0, 64 << 20),), (ManifestBlob("b", (64 << 20) - 3, 4, "/x"),), CPU)
    with pytest.raises(ManifestError, match="not inside RAM"):
        Manifest.from_json(m.to_json())


def test_manifest_with_firmware_and_template_round_trips() -> None:
    m = Manifest(64 << 20, ((0, 64 << 20),), (), firmware_reset_state(), "/fw/stub.bin",
                 CpuTemplate.HOST)
    assert Manifest.from_json(m.to_json()) == m


def test_manifest_unknown_cpu_template_is_refused() -> None:
    raw = json.loads(manifest().to_json())
    raw["cpu_template"] = "t2"
    with pytest.raises(ManifestError, match=r"cpu_template: 't2' is not one of"):
        Manifest.from_json(json.dumps(raw))


def test_manifest_firmware_needs_ram_for_its_copy_below_1m() -> None:
    m = Manifest(0xF0000, ((0, 0xF0000),), (), firmware_reset_state(), "/fw/stub.bin")
    with pytest.raises(ManifestError, match="no RAM at 0xf0000 for the firmware"):
        Manifest.from_json(m.to_json())


def fake_harness(tmp_path: Path) -> HarnessArtifacts:
    return HarnessArtifacts(agent=tmp_path / "init", firmware=tmp_path / "stub.bin",
                            agent_selftest=tmp_path / "selftest", directory=tmp_path)


def plan_for(entry: EntryProtocol, template: CpuTemplate = CpuTemplate.BASELINE) -> BootPlan:
    case = BootCase(kernel="fake", memory=64 * MiB, entry=entry, backend="kvm",
                    cpu_template=template)
    return plan_boot(case, parse_kernel_image(fake_bzimage()), qemu_pc(64 * MiB), None)


def test_real16_plan_starts_the_firmware_at_its_reset_vector(tmp_path: Path) -> None:
    """The 16-bit plan's state goes to the firmware through the hand-off block, as on QEMU."""
    plan = plan_for(EntryProtocol.REAL16)
    m = KvmBackend().manifest(plan, tmp_path, fake_harness(tmp_path))
    assert m.cpu == firmware_reset_state()
    assert m.firmware == str((tmp_path / "stub.bin").resolve())
    handoff = [b for b in m.blobs if b.name == "handoff"]
    assert [(b.addr, Path(b.path).read_bytes()) for b in handoff] == [
        (HANDOFF_ADDR, handoff_block(plan.cpu))]


def test_real16_plan_without_a_harness_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="runs our firmware"):
        KvmBackend().manifest(plan_for(EntryProtocol.REAL16), tmp_path)


@pytest.mark.parametrize("template", list(CpuTemplate))
def test_protected_mode_plan_starts_directly_with_the_case_template(
    tmp_path: Path, template: CpuTemplate,
) -> None:
    plan = plan_for(EntryProtocol.BOOT64, template)
    m = KvmBackend().manifest(plan, tmp_path, fake_harness(tmp_path))
    assert m.cpu == plan.cpu
    assert m.firmware is None
    assert m.cpu_template is template
    assert "handoff" not in {b.name for b in m.blobs}


def test_overridden_layout_manifest_holds_only_what_ram_keeps(tmp_path: Path) -> None:
    """A command line across the top of RAM and one under the zero page: the manifest
    lists the pieces memory keeps (the VMM writes exactly those), as QEMU loads them."""
    for overrides, addr, size in (
        (Overrides(cmdline_addr=64 * MiB - 0x10, cmdline_raw=b"x" * 0x20), 64 * MiB - 0x10, 0x10),
        (Overrides(cmdline_addr=ZERO_PAGE_ADDR - 8, cmdline_raw=b"y" * 0x10),
         ZERO_PAGE_ADDR - 8, 8),
    ):
        case = BootCase(kernel="fake", memory=64 * MiB, backend="kvm", overrides=overrides)
        plan = plan_boot(case, parse_kernel_image(fake_bzimage()), qemu_pc(64 * MiB), None)
        m = KvmBackend().manifest(plan, tmp_path, fake_harness(tmp_path))
        m.check()  # every piece inside RAM
        (cmdline,) = [b for b in m.blobs if b.name == "cmdline"]
        assert (cmdline.addr, cmdline.size, len(Path(cmdline.path).read_bytes())) == (
            addr, size, size)


def test_real16_plan_over_the_handoff_block_is_refused(tmp_path: Path) -> None:
    case = BootCase(kernel="fake", memory=64 * MiB, entry=EntryProtocol.REAL16, backend="kvm",
                    overrides=Overrides(cmdline_addr=HANDOFF_ADDR))
    plan = plan_boot(case, parse_kernel_image(fake_bzimage()), qemu_pc(64 * MiB), None)
    with pytest.raises(LayoutError, match="hand-off block"):
        KvmBackend().manifest(plan, tmp_path, fake_harness(tmp_path))
