"""OpenSBI's ``struct fw_dynamic_info``: how a previous stage tells fw_dynamic where the
next stage (our kernel) starts and in which mode.

source: OpenSBI include/sbi/fw_dynamic.h (version 2 adds boot_hart) and
docs/firmware/fw_dynamic.md: the previous stage enters fw_dynamic with a0 = hart id,
a1 = the FDT, a2 = this structure's address.  Little-endian (rv64: unsigned long is
8 bytes).
"""

from __future__ import annotations

from bootfuzz.abi.structs import Field, Struct

FW_DYNAMIC_INFO_MAGIC = 0x4942534F  # "OSBI"
FW_DYNAMIC_INFO_VERSION = 2
#: next_mode values (fw_dynamic.h: FW_DYNAMIC_INFO_NEXT_MODE_S): the kernel runs in S-mode.
NEXT_MODE_S = 1

FW_DYNAMIC_INFO = Struct(
    "fw_dynamic_info",
    48,
    (
        Field("magic", 0, 8),
        Field("version", 8, 8),
        Field("next_addr", 16, 8),
        Field("next_mode", 24, 8),
        Field("options", 32, 8),
        Field("boot_hart", 40, 8, version=2, doc="-1: any hart may be the boot hart"),
    ),
)
