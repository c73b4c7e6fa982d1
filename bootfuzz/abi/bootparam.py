"""``struct setup_header`` and ``struct boot_params``, declared once.

source: arch/x86/include/uapi/asm/bootparam.h and Documentation/arch/x86/boot.rst
(Linux 6.1 and 6.12 have identical layouts; header version 0x020f in both).
Offsets are from the start of boot_params, which equals the file offset in a
bzImage for the header (0x1f1..0x26b).  Every other module reads and writes these
structures through the tables below, never through literal offsets.
"""

from __future__ import annotations

import enum

from bootfuzz.abi.structs import Field, Struct

BOOT_PARAMS_SIZE = 0x1000
SETUP_HEADER_OFFSET = 0x1F1
SETUP_HEADER_SIZE = 0x7B  # 123 bytes up to and including kernel_info_offset

BOOT_FLAG_MAGIC = 0xAA55  # source: boot.rst, boot_flag
HDRS_MAGIC = 0x53726448  # "HdrS", source: boot.rst, header
DEFAULT_SETUP_SECTS = 4  # source: boot.rst: "if this field is 0, the real value is 4"
SECTOR_SIZE = 512
#: Offset of the 64-bit entry point from the start of the protected-mode code.
STARTUP_64_OFFSET = 0x200  # source: boot.rst, "64-bit boot protocol"
#: Protocol version that added each capability we rely on.
PROTO_2_02_CMDLINE_PTR = 0x0202
PROTO_2_03_INITRD_ADDR_MAX = 0x0203
PROTO_2_06_CMDLINE_SIZE = 0x0206
PROTO_2_10_PREF_ADDRESS = 0x020A
PROTO_2_12_XLOADFLAGS = 0x020C
#: Before 2.06 the command line limit was fixed at 255 characters.
LEGACY_CMDLINE_SIZE = 255
#: Before 2.03 initrd_addr_max did not exist and the limit was this.
LEGACY_INITRD_ADDR_MAX = 0x37FFFFFF


def _v(major: int, minor: int) -> int:
    return (major << 8) | minor


def _f(name: str, offset: int, size: int, version: tuple[int, int] = (0, 0), doc: str = "",
       raw: bool = False) -> Field:
    return Field(name, offset, size, _v(*version), raw=raw, doc=doc)


#: The setup header, offsets relative to boot_params (0x1f1 ..).
SETUP_HEADER_FIELDS: tuple[Field, ...] = (
    _f("setup_sects", 0x1F1, 1, doc="512-byte setup sectors; 0 means 4"),
    _f("root_flags", 0x1F2, 2, doc="non-zero: root read-only"),
    _f("syssize", 0x1F4, 4, (2, 4), "protected-mode size in 16-byte paragraphs"),
    _f("ram_size", 0x1F8, 2, doc="obsolete"),
    _f("vid_mode", 0x1FA, 2, doc="video mode"),
    _f("root_dev", 0x1FC, 2, doc="default root device"),
    _f("boot_flag", 0x1FE, 2, doc="0xAA55"),
    _f("jump", 0x200, 2, (2, 0), "jump instruction; its offset gives the header end"),
    _f("header", 0x202, 4, (2, 0), "magic HdrS"),
    _f("version", 0x206, 2, (2, 0), "boot protocol version"),
    _f("realmode_swtch", 0x208, 4, (2, 0), "real-mode hook"),
    _f("start_sys_seg", 0x20C, 2, (2, 0), "obsolete, 0x1000"),
    _f("kernel_version", 0x20E, 2, (2, 0), "version string pointer - 0x200"),
    _f("type_of_loader", 0x210, 1, (2, 0), "loader id; 0 makes the kernel ignore the initrd"),
    _f("loadflags", 0x211, 1, (2, 0), "boot protocol option flags"),
    _f("setup_move_size", 0x212, 2, (2, 0), "obsolete"),
    _f("code32_start", 0x214, 4, (2, 0), "16-bit path's 32-bit entry"),
    _f("ramdisk_image", 0x218, 4, (2, 0), "initrd address, low 32 bits"),
    _f("ramdisk_size", 0x21C, 4, (2, 0), "initrd size, low 32 bits"),
    _f("bootsect_kludge", 0x220, 4, (2, 0), "obsolete"),
    _f("heap_end_ptr", 0x224, 2, (2, 1), "16-bit setup heap end"),
    _f("ext_loader_ver", 0x226, 1, (2, 2), "extended loader version"),
    _f("ext_loader_type", 0x227, 1, (2, 2), "extended loader type"),
    _f("cmd_line_ptr", 0x228, 4, (2, 2), "command line address, low 32 bits"),
    _f("initrd_addr_max", 0x22C, 4, (2, 3), "highest address the initrd may occupy"),
    _f("kernel_alignment", 0x230, 4, (2, 5), "physical alignment for the kernel"),
    _f("relocatable_kernel", 0x234, 1, (2, 5), "non-zero: relocatable"),
    _f("min_alignment", 0x235, 1, (2, 10), "log2 of the minimum alignment"),
    _f("xloadflags", 0x236, 2, (2, 12), "extended capability flags"),
    _f("cmdline_size", 0x238, 4, (2, 6), "maximum command line length without NUL"),
    _f("hardware_subarch", 0x23C, 4, (2, 7), "hardware subarchitecture"),
    _f("hardware_subarch_data", 0x240, 8, (2, 7), "subarchitecture data"),
    _f("payload_offset", 0x248, 4, (2, 8), "compressed kernel offset in pm code"),
    _f("payload_length", 0x24C, 4, (2, 8), "compressed kernel length"),
    _f("setup_data", 0x250, 8, (2, 9), "physical address of the setup_data list"),
    _f("pref_address", 0x258, 8, (2, 10), "preferred load address"),
    _f("init_size", 0x260, 4, (2, 10), "linear memory needed during initialization"),
    _f("handover_offset", 0x264, 4, (2, 11), "EFI handover entry offset"),
    _f("kernel_info_offset", 0x268, 4, (2, 15), "kernel_info offset in pm code"),
)

SETUP_HEADER = Struct("setup_header", BOOT_PARAMS_SIZE, SETUP_HEADER_FIELDS)

E820_TABLE_OFFSET = 0x2D0
E820_ENTRY_SIZE = 20
E820_MAX_ENTRIES_ZEROPAGE = 128

#: boot_params outside the setup header: what a 32/64-bit loader writes or must zero,
#: and what the kernel writes back.  Unnamed ranges (screen_info internals, EDD, ...)
#: stay zero in what we build.
BOOT_PARAMS_FIELDS: tuple[Field, ...] = (
    _f("screen_info", 0x000, 0x40, doc="zero for a headless guest", raw=True),
    _f("apm_bios_info", 0x040, 0x14, raw=True),
    _f("tboot_addr", 0x058, 8),
    _f("ist_info", 0x060, 0x10, raw=True),
    _f("acpi_rsdp_addr", 0x070, 8, doc="written back by the decompressor"),
    _f("hd0_info", 0x080, 0x10, raw=True),
    _f("hd1_info", 0x090, 0x10, raw=True),
    _f("sys_desc_table", 0x0A0, 0x10, raw=True),
    _f("olpc_ofw_header", 0x0B0, 0x10, raw=True),
    _f("ext_ramdisk_image", 0x0C0, 4, doc="initrd address bits 63..32"),
    _f("ext_ramdisk_size", 0x0C4, 4, doc="initrd size bits 63..32"),
    _f("ext_cmd_line_ptr", 0x0C8, 4, doc="command line address bits 63..32"),
    _f("cc_blob_address", 0x13C, 4),
    _f("edid_info", 0x140, 0x80, raw=True),
    _f("efi_info", 0x1C0, 0x20, raw=True),
    _f("alt_mem_k", 0x1E0, 4),
    _f("scratch", 0x1E4, 4, doc="the 32-bit entry's temporary stack"),
    _f("e820_entries", 0x1E8, 1),
    _f("eddbuf_entries", 0x1E9, 1),
    _f("edd_mbr_sig_buf_entries", 0x1EA, 1),
    _f("kbd_status", 0x1EB, 1),
    _f("secure_boot", 0x1EC, 1),
    _f("sentinel", 0x1EF, 1, doc="must be 0; non-zero makes the kernel wipe fields"),
    *SETUP_HEADER_FIELDS,
    _f("edd_mbr_sig_buffer", 0x290, 0x40, raw=True),
    _f("e820_table", E820_TABLE_OFFSET, E820_ENTRY_SIZE * E820_MAX_ENTRIES_ZEROPAGE, raw=True),
    _f("eddbuf", 0xD00, 0x1EC, raw=True),
)

BOOT_PARAMS = Struct("boot_params", BOOT_PARAMS_SIZE, BOOT_PARAMS_FIELDS)


class LoadFlags(enum.IntFlag):
    """hdr.loadflags; source: boot.rst."""

    LOADED_HIGH = 1 << 0
    KASLR_FLAG = 1 << 1  # kernel-internal: a loader must leave it clear
    QUIET_FLAG = 1 << 5
    KEEP_SEGMENTS = 1 << 6
    CAN_USE_HEAP = 1 << 7


class XLoadFlags(enum.IntFlag):
    """hdr.xloadflags; source: boot.rst and arch/x86/include/uapi/asm/bootparam.h."""

    XLF_KERNEL_64 = 1 << 0
    XLF_CAN_BE_LOADED_ABOVE_4G = 1 << 1
    XLF_EFI_HANDOVER_32 = 1 << 2
    XLF_EFI_HANDOVER_64 = 1 << 3
    XLF_EFI_KEXEC = 1 << 4
    XLF_5LEVEL = 1 << 5
    XLF_5LEVEL_ENABLED = 1 << 6
    XLF_MEM_ENCRYPTION = 1 << 7  # 6.12 only, set by the kernel at run time


#: type_of_loader for "undefined" loaders; ours is an unregistered loader.
#: source: boot.rst, type_of_loader ("0xFF = undefined").
LOADER_TYPE_UNDEFINED = 0xFF


def header_end(jump: int) -> int:
    """End offset of the setup header, from the 2-byte jump at 0x200 (EB xx)."""
    return 0x202 + (jump >> 8)


assert SETUP_HEADER["kernel_info_offset"].end - SETUP_HEADER_OFFSET == SETUP_HEADER_SIZE
assert BOOT_PARAMS["e820_table"].end == 0xCD0
assert BOOT_PARAMS["sentinel"].offset == 0x1EF
