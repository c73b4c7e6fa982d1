"""Validity oracles: does a plan obey the boot protocol and the platform?

The exact-match oracles (bootfuzz.judge.oracles) ask "did the kernel see what we wrote";
these ask "should anyone have written that".  They judge the plan alone, so they
answer for every boot, also one that hangs, and they flag the classic loader bugs
that a lucky boot can hide: an initrd inside the decompressor's window, RAM
claimed inside the MMIO gap, a command line without its NUL.
Sources: boot.rst and shared/reference/boot-protocol.md (sections cited per rule).
"""

from __future__ import annotations

from collections.abc import Callable

from bootfuzz.abi.bootparam import (
    BOOT_PARAMS,
    E820_MAX_ENTRIES_ZEROPAGE,
    LEGACY_CMDLINE_SIZE,
    LoadFlags,
    XLoadFlags,
)
from bootfuzz.abi.e820 import E820_MIN_ENTRIES, E820Entry, E820Type
from bootfuzz.abi.setup_data import SETUP_DATA_HEADER
from bootfuzz.case import EntryProtocol
from bootfuzz.judge.e820_model import sanitize
from bootfuzz.judge.verdict import OracleResult, judged
from bootfuzz.loader.layout import FOUR_GIB, HIGH_MEMORY_START, LOW_RAM_END, PAGE_SIZE
from bootfuzz.loader.plan import BootPlan

#: A rule answers, or returns None where it does not apply (no initrd, no setup_data).
Rule = Callable[[BootPlan], OracleResult | None]




def _span(a: int, b: int) -> str:
    return f"[{a:#x}, {b:#x})"


def _ram(plan: BootPlan) -> list[E820Entry]:
    table = sanitize(plan.e820) or []
    return [e for e in table if e.type in (E820Type.RAM, E820Type.RESERVED_KERN)]


def _field(plan: BootPlan, name: str) -> int:
    value = BOOT_PARAMS[name].decode(plan.zero_page)
    assert isinstance(value, int)
    return value


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def rule_initrd_in_ram(plan: BootPlan) -> OracleResult | None:
    """The initrd lies inside one E820 RAM range that the machine really has (5.4, 5.7)."""
    name = "valid-initrd-in-ram"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    i = plan.initrd
    expected = f"{_span(i.addr, i.end)} inside one E820 RAM range and the machine's RAM"
    in_e820 = any(e.addr <= i.addr and i.end <= e.end for e in _ram(plan))
    in_machine = any(r.start <= i.addr and i.end <= r.end for r in plan.platform.ram_ranges())
    observed = (
        "inside E820 RAM" if in_e820 else "not inside any one E820 RAM range"
    ) + (", inside the machine's RAM" if in_machine else ", outside the machine's RAM")
    return judged(name, in_e820 and in_machine, expected, observed)


def rule_initrd_outside_kernel(plan: BootPlan) -> OracleResult | None:
    """Nothing the kernel needs may lie in [run, run + init_size) (1, init_size; 5.7)."""
    name = "valid-initrd-outside-kernel"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    i = plan.initrd
    run, end = plan.kernel_window
    what = "decompression window" if plan.case.entry is EntryProtocol.BOOT64 else "kernel image"
    expected = f"initrd {_span(i.addr, i.end)} outside the kernel's {what} {_span(run, end)}"
    hit = _overlaps(i.addr, i.end, run, end)
    observed = f"overlaps it by {min(i.end, end) - max(i.addr, run):#x} bytes" if hit else "outside"
    return judged(name, not hit, expected, observed)


def rule_initrd_below_max(plan: BootPlan) -> OracleResult | None:
    """initrd_addr_max bounds the last initrd byte, unless a 64-bit loader may go higher."""
    name = "valid-initrd-addr-max"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    i = plan.initrd
    if plan.case.entry is EntryProtocol.PVH:
        return judged(name, i.end <= FOUR_GIB, "PVH module below 4 GiB (32-bit address)",
                      f"ends at {i.end:#x}")
    limit = plan.image_header.get("initrd_addr_max", 0x37FFFFFF)
    above_ok = bool(plan.image_header.get("xloadflags", 0)
                    & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G)
    if above_ok:
        return judged(name, True,
                      f"last byte <= {limit:#x}, or anywhere (XLF_CAN_BE_LOADED_ABOVE_4G)",
                      f"last byte {i.end - 1:#x}")
    return judged(name, i.end - 1 <= limit, f"last byte <= initrd_addr_max {limit:#x}",
                  f"last byte {i.end - 1:#x}")


def rule_initrd_aligned(plan: BootPlan) -> OracleResult | None:
    """A page-aligned start: free_initrd_mem WARNs otherwise (4.2)."""
    name = "valid-initrd-aligned"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    return judged(name, plan.initrd.addr % PAGE_SIZE == 0, "initrd start aligned to 4 KiB",
                  f"{plan.initrd.addr:#x}")


def rule_e820_no_ram_in_gap(plan: BootPlan) -> OracleResult | None:
    """RAM is described only where the machine has RAM: never in the 32-bit MMIO gap."""
    name = "valid-e820-ram-real"
    gap0, gap1 = plan.platform.mmio_gap
    ranges = plan.platform.ram_ranges()
    bad = []
    for e in _ram(plan):
        if _overlaps(e.addr, e.end, gap0, gap1):
            bad.append(f"{_span(e.addr, e.end)} overlaps the MMIO gap {_span(gap0, gap1)}")
        elif not any(r.start <= e.addr and e.end <= r.end for r in ranges):
            bad.append(f"{_span(e.addr, e.end)} is beyond the machine's RAM")
    return judged(name, not bad, f"E820 RAM only inside the machine's RAM, none in "
                  f"the MMIO gap {_span(gap0, gap1)}", "; ".join(bad) or "as expected")


def rule_e820_adds_up(plan: BootPlan) -> OracleResult | None:
    """Every byte of the machine's RAM is described (as RAM or reserved), but the legacy hole.

    A table may reserve parts of RAM (firmware does), but RAM it forgets, such as a
    5 GiB guest described only below 4 GiB, is memory the guest never gets.
    """
    name = "valid-e820-total"
    table = sanitize(plan.e820) or []
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
                  f"{_span(*hole)})", f"{missing:#x} bytes of RAM not described" if missing
                  else "all described")


def rule_e820_count(plan: BootPlan) -> OracleResult | None:
    """2 <= e820_entries <= 128: fewer is ignored, more overruns the zero page (2.1)."""
    name = "valid-e820-entries"
    if not plan.zero_page:
        n = len(plan.e820)
        return judged(name, n >= 1, "a non-empty PVH memory map", f"{n} entries")
    n = _field(plan, "e820_entries")
    return judged(name, E820_MIN_ENTRIES <= n <= E820_MAX_ENTRIES_ZEROPAGE,
                  f"{E820_MIN_ENTRIES} <= e820_entries <= {E820_MAX_ENTRIES_ZEROPAGE}", str(n))


def rule_cmdline_terminated(plan: BootPlan) -> OracleResult | None:
    """The command line ends in a NUL within cmdline_size + 1 bytes (header 0x238)."""
    name = "valid-cmdline-terminated"
    limit = plan.image_header.get("cmdline_size", LEGACY_CMDLINE_SIZE)
    data = plan.blob("cmdline").data or b""
    nul = data.find(b"\0")
    expected = f"a NUL within the first {limit + 1} bytes"
    if nul < 0:
        return judged(name, False, expected, f"no NUL in the {len(data)} bytes written")
    return judged(name, nul <= limit, expected, f"NUL at offset {nul}")


def rule_zero_page(plan: BootPlan) -> OracleResult | None:
    """Sentinel 0, a loader type, KASLR_FLAG clear (2.1, 2.2, 5.2)."""
    name = "valid-zero-page"
    if not plan.zero_page:
        return None  # not applicable: the PVH entry has no loader-written zero page
    bad = []
    if _field(plan, "sentinel"):
        bad.append(f"sentinel is {_field(plan, 'sentinel'):#x}: the kernel wipes the ext_* fields")
    if plan.initrd is not None and not _field(plan, "type_of_loader"):
        bad.append("type_of_loader is 0: the kernel ignores the initrd")
    if _field(plan, "loadflags") & LoadFlags.KASLR_FLAG:
        bad.append("KASLR_FLAG set: kernel-internal, a loader must clear it")
    return judged(name, not bad, "sentinel 0, type_of_loader != 0, KASLR_FLAG clear",
                  "; ".join(bad) or "as expected")


def rule_boot_data_outside_kernel(plan: BootPlan) -> OracleResult | None:
    """boot_params, the command line and setup_data stay out of the kernel window (1)."""
    name = "valid-boot-data-outside-kernel"
    run, end = plan.kernel_window
    bad = [
        f"{b.name} {_span(b.addr, b.end)}"
        for b in plan.blobs
        if (b.name in ("zero_page", "cmdline", "pvh_start_info") or b.name.startswith("setup_data"))
        and _overlaps(b.addr, b.end, run, end)
    ]
    return judged(name, not bad, f"nothing the kernel reads inside {_span(run, end)}",
                  "; ".join(bad) or "as expected")


def rule_setup_data_chain(plan: BootPlan) -> OracleResult | None:
    """setup_data nodes lie in RAM and the chain ends (2.3)."""
    name = "valid-setup-data"
    nodes = [b for b in plan.blobs if b.name.startswith("setup_data")]
    if not nodes:
        return None  # not applicable: no setup_data
    by_addr = {b.addr: b for b in nodes}
    head = _field(plan, "setup_data")
    seen: set[int] = set()
    bad = []
    addr = head
    while addr:
        if addr in seen:
            bad.append(f"the chain loops at {addr:#x}")
            break
        seen.add(addr)
        blob = by_addr.get(addr)
        if blob is None or blob.data is None:
            bad.append(f"next pointer {addr:#x} points at no node")
            break
        if not any(e.addr <= blob.addr and blob.end <= e.end for e in _ram(plan)):
            bad.append(f"node {_span(blob.addr, blob.end)} not in E820 RAM")
        addr = int(SETUP_DATA_HEADER.parse(blob.data)["next"])
    return judged(name, not bad, "every node in RAM, the chain ends with next = 0",
                  "; ".join(bad) or f"{len(seen)} nodes")


def rule_above_4g(plan: BootPlan) -> OracleResult | None:
    """Only a 64-bit entry into an XLF_CAN_BE_LOADED_ABOVE_4G kernel may get data above 4 GiB.

    source: boot.rst, xloadflags bit 1; the 32-bit, 16-bit and PVH paths take 32-bit
    pointers (boot-protocol.md 3.2, 3.6).
    """
    name = "valid-below-4g"
    high = [b for b in plan.blobs if b.end > FOUR_GIB]
    if not high:
        return None
    allowed = (plan.case.entry in (EntryProtocol.BOOT64, EntryProtocol.VMLINUX)
               and bool(plan.image_header.get("xloadflags", 0)
                        & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G))
    what = ", ".join(f"{b.name} {_span(b.addr, b.end)}" for b in high)
    return judged(name, allowed, "data above 4 GiB only for a 64-bit entry into a kernel with "
                  "XLF_CAN_BE_LOADED_ABOVE_4G", f"{what} (entry {plan.case.entry.value})")


#: kernel proper's __startup_64 hangs unless its physical load address is 2 MiB
#: aligned.  source: arch/x86/kernel/head64.c; boot-protocol.md 3.4.
VMLINUX_LOAD_ALIGN = 2 << 20


def rule_kernel_load(plan: BootPlan) -> OracleResult | None:
    """The kernel sits where its own rules allow (boot.rst "relocatable_kernel",
    min_alignment, pref_address; PVH's PHYS32_RELOC note), inside E820 RAM."""
    name = "valid-kernel-load"
    entry, load, hdr = plan.case.entry, plan.kernel_load, plan.image_header
    problems = []
    if entry in (EntryProtocol.BOOT64, EntryProtocol.BOOT32):
        if not hdr.get("relocatable_kernel", 0):
            if load != plan.kernel_default_load:
                problems.append(f"not relocatable: must load at pref_address "
                                f"{plan.kernel_default_load:#x}")
        else:
            align = 1 << hdr.get("min_alignment", 0) if hdr.get("min_alignment") else (
                hdr.get("kernel_alignment", 1) or 1)
            if load % align:
                problems.append(f"not aligned to 1 << min_alignment ({align:#x})")
    elif entry is EntryProtocol.VMLINUX:
        if load % VMLINUX_LOAD_ALIGN:
            problems.append(f"not {VMLINUX_LOAD_ALIGN:#x}-aligned (__startup_64 hangs)")
    elif entry is EntryProtocol.PVH and load != plan.kernel_default_load:
        reloc = plan.pvh_reloc
        if reloc is None:
            problems.append("moved from p_paddr, but the kernel has no PHYS32_RELOC note")
        else:
            shift = load - plan.kernel_default_load
            if shift % reloc.align:
                problems.append(f"moved by {shift:#x}, not a multiple of the note's "
                                f"alignment {reloc.align:#x}")
            if not reloc.min_addr <= load <= reloc.max_addr:
                problems.append(f"outside the note's [{reloc.min_addr:#x}, {reloc.max_addr:#x}]")
    run, end = plan.kernel_window
    if not any(e.addr <= run and end <= e.end for e in _ram(plan)):
        problems.append(f"its window {_span(run, end)} is not inside one E820 RAM range")
    return judged(name, not problems, f"a load address the kernel's rules allow, window in RAM "
                  f"(entry {entry.value})", f"{load:#x}: " + ("; ".join(problems) or "as expected"))


RULES: tuple[Rule, ...] = (
    rule_initrd_in_ram,
    rule_initrd_outside_kernel,
    rule_initrd_below_max,
    rule_initrd_aligned,
    rule_e820_no_ram_in_gap,
    rule_e820_adds_up,
    rule_e820_count,
    rule_cmdline_terminated,
    rule_zero_page,
    rule_boot_data_outside_kernel,
    rule_setup_data_chain,
    rule_above_4g,
    rule_kernel_load,
)


def check_layout(plan: BootPlan) -> list[OracleResult]:
    """The answers of every rule that applies to *plan*."""
    return [r for rule in RULES if (r := rule(plan)) is not None]
