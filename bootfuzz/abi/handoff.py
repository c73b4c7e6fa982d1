"""The hand-off block between our loader and our firmware stub (harness/firmware).

QEMU resets the CPU into real mode at 0xFFFFFFF0; the stub there reads this block
at layout.HANDOFF_ADDR and puts the CPU into exactly the state the BootPlan asks
for, then jumps.  The assembler sees these offsets through a generated include
file (bootfuzz.harness writes it from this declaration), so they exist once.
"""

from __future__ import annotations

import enum

from bootfuzz.abi.structs import Field, Struct

HANDOFF_MAGIC = 0x4F484642  # "BFHO"


class HandoffMode(enum.IntEnum):
    """Which CPU mode the stub leaves the CPU in at the jump."""

    PROTECTED_32 = 1  # paging off: the 32-bit boot protocol and PVH
    LONG_64 = 2  # paging on, EFER.LME: the 64-bit boot protocol


HANDOFF = Struct(
    "handoff",
    0x60,
    (
        Field("magic", 0x00, 4),
        Field("mode", 0x04, 4),
        # lgdt operand: 16-bit limit then 32-bit base, contiguous.
        Field("gdt_limit", 0x08, 2),
        Field("gdt_base", 0x0A, 4),
        Field("cr0", 0x10, 8),
        Field("cr3", 0x18, 8),
        Field("cr4", 0x20, 8),
        Field("efer", 0x28, 8),
        Field("rip", 0x30, 8),
        Field("rsi", 0x38, 8),
        Field("rbx", 0x40, 8),
        Field("rsp", 0x48, 8),
        Field("code_selector", 0x50, 2),
        Field("data_selector", 0x52, 2),
        Field("firmware_code_selector", 0x54, 2),
    ),
)
