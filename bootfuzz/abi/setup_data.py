"""``struct setup_data`` nodes and their types.

source: arch/x86/include/uapi/asm/setup_data.h (6.12; inline in bootparam.h in 6.1,
same values) and boot-protocol.md 2.3.
"""

from __future__ import annotations

import enum

from bootfuzz.abi.structs import Field, Struct


class SetupType(enum.IntEnum):
    SETUP_NONE = 0
    SETUP_E820_EXT = 1
    SETUP_DTB = 2
    SETUP_PCI = 3
    SETUP_EFI = 4
    SETUP_APPLE_PROPERTIES = 5
    SETUP_JAILHOUSE = 6
    SETUP_CC_BLOB = 7
    SETUP_IMA = 8
    SETUP_RNG_SEED = 9
    SETUP_INDIRECT = 1 << 31


#: The 16-byte header; ``len`` counts the payload only.
SETUP_DATA_HEADER = Struct(
    "setup_data",
    16,
    (
        Field("next", 0, 8),
        Field("type", 8, 4),
        Field("len", 12, 4),
    ),
)

#: Nodes are walked by physical pointer; we keep them 8-byte aligned.
SETUP_DATA_ALIGN = 8

#: The payload of a SETUP_INDIRECT node: ``type`` is SETUP_INDIRECT | SETUP_xxx, and
#: [addr, addr + len) holds the data.  source: uapi/asm/setup_data.h, struct setup_indirect.
SETUP_INDIRECT_PAYLOAD = Struct(
    "setup_indirect",
    24,
    (
        Field("type", 0, 4),
        Field("reserved", 4, 4),
        Field("len", 8, 8),
        Field("addr", 16, 8),
    ),
)
