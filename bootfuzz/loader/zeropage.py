"""Our zero page (boot_params) and the plan of every entry that hands one over.

The 64-bit and 32-bit entries of a bzImage and the direct vmlinux entry differ only
in where the kernel goes and which mode the CPU is in at the jump; the rest (the
zero page with its E820 table, the setup_data chain it heads, the command line and
initrd it points at) is built here once.  source: boot.rst, "Details of header
fields" and "The 32-bit/64-bit boot protocol".
"""

from __future__ import annotations

from bootfuzz.abi.bootparam import (
    BOOT_PARAMS,
    BOOT_PARAMS_SIZE,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820_TABLE_OFFSET,
    LOADER_TYPE_UNDEFINED,
    SETUP_HEADER_OFFSET,
    LoadFlags,
)
from bootfuzz.abi.e820 import E820Entry, pack_table
from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.abi.setup_data import SetupType
from bootfuzz.case import BootCase, SetupDataNode
from bootfuzz.errors import LayoutError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.entry_cpu import entry_cpu, gdt_blob, page_tables_blob
from bootfuzz.loader.handover import e820_by_boot_params, told_by_boot_params, told_initrd
from bootfuzz.loader.layout import ZERO_PAGE_ADDR
from bootfuzz.loader.placement import (
    KernelPlacement,
    check_blobs,
    initrd_blobs,
    initrd_placement,
    place_setup_data,
    plan_e820,
)
from bootfuzz.loader.plan import Blob, BootPlan, InitrdImage, PlacedInitrd
from bootfuzz.loader.platform import Platform


def build_zero_page(
    image: KernelImage, e820: tuple[E820Entry, ...], cmdline_addr: int,
    initrd: PlacedInitrd | None, setup_data: int = 0,
    fields: tuple[tuple[str, int], ...] = (),
) -> bytes:
    """boot_params for the 32/64-bit protocols (boot.rst, "Details of header fields").

    Only the header range is copied from the image; bytes 0x1ef/0x1f0 (the image's
    0xff sentinel) stay zero, or the kernel would wipe the ext_* fields.
    """
    if len(e820) > E820_MAX_ENTRIES_ZEROPAGE:
        raise LayoutError(
            f"{len(e820)} E820 entries do not fit the zero page's {E820_MAX_ENTRIES_ZEROPAGE}"
        )
    zp = bytearray(BOOT_PARAMS_SIZE)
    zp[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(image.header.raw)] = image.header.raw
    loadflags = image.header["loadflags"] & ~(LoadFlags.KASLR_FLAG | LoadFlags.CAN_USE_HEAP)
    values: dict[str, int | bytes] = {
        "type_of_loader": LOADER_TYPE_UNDEFINED,
        "loadflags": loadflags | LoadFlags.LOADED_HIGH,
        "cmd_line_ptr": cmdline_addr & 0xFFFFFFFF,
        "ext_cmd_line_ptr": cmdline_addr >> 32,
        "ramdisk_image": 0,
        "ramdisk_size": 0,
        "hardware_subarch": 0,
        "setup_data": setup_data,
        "sentinel": 0,
        "e820_entries": len(e820),
    }
    if initrd is not None:
        values.update(
            ramdisk_image=initrd.addr & 0xFFFFFFFF,
            ext_ramdisk_image=initrd.addr >> 32,
            ramdisk_size=initrd.size & 0xFFFFFFFF,
            ext_ramdisk_size=initrd.size >> 32,
        )
    BOOT_PARAMS.pack_into(zp, values)
    table = pack_table(e820)
    zp[E820_TABLE_OFFSET : E820_TABLE_OFFSET + len(table)] = table
    try:
        BOOT_PARAMS.pack_into(zp, dict(fields))
    except ValueError as exc:
        raise LayoutError(f"override: {exc}") from None
    return bytes(zp)


def split_e820(e820: tuple[E820Entry, ...]
               ) -> tuple[tuple[E820Entry, ...], tuple[E820Entry, ...]]:
    """The entries that fit the zero page, and the rest for a SETUP_E820_EXT node."""
    return e820[:E820_MAX_ENTRIES_ZEROPAGE], e820[E820_MAX_ENTRIES_ZEROPAGE:]


def plan_with_zero_page(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None,
    *, cmdline: bytes, cmdline_blob: Blob, kernel: KernelPlacement, mode: HandoffMode,
) -> BootPlan:
    """The plan around a placed kernel and command line: initrd, E820, setup_data, zero page.

    The CPU jumps to *kernel*.entry in *mode* with RSI = the zero page; the long-mode
    entry also gets our identity map.  A table longer than the zero page holds goes
    on in a SETUP_E820_EXT node ahead of the case's own setup_data.
    """
    ov = case.overrides
    if ov.start_info:
        raise LayoutError(f"the {case.entry.value} entry hands over boot_params, not "
                          "hvm_start_info: override fields instead of start_info")
    placed = initrd_placement(case, image, platform, kernel.window[1], initrd)
    e820 = plan_e820(platform) if ov.e820 is None else ov.e820
    in_zero_page, extended = split_e820(e820)
    nodes = ov.setup_data
    if extended:
        nodes = (SetupDataNode(SetupType.SETUP_E820_EXT, pack_table(extended)), *nodes)
    setup_head, setup_blobs = place_setup_data(nodes)
    zero_page = build_zero_page(image, in_zero_page, cmdline_blob.addr, placed, setup_head,
                                ov.fields)
    blobs = [
        gdt_blob(mode),
        cmdline_blob,
        Blob("zero_page", ZERO_PAGE_ADDR, BOOT_PARAMS_SIZE, data=zero_page),
        *kernel.blobs,
        *setup_blobs,
    ]
    if mode is HandoffMode.LONG_64:
        blobs.append(page_tables_blob(platform))
    blobs += initrd_blobs(placed, initrd)
    check_blobs(blobs, platform, own_layout=ov.empty)
    told = told_by_boot_params(zero_page)
    return BootPlan(
        case=case,
        platform=platform,
        blobs=tuple(blobs),
        e820=e820,
        cpu=entry_cpu(mode, kernel.entry, rsi=ZERO_PAGE_ADDR),
        zero_page=zero_page,
        cmdline=cmdline,
        kernel_load=kernel.load,
        kernel_run=kernel.window[0],
        init_size=kernel.window[1] - kernel.window[0],
        initrd=told_initrd(placed, told),
        kernel_e820=e820_by_boot_params(zero_page),
        image_header=image.header.fields,
        kernel_e820_ext=e820 if extended else None,
        kernel_default_load=kernel.default_load,
    )
