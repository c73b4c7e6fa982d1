"""The PVH entry: the vmlinux's XEN_ELFNOTE_PHYS32_ENTRY, 32-bit.  Pure: no I/O.

No zero page of ours: the CPU enters with paging off and EBX pointing at an
hvm_start_info page (command line, one module for the initrd, the memory map), from
which the kernel's PVH code builds its own boot_params.  The plan records the fields
that boot_params must show.  source: Xen's docs/misc/pvh.pandoc,
arch/x86/platform/pvh/{head.S,enlighten.c}.
"""

from __future__ import annotations

from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.abi.pvh import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_INFO,
    HVM_START_INFO_VERSION,
    HVM_START_MAGIC_VALUE,
    PVH_BOOT_PARAMS_VERSION,
    PVH_E820_ENTRIES_MASK,
    PVH_ISA_HOLE_MAX_ENTRIES,
    PVH_TYPE_OF_LOADER_NON_XEN,
)
from bootfuzz.abi.structs import Field
from bootfuzz.case import BootCase
from bootfuzz.errors import LayoutError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.entry_cpu import entry_cpu, gdt_blob
from bootfuzz.loader.handover import e820_by_memmap, told_by_start_info, told_initrd
from bootfuzz.loader.layout import (
    HIGH_MEMORY_START,
    LOW_RAM_END,
    PAGE_SIZE,
    PVH_MEMMAP_ADDR,
    PVH_MEMMAP_MAX_ENTRIES,
    PVH_MODLIST_ADDR,
    PVH_START_INFO_ADDR,
)
from bootfuzz.loader.memory import read_memory
from bootfuzz.loader.placement import (
    check_blobs,
    cmdline_blob,
    initrd_blobs,
    initrd_placement,
    place_vmlinux,
    plan_e820,
)
from bootfuzz.loader.plan import Blob, BootPlan, InitrdImage, PlacedInitrd
from bootfuzz.loader.platform import Platform

#: Where the first module entry sits inside the start_info page.
MODULE0_OFFSET = PVH_MODLIST_ADDR - PVH_START_INFO_ADDR
#: The names an override may give in start_info: hvm_start_info's fields, and the
#: first module entry's as "module0.<field>" (with the entry's offset in the page).
MODULE0_PREFIX = "module0."
START_INFO_FIELDS: dict[str, tuple[Field, int]] = {
    **{f.name: (f, 0) for f in HVM_START_INFO},
    **{MODULE0_PREFIX + f.name: (f, MODULE0_OFFSET) for f in HVM_MODLIST_ENTRY},
}


def pvh_kernel_e820(e820: tuple[E820Entry, ...]) -> tuple[E820Entry, ...]:
    """The table Linux's PVH entry hands on: ours plus the ISA hole as reserved.

    source: arch/x86/platform/pvh/enlighten.c, init_pvh_bootparams.
    """
    if len(e820) >= PVH_ISA_HOLE_MAX_ENTRIES:
        return e820
    hole = E820Entry(LOW_RAM_END, HIGH_MEMORY_START - LOW_RAM_END, E820Type.RESERVED)
    return (*e820, hole)


def build_start_info(
    cmdline_addr: int, e820: tuple[E820Entry, ...], initrd: PlacedInitrd | None
) -> bytes:
    """The page at PVH_START_INFO_ADDR: hvm_start_info, module list, memory map."""
    if len(e820) > PVH_MEMMAP_MAX_ENTRIES:
        raise LayoutError(f"{len(e820)} memory map entries do not fit the start_info page")
    page = bytearray(PAGE_SIZE)
    HVM_START_INFO.pack_into(page, {
        "magic": HVM_START_MAGIC_VALUE,
        "version": HVM_START_INFO_VERSION,
        "nr_modules": 1 if initrd else 0,
        "modlist_paddr": PVH_MODLIST_ADDR if initrd else 0,
        "cmdline_paddr": cmdline_addr,
        "memmap_paddr": PVH_MEMMAP_ADDR,
        "memmap_entries": len(e820),
    })
    if initrd is not None:
        HVM_MODLIST_ENTRY.pack_into(page, {"paddr": initrd.addr, "size": initrd.size},
                                    base=MODULE0_OFFSET)
    for i, entry in enumerate(e820):
        HVM_MEMMAP_TABLE_ENTRY.pack_into(
            page, {"addr": entry.addr, "size": entry.size, "type": entry.type},
            base=PVH_MEMMAP_ADDR - PVH_START_INFO_ADDR + i * HVM_MEMMAP_TABLE_ENTRY.size,
        )
    return bytes(page)


def override_start_info(page: bytes, values: tuple[tuple[str, int], ...]) -> bytes:
    """*page* with the override's hvm_start_info / module0 fields written over it."""
    out = bytearray(page)
    for name, value in values:
        if name not in START_INFO_FIELDS:
            raise LayoutError(f"override: hvm_start_info has no field {name!r}")
        f, base = START_INFO_FIELDS[name]
        try:
            out[base + f.offset : base + f.end] = f.encode(value)
        except ValueError as exc:
            raise LayoutError(f"override: {exc}") from None
    return bytes(out)


def plan_pvh(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """PVH: the vmlinux's PT_LOADs at their physical addresses, no decompressor.

    6.1 must sit exactly at p_paddr; 6.12's PHYS32_RELOC note lets a loader shift
    the image (kernel_load), which the judge's layout rules check against the note.
    """
    ov = case.overrides
    if ov.fields or ov.setup_data:
        raise LayoutError("the PVH entry has no zero page or setup_data of ours to override "
                          "(Linux builds its own boot_params): override start_info instead")
    cmdline, cmdline_at = cmdline_blob(case, image)
    kernel, info = place_vmlinux(
        image, platform, ov.kernel_load, lambda i: i.pvh_entry,
        "no PVH entry (Xen note XEN_ELFNOTE_PHYS32_ENTRY): the kernel was built without "
        "CONFIG_PVH",
    )
    start, end = kernel.window
    placed = initrd_placement(case, image, platform, end, initrd)
    e820 = plan_e820(platform) if ov.e820 is None else ov.e820
    start_info = override_start_info(build_start_info(cmdline_at.addr, e820, placed),
                                     ov.start_info)
    mode = HandoffMode.PROTECTED_32
    blobs = [
        gdt_blob(mode),
        cmdline_at,
        Blob("pvh_start_info", PVH_START_INFO_ADDR, PAGE_SIZE, data=start_info),
        *kernel.blobs,
        *initrd_blobs(placed, initrd),
    ]
    check_blobs(blobs, platform, own_layout=ov.empty)
    # What Linux reads: the module entry and memory map where start_info points.
    hvm = HVM_START_INFO.parse(start_info)
    module0 = (read_memory(blobs, platform, int(hvm["modlist_paddr"]), HVM_MODLIST_ENTRY.size)
               if hvm["nr_modules"] else None)
    told = told_by_start_info(start_info, module0)
    count = int(hvm["memmap_entries"]) & PVH_E820_ENTRIES_MASK
    memmap = read_memory(blobs, platform, int(hvm["memmap_paddr"]),
                         count * HVM_MEMMAP_TABLE_ENTRY.size)
    kernel_e820 = pvh_kernel_e820(e820 if memmap is None else e820_by_memmap(memmap, count))
    fields: list[tuple[str, int | bytes]] = [
        ("e820_entries", len(kernel_e820)),
        ("cmd_line_ptr", told.cmdline),
        ("ramdisk_image", told.initrd[0] if told.initrd else 0),
        ("ramdisk_size", told.initrd[1] if told.initrd else 0),
        ("version", PVH_BOOT_PARAMS_VERSION),
        ("type_of_loader", PVH_TYPE_OF_LOADER_NON_XEN),
    ]
    return BootPlan(
        case=case,
        platform=platform,
        blobs=tuple(blobs),
        e820=e820,
        cpu=entry_cpu(mode, kernel.entry, rbx=PVH_START_INFO_ADDR),
        zero_page=b"",
        cmdline=cmdline,
        kernel_load=start,
        kernel_run=start,
        init_size=end - start,
        initrd=told_initrd(placed, told),
        kernel_e820=kernel_e820,
        boot_params_fields=tuple(fields),
        image_header=image.header.fields,
        pvh_reloc=info.pvh_reloc,
        kernel_default_load=kernel.default_load,
    )
