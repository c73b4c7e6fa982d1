"""The 64-byte headers of the arm64 and RISC-V ``Image`` files.

source: Linux Documentation/arch/arm64/booting.rst ("Call the kernel image", the
header table) and Documentation/arch/riscv/boot-image-header.rst; both little-endian.
The two share code0/code1/text_offset/image_size/flags at the same offsets and
differ in where the magic is and what the rest means.
"""

from __future__ import annotations

import enum

from bootfuzz.abi.structs import Field, Struct

IMAGE_HEADER_SIZE = 64

ARM64_IMAGE_HEADER = Struct(
    "arm64_image_header",
    IMAGE_HEADER_SIZE,
    (
        Field("code0", 0, 4),
        Field("code1", 4, 4),
        Field("text_offset", 8, 8, doc="image load offset from a 2 MiB aligned base"),
        Field("image_size", 16, 8, doc="effective image size, BSS included; 0: old kernel"),
        Field("flags", 24, 8),
        Field("res2", 32, 8),
        Field("res3", 40, 8),
        Field("res4", 48, 8),
        Field("magic", 56, 4, raw=True),
        Field("res5", 60, 4, doc="offset of the PE header (EFI stub)"),
    ),
)
ARM64_MAGIC = b"ARM\x64"


class Arm64Flags(enum.IntFlag):
    """arm64 header flags (booting.rst): bit 0 big-endian, bits 1-2 page size, bit 3
    physical placement (1: anywhere in RAM; 0: as close to the start of DRAM as possible)."""

    BE = 1 << 0
    PAGE_SIZE_MASK = 3 << 1
    PHYS_ANYWHERE = 1 << 3


ARM64_PAGE_SIZES = {0: None, 1: 4096, 2: 16384, 3: 65536}

RISCV_IMAGE_HEADER = Struct(
    "riscv_image_header",
    IMAGE_HEADER_SIZE,
    (
        Field("code0", 0, 4),
        Field("code1", 4, 4),
        Field("text_offset", 8, 8),
        Field("image_size", 16, 8),
        Field("flags", 24, 8),
        Field("version", 32, 4),
        Field("res1", 36, 4),
        Field("res2", 40, 8),
        Field("magic", 48, 8, raw=True, doc="deprecated"),
        Field("magic2", 56, 4, raw=True),
        Field("res3", 60, 4, doc="offset of the PE header"),
    ),
)
RISCV_MAGIC = b"RISCV\0\0\0"
RISCV_MAGIC2 = b"RSC\x05"

#: The alignment of the base an Image is placed at: 2 MiB on arm64 (booting.rst) and
#: on rv64 (PMD size, boot.rst "Kernel location").
IMAGE_BASE_ALIGN = 2 << 20
