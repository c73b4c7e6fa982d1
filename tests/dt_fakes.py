"""Stand-ins for the device-tree tests: Image files (the 64-byte header and a little
body, as Debian's start), a built initrd reduced to what the loader reads, and plans
made from them by the real loader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi.dt_image import ARM64_IMAGE_HEADER, RISCV_IMAGE_HEADER
from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, InitrdSpec, harness_cmdline
from bootfuzz.kernel.dt_image import parse_dt_image
from bootfuzz.loader.dt_plan import DtBootPlan, plan_dt_boot

MiB, GiB = 1 << 20, 1 << 30
IMAGE_SIZE = 0x1E70000  # the pinned 6.12 kernels' image_size, near enough


def fake_image(arch: Arch, image_size: int = IMAGE_SIZE, flags: int = 0b1010) -> bytes:
    """64 header bytes and a little body, as the Debian Image files start."""
    if arch is Arch.ARM64:
        head = ARM64_IMAGE_HEADER.build({"text_offset": 0, "image_size": image_size,
                                         "flags": flags, "magic": b"ARM\x64", "res5": 0x40})
    else:
        head = RISCV_IMAGE_HEADER.build({"text_offset": 0x200000, "image_size": image_size,
                                         "flags": 0, "version": 2, "magic": b"RISCV\0\0\0",
                                         "magic2": b"RSC\x05", "res3": 0x40})
    return head + bytes(0x10000)


@dataclass(frozen=True)
class FakeInitrd:
    size: int
    path: Path = Path("/nonexistent/initrd")
    payload_sha256: str = "ab" * 32


def case(arch: Arch, memory: int = 256 * MiB, **kw: object) -> BootCase:
    kw.setdefault("cmdline", harness_cmdline(arch))
    return BootCase(kernel="k", memory=memory, initrd=InitrdSpec(4096), arch=arch,
                    **kw)  # type: ignore[arg-type]


def plan(arch: Arch, memory: int = 256 * MiB, initrd: int = 0x30BD, **kw: object
         ) -> DtBootPlan:
    return plan_dt_boot(case(arch, memory, **kw), parse_dt_image(fake_image(arch)),
                        FakeInitrd(initrd))


ARCHES = (Arch.ARM64, Arch.RISCV64)
HOLES = {Arch.ARM64: ((0xC000_0000, 256 * MiB),), Arch.RISCV64: ((0x1_0000_0000, 256 * MiB),)}
