"""Validity rules for a device-tree boot layout: does the DTB we wrote, and where we put
it, obey the boot protocol?  Pure; one OracleResult per rule, named ``dt-valid-*``.

Sources: Documentation/arch/arm64/booting.rst (Image placement, the DTB's alignment and
size, nothing in the image_size window), Documentation/arch/riscv/boot.rst, the
Devicetree Specification v0.4 chapter 5 (header, block alignment) and section 3.4
(/memory), drivers/of/fdt.c (the initrd range is [start, end), read as cells).
Without overrides our loader must pass every rule (a failure is our bug); with them
the rules say what the faulty loader got wrong, whatever the kernel then did.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from bootfuzz.abi.dt_image import IMAGE_BASE_ALIGN
from bootfuzz.abi.fdt import (
    FDT_HEADER,
    FDT_LAST_COMP_VERSION,
    FDT_MAGIC,
    FDT_RESERVE_ENTRY,
    FDT_VERSION,
    RSVMAP_ALIGN,
    STRUCT_ALIGN,
    unpack_be,
)
from bootfuzz.judge.verdict import OracleResult, judged
from bootfuzz.loader.dt_plan import DTB_ALIGN, DTB_MAX, PAGE, DtBootPlan

Range = tuple[int, int]  # [start, end)


def _fmt(ranges: Sequence[Range]) -> str:
    return ", ".join(f"[{a:#x}, {b:#x})" for a, b in ranges) or "(none)"


def _inside(r: Range, nodes: Sequence[Range]) -> bool:
    return any(a <= r[0] and r[1] <= b for a, b in nodes)


def _overlap(r: Range, s: Range) -> bool:
    return r[0] < s[1] and s[0] < r[1]


def _nodes(plan: DtBootPlan) -> list[Range]:
    return [(a, a + s) for a, s in plan.memory]


def rule_header(plan: DtBootPlan) -> OracleResult:
    """The header says what the blob is: magic, version 17 (compatible with 16), a
    totalsize equal to the bytes written and at most 2 MiB, blocks in bounds and aligned."""
    expected = (f"magic {FDT_MAGIC:#x}, version {FDT_VERSION}/{FDT_LAST_COMP_VERSION}, "
                f"totalsize = {len(plan.dtb)} bytes written <= {DTB_MAX}, blocks inside")
    try:
        h = unpack_be(FDT_HEADER, plan.dtb)
    except ValueError:
        return judged("dt-valid-header", False, expected,
                      f"{len(plan.dtb)} bytes: shorter than the header")
    problems = []
    if h["magic"] != FDT_MAGIC:
        problems.append(f"magic {h['magic']:#x}")
    if h["version"] < FDT_LAST_COMP_VERSION or h["last_comp_version"] > FDT_VERSION:
        problems.append(f"version {h['version']}/{h['last_comp_version']}")
    if h["totalsize"] != len(plan.dtb):
        problems.append(f"totalsize {h['totalsize']} but {len(plan.dtb)} bytes written")
    if h["totalsize"] > DTB_MAX:
        problems.append(f"totalsize {h['totalsize']} > 2 MiB")
    total = min(h["totalsize"], len(plan.dtb))
    for off, size, align, what in (
        (h["off_dt_struct"], h["size_dt_struct"], STRUCT_ALIGN, "structure block"),
        (h["off_dt_strings"], h["size_dt_strings"], 1, "strings block"),
        (h["off_mem_rsvmap"], FDT_RESERVE_ENTRY.size, RSVMAP_ALIGN, "reservation block"),
    ):
        if off % align or off + size > total:
            problems.append(f"{what} at {off:#x}+{size:#x} outside the blob or misaligned")
    return judged("dt-valid-header", not problems, expected,
                  "; ".join(problems) or "as expected")


def rule_dtb_placement(plan: DtBootPlan) -> OracleResult:
    """booting.rst: the DTB is 8-byte aligned; and it must lie in RAM the memory nodes
    describe (else the kernel's copy of it is not memory it may keep)."""
    span = (plan.dtb_addr, plan.dtb_addr + len(plan.dtb))
    nodes = _nodes(plan)
    expected = f"8-byte aligned, [{span[0]:#x}, {span[1]:#x}) inside {_fmt(nodes)}"
    problems = []
    if plan.dtb_addr % DTB_ALIGN:
        problems.append(f"DTB at {plan.dtb_addr:#x} is not 8-byte aligned")
    if not _inside(span, nodes):
        problems.append(f"DTB [{span[0]:#x}, {span[1]:#x}) not inside the memory nodes")
    return judged("dt-valid-dtb-in-memory", not problems, expected,
                  "; ".join(problems) or "as expected")


def rule_initrd_range(plan: DtBootPlan) -> OracleResult | None:
    """/chosen's [linux,initrd-start, linux,initrd-end) is exactly the initrd's bytes."""
    if plan.initrd is None or plan.chosen_initrd is None:
        return None
    want = (plan.initrd.addr, plan.initrd.end)
    got = plan.chosen_initrd
    return judged("dt-valid-initrd-range", got == want,
                  f"chosen initrd [{want[0]:#x}, {want[1]:#x}) (the initrd's bytes)",
                  f"chosen initrd [{got[0]:#x}, {got[1]:#x})"
                  + (f": {got[1] - want[1]:+d} bytes at the end" if got[0] == want[0] else ""))


def rule_initrd_place(plan: DtBootPlan) -> OracleResult | None:
    """The initrd lies in the memory nodes, clear of the kernel's window and the DTB."""
    if plan.chosen_initrd is None:
        return None
    rng = plan.chosen_initrd
    problems = []
    if rng[1] <= rng[0]:
        problems.append("the range is empty or inverted")
    elif not _inside(rng, _nodes(plan)):
        problems.append("not inside the memory nodes")
    if _overlap(rng, plan.kernel_window):
        problems.append("overlaps the kernel's image_size window")
    if _overlap(rng, (plan.dtb_addr, plan.dtb_addr + len(plan.dtb))):
        problems.append("overlaps the DTB")
    return judged("dt-valid-initrd-place", not problems,
                  "in the memory nodes, clear of the kernel window and the DTB",
                  "; ".join(problems) or "as expected", f"chosen range {_fmt([rng])}")


def rule_kernel_window(plan: DtBootPlan) -> OracleResult:
    """The Image sits at text_offset from a 2 MiB aligned base, its image_size window in
    the memory nodes, and no other blob in it (booting.rst, riscv boot.rst)."""
    w = plan.kernel_window
    problems = []
    text_offset = plan.image_header.get("text_offset", 0)
    base = plan.kernel_load - (text_offset if plan.arch.value == "aarch64" else 0)
    if base % IMAGE_BASE_ALIGN:
        problems.append(f"base {base:#x} is not 2 MiB aligned")
    if not _inside(w, _nodes(plan)):
        problems.append("window not inside the memory nodes")
    for b in plan.blobs:
        if b.name != "kernel" and _overlap((b.addr, b.end), w):
            problems.append(f"{b.name} [{b.addr:#x}, {b.end:#x}) inside the window")
    return judged("dt-valid-kernel-window", not problems,
                  f"window [{w[0]:#x}, {w[1]:#x}) 2 MiB based, in memory, free",
                  "; ".join(problems) or "as expected")


def rule_memory_nodes(plan: DtBootPlan) -> OracleResult:
    """Memory nodes name RAM the machine has, page aligned, non-empty, not overlapping."""
    nodes = _nodes(plan)
    machine = (plan.machine.ram_start, plan.machine.ram_end)
    problems = []
    for a, b in nodes:
        if b <= a:
            problems.append(f"[{a:#x}, {b:#x}) is empty")
        elif not _inside((a, b), [machine]):
            problems.append(f"[{a:#x}, {b:#x}) is not the machine's RAM")
        if a % PAGE or b % PAGE:
            problems.append(f"[{a:#x}, {b:#x}) is not page aligned")
    ordered = sorted(nodes)
    for r, s in itertools.pairwise(ordered):
        if _overlap(r, s):
            problems.append(f"{_fmt([r])} and {_fmt([s])} overlap")
    return judged("dt-valid-memory-nodes", bool(nodes) and not problems,
                  f"non-empty page ranges inside the machine's RAM {_fmt([machine])}",
                  "; ".join(problems) or (_fmt(nodes) if nodes else "no memory node"))


def rule_reservations(plan: DtBootPlan) -> OracleResult | None:
    """/memreserve/ entries do not overlap each other and lie in the memory nodes."""
    rsv = [(a, a + s) for a, s in plan.fdt.reservations]
    if not rsv:
        return None
    problems = [f"{_fmt([r])} outside memory" for r in rsv if not _inside(r, _nodes(plan))]
    ordered = sorted(rsv)
    problems += [f"{_fmt([r])} and {_fmt([s])} overlap"
                 for r, s in itertools.pairwise(ordered) if _overlap(r, s)]
    return judged("dt-valid-reservations", not problems, "disjoint, inside memory",
                  "; ".join(problems) or _fmt(rsv))


def rule_bootargs(plan: DtBootPlan) -> OracleResult:
    """/chosen/bootargs is a NUL-terminated string (a property string, spec 2.2.4)."""
    chosen = plan.fdt.root.child("chosen")
    raw = chosen.prop("bootargs") if chosen else None
    ok = raw is not None and raw.endswith(b"\0") and b"\0" not in raw[:-1]
    return judged("dt-valid-bootargs", ok, "one NUL-terminated string",
                  "missing" if raw is None else f"{len(raw)} bytes, ends {raw[-4:]!r}")


RULES: tuple[Callable[[DtBootPlan], OracleResult | None], ...] = (
    rule_header, rule_dtb_placement, rule_initrd_range, rule_initrd_place,
    rule_kernel_window, rule_memory_nodes, rule_reservations, rule_bootargs,
)


def check_dt_layout(plan: DtBootPlan) -> list[OracleResult]:
    return [r for rule in RULES if (r := rule(plan)) is not None]
