"""The hand-off block between our loader and our firmware stub (harness/firmware).

QEMU resets the CPU into real mode at 0xFFFFFFF0; the stub there reads this block
and puts the CPU into exactly the state the BootPlan asks for, then jumps.  For
the 16-bit boot protocol it stays in real mode and is a BIOS as well: it serves
the INT 10h/13h/15h/16h/1Ah calls of the kernel's setup code from a second block
the loader writes (BIOS_DATA, with the E820 table).
The assembler sees these offsets through a generated include file
(bootfuzz.guest.harness writes it from this declaration), so they exist once.
This module describes the structures; where they lie in guest memory
(HANDOFF_ADDR, BIOS_DATA_ADDR) is bootfuzz.loader.layout's to say.
"""

from __future__ import annotations

import enum

from bootfuzz.abi.bootparam import BOOT_PARAMS_SIZE, E820_ENTRY_SIZE
from bootfuzz.abi.structs import Field, Struct

HANDOFF_MAGIC = 0x4F484642  # "BFHO"


class HandoffMode(enum.IntEnum):
    """Which CPU mode the stub leaves the CPU in at the jump."""

    PROTECTED_32 = 1  # paging off: the 32-bit boot protocol and PVH
    LONG_64 = 2  # paging on, EFER.LME: the 64-bit boot protocol
    #: Real mode with our BIOS services installed: the 16-bit boot protocol.
    #: CS:IP = code_selector:rip, DS=ES=FS=GS=SS = data_selector, SP = rsp, IF = 0.
    REAL_16 = 3


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


# ---- The 16-bit entry's BIOS ----------------------------------------------

#: The block the loader writes for the REAL_16 mode: what our BIOS reports.  The
#: 16-bit entry has no zero page of ours (the kernel's setup code builds its own
#: boot_params inside its segment), so the block takes the zero page's place and
#: size (layout.BIOS_DATA_ADDR).
BIOS_DATA_MAGIC = 0x44424642  # "BFBD"
BIOS_DATA_SIZE = BOOT_PARAMS_SIZE
BIOS_DATA = Struct(
    "bios_data",
    0x20,
    (
        Field("magic", 0x00, 4),
        #: Entries at BIOS_E820_TABLE_OFFSET, served by INT 15h AX=E820h in order.
        Field("e820_count", 0x04, 4),
        #: BDA 0x413: KiB of conventional memory from 0.
        Field("base_mem_kib", 0x08, 2),
        #: BDA 0x40E: EBDA segment; 0 = no EBDA.
        Field("ebda_segment", 0x0A, 2),
        #: INT 15h AH=88h: AX = KiB of contiguous RAM from 1 MiB.
        Field("ext_mem_kib", 0x0C, 2),
        #: INT 15h AX=E801h: AX = CX = KiB between 1 and 16 MiB ...
        Field("e801_low_kib", 0x0E, 2),
        #: ... and BX = DX = 64 KiB blocks from 16 MiB up to 4 GiB.
        Field("e801_high_blocks", 0x10, 2),
    ),
)
#: 20-byte entries (struct boot_e820_entry) follow the header.
BIOS_E820_TABLE_OFFSET = BIOS_DATA.size
BIOS_E820_MAX_ENTRIES = (BIOS_DATA_SIZE - BIOS_E820_TABLE_OFFSET) // E820_ENTRY_SIZE

#: The E820 call's signature in EDX (in) and EAX (out).  source: ACPI spec,
#: "INT 15H, E820H - Query System Address Map"; arch/x86/boot/memory.c, SMAP.
E820_SMAP = 0x534D4150  # "SMAP"

#: The BIOS data area at 0x400 (the fields the kernel reads).  source: IBM PC/AT
#: Technical Reference, BIOS data area; readers: arch/x86/kernel/ebda.c (0x40E,
#: 0x413), arch/x86/boot/video.c (0x44A, 0x484, 0x485).
BDA_ADDR = 0x400
BDA = Struct(
    "bios_data_area",
    0x100,
    (
        Field("ebda_segment", 0x0E, 2),
        Field("base_mem_kib", 0x13, 2),
        Field("video_mode", 0x49, 1),
        Field("video_cols", 0x4A, 2),
        Field("cursor_page0", 0x50, 2, doc="low byte column, high byte row"),
        Field("hard_disks", 0x75, 1),
        Field("video_rows_minus1", 0x84, 1),
        Field("char_height", 0x85, 2),
    ),
)

#: What our INT 10h reports: a plain colour text adapter in 80x25 mode 3 with an
#: 8x16 font and the CGA default cursor (lines 6..7).  source: IBM VGA BIOS mode
#: table (mode 03h), Ralf Brown's interrupt list INT 10h AH=01h.
VIDEO_MODE_TEXT_80X25 = 0x03
VIDEO_COLS = 80
VIDEO_ROWS = 25
VIDEO_CHAR_HEIGHT = 16
VIDEO_CURSOR_SHAPE = 0x0607

#: INT 15h AH=88h is 16-bit; we cap it at 63 MiB as SeaBIOS does (src/system.c,
#: handle_1588), which real machines mostly report.
EXT_MEM_KIB_MAX = 63 * 1024
#: INT 15h AX=E801h: AX counts KiB up to 16 MiB only.  source: Ralf Brown's
#: interrupt list, INT 15h AX=E801h; arch/x86/boot/memory.c (15*1024).
E801_LOW_KIB_MAX = 15 * 1024
E801_BLOCK = 64 * 1024
#: Status in AH for "function not supported" (INT 15h) and "invalid function"
#: (INT 13h).  source: Ralf Brown's interrupt list.
INT15_UNSUPPORTED = 0x86
INT13_INVALID_FUNCTION = 0x01
