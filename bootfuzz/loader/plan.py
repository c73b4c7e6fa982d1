"""The loader: a BootCase and a kernel image become a BootPlan.  Pure: no I/O.

A plan is every byte our loader puts in guest memory (named blobs at addresses),
the E820 table it describes, and the CPU state at the jump.  Backends only execute
plans; oracles compare what the kernel saw with the plan.  Each rule below cites
where it comes from (boot.rst, or shared/reference/boot-protocol.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bootfuzz.abi.bootparam import (
    BOOT_PARAMS,
    BOOT_PARAMS_SIZE,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820_TABLE_OFFSET,
    LOADER_TYPE_UNDEFINED,
    SETUP_HEADER_OFFSET,
    STARTUP_64_OFFSET,
    LoadFlags,
    XLoadFlags,
)
from bootfuzz.abi.e820 import E820Entry, E820Type, pack_table
from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.abi.pvh import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_INFO,
    HVM_START_INFO_VERSION,
    HVM_START_MAGIC_VALUE,
    PVH_BOOT_PARAMS_VERSION,
    PVH_ISA_HOLE_MAX_ENTRIES,
    PVH_TYPE_OF_LOADER_NON_XEN,
)
from bootfuzz.abi.setup_data import SETUP_DATA_ALIGN, SETUP_DATA_HEADER, SetupType
from bootfuzz.case import BootCase, EntryProtocol, InitrdPlacement, SetupDataNode
from bootfuzz.errors import CmdlineError, HarnessBug, ImageError, LayoutError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.kernel.payload import PvhReloc, VmlinuxInfo
from bootfuzz.loader.layout import (
    BIOS_AREA_START,
    BOOT_CS,
    BOOT_DS,
    BOOT_STACK_TOP,
    CMDLINE_ADDR,
    CMDLINE_MAX,
    FOUR_GIB,
    GDT_ADDR,
    GDT_ENTRIES,
    HIGH_MEMORY_START,
    LOW_RAM_END,
    MAX_PAGE_DIRECTORIES,
    PAGE_SIZE,
    PML4_ADDR,
    PVH_MEMMAP_ADDR,
    PVH_MEMMAP_MAX_ENTRIES,
    PVH_MODLIST_ADDR,
    PVH_START_INFO_ADDR,
    SETUP_DATA_AREA,
    ZERO_PAGE_ADDR,
    GiB,
    align_down,
    align_up,
)
from bootfuzz.loader.platform import FIRMWARE_TOP_BASE, Platform
from bootfuzz.loader.x86 import (
    FLAT_CODE32,
    FLAT_CODE64,
    FLAT_DATA,
    Cr0,
    Cr4,
    Efer,
    identity_page_tables,
)


class InitrdImage(Protocol):
    """What the loader needs of a built initrd (bootfuzz.guest.initramfs.BuiltInitrd)."""

    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def payload_sha256(self) -> str: ...


@dataclass(frozen=True)
class Blob:
    """Bytes at a guest-physical address: in memory (data) or in a file (path)."""

    name: str
    addr: int
    size: int
    data: bytes | None = None
    path: Path | None = None

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class CpuState:
    """Registers at the kernel's first instruction; both backends reproduce it exactly."""

    mode: HandoffMode
    rip: int
    rsi: int
    rbx: int
    rsp: int
    cr0: int
    cr3: int
    cr4: int
    efer: int
    gdt_base: int
    gdt_limit: int
    code_selector: int
    data_selector: int


@dataclass(frozen=True)
class PlacedInitrd:
    addr: int
    size: int
    payload_sha256: str

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class BootPlan:
    case: BootCase
    platform: Platform
    blobs: tuple[Blob, ...]
    e820: tuple[E820Entry, ...]
    cpu: CpuState
    zero_page: bytes
    cmdline: bytes  # as written, without the terminating NUL
    kernel_load: int
    kernel_run: int  # where the decompressor runs: [run, run + init_size) is its window
    init_size: int
    initrd: PlacedInitrd | None
    #: The table the kernel starts from before sanitizing it: what we wrote, plus
    #: what its entry code adds (PVH appends the ISA hole).
    kernel_e820: tuple[E820Entry, ...] = ()
    #: For entries where the kernel builds its own boot_params (PVH): the fields it
    #: must show.  Empty for the 64-bit entry, whose whole zero_page is compared.
    boot_params_fields: tuple[tuple[str, int | bytes], ...] = ()
    #: The kernel image's setup header as read (the rules a layout must obey).
    image_header: Mapping[str, int] = field(default_factory=dict)
    #: The whole table when it overflows the zero page into a SETUP_E820_EXT node:
    #: the kernel prints it again as its "extended" map.
    kernel_e820_ext: tuple[E820Entry, ...] | None = None
    #: PVH relocation limits from the vmlinux's PHYS32_RELOC note (6.12), if any.
    pvh_reloc: PvhReloc | None = None
    #: Where the kernel loads when nobody moves it: pref_address for a bzImage, the
    #: first PT_LOAD's p_paddr for a vmlinux.  kernel_load differs only by an override.
    kernel_default_load: int = 0

    @property
    def kernel_window(self) -> tuple[int, int]:
        return (self.kernel_run, self.kernel_run + self.init_size)

    def blob(self, name: str) -> Blob:
        for b in self.blobs:
            if b.name == name:
                return b
        raise KeyError(name)


def plan_e820(platform: Platform) -> tuple[E820Entry, ...]:
    """The E820 table for *platform*: its RAM, less the legacy VGA/BIOS hole.

    [0xA0000, 0xF0000) is VGA memory and option-ROM space (left out: a hole);
    [0xF0000, 1 MiB) holds the low copy of our firmware and the top 64 KiB below
    4 GiB its reset-vector copy: both reserved.  Everything between the top of low
    RAM and 4 GiB is the platform's MMIO gap and is never described as RAM.
    """
    ram, reserved = E820Type.RAM, E820Type.RESERVED
    table = [
        E820Entry(0, LOW_RAM_END, ram),
        E820Entry(BIOS_AREA_START, HIGH_MEMORY_START - BIOS_AREA_START, reserved),
        E820Entry(HIGH_MEMORY_START, platform.low.end - HIGH_MEMORY_START, ram),
        E820Entry(FIRMWARE_TOP_BASE, FOUR_GIB - FIRMWARE_TOP_BASE, reserved),
    ]
    if platform.high is not None:
        table.append(E820Entry(platform.high.start, platform.high.size, ram))
    return tuple(table)


def encode_cmdline(cmdline: str, image: KernelImage) -> bytes:
    """The command line bytes without NUL, checked against the image's cmdline_size."""
    raw = cmdline.encode()
    if b"\0" in raw:
        raise CmdlineError("contains a NUL byte; the kernel would stop reading there")
    if len(raw) > image.cmdline_size:
        raise CmdlineError(
            f"{len(raw)} bytes is longer than the kernel's cmdline_size of "
            f"{image.cmdline_size} (the limit without the terminating NUL)"
        )
    if len(raw) + 1 > CMDLINE_MAX:
        raise HarnessBug("cmdline_size exceeds the space layout.py reserves")
    return raw


def decompressor_run_address(image: KernelImage, load: int) -> int:
    """Where the decompressor runs for a kernel loaded at *load*.

    align_up(load, kernel_alignment), raised to LOAD_PHYSICAL_ADDR (pref_address)
    if lower; a non-relocatable kernel always runs at pref_address.
    source: arch/x86/boot/compressed/head_64.S, boot-protocol.md 3.3.
    """
    if not image.relocatable:
        return image.pref_address
    return max(align_up(load, image.kernel_alignment or 1), image.pref_address)


def place_kernel(
    image: KernelImage, platform: Platform, load_override: int | None = None
) -> tuple[int, int]:
    """Load and run address of the protected-mode code.

    We load at pref_address, which the kernel requires when not relocatable and
    prefers otherwise; aligned to kernel_alignment it is also where the
    decompressor runs, so [load, load + init_size) is the whole window
    (boot-protocol.md 3.3).  An override loads elsewhere and lets the kernel's
    own rule pick the run address.
    """
    if load_override is not None:
        load = load_override
    else:
        load = image.pref_address
        alignment = image.kernel_alignment
        if alignment and load % alignment:
            raise ImageError(
                f"pref_address {load:#x} is not aligned to kernel_alignment {alignment:#x}"
            )
    run = decompressor_run_address(image, load)
    end = run + image.init_size
    if end > platform.low.end:
        raise LayoutError(
            f"{platform.memory // (1 << 20)} MiB of RAM is too small: the kernel runs at "
            f"{run:#x} and needs init_size {image.init_size:#x} bytes up to {end:#x}, but RAM "
            f"below the MMIO gap ends at {platform.low.end:#x}"
        )
    return load, run


def _place_initrd(
    case: BootCase, image: KernelImage, platform: Platform, window_end: int,
    initrd: InitrdImage,
) -> PlacedInitrd:
    """Page aligned, outside the kernel, by the case's placement policy.

    TOP is what QEMU and GRUB do: the top of low RAM below initrd_addr_max.  The
    initrd must stay out of the decompressor's window [run, run + init_size) and
    start on a page (free_initrd_mem WARNs otherwise): boot-protocol.md 5.7.
    """
    if initrd.size <= 0:
        raise LayoutError("the initrd is empty; the kernel ignores a zero ramdisk_size")
    size = initrd.size
    limit = min(image.initrd_addr_max + 1, platform.low.end)
    policy = case.initrd_placement
    if policy is InitrdPlacement.HIGH:
        if case.entry not in (EntryProtocol.BOOT64, EntryProtocol.VMLINUX):
            raise LayoutError(f"an initrd above 4 GiB needs a 64-bit entry, not {case.entry.value}")
        if XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G not in image.xloadflags:
            raise LayoutError("the kernel does not set XLF_CAN_BE_LOADED_ABOVE_4G: "
                              "its initrd must stay below initrd_addr_max")
        if platform.high is None or platform.high.size < size:
            raise LayoutError(f"no room for an initrd of {size} bytes above 4 GiB "
                              f"({platform.memory // (1 << 20)} MiB guest)")
        addr = align_down(platform.high.end - size, PAGE_SIZE)
    elif policy is InitrdPlacement.LOW:
        addr = align_up(window_end, PAGE_SIZE)
    else:
        addr = align_down(limit - size, PAGE_SIZE)
    if policy is not InitrdPlacement.HIGH and (addr < window_end or addr + size > limit):
        raise LayoutError(
            f"an initrd of {size} bytes does not fit: it must lie above the kernel's "
            f"window (ends {window_end:#x}) and end below {limit:#x} (the lower of "
            f"initrd_addr_max + 1 and the top of RAM below the MMIO gap)"
        )
    return PlacedInitrd(addr, size, initrd.payload_sha256)


def _covered_gib(platform: Platform) -> int:
    """GiB the identity map covers: at least 4 GiB, all RAM where the tables allow."""
    return max(4, min(MAX_PAGE_DIRECTORIES, align_up(platform.top_of_ram, GiB) // GiB))


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


def place_setup_data(nodes: tuple[SetupDataNode, ...]) -> tuple[int, list[Blob]]:
    """Chain *nodes* (first node first) and place those without an address.

    Returns the head pointer for hdr.setup_data and one blob per node.
    """
    addrs: list[int] = []
    cursor = SETUP_DATA_AREA
    for node in nodes:
        size = SETUP_DATA_HEADER.size + len(node.payload)
        if node.addr is not None:
            addrs.append(node.addr)
            continue
        addrs.append(cursor)
        cursor = align_up(cursor + size, SETUP_DATA_ALIGN)
        if cursor > LOW_RAM_END:
            raise LayoutError("setup_data nodes overflow the low-memory area reserved for them")
    blobs = []
    for i, (node, addr) in enumerate(zip(nodes, addrs, strict=True)):
        following = addrs[i + 1] if i + 1 < len(addrs) else 0
        header = SETUP_DATA_HEADER.build(
            {"next": following, "type": node.type, "len": len(node.payload)}
        )
        data = header + node.payload
        blobs.append(Blob(f"setup_data{i}", addr, len(data), data=data))
    return (addrs[0] if addrs else 0), blobs


def _gdt(entry: EntryProtocol) -> bytes:
    """null, firmware 32-bit code (0x08), __BOOT_CS (0x10), __BOOT_DS (0x18)."""
    long_mode = entry in (EntryProtocol.BOOT64, EntryProtocol.VMLINUX)
    code = FLAT_CODE64 if long_mode else FLAT_CODE32
    words = (0, FLAT_CODE32, code, FLAT_DATA)
    assert len(words) == GDT_ENTRIES
    return b"".join(w.to_bytes(8, "little") for w in words)


def check_blobs(blobs: list[Blob], platform: Platform) -> None:
    ordered = sorted(blobs, key=lambda b: b.addr)
    for a, b in itertools.pairwise(ordered):
        if a.end > b.addr:
            raise LayoutError(
                f"{a.name} [{a.addr:#x}, {a.end:#x}) overlaps {b.name} at {b.addr:#x}"
            )
    for blob in ordered:
        if not any(r.start <= blob.addr and blob.end <= r.end for r in platform.ram_ranges()):
            raise LayoutError(f"{blob.name} [{blob.addr:#x}, {blob.end:#x}) is not inside RAM")


def _entry_cpu(mode: HandoffMode, rip: int, *, rsi: int = 0, rbx: int = 0) -> CpuState:
    """Flat __BOOT_CS/__BOOT_DS segments from our GDT, IF=0, and paging as *mode* needs:
    long mode on our identity map for LONG_64, paging off otherwise (boot.rst
    "32-bit/64-bit boot protocol"; pvh.pandoc for PVH)."""
    long_mode = mode is HandoffMode.LONG_64
    return CpuState(
        mode=mode,
        rip=rip,
        rsi=rsi,
        rbx=rbx,
        rsp=BOOT_STACK_TOP,
        cr0=Cr0.PE | Cr0.ET | (Cr0.PG if long_mode else 0),
        cr3=PML4_ADDR if long_mode else 0,
        cr4=Cr4.PAE if long_mode else 0,
        efer=Efer.LME | Efer.LMA if long_mode else 0,
        gdt_base=GDT_ADDR,
        gdt_limit=GDT_ENTRIES * 8 - 1,
        code_selector=BOOT_CS,
        data_selector=BOOT_DS,
    )


def plan_boot(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None = None
) -> BootPlan:
    """Lay out *case* on *platform* for its entry protocol."""
    if platform.memory != case.memory:
        raise HarnessBug("platform built for another memory size than the case")
    if case.entry in (EntryProtocol.BOOT64, EntryProtocol.BOOT32, EntryProtocol.VMLINUX):
        return _plan_zero_page_entry(case, image, platform, initrd)
    if case.entry is EntryProtocol.PVH:
        return _plan_pvh(case, image, platform, initrd)
    if case.entry.value == "16":
        from bootfuzz.loader.real16 import plan_boot16

        return plan_boot16(case, image, platform, initrd)
    raise LayoutError(f"entry protocol {case.entry.value} is not supported yet")


def _cmdline_blob(case: BootCase, image: KernelImage) -> tuple[bytes, Blob]:
    """The intended command line, and the blob actually written (an override's raw bytes)."""
    ov = case.overrides
    addr = CMDLINE_ADDR if ov.cmdline_addr is None else ov.cmdline_addr
    if ov.cmdline_raw is None:
        cmdline = encode_cmdline(case.cmdline, image)
        return cmdline, Blob("cmdline", addr, len(cmdline) + 1, data=cmdline + b"\0")
    raw = ov.cmdline_raw
    return case.cmdline.encode(), Blob("cmdline", addr, len(raw), data=raw)


def initrd_placement(
    case: BootCase, image: KernelImage, platform: Platform, window_end: int,
    initrd: InitrdImage | None,
) -> PlacedInitrd | None:
    if initrd is None:
        return None
    if case.overrides.initrd_addr is not None:
        return PlacedInitrd(case.overrides.initrd_addr, initrd.size, initrd.payload_sha256)
    return _place_initrd(case, image, platform, window_end, initrd)


@dataclass(frozen=True)
class _KernelPlacement:
    """Where the kernel's bytes go, and the range nothing else may touch."""

    blobs: tuple[Blob, ...]
    entry: int
    load: int
    window: tuple[int, int]
    default_load: int


def _place_bzimage(case: BootCase, image: KernelImage, platform: Platform,
                   offset: int) -> _KernelPlacement:
    load, run = place_kernel(image, platform, case.overrides.kernel_load)
    pm_code = image.protected_mode_code
    return _KernelPlacement((Blob("kernel", load, len(pm_code), data=pm_code),),
                            load + offset, load, (run, run + image.init_size),
                            image.pref_address)


def _place_vmlinux(image: KernelImage, platform: Platform, load: int | None,
                   entry_of: Callable[[VmlinuxInfo], int | None], what: str
                   ) -> tuple[_KernelPlacement, VmlinuxInfo]:
    """The vmlinux's PT_LOADs at p_paddr, or shifted so the first lands at *load*.

    Memory past p_filesz (the bss) is left to the backend's fresh RAM, which is
    zero on QEMU and on anonymous mappings alike.
    """
    from bootfuzz.kernel.payload import read_vmlinux

    info = read_vmlinux(image.vmlinux)
    entry = entry_of(info)
    if entry is None:
        raise ImageError(f"{image.source}: {what}")
    loads = [seg for seg in info.segments if seg.p_memsz]
    start = min(seg.p_paddr for seg in loads)
    shift = 0 if load is None else load - start
    end = max(seg.p_paddr + seg.p_memsz for seg in loads) + shift
    if end > platform.low.end:
        raise LayoutError(
            f"{platform.memory // (1 << 20)} MiB of RAM is too small: the vmlinux occupies "
            f"[{start + shift:#x}, {end:#x}), RAM below the MMIO gap ends at {platform.low.end:#x}"
        )
    vmlinux = image.vmlinux
    blobs = tuple(
        Blob(f"vmlinux{i}", seg.p_paddr + shift, seg.p_filesz,
             data=vmlinux[seg.p_offset : seg.p_offset + seg.p_filesz])
        for i, seg in enumerate(loads)
    )
    return _KernelPlacement(blobs, entry + shift, start + shift, (start + shift, end),
                            start), info


def split_e820(e820: tuple[E820Entry, ...]
               ) -> tuple[tuple[E820Entry, ...], tuple[E820Entry, ...]]:
    """The entries that fit the zero page, and the rest for a SETUP_E820_EXT node."""
    return e820[:E820_MAX_ENTRIES_ZEROPAGE], e820[E820_MAX_ENTRIES_ZEROPAGE:]


def _plan_zero_page_entry(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """The 64-bit, 32-bit and direct-vmlinux entries: all hand the kernel our zero page."""
    entry = case.entry
    if entry is EntryProtocol.BOOT64 and not image.has_64bit_entry:
        raise ImageError(
            f"{image.source}: the 64-bit entry needs XLF_KERNEL_64 in xloadflags "
            f"({int(image.xloadflags):#x})"
        )
    ov = case.overrides
    cmdline, cmdline_blob = _cmdline_blob(case, image)
    if entry is EntryProtocol.VMLINUX:
        kernel, _ = _place_vmlinux(image, platform, ov.kernel_load, lambda i: i.entry,
                                   "the vmlinux has no entry point")
    else:
        kernel = _place_bzimage(case, image, platform,
                                STARTUP_64_OFFSET if entry is EntryProtocol.BOOT64 else 0)
    placed = initrd_placement(case, image, platform, kernel.window[1], initrd)
    e820 = plan_e820(platform) if ov.e820 is None else ov.e820
    in_zero_page, extended = split_e820(e820)
    nodes = ov.setup_data
    if extended:
        nodes = (SetupDataNode(SetupType.SETUP_E820_EXT, pack_table(extended)), *nodes)
    setup_head, setup_blobs = place_setup_data(nodes)
    zero_page = build_zero_page(image, in_zero_page, cmdline_blob.addr, placed, setup_head,
                                ov.fields)
    gdt = _gdt(entry)
    blobs = [
        Blob("gdt", GDT_ADDR, len(gdt), data=gdt),
        cmdline_blob,
        Blob("zero_page", ZERO_PAGE_ADDR, BOOT_PARAMS_SIZE, data=zero_page),
        *kernel.blobs,
        *setup_blobs,
    ]
    if entry is EntryProtocol.BOOT32:
        cpu = _entry_cpu(HandoffMode.PROTECTED_32, kernel.entry, rsi=ZERO_PAGE_ADDR)
    else:
        tables = identity_page_tables(PML4_ADDR, _covered_gib(platform))
        blobs.append(Blob("page_tables", PML4_ADDR, len(tables), data=tables))
        cpu = _entry_cpu(HandoffMode.LONG_64, kernel.entry, rsi=ZERO_PAGE_ADDR)
    if placed is not None and initrd is not None:
        blobs.append(Blob("initrd", placed.addr, placed.size, path=initrd.path))
    check_blobs(blobs, platform)
    return BootPlan(
        case=case,
        platform=platform,
        blobs=tuple(blobs),
        e820=e820,
        cpu=cpu,
        zero_page=zero_page,
        cmdline=cmdline,
        kernel_load=kernel.load,
        kernel_run=kernel.window[0],
        init_size=kernel.window[1] - kernel.window[0],
        initrd=placed,
        kernel_e820=in_zero_page,
        image_header=image.header.fields,
        kernel_e820_ext=e820 if extended else None,
        kernel_default_load=kernel.default_load,
    )


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
                                    base=PVH_MODLIST_ADDR - PVH_START_INFO_ADDR)
    for i, entry in enumerate(e820):
        HVM_MEMMAP_TABLE_ENTRY.pack_into(
            page, {"addr": entry.addr, "size": entry.size, "type": entry.type},
            base=PVH_MEMMAP_ADDR - PVH_START_INFO_ADDR + i * HVM_MEMMAP_TABLE_ENTRY.size,
        )
    return bytes(page)


def _plan_pvh(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """PVH: the vmlinux's PT_LOADs at their physical addresses, no decompressor.

    6.1 must sit exactly at p_paddr; 6.12's PHYS32_RELOC note lets a loader shift
    the image (kernel_load), which layout_rules checks against the note.
    """
    ov = case.overrides
    if ov.fields or ov.setup_data:
        raise LayoutError("the PVH entry has no zero page or setup_data of ours to override")
    cmdline, cmdline_blob = _cmdline_blob(case, image)
    kernel, info = _place_vmlinux(
        image, platform, ov.kernel_load, lambda i: i.pvh_entry,
        "no PVH entry (Xen note XEN_ELFNOTE_PHYS32_ENTRY): the kernel was built without "
        "CONFIG_PVH",
    )
    start, end = kernel.window
    placed = initrd_placement(case, image, platform, end, initrd)
    if placed is not None and placed.end > FOUR_GIB:
        raise LayoutError("a PVH module (the initrd) must lie below 4 GiB: its address is 32-bit")
    e820 = plan_e820(platform) if ov.e820 is None else ov.e820
    start_info = build_start_info(cmdline_blob.addr, e820, placed)
    gdt = _gdt(case.entry)
    blobs = [
        Blob("gdt", GDT_ADDR, len(gdt), data=gdt),
        cmdline_blob,
        Blob("pvh_start_info", PVH_START_INFO_ADDR, PAGE_SIZE, data=start_info),
        *kernel.blobs,
    ]
    if placed is not None and initrd is not None:
        blobs.append(Blob("initrd", placed.addr, placed.size, path=initrd.path))
    check_blobs(blobs, platform)
    kernel_e820 = pvh_kernel_e820(e820)
    fields: list[tuple[str, int | bytes]] = [
        ("e820_entries", len(kernel_e820)),
        ("cmd_line_ptr", cmdline_blob.addr),
        ("ramdisk_image", placed.addr if placed else 0),
        ("ramdisk_size", placed.size if placed else 0),
        ("version", PVH_BOOT_PARAMS_VERSION),
        ("type_of_loader", PVH_TYPE_OF_LOADER_NON_XEN),
    ]
    return BootPlan(
        case=case,
        platform=platform,
        blobs=tuple(blobs),
        e820=e820,
        cpu=_entry_cpu(HandoffMode.PROTECTED_32, kernel.entry, rbx=PVH_START_INFO_ADDR),
        zero_page=b"",
        cmdline=cmdline,
        kernel_load=start,
        kernel_run=start,
        init_size=end - start,
        initrd=placed,
        kernel_e820=kernel_e820,
        boot_params_fields=tuple(fields),
        image_header=image.header.fields,
        pvh_reloc=info.pvh_reloc,
        kernel_default_load=kernel.default_load,
    )
