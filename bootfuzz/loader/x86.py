"""Pure builders for x86 processor structures: GDT descriptors and identity page tables.

Kept apart from any backend so they can be checked against golden words without a VM
(as Firecracker's gdt.rs/regs.rs are).  source: Intel SDM vol. 3A, 3.4.5 (segment
descriptors) and 4.5 (4-level paging).
"""

from __future__ import annotations

import enum
import functools

from bootfuzz.loader.layout import PAGE_SIZE, GiB, MiB


class Cr0(enum.IntFlag):
    PE = 1 << 0
    ET = 1 << 4
    PG = 1 << 31


class Cr4(enum.IntFlag):
    PAE = 1 << 5


class Efer(enum.IntFlag):
    LME = 1 << 8
    LMA = 1 << 10


MSR_EFER = 0xC0000080
#: RFLAGS.IF: interrupts enabled (a halted CPU without it never wakes).
RFLAGS_IF = 1 << 9

# Descriptor access bytes and flags.
_ACCESS_CODE = 0x9B  # present, DPL 0, code, execute/read, accessed
_ACCESS_DATA = 0x93  # present, DPL 0, data, read/write, accessed
_FLAGS_32 = 0xC  # G=1 (4 KiB granularity), D/B=1 (32-bit)
_FLAGS_64 = 0xA  # G=1, L=1 (64-bit code), D=0


def gdt_entry(access: int, flags: int, base: int = 0, limit: int = 0xFFFFF) -> int:
    """Encode one 8-byte segment descriptor."""
    return (
        (limit & 0xFFFF)
        | ((base & 0xFFFFFF) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (flags << 52)
        | (((base >> 24) & 0xFF) << 56)
    )


FLAT_CODE32 = gdt_entry(_ACCESS_CODE, _FLAGS_32)
FLAT_CODE64 = gdt_entry(_ACCESS_CODE, _FLAGS_64)
FLAT_DATA = gdt_entry(_ACCESS_DATA, _FLAGS_32)

# Page-table entry bits.
PTE_PRESENT = 1 << 0
PTE_WRITE = 1 << 1
PTE_PS = 1 << 7  # a 2 MiB page in a page-directory entry
_ENTRIES = 512
HUGE_PAGE = 2 * MiB


@functools.lru_cache(maxsize=16)
def identity_page_tables(base: int, covered_gib: int) -> bytes:
    """PML4, PDPT and *covered_gib* page directories mapping [0, covered_gib GiB) 1:1.

    The tables are laid out contiguously from *base*: PML4 at base, PDPT at
    base + 4 KiB, page directory i at base + (2 + i) * 4 KiB.  2 MiB pages need no
    CPU feature beyond PAE, unlike 1 GiB pages.
    """
    if not 1 <= covered_gib <= _ENTRIES:
        raise ValueError(f"cannot map {covered_gib} GiB with one PDPT")
    pml4 = bytearray(PAGE_SIZE)
    pdpt = bytearray(PAGE_SIZE)
    pdpt_addr = base + PAGE_SIZE
    pml4[0:8] = (pdpt_addr | PTE_PRESENT | PTE_WRITE).to_bytes(8, "little")
    directories = []
    for gib in range(covered_gib):
        pd_addr = base + (2 + gib) * PAGE_SIZE
        pdpt[gib * 8 : gib * 8 + 8] = (pd_addr | PTE_PRESENT | PTE_WRITE).to_bytes(8, "little")
        pd = bytearray(PAGE_SIZE)
        for i in range(_ENTRIES):
            phys = gib * GiB + i * HUGE_PAGE
            pd[i * 8 : i * 8 + 8] = (phys | PTE_PRESENT | PTE_WRITE | PTE_PS).to_bytes(
                8, "little"
            )
        directories.append(bytes(pd))
    return bytes(pml4) + bytes(pdpt) + b"".join(directories)
