"""Stand-ins built in code, so unit tests need no real kernel or initrd: synthetic
kernel images, one field per line (Firecracker's make_fake_bzimage shape), and a built
initrd reduced to what the loader reads of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bootfuzz.abi.bootparam import SECTOR_SIZE, SETUP_HEADER
from bootfuzz.judge.observation import Observation
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.transcript import GuestExit

MiB = 1 << 20

#: Header values of a Debian 6.x bzImage (boot-protocol.md section 1).
DEBIAN_LIKE: dict[str, int] = {
    "setup_sects": 3,
    "root_flags": 1,
    "vid_mode": 0xFFFF,
    "boot_flag": 0xAA55,
    "jump": 0x6AEB,  # EB 6A: header ends at 0x26c
    "header": 0x53726448,  # "HdrS"
    "version": 0x020F,
    "start_sys_seg": 0x1000,
    "loadflags": 0x01,  # LOADED_HIGH
    "code32_start": 0x100000,
    "initrd_addr_max": 0x7FFFFFFF,
    "kernel_alignment": 0x200000,
    "relocatable_kernel": 1,
    "min_alignment": 21,
    "xloadflags": 0x7F,
    "cmdline_size": 2047,
    "payload_offset": 0x100,
    "pref_address": 0x1000000,
    "init_size": 0x800000,
}


def fake_bzimage(pm_size: int = 0x4000, *, payload: bytes = b"", **overrides: int) -> bytes:
    """A bzImage whose protected-mode code is *pm_size* bytes of filler and a payload.

    The payload starts with *payload* (a compression magic, say), zeros after it.
    """
    values = {**DEBIAN_LIKE, **overrides}
    setup_sects = values["setup_sects"] or 4
    values.setdefault("syssize", (pm_size + 15) // 16)
    if "syssize" not in overrides:
        values["syssize"] = (pm_size + 15) // 16
    if "payload_length" not in overrides:
        values["payload_length"] = pm_size - values["payload_offset"] - 0x10
    pm_start = (setup_sects + 1) * SECTOR_SIZE
    image = bytearray(pm_start + pm_size)
    SETUP_HEADER.pack_into(image, values)
    image[0x1EF:0x1F1] = b"\xff\xff"  # the sentinel bytes a real image carries
    start = pm_start + values["payload_offset"]
    if len(payload) > values["payload_length"]:
        raise ValueError(f"payload of {len(payload)} bytes exceeds payload_length")
    image[start : start + len(payload)] = payload
    return bytes(image)


@dataclass(frozen=True)
class FakeInitrd:
    """A built initrd as the loader sees it (bootfuzz.loader.plan.InitrdImage): a size and
    a path; the file exists only where a test writes it."""

    size: int
    path: Path = Path("/nonexistent/initrd")
    payload_sha256: str = "0" * 64


#: Stands in for the static /init agent where an initrd is built (an ELF magic and filler;
#: the tests/conftest.py fixture `agent` puts it in a file).
FAKE_AGENT = b"\x7fELF" + bytes(range(256)) * 4


@dataclass(frozen=True)
class FakeTranscript:
    """The part of a Transcript that triage and the campaign read."""

    text: str


@dataclass(frozen=True)
class FakeResult:
    """A BootResult as triage, the minimizer, the depth rule and the campaign see it: the
    judgment, the console text, the phases and how deep the boot went; nothing booted."""

    verdict: Verdict
    oracles: tuple[OracleResult, ...]
    observation: Observation
    guest_exit: GuestExit
    transcript: FakeTranscript = field(default_factory=lambda: FakeTranscript(""))
    phases: dict[str, float] = field(default_factory=lambda: {"plan": 0.25})
    until: StopPoint | None = None
