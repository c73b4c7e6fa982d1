"""One definition of the device-tree case draws, for the seeded campaign
(bootfuzz.fuzz.dt_campaign, over random.Random) and the Hypothesis strategies
(bootfuzz.fuzz.dt_strategies, over strategies.DrawSource): memory sizes with their
edges, page-aligned holes, cell sizes, bootargs tokens, initrds and placements, and the
faults a faulty loader makes of one of our plans, each with the rule that must flag it.
"""

from __future__ import annotations

import dataclasses
import enum

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, DtOverrides, InitrdPlacement, InitrdSpec, harness_cmdline
from bootfuzz.compression import Compression
from bootfuzz.fuzz.draws import Source, chance
from bootfuzz.loader.dt_plan import PAGE, DtBootPlan
from bootfuzz.loader.virt import RAM_BASE

MiB, GiB = 1 << 20, 1 << 30
#: The least uniform draw and the minimizer's floor, with room to spare: at 64 MiB the
#: pinned riscv64 kernel panics in sparse_init (its EARLY_CONTIGUOUS piece does not fit
#: beside the kernel, DTB and initrd blocks, about 40 MiB).  The 128 MiB edge is drawn
#: too: TOP_ROOM keeps its piece free.
DT_MIN_MEMORY = 160 * MiB
DT_MAX_MEMORY = 8 * GiB
#: Holes start past the kernel's and the DTB's blocks (RAM + 64 MiB) and stay page ranges.
HOLE_FLOOR = 64 * MiB
#: The largest single early allocation of the pinned kernels: the riscv64 kernel's
#: mem_section root array (mm/sparse.c memory_present, SPARSEMEM_EXTREME sized for
#: 56-bit physical addresses), one memblock piece, measured: a case whose holes left no
#: free 32 MiB panicked "memblocks_present: Failed to allocate 33554432 bytes".  Running
#: short of it is the guest being too small, not a loader's fault.
EARLY_CONTIGUOUS = 32 * MiB
#: Holes keep off the top of RAM by this much: the early allocation, beside an initrd
#: placed at the top (MAX_DT_INITRD and its framing) and the kernel's other early pieces.
TOP_ROOM = EARLY_CONTIGUOUS + 16 * MiB
#: Memory sizes worth hitting: a 32-bit boundary, the riscv64 3 GiB fdt ceiling.
DT_MEMORY_EDGES = (128 * MiB, 256 * MiB, 2 * GiB, 3 * GiB, 4 * GiB, 4 * GiB + 2 * MiB)
#: Extra command-line tokens: none hides the lines the oracles read (no quiet) or floods
#: a TCG serial console (no initcall_debug, memblock=debug).
BOOTARGS_TOKENS = ("loglevel=8", "rdinit=/init", "x=\"a b\"", "earlycon", "nokaslr",
                   "a" * 200, "bootfuzz.tag=\u00e9")


class DtFault(enum.StrEnum):
    """A faulty loader's DTB (FAULT_RULES: the rule that must flag each)."""

    INITRD_ONE_PAGE_PAST = "initrd-one-page-past"
    INITRD_INVERTED = "initrd-inverted"
    MEMORY_OMITS_DTB = "memory-omits-dtb"
    DTB_UNALIGNED = "dtb-unaligned"
    TOTALSIZE_LIES = "totalsize-lies"
    TRUNCATED = "truncated"
    BAD_MAGIC = "bad-magic"
    RESERVATIONS_OVERLAP = "reservations-overlap"
    BOOTARGS_NO_NUL = "bootargs-no-nul"
    MEMORY_BEYOND_RAM = "memory-beyond-ram"

    @property
    def rule(self) -> str:
        return FAULT_RULES[self]


FAULT_RULES: dict[DtFault, str] = {
    DtFault.INITRD_ONE_PAGE_PAST: "dt-valid-initrd-range",
    DtFault.INITRD_INVERTED: "dt-valid-initrd-place",
    DtFault.MEMORY_OMITS_DTB: "dt-valid-dtb-in-memory",
    DtFault.DTB_UNALIGNED: "dt-valid-dtb-in-memory",
    DtFault.TOTALSIZE_LIES: "dt-valid-header",
    DtFault.TRUNCATED: "dt-valid-header",
    DtFault.BAD_MAGIC: "dt-valid-header",
    DtFault.RESERVATIONS_OVERLAP: "dt-valid-reservations",
    DtFault.BOOTARGS_NO_NUL: "dt-valid-bootargs",
    DtFault.MEMORY_BEYOND_RAM: "dt-valid-memory-nodes",
}


INITRD_COMPRESSIONS = (Compression.GZIP, Compression.XZ, Compression.ZSTD)
MAX_DT_INITRD = 4 * MiB


def draw_memory(src: Source, max_memory: int = DT_MAX_MEMORY) -> int:
    """Guest RAM: an edge value half the time, else uniform in MiB."""
    edges = [m for m in DT_MEMORY_EDGES if m <= max_memory]
    if edges and chance(src, 0.5):
        return src.choice(edges)
    return src.randrange(DT_MIN_MEMORY // MiB, max_memory // MiB + 1) * MiB


def draw_holes(src: Source, arch: Arch, memory: int, max_holes: int = 3
               ) -> tuple[tuple[int, int], ...]:
    """Page-aligned holes in RAM above HOLE_FLOOR, disjoint, leaving TOP_ROOM at the top."""
    base = RAM_BASE[arch]
    lo, hi = base + HOLE_FLOOR, base + memory - TOP_ROOM
    holes: list[tuple[int, int]] = []
    for _ in range(src.randrange(max_holes + 1)):
        if hi - lo < 2 * PAGE:
            break
        start = src.randrange(lo // PAGE, (hi - PAGE) // PAGE) * PAGE
        size = src.randrange(1, min((hi - start) // PAGE, 512 * MiB // PAGE) + 1) * PAGE
        if all(start + size <= a or a + s <= start for a, s in holes):
            holes.append((start, size))
    return tuple(sorted(holes))


def draw_dt_case(src: Source, arch: Arch, kernel: str = "k",
                 max_memory: int = DT_MAX_MEMORY, memory: int | None = None) -> BootCase:
    """A case our loader accepts for *arch*; its plan passes every layout rule."""
    mem = memory if memory is not None else draw_memory(src, max_memory)
    holes = draw_holes(src, arch, mem)
    # One cell each only while every address and size fits in 32 bits.
    fits32 = RAM_BASE[arch] + mem <= 1 << 32
    cells = 1 if fits32 and chance(src, 0.3) else None
    extra = [src.choice(BOOTARGS_TOKENS) for _ in range(src.randrange(4))]
    initrd = None if chance(src, 0.1) else InitrdSpec(
        src.randrange(MAX_DT_INITRD + 1), src.choice(INITRD_COMPRESSIONS),
        src.randrange(2**64))
    return BootCase(
        kernel=kernel, memory=mem, cmdline=" ".join([harness_cmdline(arch), *extra]),
        initrd=initrd, arch=arch, backend="qemu-virt", mem_holes=holes,
        initrd_placement=src.choice([InitrdPlacement.TOP, InitrdPlacement.LOW]),
        dt=DtOverrides(address_cells=cells, size_cells=cells),
    )


def fault_override(plan: DtBootPlan, fault: DtFault, amount: int = 1) -> DtOverrides:
    """The overrides that turn *plan* (of ours) into *fault*, on top of the case's own
    (its cell sizes stay: the DTB keeps its size); *amount* scales the fault."""
    ov = plan.case.dt
    fault_ov = _fault_fields(plan, fault, amount)
    return dataclasses.replace(ov, **{f.name: getattr(fault_ov, f.name)
                                      for f in dataclasses.fields(fault_ov)
                                      if getattr(fault_ov, f.name) != getattr(DtOverrides(),
                                                                              f.name)})


def _fault_fields(plan: DtBootPlan, fault: DtFault, amount: int) -> DtOverrides:
    dtb_end = plan.dtb_addr + len(plan.dtb)
    if fault is DtFault.INITRD_ONE_PAGE_PAST:
        assert plan.initrd is not None
        return DtOverrides(initrd_end=plan.initrd.end + PAGE * amount)
    if fault is DtFault.INITRD_INVERTED:
        assert plan.initrd is not None
        return DtOverrides(initrd_start=plan.initrd.end, initrd_end=plan.initrd.addr)
    if fault is DtFault.MEMORY_OMITS_DTB:
        page = plan.dtb_addr & ~(PAGE - 1)
        parts = []
        for a, s in plan.memory:
            if a <= page < a + s:
                parts += [(a, page - a), (page + PAGE, a + s - page - PAGE)]
            else:
                parts.append((a, s))
        return DtOverrides(memory=tuple((a, s) for a, s in parts if s > 0))
    if fault is DtFault.DTB_UNALIGNED:
        return DtOverrides(dtb_addr=plan.dtb_addr + 8 * (amount - 1) + 4)
    if fault is DtFault.TOTALSIZE_LIES:
        return DtOverrides(header=(("totalsize", len(plan.dtb) + 8 * amount),))
    if fault is DtFault.TRUNCATED:
        return DtOverrides(truncate=max(len(plan.dtb) - 8 * amount, 0))
    if fault is DtFault.BAD_MAGIC:
        return DtOverrides(header=(("magic", 0xD00DFEED ^ amount),))
    if fault is DtFault.RESERVATIONS_OVERLAP:
        return DtOverrides(reservations=((dtb_end, 2 * PAGE * amount),
                                         (dtb_end + PAGE, PAGE)))
    if fault is DtFault.BOOTARGS_NO_NUL:
        return DtOverrides(bootargs_raw=plan.cmdline)
    return DtOverrides(memory=((plan.machine.ram_start, plan.machine.memory + PAGE * amount),))


def draw_fault(src: Source, plan: DtBootPlan) -> tuple[DtFault, DtOverrides]:
    """A fault a faulty loader makes of *plan*, and its overrides."""
    faults = [f for f in DtFault if plan.initrd is not None
              or f not in (DtFault.INITRD_ONE_PAGE_PAST, DtFault.INITRD_INVERTED)]
    fault = src.choice(faults)
    return fault, fault_override(plan, fault, src.randrange(1, 17))
