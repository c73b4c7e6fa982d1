"""Every fixed guest-physical address our loader uses, in one place.

The low 640 KiB hold the small structures the loader builds; the kernel copies
what it needs (boot_params, command line) early, so they may sit in RAM the E820
table calls usable, as Firecracker and QEMU do.  Derived values are computed.
tests/unit/test_layout.py checks that no two regions overlap.
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PAGE_SIZE = 4 * KiB

#: Our GDT.  Selectors follow boot.rst: __BOOT_CS = 0x10, __BOOT_DS = 0x18.
#: 0x08 is a flat 32-bit code segment the firmware stub runs its own 32-bit code in
#: before it reaches the kernel's entry (the KVM backend never uses it).
GDT_ADDR = 0x500
GDT_ENTRIES = 4
GDT_SIZE = GDT_ENTRIES * 8
FIRMWARE_CODE32_SELECTOR = 0x08
BOOT_CS = 0x10
BOOT_DS = 0x18

#: The hand-off block our firmware stub reads to set the entry CPU state
#: (bootfuzz/abi/handoff.py).  Only the QEMU-TCG backend loads it.
HANDOFF_ADDR = 0x5000

#: PVH: hvm_start_info, then the module list and the memory map in the same page.
#: Linux reads them through the first 1 GiB direct map, so they must stay low.
PVH_START_INFO_ADDR = 0x6000
PVH_MODLIST_ADDR = PVH_START_INFO_ADDR + 0x40
PVH_MEMMAP_ADDR = PVH_START_INFO_ADDR + 0x100
PVH_MEMMAP_MAX_ENTRIES = (0x1000 - 0x100) // 24

#: boot_params, the "zero page" (4 KiB).  Firecracker uses the same address.
ZERO_PAGE_ADDR = 0x7000
#: The 16-bit entry has no zero page of ours: the block our BIOS serves from
#: (bootfuzz/abi/handoff.py, BIOS_DATA) takes its place.  It must lie below
#: 64 KiB: the BIOS addresses it with DS = 0.
BIOS_DATA_ADDR = ZERO_PAGE_ADDR

#: Top of the small stack the entry path starts on (16-byte aligned).
BOOT_STACK_TOP = 0x8FF0

#: Identity-mapping page tables: one PML4, one PDPT, then one page directory of
#: 2 MiB pages per GiB of guest-physical space covered.
PML4_ADDR = 0x9000
PDPT_ADDR = PML4_ADDR + PAGE_SIZE
PD_BASE_ADDR = PDPT_ADDR + PAGE_SIZE
#: Page directories we have room for: the identity map covers at most this many GiB.
MAX_PAGE_DIRECTORIES = 64
PAGE_TABLES_END = PD_BASE_ADDR + MAX_PAGE_DIRECTORIES * PAGE_SIZE

#: Command line, with room past cmdline_size so a deliberately over-long string
#: (a fuzzing case) still has somewhere to go.
CMDLINE_ADDR = PAGE_TABLES_END
CMDLINE_MAX = 16 * KiB
CMDLINE_END = CMDLINE_ADDR + CMDLINE_MAX

#: setup_data nodes the loader places itself go here, up to the end of low RAM.
SETUP_DATA_AREA = CMDLINE_END

#: End of conventional low memory (640 KiB); above it lie VGA and the BIOS area.
LOW_RAM_END = 0xA0000

#: Where legacy BIOS images live below 1 MiB; our firmware stub sits at its top.
BIOS_AREA_START = 0xF0000
HIGH_MEMORY_START = 1 * MiB

#: Start of the 64-bit address space above the 32-bit MMIO gap.
FOUR_GIB = 4 * GiB


def align_up(value: int, alignment: int) -> int:
    """Round *value* up to a power-of-two *alignment*."""
    return (value + alignment - 1) & ~(alignment - 1)


def align_down(value: int, alignment: int) -> int:
    """Round *value* down to a power-of-two *alignment*."""
    return value & ~(alignment - 1)


#: (name, start, end) of each fixed region, for the overlap test and for the plan's
#: blob names.
FIXED_REGIONS: tuple[tuple[str, int, int], ...] = (
    ("gdt", GDT_ADDR, GDT_ADDR + GDT_SIZE),
    ("handoff", HANDOFF_ADDR, HANDOFF_ADDR + 0x100),
    ("pvh_start_info", PVH_START_INFO_ADDR, PVH_START_INFO_ADDR + PAGE_SIZE),
    ("zero_page", ZERO_PAGE_ADDR, ZERO_PAGE_ADDR + PAGE_SIZE),
    ("stack", BOOT_STACK_TOP - PAGE_SIZE + 0x10, BOOT_STACK_TOP + 0x10),
    ("page_tables", PML4_ADDR, PAGE_TABLES_END),
    ("cmdline", CMDLINE_ADDR, CMDLINE_END),
)
