"""The CPU at the jump for the protected- and long-mode entries, and what it points at.

The 64-bit, 32-bit, PVH and vmlinux entries start the kernel on flat segments from
our GDT, in long mode on an identity map or with paging off (boot.rst "32-bit/64-bit
boot protocol"; pvh.pandoc for PVH).  This module builds that GDT, the page tables
and the CpuState; the 16-bit entry starts in real mode and needs none of them.
"""

from __future__ import annotations

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.loader.layout import (
    BOOT_CS,
    BOOT_DS,
    BOOT_STACK_TOP,
    GDT_ADDR,
    GDT_ENTRIES,
    MAX_PAGE_DIRECTORIES,
    PML4_ADDR,
    GiB,
    align_up,
)
from bootfuzz.loader.plan import Blob, CpuState
from bootfuzz.loader.platform import Platform
from bootfuzz.loader.x86 import (
    FLAT_CODE32,
    FLAT_CODE64,
    FLAT_DATA,
    Cr0,
    Cr4,
    Efer,
    identity_page_tables,
)


def gdt_blob(mode: HandoffMode) -> Blob:
    """null, firmware 32-bit code (0x08), __BOOT_CS (0x10), __BOOT_DS (0x18).

    __BOOT_CS is 64-bit code for the long-mode entry, 32-bit code otherwise.
    """
    code = FLAT_CODE64 if mode is HandoffMode.LONG_64 else FLAT_CODE32
    words = (0, FLAT_CODE32, code, FLAT_DATA)
    assert len(words) == GDT_ENTRIES
    gdt = b"".join(w.to_bytes(8, "little") for w in words)
    return Blob("gdt", GDT_ADDR, len(gdt), data=gdt)


def _covered_gib(platform: Platform) -> int:
    """GiB the identity map covers: at least 4 GiB, all RAM where the tables allow."""
    return max(4, min(MAX_PAGE_DIRECTORIES, align_up(platform.top_of_ram, GiB) // GiB))


def page_tables_blob(platform: Platform) -> Blob:
    """The identity map the long-mode entry runs on, at PML4_ADDR."""
    tables = identity_page_tables(PML4_ADDR, _covered_gib(platform))
    return Blob("page_tables", PML4_ADDR, len(tables), data=tables)


def entry_cpu(mode: HandoffMode, rip: int, *, rsi: int = 0, rbx: int = 0) -> CpuState:
    """Flat __BOOT_CS/__BOOT_DS segments from our GDT, IF=0, and paging as *mode* needs:
    long mode on our identity map for LONG_64, paging off otherwise."""
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
