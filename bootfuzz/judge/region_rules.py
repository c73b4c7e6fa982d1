"""Layout rules about the platform's regions: where the machine has RAM, and what a
loader may say and put there.

QEMU ``pc`` cuts the address space into low RAM, the legacy video/BIOS area, RAM
above 1 MiB, the 32-bit MMIO gap, RAM above 4 GiB and the space beyond RAM
(bootfuzz.loader.platform.Platform.regions; the table is docs/platform-rules.md).
A correct E820 table (zero page, SETUP_E820_EXT, PVH memory map or what our BIOS
serves) claims memory only in the RAM regions and describes all of them; a
loader's bytes land only there, one blob never over another.  Each rule here
returns an OracleResult (pass or fail); bootfuzz.judge.layout_rules lists them.
"""

from __future__ import annotations

from bootfuzz.abi.bootparam import E820_MAX_ENTRIES_ZEROPAGE
from bootfuzz.abi.e820 import E820_MIN_ENTRIES, E820Entry, E820Type, kernel_type_words
from bootfuzz.judge.e820_model import sanitize
from bootfuzz.judge.plan_view import (
    PVH_COUNT_MASK,
    Handover,
    field,
    handover,
    kernel_e820,
    loader_e820,
    start_info,
)
from bootfuzz.judge.verdict import OracleResult, judged
from bootfuzz.loader.layout import HIGH_MEMORY_START, LOW_RAM_END
from bootfuzz.loader.memory import lost_bytes
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.platform import Platform

#: Types that claim memory behind them: the kernel maps them, keeps them or hands
#: them to a driver as memory.  RESERVED (2), UNUSABLE (5), DISABLED (6) and unknown
#: types claim nothing.  source: arch/x86/kernel/e820.c (e820__end_of_ram_pfn,
#: e820_type_to_iores_desc), asm/e820/types.h.
MEMORY_TYPES = frozenset({E820Type.RAM, E820Type.ACPI, E820Type.NVS, E820Type.PMEM,
                          E820Type.PRAM, E820Type.RESERVED_KERN, E820Type.SOFT_RESERVED})
_U64 = 1 << 64


def span(a: int, b: int) -> str:
    return f"[{a:#x}, {b:#x})"


def where(platform: Platform, start: int, end: int, *, ram: bool = False) -> str:
    """The regions [start, end) reaches (only those without RAM unless *ram*), each
    with the fixtures it overlaps: "the 32-bit MMIO gap (IOAPIC, LAPIC)"."""
    parts = []
    for region in platform.regions_touched(start, end):
        if region.ram and not ram:
            continue
        hit = [f.name for f in region.fixtures if f.start < end and start < f.end]
        parts.append(region.kind.value + (f" ({', '.join(hit)})" if hit else ""))
    return ", ".join(parts)


def ram_entries(plan: BootPlan) -> list[E820Entry]:
    """The sanitized table's RAM (what the kernel may use as memory), [] if it ignores it."""
    table = sanitize(kernel_e820(plan) or ()) or []
    return [e for e in table if e.type in (E820Type.RAM, E820Type.RESERVED_KERN)]


def rule_e820_ram_real(plan: BootPlan) -> OracleResult | None:
    """Memory is claimed only where the machine has RAM: never in the legacy
    video/BIOS area, the 32-bit MMIO gap or beyond the top of RAM."""
    name = "valid-e820-ram-real"
    table = loader_e820(plan)
    expected = ("memory types (RAM, ACPI, NVS, persistent) only in low RAM, RAM above 1 MiB "
                "and RAM above 4 GiB")
    if table is None:
        return judged(name, False, expected, "the memory map cannot be read from the plan")
    # What the kernel keeps; a table it rejects outright is judged entry by entry.
    kept = sanitize(table) or [e for e in table if e.size and e.addr + e.size <= _U64]
    bad = []
    for e in kept:
        if e.type in MEMORY_TYPES:
            outside = where(plan.platform, e.addr, e.end)
            if outside:
                bad.append(f"{kernel_type_words(e.type)} {span(e.addr, e.end)} reaches the "
                           f"{outside}")
    return judged(name, not bad, expected, "; ".join(bad) or "as expected")


def rule_e820_adds_up(plan: BootPlan) -> OracleResult | None:
    """Every byte of the machine's RAM is described (as RAM or reserved), but the legacy hole.

    A table may reserve parts of RAM (firmware does), but RAM it forgets, such as a
    5 GiB guest described only below 4 GiB, is memory the guest never gets.
    """
    name = "valid-e820-total"
    table = sanitize(kernel_e820(plan) or ()) or []
    hole = (LOW_RAM_END, HIGH_MEMORY_START)
    missing = 0
    for r in plan.platform.ram_ranges():
        size = r.size - max(0, min(r.end, hole[1]) - max(r.start, hole[0]))
        covered = sum(
            max(0, min(r.end, e.end) - max(r.start, e.addr))
            - max(0, min(r.end, e.end, hole[1]) - max(r.start, e.addr, hole[0]))
            for e in table
        )
        missing += size - covered
    machine = sum(r.size for r in plan.platform.ram_ranges())
    return judged(name, missing == 0,
                  f"all {machine:#x} bytes of the machine's RAM described (but the legacy hole "
                  f"{span(*hole)})", f"{missing:#x} bytes of RAM not described" if missing
                  else "all described")


def _wrapping(entries: tuple[E820Entry, ...]) -> list[str]:
    return [f"entry {i} {e.addr:#x}+{e.size:#x} wraps past 2**64" for i, e in enumerate(entries)
            if e.addr + e.size > _U64]


def rule_e820_count(plan: BootPlan) -> OracleResult | None:
    """The count the kernel reads is one it accepts, and no entry wraps the address space.

    boot_params: 2 <= e820_entries <= 128 (fewer: the table is ignored; more: the
    kernel reads past the array, boot-protocol.md 2.1).  16-bit: our BIOS serves
    the table and the setup code keeps 128 (arch/x86/boot/memory.c).  PVH:
    1 <= memmap_entries <= 128 (Linux copies them into its own boot_params
    uncapped, enlighten.c).  An entry past 2**64 makes the kernel drop the table.
    """
    name = "valid-e820-entries"
    kind = handover(plan)
    if kind is Handover.START_INFO:
        info = start_info(plan)
        n = -1 if info is None else info.fields["memmap_entries"]
        lo, what = 1, "memmap_entries"
    elif kind is Handover.SETUP_HEADER:
        n, lo, what = len(plan.e820), E820_MIN_ENTRIES, "BIOS E820 entries"
    else:
        n = field(plan.zero_page, "e820_entries")
        lo, what = E820_MIN_ENTRIES, "e820_entries"
    problems = _wrapping(kernel_e820(plan) or ())
    if not lo <= n <= E820_MAX_ENTRIES_ZEROPAGE:
        problems.insert(0, f"{what} = {n}" if n >= 0 else "no hvm_start_info to read")
    if kind is Handover.START_INFO and n > PVH_COUNT_MASK:
        problems.append(f"the kernel keeps only the low 8 bits ({n & PVH_COUNT_MASK})")
    return judged(name, not problems,
                  f"{lo} <= {what} <= {E820_MAX_ENTRIES_ZEROPAGE}, no entry past 2**64",
                  "; ".join(problems) or f"{n} entries")


def rule_blobs_in_ram(plan: BootPlan) -> OracleResult | None:
    """Every byte a loader writes lands in RAM; bytes elsewhere are simply not stored."""
    name = "valid-blobs-in-ram"
    lost = [x for x in lost_bytes(plan.blobs, plan.platform) if x.region is not None]
    observed = "; ".join(
        f"{x.blob.name}: {x.end - x.addr:#x} bytes at {span(x.addr, x.end)} in the "
        f"{where(plan.platform, x.addr, x.end)}, not stored" for x in lost)
    return judged(name, not lost, "every blob inside low RAM, RAM above 1 MiB or above 4 GiB",
                  observed or "as expected")


def rule_blobs_disjoint(plan: BootPlan) -> OracleResult | None:
    """No blob is written over another: the later one's bytes would replace the earlier's."""
    name = "valid-blobs-disjoint"
    lost = [x for x in lost_bytes(plan.blobs, plan.platform) if x.by is not None]
    observed = "; ".join(f"{x.blob.name} {span(x.addr, x.end)} overwritten by "
                         f"{x.by.name if x.by else '?'}" for x in lost)
    return judged(name, not lost, "no two blobs overlap", observed or "as expected")
