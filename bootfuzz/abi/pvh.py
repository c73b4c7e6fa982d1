"""The PVH boot ABI: ``struct hvm_start_info`` (version 1) and its tables.

source: xen/include/public/arch-x86/hvm/start_info.h (mirrored in Linux as
include/xen/interface/hvm/start_info.h) and Xen's docs/misc/pvh.pandoc;
summarized in shared/reference/boot-protocol.md 3.6.
"""

from __future__ import annotations

from bootfuzz.abi.structs import Field, Struct

HVM_START_MAGIC_VALUE = 0x336EC578  # "xEn3" with 0x80 set in 'E'
HVM_START_INFO_VERSION = 1  # version 1 adds the memory map

HVM_START_INFO = Struct(
    "hvm_start_info",
    56,
    (
        Field("magic", 0, 4),
        Field("version", 4, 4),
        Field("flags", 8, 4),
        Field("nr_modules", 12, 4),
        Field("modlist_paddr", 16, 8),
        Field("cmdline_paddr", 24, 8),
        Field("rsdp_paddr", 32, 8),
        Field("memmap_paddr", 40, 8),
        Field("memmap_entries", 48, 4),
        Field("reserved", 52, 4),
    ),
)

HVM_MODLIST_ENTRY = Struct(
    "hvm_modlist_entry",
    32,
    (
        Field("paddr", 0, 8),
        Field("size", 8, 8),
        Field("cmdline_paddr", 16, 8),
        Field("reserved", 24, 8),
    ),
)

#: 24 bytes, unlike the zero page's 20-byte boot_e820_entry.
HVM_MEMMAP_TABLE_ENTRY = Struct(
    "hvm_memmap_table_entry",
    24,
    (
        Field("addr", 0, 8),
        Field("size", 8, 8),
        Field("type", 16, 4),
        Field("reserved", 20, 4),
    ),
)

#: What Linux's PVH entry sets in the boot_params it builds for itself.
#: source: arch/x86/platform/pvh/enlighten.c, init_pvh_bootparams (6.1 = 6.12)
PVH_BOOT_PARAMS_VERSION = 0x020C
PVH_TYPE_OF_LOADER_NON_XEN = 0xB0
#: init_pvh_bootparams appends the ISA hole as reserved while fewer entries than this.
PVH_ISA_HOLE_MAX_ENTRIES = 127
#: pvh_bootparams.e820_entries is a u8: Linux keeps the low 8 bits of memmap_entries
#: and copies that many entries, uncapped.  source: enlighten.c, init_pvh_bootparams.
PVH_E820_ENTRIES_MASK = 0xFF
