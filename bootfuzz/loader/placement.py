"""Where the pieces every entry path shares go in guest memory.  Pure: no I/O.

The platform's E820 table, the command line, the kernel (a bzImage's protected-mode
code or a vmlinux's PT_LOADs), the initrd, the setup_data chain, and the check that
refuses a plan whose blobs overlap or leave RAM.  Each rule cites where it comes
from (boot.rst, or shared/reference/boot-protocol.md); the entry modules combine
these into a BootPlan and never import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bootfuzz.abi.bootparam import XLoadFlags
from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.abi.setup_data import SETUP_DATA_ALIGN, SETUP_DATA_HEADER
from bootfuzz.case import BootCase, EntryProtocol, InitrdPlacement, SetupDataNode
from bootfuzz.cmdline import cmdline_bytes
from bootfuzz.errors import CmdlineError, HarnessBug, ImageError, LayoutError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.kernel.vmlinux import VmlinuxInfo, read_vmlinux
from bootfuzz.loader.layout import (
    BIOS_AREA_START,
    CMDLINE_ADDR,
    CMDLINE_MAX,
    FOUR_GIB,
    HIGH_MEMORY_START,
    LOW_RAM_END,
    PAGE_SIZE,
    SETUP_DATA_AREA,
    align_down,
    align_up,
)
from bootfuzz.loader.memory import lost_bytes
from bootfuzz.loader.plan import Blob, InitrdImage, PlacedInitrd
from bootfuzz.loader.platform import ADDRESS_SPACE_END, FIRMWARE_TOP_BASE, Platform


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


# ---- The command line ------------------------------------------------------

def encode_cmdline(cmdline: str, image: KernelImage) -> bytes:
    """The command line bytes without NUL, checked against the image's cmdline_size."""
    raw = cmdline_bytes(cmdline)
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


def cmdline_blob(case: BootCase, image: KernelImage) -> tuple[bytes, Blob]:
    """The intended command line, and the blob actually written (an override's raw bytes).

    At CMDLINE_ADDR unless overridden: the place of the entries that hand over a
    pointer in boot_params or hvm_start_info (the 16-bit entry keeps its own).
    """
    ov = case.overrides
    addr = CMDLINE_ADDR if ov.cmdline_addr is None else ov.cmdline_addr
    if ov.cmdline_raw is None:
        cmdline = encode_cmdline(case.cmdline, image)
        return cmdline, Blob("cmdline", addr, len(cmdline) + 1, data=cmdline + b"\0")
    raw = ov.cmdline_raw
    return cmdline_bytes(case.cmdline), Blob("cmdline", addr, len(raw), data=raw)


# ---- The kernel ------------------------------------------------------------

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
    image: KernelImage, platform: Platform, load: int | None = None, *,
    overridden: bool = False,
) -> tuple[int, int]:
    """Load and run address of the protected-mode code.

    We load at pref_address, which the kernel requires when not relocatable and
    prefers otherwise; aligned to kernel_alignment it is also where the
    decompressor runs, so [load, load + init_size) is the whole window
    (boot-protocol.md 3.3).  A given *load* (the 16-bit entry's 1 MiB, or an
    override) lets the kernel's own rule pick the run address.  A window past
    RAM is refused unless *overridden*: then it is a faulty loader's layout,
    which runs and valid-kernel-load judges.
    """
    if load is None:
        load = image.pref_address
        alignment = image.kernel_alignment
        if alignment and load % alignment:
            raise ImageError(
                f"pref_address {load:#x} is not aligned to kernel_alignment {alignment:#x}"
            )
    run = decompressor_run_address(image, load)
    end = run + image.init_size
    if end > platform.low.end and not overridden:
        raise LayoutError(
            f"{platform.memory // (1 << 20)} MiB of RAM is too small: the kernel runs at "
            f"{run:#x} and needs init_size {image.init_size:#x} bytes up to {end:#x}, but RAM "
            f"below the MMIO gap ends at {platform.low.end:#x}"
        )
    return load, run


@dataclass(frozen=True)
class KernelPlacement:
    """Where the kernel's bytes go, and the range nothing else may touch."""

    blobs: tuple[Blob, ...]
    entry: int
    load: int
    window: tuple[int, int]
    default_load: int


def place_bzimage(case: BootCase, image: KernelImage, platform: Platform,
                  offset: int) -> KernelPlacement:
    """The bzImage's protected-mode code by place_kernel, entered *offset* bytes in."""
    ov = case.overrides
    load, run = place_kernel(image, platform, ov.kernel_load,
                             overridden=ov.kernel_load is not None)
    pm_code = image.protected_mode_code
    return KernelPlacement((Blob("kernel", load, len(pm_code), data=pm_code),),
                           load + offset, load, (run, run + image.init_size),
                           image.pref_address)


def place_vmlinux(image: KernelImage, platform: Platform, load: int | None,
                  entry_of: Callable[[VmlinuxInfo], int | None], what: str
                  ) -> tuple[KernelPlacement, VmlinuxInfo]:
    """The vmlinux's PT_LOADs at p_paddr, or shifted so the first lands at *load*.

    *entry_of* picks the entry point the caller jumps to; *what* is the error when
    the image has none.  Memory past p_filesz (the bss) is left to the backend's
    fresh RAM, which is zero on QEMU and on anonymous mappings alike.  An image
    past RAM is refused unless *load* is an override (then valid-kernel-load judges).
    """
    info = read_vmlinux(image.vmlinux)
    entry = entry_of(info)
    if entry is None:
        raise ImageError(f"{image.source}: {what}")
    loads = [seg for seg in info.segments if seg.p_memsz]
    start = min(seg.p_paddr for seg in loads)
    shift = 0 if load is None else load - start
    end = max(seg.p_paddr + seg.p_memsz for seg in loads) + shift
    if end > platform.low.end and load is None:
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
    return KernelPlacement(blobs, entry + shift, start + shift, (start + shift, end),
                           start), info


# ---- The initrd ------------------------------------------------------------

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
    if case.overrides.kernel_load is not None and policy is not InitrdPlacement.HIGH:
        # A moved kernel is a faulty loader's layout: the policy's address stands even
        # inside the kernel's window or past RAM (valid-initrd-* then judge it).
        if addr < 0:
            raise LayoutError(f"an initrd of {size} bytes is larger than the RAM below "
                              f"{limit:#x}: it would start below address 0")
    elif policy is not InitrdPlacement.HIGH and (addr < window_end or addr + size > limit):
        raise LayoutError(
            f"an initrd of {size} bytes does not fit: it must lie above the kernel's "
            f"window (ends {window_end:#x}) and end below {limit:#x} (the lower of "
            f"initrd_addr_max + 1 and the top of RAM below the MMIO gap)"
        )
    return PlacedInitrd(addr, size, initrd.payload_sha256)


def initrd_placement(
    case: BootCase, image: KernelImage, platform: Platform, window_end: int,
    initrd: InitrdImage | None,
) -> PlacedInitrd | None:
    """Where the initrd goes: the override's address, else by the case's policy."""
    if initrd is None:
        return None
    if case.overrides.initrd_addr is not None:
        return PlacedInitrd(case.overrides.initrd_addr, initrd.size, initrd.payload_sha256)
    return _place_initrd(case, image, platform, window_end, initrd)


def initrd_blobs(placed: PlacedInitrd | None, initrd: InitrdImage | None) -> tuple[Blob, ...]:
    """The initrd's file at its place, or nothing without an initrd."""
    if placed is None or initrd is None:
        return ()
    return (Blob("initrd", placed.addr, placed.size, path=initrd.path),)


# ---- setup_data ------------------------------------------------------------

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
        length = len(node.payload) if node.length is None else node.length
        try:
            header = SETUP_DATA_HEADER.build({"next": following, "type": node.type, "len": length})
        except ValueError as exc:
            raise LayoutError(f"override: setup_data node {i}: {exc}") from None
        data = header + node.payload
        blobs.append(Blob(f"setup_data{i}", addr, len(data), data=data))
    return (addrs[0] if addrs else 0), blobs


# ---- The whole plan --------------------------------------------------------

#: Blobs whose place the kernel image decides (pref_address, p_paddr), not our layout.
_IMAGE_BLOBS = ("kernel", "vmlinux")


def check_blobs(blobs: list[Blob], platform: Platform, *, own_layout: bool) -> None:
    """Refuse a plan that cannot be represented; with *own_layout*, also our own mistakes.

    The only layout no loader can make is a blob past the end of the 64-bit address
    space: refused (LayoutError).  Anything else an override asks for runs:
    bootfuzz.loader.memory keeps the bytes that land in RAM (a later blob over an
    earlier one), and the layout rules (bootfuzz.judge.layout_rules) say what is
    wrong.  Without overrides the layout is ours: blobs that overlap or leave RAM
    are a bug in bootfuzz (HarnessBug), or the image's doing when its own segments
    are involved (ImageError).
    """
    for blob in blobs:
        if blob.addr < 0 or blob.end > ADDRESS_SPACE_END:
            raise LayoutError(
                f"{blob.name} at {blob.addr:#x} with {blob.size:#x} bytes ends past 2**64: "
                "no guest-physical address can name its end"
            )
    if not own_layout:
        return
    for lost in lost_bytes(blobs, platform):
        what = f"{lost.blob.name} [{lost.addr:#x}, {lost.end:#x}): {lost.reason}"
        if lost.blob.name.startswith(_IMAGE_BLOBS) or (
                lost.by is not None and lost.by.name.startswith(_IMAGE_BLOBS)):
            raise ImageError(f"the image's own load address puts {what}")
        raise HarnessBug(f"our loader's own layout puts {what}")
