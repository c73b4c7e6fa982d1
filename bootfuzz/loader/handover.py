"""What the kernel takes from the structures a loader hands over.  Pure: no I/O.

A loader writes bytes; the kernel computes addresses and sizes from them by its
own rules.  These functions apply those rules to the bytes, so a plan can say
what the kernel is told (the exact oracles' expectation) and the layout rules
can hold it against the blobs really loaded and the platform:

* boot_params (the 32/64-bit entries, the direct vmlinux entry):
  ``ramdisk_image | ext_ramdisk_image << 32``, the same for ``ramdisk_size`` and
  ``cmd_line_ptr`` (arch/x86/kernel/setup.c get_ramdisk_image/get_ramdisk_size,
  head64.c get_cmd_line_ptr); a non-zero sentinel makes the kernel zero the
  ext_* halves first (asm/bootparam_utils.h, sanitize_boot_params); the E820 table
  is ``e820_entries`` entries of ``e820_table``, uncapped (boot-protocol.md 2.1);
* the 16-bit entry's setup header: only 32-bit fields, as the setup code's own
  boot_params starts zeroed (arch/x86/boot/main.c copy_boot_params);
* hvm_start_info (PVH): module 0 is the initrd, its ``paddr`` and ``size`` and
  the ``cmdline_paddr`` truncated to 32 bits, the memory map read from
  ``memmap_paddr`` (arch/x86/platform/pvh/enlighten.c, init_pvh_bootparams).
"""

from __future__ import annotations

from dataclasses import dataclass

from bootfuzz.abi.bootparam import (
    BOOT_PARAMS,
    BOOT_PARAMS_SIZE,
    E820_ENTRY_SIZE,
    E820_TABLE_OFFSET,
    SETUP_HEADER,
)
from bootfuzz.abi.e820 import E820Entry, unpack_table
from bootfuzz.abi.pvh import HVM_MEMMAP_TABLE_ENTRY, HVM_MODLIST_ENTRY, HVM_START_INFO
from bootfuzz.loader.plan import PlacedInitrd

U32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class Told:
    """The initrd and command line the kernel will use, and the setup_data head."""

    #: (address, size) the kernel computes, or None when either is 0 (no initrd).
    initrd: tuple[int, int] | None
    #: Where the kernel reads the command line; 0 = none.
    cmdline: int
    setup_data: int = 0


def told_initrd(placed: PlacedInitrd | None, told: Told) -> PlacedInitrd | None:
    """The initrd as the kernel is told about it (an override may contradict the blob
    at *placed*); None without an initrd blob, or when the structures name none."""
    if placed is None or told.initrd is None:
        return None
    return PlacedInitrd(*told.initrd, placed.payload_sha256)


def _int(buf: bytes, name: str) -> int:
    value = BOOT_PARAMS[name].decode(buf)
    assert isinstance(value, int)
    return value


def _initrd(addr: int, size: int) -> tuple[int, int] | None:
    return (addr, size) if addr and size else None


def told_by_boot_params(zero_page: bytes) -> Told:
    """What the kernel takes from a loader's boot_params (ext_* halves gone if the
    sentinel is set)."""
    ext = 0 if _int(zero_page, "sentinel") else 1
    addr = _int(zero_page, "ramdisk_image") | (ext * _int(zero_page, "ext_ramdisk_image")) << 32
    size = _int(zero_page, "ramdisk_size") | (ext * _int(zero_page, "ext_ramdisk_size")) << 32
    cmdline = _int(zero_page, "cmd_line_ptr") | (ext * _int(zero_page, "ext_cmd_line_ptr")) << 32
    return Told(_initrd(addr, size), cmdline, _int(zero_page, "setup_data"))


def told_by_setup_header(real_mode: bytes) -> Told:
    """What the kernel takes from the setup header of the 16-bit entry's real-mode part."""
    header = real_mode.ljust(BOOT_PARAMS_SIZE, b"\0")

    def get(name: str) -> int:
        value = SETUP_HEADER[name].decode(header)
        assert isinstance(value, int)
        return value

    return Told(_initrd(get("ramdisk_image"), get("ramdisk_size")), get("cmd_line_ptr"),
                get("setup_data"))


def told_by_start_info(start_info: bytes, module0: bytes | None) -> Told:
    """What Linux's PVH entry takes from hvm_start_info and its first module entry
    (*module0*: the entry's bytes at modlist_paddr, None if unreadable)."""
    info = HVM_START_INFO.parse(start_info)
    initrd = None
    if info["nr_modules"] and module0 is not None:
        mod = HVM_MODLIST_ENTRY.parse(module0)
        initrd = _initrd(int(mod["paddr"]) & U32, int(mod["size"]) & U32)
    return Told(initrd, int(info["cmdline_paddr"]) & U32)


def e820_by_boot_params(zero_page: bytes) -> tuple[E820Entry, ...]:
    """The e820_entries entries the kernel reads from the zero page's table.

    The count is not capped at 128 (boot-protocol.md 2.1): past the array the kernel
    reads the rest of boot_params, and past the page what we cannot know; entries
    are returned up to the end of the page.
    """
    count = _int(zero_page, "e820_entries")
    fits = (len(zero_page) - E820_TABLE_OFFSET) // E820_ENTRY_SIZE
    return tuple(unpack_table(zero_page[E820_TABLE_OFFSET:], min(count, fits)))


def e820_by_memmap(raw: bytes, count: int) -> tuple[E820Entry, ...]:
    """The hvm_memmap_table_entry array *raw* as E820 entries (types map 1:1)."""
    size = HVM_MEMMAP_TABLE_ENTRY.size
    out = []
    for i in range(min(count, len(raw) // size)):
        entry = HVM_MEMMAP_TABLE_ENTRY.parse(raw, base=i * size)
        out.append(E820Entry(int(entry["addr"]), int(entry["size"]), int(entry["type"])))
    return tuple(out)
