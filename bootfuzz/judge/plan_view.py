"""A plan's hand-over structures read back from its blobs, as the kernel reads them.

The layout rules judge what a loader *wrote*, not what it meant: the zero page
(or the 16-bit entry's setup header, or hvm_start_info) is decoded from the bytes
in the plan's blobs, and its pointers are followed into the memory those blobs
leave behind (bootfuzz.loader.memory: RAM only, a later blob over an earlier
one).  bootfuzz.loader.handover applies the kernel's own rules (the ext_* high
halves, the sentinel, PVH's 32-bit truncation).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bootfuzz.abi.bootparam import BOOT_PARAMS, BOOT_PARAMS_SIZE
from bootfuzz.abi.e820 import E820Entry
from bootfuzz.abi.pvh import (
    HVM_MEMMAP_TABLE_ENTRY,
    HVM_MODLIST_ENTRY,
    HVM_START_INFO,
    PVH_E820_ENTRIES_MASK,
)
from bootfuzz.abi.setup_data import SETUP_DATA_HEADER
from bootfuzz.case import EntryProtocol
from bootfuzz.loader.handover import (
    Told,
    e820_by_memmap,
    told_by_boot_params,
    told_by_setup_header,
    told_by_start_info,
)
from bootfuzz.loader.memory import read_memory
from bootfuzz.loader.plan import Blob, BootPlan
from bootfuzz.loader.pvh import pvh_kernel_e820

#: What Linux's PVH entry reads through __va() while only the first 1 GiB is
#: mapped: hvm_start_info, the module list, the memory map.  source:
#: arch/x86/platform/pvh/enlighten.c; boot-protocol.md 3.6 "Mapping limit".
PVH_MAPPED_LIMIT = 1 << 30
#: Linux keeps the low 8 bits of memmap_entries (abi/pvh.py).
PVH_COUNT_MASK = PVH_E820_ENTRIES_MASK


class Handover(enum.Enum):
    """Which structure the loader hands the kernel."""

    BOOT_PARAMS = "boot_params"  # the 32/64-bit and direct vmlinux entries: our zero page
    SETUP_HEADER = "setup header"  # the 16-bit entry: the setup code builds boot_params
    START_INFO = "hvm_start_info"  # PVH


def handover(plan: BootPlan) -> Handover:
    if plan.case.entry is EntryProtocol.PVH:
        return Handover.START_INFO
    if plan.case.entry is EntryProtocol.REAL16:
        return Handover.SETUP_HEADER
    return Handover.BOOT_PARAMS


def read(plan: BootPlan, addr: int, size: int) -> bytes | None:
    """The bytes the plan leaves at [addr, addr + size), None where unknown."""
    return read_memory(plan.blobs, plan.platform, addr, size)


def header_bytes(plan: BootPlan) -> bytes | None:
    """boot_params-shaped bytes holding the setup header the loader wrote: the zero
    page, or the 16-bit entry's real-mode part; None for PVH."""
    kind = handover(plan)
    if kind is Handover.BOOT_PARAMS:
        return plan.zero_page
    if kind is Handover.SETUP_HEADER:
        data = plan.blob("setup").data or b""
        return data[:BOOT_PARAMS_SIZE].ljust(BOOT_PARAMS_SIZE, b"\0")
    return None


def field(raw: bytes, name: str) -> int:
    value = BOOT_PARAMS[name].decode(raw)
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class StartInfo:
    """hvm_start_info as written, and what its pointers reach in memory."""

    raw: bytes
    fields: dict[str, int]
    module0: bytes | None  # the first hvm_modlist_entry, None if unreadable (or no module)
    memmap: tuple[E820Entry, ...] | None  # None if unreadable


def start_info(plan: BootPlan) -> StartInfo | None:
    """The hvm_start_info at EBX, None if the plan is not PVH or it cannot be read."""
    if handover(plan) is not Handover.START_INFO:
        return None
    raw = read(plan, plan.cpu.rbx, HVM_START_INFO.size)
    if raw is None:
        return None
    fields = {k: int(v) for k, v in HVM_START_INFO.parse(raw).items()}
    module0 = (read(plan, fields["modlist_paddr"], HVM_MODLIST_ENTRY.size)
               if fields["nr_modules"] else None)
    count = fields["memmap_entries"] & PVH_COUNT_MASK
    table = read(plan, fields["memmap_paddr"], count * HVM_MEMMAP_TABLE_ENTRY.size)
    memmap = None if table is None else e820_by_memmap(table, count)
    return StartInfo(raw, fields, module0, memmap)


def told(plan: BootPlan) -> Told | None:
    """The initrd range, command-line pointer and setup_data head the kernel takes."""
    kind = handover(plan)
    if kind is Handover.BOOT_PARAMS:
        return told_by_boot_params(plan.zero_page)
    if kind is Handover.SETUP_HEADER:
        return told_by_setup_header(plan.blob("setup").data or b"")
    info = start_info(plan)
    if info is None:
        return None
    return told_by_start_info(info.raw, info.module0)


def loader_e820(plan: BootPlan) -> tuple[E820Entry, ...] | None:
    """The table as the loader's structures say it: the zero page's entries and any
    SETUP_E820_EXT node, the PVH memory map, or the table our BIOS serves."""
    if handover(plan) is Handover.START_INFO:
        info = start_info(plan)
        return None if info is None else info.memmap
    return kernel_e820(plan)


def kernel_e820(plan: BootPlan) -> tuple[E820Entry, ...] | None:
    """The table the kernel starts from, as the loader's structures say it, before
    sanitizing: the zero page's entries and any SETUP_E820_EXT node, the PVH memory
    map with the ISA hole Linux appends, or the table our BIOS serves the setup code."""
    kind = handover(plan)
    if kind is Handover.START_INFO:
        info = start_info(plan)
        if info is None or info.memmap is None:
            return None
        return pvh_kernel_e820(info.memmap)
    if kind is Handover.SETUP_HEADER:
        return plan.kernel_e820 or plan.e820
    return plan.kernel_e820_ext or plan.kernel_e820


@dataclass(frozen=True)
class ChainNode:
    """One setup_data node reached by following the chain from the header."""

    blob: Blob | None  # the blob that holds it, None if nothing of ours is there
    addr: int
    next: int
    type: int
    length: int


def setup_data_chain(plan: BootPlan, head: int) -> tuple[list[ChainNode], str]:
    """The nodes from *head* on, and why the walk stopped ("" at next = 0)."""
    nodes: list[ChainNode] = []
    seen: set[int] = set()
    addr = head
    while addr:
        if addr in seen:
            return nodes, f"the chain loops back to {addr:#x}"
        seen.add(addr)
        raw = read(plan, addr, SETUP_DATA_HEADER.size)
        if raw is None:
            return nodes, f"a next pointer {addr:#x} reaches no setup_data node in RAM"
        hdr = SETUP_DATA_HEADER.parse(raw)
        owner = next((b for b in plan.blobs if b.addr <= addr < b.end and b.data is not None),
                     None)
        nodes.append(ChainNode(owner, addr, int(hdr["next"]), int(hdr["type"]), int(hdr["len"])))
        addr = int(hdr["next"])
    return nodes, ""
