"""The flattened device tree (DTB) format, version 17: header, reservation entries, tokens.

source: the Devicetree Specification v0.4, chapter 5 ("Flattened Devicetree (DTB)
Format"), and the kernel's scripts/dtc/libfdt/fdt.h.  Every multi-byte value in a DTB
is big-endian, unlike the little-endian boot structures elsewhere in abi/, so the
header is declared here with its offsets and sizes and packed by this module's own
two helpers.
"""

from __future__ import annotations

import struct

from bootfuzz.abi.structs import Field, Struct

FDT_MAGIC = 0xD00DFEED
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16

#: struct fdt_header (fdt.h): ten big-endian u32.
FDT_HEADER = Struct(
    "fdt_header",
    40,
    (
        Field("magic", 0, 4),
        Field("totalsize", 4, 4),
        Field("off_dt_struct", 8, 4),
        Field("off_dt_strings", 12, 4),
        Field("off_mem_rsvmap", 16, 4),
        Field("version", 20, 4),
        Field("last_comp_version", 24, 4),
        Field("boot_cpuid_phys", 28, 4),
        Field("size_dt_strings", 32, 4),
        Field("size_dt_struct", 36, 4),
    ),
)

#: struct fdt_reserve_entry: big-endian u64 address, u64 size; a (0, 0) entry ends the list.
FDT_RESERVE_ENTRY = Struct("fdt_reserve_entry", 16, (Field("address", 0, 8), Field("size", 8, 8)))

#: Structure block tokens (spec 5.4.1), each a big-endian u32 aligned to 4 bytes.
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

#: The memory reservation block is 8-byte aligned, the structure block 4 (spec 5.3, 5.4).
RSVMAP_ALIGN = 8
STRUCT_ALIGN = 4


def pack_be(s: Struct, values: dict[str, int]) -> bytes:
    """Serialize a declared structure whose integers are big-endian (the DTB's)."""
    buf = bytearray(s.size)
    for f in s:
        buf[f.offset : f.end] = values.get(f.name, 0).to_bytes(f.size, "big")
    return bytes(buf)


def unpack_be(s: Struct, data: bytes, base: int = 0) -> dict[str, int]:
    """Read a declared big-endian structure from *data* at *base*."""
    if len(data) < base + s.size:
        raise ValueError(f"{s.name}: needs {s.size} bytes, have {max(len(data) - base, 0)}")
    return {f.name: int.from_bytes(data[base + f.offset : base + f.end], "big") for f in s}


def u32(value: int) -> bytes:
    return struct.pack(">I", value)
