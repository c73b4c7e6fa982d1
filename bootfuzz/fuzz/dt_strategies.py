"""Hypothesis strategies for device-tree boot cases: memory layouts with holes, cell
sizes, initrd placements and ranges, bootargs, and the malformed DTBs a faulty loader
writes (truncated, a lying totalsize, overlapping reservations, an inverted or
overlong initrd range, bootargs without their NUL).

``dt_boot_cases(arch)`` gives cases our loader must accept and whose layout passes every
``dt-valid-*`` rule (bootfuzz.judge.dt_rules); ``dt_faults(plan)`` gives, for a plan of
ours, an override and the rule it must make fail.  Needs the ``hypothesis`` package
(the ``dev`` extra), as bootfuzz.fuzz.strategies does.
"""

from __future__ import annotations

import dataclasses
import enum

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, DtOverrides, InitrdPlacement, InitrdSpec, harness_cmdline
from bootfuzz.compression import Compression
from bootfuzz.loader.dt_plan import PAGE, DtBootPlan
from bootfuzz.loader.virt import RAM_BASE

MiB, GiB = 1 << 20, 1 << 30
#: Below this the kernel, DTB and initrd blocks do not fit (about 40 MiB are ours).
DT_MIN_MEMORY = 128 * MiB
DT_MAX_MEMORY = 8 * GiB
#: Holes start past the kernel's and the DTB's blocks (RAM + 64 MiB) and stay page ranges.
HOLE_FLOOR = 64 * MiB
#: Memory sizes worth hitting: a 32-bit boundary, the riscv64 3 GiB fdt ceiling.
DT_MEMORY_EDGES = (128 * MiB, 256 * MiB, 2 * GiB, 3 * GiB, 4 * GiB, 4 * GiB + 2 * MiB)
BOOTARGS_TOKENS = ("quiet", "loglevel=8", "memblock=debug", "rdinit=/init", "x=\"a b\"",
                   "earlycon", "nokaslr", "initcall_debug", "a" * 200)


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


def dt_memory_sizes(arch: Arch) -> SearchStrategy[int]:
    uniform = st.integers(DT_MIN_MEMORY // MiB, DT_MAX_MEMORY // MiB).map(lambda m: m * MiB)
    return st.one_of(st.sampled_from(DT_MEMORY_EDGES), uniform)


@st.composite
def dt_holes(draw: st.DrawFn, arch: Arch, memory: int, max_holes: int = 3
             ) -> tuple[tuple[int, int], ...]:
    """Page-aligned holes in RAM above HOLE_FLOOR, disjoint, leaving room at the top."""
    base = RAM_BASE[arch]
    lo, hi = base + HOLE_FLOOR, base + memory - 16 * MiB
    holes: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(0, max_holes))):
        if hi - lo < 2 * PAGE:
            break
        start = draw(st.integers(lo // PAGE, (hi - PAGE) // PAGE - 1)) * PAGE
        size = draw(st.integers(1, min((hi - start) // PAGE, 512 * MiB // PAGE))) * PAGE
        if all(start + size <= a or a + s <= start for a, s in holes):
            holes.append((start, size))
    return tuple(sorted(holes))


@st.composite
def dt_boot_cases(draw: st.DrawFn, arch: Arch, kernel: str = "k",
                  memory: SearchStrategy[int] | None = None) -> BootCase:
    """A case our loader accepts for *arch*; its plan passes every layout rule."""
    mem = draw(memory if memory is not None else dt_memory_sizes(arch))
    holes = draw(dt_holes(arch, mem))
    # One cell each only while every address and size fits in 32 bits.
    fits32 = RAM_BASE[arch] + mem <= 1 << 32
    cells = draw(st.sampled_from([None, 1]) if fits32 else st.just(None))
    extra = draw(st.lists(st.sampled_from(BOOTARGS_TOKENS), max_size=3))
    cmdline = " ".join([harness_cmdline(arch), *extra])
    initrd = draw(st.one_of(st.none(), st.builds(
        InitrdSpec, st.integers(0, 4 * MiB),
        st.sampled_from([Compression.GZIP, Compression.XZ, Compression.ZSTD]),
        st.integers(0, 2**64 - 1))))
    addr_cells = draw(st.sampled_from([None, 2]) if cells is None else st.just(1))
    return BootCase(
        kernel=kernel, memory=mem, cmdline=cmdline, initrd=initrd, arch=arch,
        backend="qemu-virt", mem_holes=holes,
        initrd_placement=draw(st.sampled_from([InitrdPlacement.TOP, InitrdPlacement.LOW])),
        dt=DtOverrides(address_cells=addr_cells, size_cells=cells),
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


@st.composite
def dt_faults(draw: st.DrawFn, plan: DtBootPlan) -> tuple[DtFault, DtOverrides]:
    """A fault a faulty loader makes of *plan*, and its overrides."""
    faults = [f for f in DtFault if plan.initrd is not None
              or f not in (DtFault.INITRD_ONE_PAGE_PAST, DtFault.INITRD_INVERTED)]
    fault = draw(st.sampled_from(faults))
    return fault, fault_override(plan, fault, draw(st.integers(1, 16)))
