"""An arm64 or RISC-V ``Image``: its header read, what a loader must honour.

Debian ships both uncompressed (arm64 ``vmlinuz-*`` and riscv64 ``vmlinux-*`` are the
Image itself, an EFI PE file whose first 64 bytes are the boot header), so there is no
payload to extract; a gzip or EFI-zboot container is refused with a message saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi.dt_image import (
    ARM64_IMAGE_HEADER,
    ARM64_MAGIC,
    ARM64_PAGE_SIZES,
    IMAGE_HEADER_SIZE,
    RISCV_IMAGE_HEADER,
    RISCV_MAGIC2,
    Arm64Flags,
)
from bootfuzz.arch import Arch
from bootfuzz.errors import ImageError

GZIP_MAGIC = b"\x1f\x8b"
#: EFI zboot images start with an MZ header and carry "zimg" at offset 4.
#: source: drivers/firmware/efi/libstub/zboot-header.S.
ZBOOT_MAGIC = b"zimg"


@dataclass(frozen=True)
class DtKernelImage:
    """The fields of an Image header a loader acts on, and the file's bytes."""

    arch: Arch
    data: bytes
    text_offset: int
    #: Bytes from the load address the kernel needs free (BSS and early page tables).
    image_size: int
    flags: int
    header: dict[str, int]

    @property
    def page_size(self) -> int | None:
        """arm64: the page size the kernel was built for (None: unspecified)."""
        if self.arch is not Arch.ARM64:
            return 4096
        return ARM64_PAGE_SIZES[(self.flags & Arm64Flags.PAGE_SIZE_MASK) >> 1]

    @property
    def anywhere(self) -> bool:
        """arm64 flag bit 3: the base may be anywhere in RAM (else near DRAM's start)."""
        return self.arch is not Arch.ARM64 or bool(self.flags & Arm64Flags.PHYS_ANYWHERE)


def parse_dt_image(data: bytes, *, source: str = "kernel") -> DtKernelImage:
    """Read the boot header of an arm64 or RISC-V Image; ImageError names what is wrong."""
    if data[:2] == GZIP_MAGIC:
        raise ImageError(f"{source}: a gzip-compressed Image; decompress it first (zcat)")
    if data[4:8] == ZBOOT_MAGIC:
        raise ImageError(f"{source}: an EFI zboot image; bootfuzz boots the bare Image")
    if len(data) < IMAGE_HEADER_SIZE:
        raise ImageError(f"{source}: {len(data)} bytes, shorter than an Image header")
    arm = ARM64_IMAGE_HEADER.parse(data)
    if arm["magic"] == ARM64_MAGIC:
        arch, fields = Arch.ARM64, arm
    else:
        rv = RISCV_IMAGE_HEADER.parse(data)
        if rv["magic2"] != RISCV_MAGIC2:
            raise ImageError(f"{source}: not an arm64 or RISC-V Image (no header magic)")
        arch, fields = Arch.RISCV64, rv
    ints = {k: v for k, v in fields.items() if isinstance(v, int)}
    image_size = ints["image_size"]
    if image_size == 0:
        raise ImageError(f"{source}: image_size is 0 (a pre-3.17 kernel); not supported")
    if image_size < len(data) - ints["text_offset"] and arch is Arch.ARM64:
        raise ImageError(f"{source}: image_size {image_size:#x} is smaller than the file")
    return DtKernelImage(arch, data, ints["text_offset"], image_size, ints["flags"], ints)


def load_dt_image(path: Path) -> DtKernelImage:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_dt_image(data, source=str(path))


def is_dt_image(data: bytes) -> bool:
    """Whether *data* starts with an arm64 or RISC-V Image header."""
    return (data[56:60] == ARM64_MAGIC or data[56:60] == RISCV_MAGIC2)
