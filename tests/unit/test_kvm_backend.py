"""The kvm backend's manifest and exit classification (no /dev/kvm needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.backends import get_backend
from bootfuzz.run.backends.kvm import KvmBackend
from bootfuzz.run.exits import classify_exit
from bootfuzz.run.kvm.vmm import Manifest, ManifestBlob, ManifestError
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript

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
