"""What a boot case can be: the edge values and draw rules of every dimension, one
definition serving the Hypothesis strategies, the campaign's generator and its mutator.

A case has dimensions (:data:`DIMENSIONS`): the entry path, the initrd (size,
compression, seed, whole/split/raw), its placement, a relocated kernel, the memory,
the command line, the command line's address, a setup_data chain, the E820 table's
shape, and (``--overrides``) loader decisions taken over.  Each has one draw function
and one rule saying whether a value still fits the rest of the case
(:func:`misfits`); :func:`draw_case` draws them in order, :func:`redraw` changes one
and redraws only the later ones that no longer fit (the mutator,
bootfuzz.fuzz.mutate).

Draws take a :class:`Source`: the three methods of :class:`random.Random` the rules
use.  The campaign passes a seeded Random (``--seed`` fixes its fresh cases);
bootfuzz.fuzz.strategies passes a Source over Hypothesis's ``st.data()``, so a
property test draws the campaign's own cases and Hypothesis shrinks them.

Without overrides every case drawn is one a correct loader lays out correctly: the
extra dimensions (relocation, a command line above 4 GiB, setup_data, E820 shape) are
layouts another correct loader could make, so any failure they show is a finding,
never the generator's doing.  Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bootfuzz.abi.bootparam import BOOT_PARAMS
from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.abi.setup_data import SetupType
from bootfuzz.case import (
    HARNESS_CMDLINE,
    BootCase,
    CpuTemplate,
    EntryProtocol,
    InitrdPlacement,
    InitrdSpec,
    Overrides,
    SetupDataNode,
)
from bootfuzz.compression import SUPPORTED, Compression
from bootfuzz.judge.memory_floor import MemoryFloor
from bootfuzz.kernel.capabilities import KernelCapabilities
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, GiB, KiB, MiB, align_up
from bootfuzz.loader.placement import plan_e820
from bootfuzz.loader.platform import (
    PC_LOWMEM_WHEN_SPLIT,
    PC_SPLIT_THRESHOLD,
    QEMU_RAM_ALIGN,
    qemu_pc,
)
from bootfuzz.loader.pvh import START_INFO_FIELDS

T = TypeVar("T")


class Source(Protocol):
    """Where draws come from: :class:`random.Random` has these three methods."""

    def random(self) -> float: ...

    def randrange(self, start: int, stop: int | None = ..., step: int = ...) -> int: ...

    def choice(self, seq: Sequence[T]) -> T: ...


def chance(src: Source, p: float) -> bool:
    return src.random() < p


def draw_bytes(src: Source, n: int) -> bytes:
    return bytes(src.randrange(256) for _ in range(n))


def shuffled(src: Source, items: Sequence[T]) -> list[T]:
    """A permutation (Fisher-Yates over src, so Hypothesis shrinks it to the identity)."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = i - src.randrange(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


# --------------------------------------------------------------------------------------
# The kernel's numbers, for generation without an image at hand
# --------------------------------------------------------------------------------------

#: The order the entry paths are listed in (the campaign's kernels' capabilities).
ENTRY_ORDER: tuple[EntryProtocol, ...] = tuple(EntryProtocol)


@dataclass(frozen=True)
class KernelLimits:
    """What case generation needs to know of a kernel image: its setup header and
    what it can do (bootfuzz.kernel.capabilities)."""

    pref_address: int
    init_size: int
    initrd_addr_max: int
    cmdline_size: int
    #: The entry paths the kernel supports (the campaign reads them from the image).
    entries: tuple[EntryProtocol, ...] = (EntryProtocol.BOOT64,)
    relocatable: bool = True
    kernel_alignment: int = 2 * MiB
    #: XLF_CAN_BE_LOADED_ABOVE_4G: initrd and command line may go above 4 GiB.
    above_4g: bool = True

    @classmethod
    def of(cls, image: KernelImage, caps: KernelCapabilities | None = None) -> KernelLimits:
        """The numbers of *image*; with its capabilities, every entry path it has
        (without, the 64-bit one only)."""
        limits = cls(image.pref_address, image.init_size, image.initrd_addr_max,
                     image.cmdline_size, relocatable=image.relocatable,
                     kernel_alignment=image.kernel_alignment or PAGE_SIZE)
        if caps is None:
            return limits
        return dataclasses.replace(
            limits, entries=tuple(e for e in ENTRY_ORDER if e in caps.entries),
            above_4g=caps.initrd_above_4g)

    @property
    def window_end(self) -> int:
        """End of the decompressor's window when loaded at pref_address (plan.py's rule)."""
        return self.pref_address + self.init_size


#: Debian 6.1 cloud (boot-protocol.md section 1): the default when no image is given.
DEBIAN_CLOUD_LIMITS = KernelLimits(
    pref_address=0x1000000, init_size=0x3378000, initrd_addr_max=0x7FFFFFFF, cmdline_size=2047,
    entries=ENTRY_ORDER,
)

#: Memory sizes come in QEMU's -m granule; others are refused (bootfuzz.loader.platform).
MEMORY_GRANULE = QEMU_RAM_ALIGN
#: The smallest guest QEMU and our planner agree to (bootfuzz.loader.platform).
MIN_GUEST_MEMORY = 2 * MiB
#: The largest guest the generators produce by default: above 4 GiB, below the
#: 64 GiB the identity map covers.
DEFAULT_MAX_MEMORY = 8 * GiB
#: The agent plus the archive's directories and trailer, rounded far up (the agent
#: is ~15 KiB).
ARCHIVE_OVERHEAD_BOUND = 1 * MiB


def initrd_size_bound(spec: InitrdSpec) -> int:
    """An upper bound of the built initrd's size for *spec*.

    The payload is random bytes: every compressor stores it nearly verbatim, with
    less than 1/64 of framing (bzip2, the worst, adds about 0.5 %).
    """
    return spec.size + spec.size // 64 + ARCHIVE_OVERHEAD_BOUND


def min_memory(limits: KernelLimits, initrd: InitrdSpec | None = None, shift: int = 0) -> int:
    """The smallest page-aligned memory our loader accepts for this kernel and initrd.

    The decompressor's window [pref_address, pref_address + init_size), moved up by
    *shift* for a relocated kernel, must fit in low RAM, and the initrd (page aligned)
    above it (plan.py, _place_kernel and _place_initrd).  With an initrd the bound is
    an estimate from above.
    """
    need = limits.window_end + shift
    if initrd is not None:
        need += align_up(initrd_size_bound(initrd), PAGE_SIZE)
    return align_up(max(need, MIN_GUEST_MEMORY), MEMORY_GRANULE)


# --------------------------------------------------------------------------------------
# Edge tables
# --------------------------------------------------------------------------------------

#: Absolute memory edges: where the pc machine splits RAM around the MMIO gap
#: (platform.py: PC_SPLIT_THRESHOLD, PC_LOWMEM_WHEN_SPLIT), and 4 GiB.
MEMORY_EDGES: tuple[int, ...] = (
    PC_LOWMEM_WHEN_SPLIT - MEMORY_GRANULE,
    PC_LOWMEM_WHEN_SPLIT,
    PC_LOWMEM_WHEN_SPLIT + MEMORY_GRANULE,
    PC_SPLIT_THRESHOLD - MEMORY_GRANULE,
    PC_SPLIT_THRESHOLD,
    PC_SPLIT_THRESHOLD + MEMORY_GRANULE,
    FOUR_GIB - MEMORY_GRANULE,
    FOUR_GIB,
    FOUR_GIB + MEMORY_GRANULE,
    5 * GiB,
    128 * MiB,
    256 * MiB,
    512 * MiB,
    1 * GiB,
    2 * GiB,
)
#: Edges relative to the smallest memory the loader accepts (min_memory).
MEMORY_FLOOR_OFFSETS: tuple[int, ...] = (0, MEMORY_GRANULE, 2 * MiB, 16 * MiB, 64 * MiB)

#: Payload sizes: empty, one byte, either side of a page and of 2 MiB, whole MiBs.
INITRD_SIZE_EDGES: tuple[int, ...] = (
    0, 1, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, 64 * KiB,
    1 * MiB, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1, 4 * MiB, 16 * MiB, 64 * MiB,
)
COMPRESSIONS: tuple[Compression, ...] = tuple(c for c in Compression if c in SUPPORTED)
#: The kernel's two slow decompressors: a TCG boot of a cloud kernel takes about 1.6 s
#: longer with a bzip2 or lzma initramfs than with any other (3.4 s against 1.85 s,
#: the median case of bench/campaign_throughput.py) for the same detection and unpack
#: path, so a campaign draws them half as often: each format then gets about the same
#: share of boot time, not of cases (and the campaign more layouts per minute).
SLOW_COMPRESSIONS: frozenset[Compression] = frozenset({Compression.BZIP2, Compression.LZMA})
#: What draw_initrd picks from: every other format twice, the slow ones once.
COMPRESSION_DRAWS: tuple[Compression, ...] = tuple(
    c for c in COMPRESSIONS for _ in range(1 if c in SLOW_COMPRESSIONS else 2))

#: Header fields a 32/64-bit loader writes or may modify (boot.rst "W" and "M"; the
#: table in boot-protocol.md section 1).  "R" fields are the kernel's to say.
WRITABLE_SETUP_HEADER_FIELDS: tuple[str, ...] = (
    "root_flags", "vid_mode", "root_dev", "realmode_swtch", "type_of_loader", "loadflags",
    "setup_move_size", "code32_start", "ramdisk_image", "ramdisk_size", "heap_end_ptr",
    "ext_loader_ver", "ext_loader_type", "cmd_line_ptr", "kernel_alignment",
    "hardware_subarch", "hardware_subarch_data", "setup_data",
)


def field_max(name: str) -> int:
    """The largest value a boot_params integer field holds."""
    return (1 << (8 * BOOT_PARAMS[name].size)) - 1


def header_value_edges(name: str, initrd_addr_max: int = DEBIAN_CLOUD_LIMITS.initrd_addr_max
                       ) -> tuple[int, ...]:
    """Edge values of field *name*: 0, 1, max, max - 1, initrd_addr_max +- 1, 4 KiB and
    2 MiB boundaries, 4 GiB - 1; only those that fit the field."""
    top = field_max(name)
    candidates = (0, 1, top, top - 1, initrd_addr_max - 1, initrd_addr_max, initrd_addr_max + 1,
                  PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1,
                  FOUR_GIB - 1)
    return tuple(sorted({v for v in candidates if 0 <= v <= top}))


#: Boot-safe parameters: dotted names are module parameters, which the kernel
#: neither interprets nor passes to init (init/main.c unknown_bootoption), so any
#: number of them leaves the boot alone.
SAFE_KEYS: tuple[str, ...] = ("bootfuzz.a", "bootfuzz.key", "bootfuzz.x_y", "foo.bar")
SAFE_VALUES: tuple[str, ...] = ("1", "0", "value", "a-b_c", "0x1000", "/init", "")
QUOTED_VALUES: tuple[str, ...] = ('"a b"', '"  spaced  out  "', '""', '"x=y z"')
NON_ASCII_VALUES: tuple[str, ...] = ("\u00e9t\u00e9", "\u65e5\u672c", "\u2603", "\U0001f600")
#: Tokens that change what runs as init or how the kernel reads the line; they may
#: stop our agent from running (deliberately not boot-safe).
UNSAFE_TOKENS: tuple[str, ...] = (
    "init=/bin/sh", "rdinit=/nonexistent", "init=", "rdinit=", "--", "-- x y", "quiet",
    "loglevel=0", "panic=0", "mem=64M", "memmap=1M$0x2000000", "initrd=/x",
)
#: Tokens that are harmless to our agent: our /init is the rdinit default, and what
#: follows "--" goes to init's argv, which the agent ignores.
SAFE_SPECIAL_TOKENS: tuple[str, ...] = ("rdinit=/init", "--", "-- bootfuzz")

#: E820 types: every kernel type plus an unknown one.
E820_TYPES: tuple[int, ...] = (*(int(t) for t in E820Type), 0, 13, 0xFFFFFFFF)
E820_GAPS: tuple[int, ...] = (0, PAGE_SIZE, 2 * MiB, 0x60000)  # 0: adjacent

#: Entry paths of a bzImage's protected-mode code or its vmlinux that take our zero
#: page and setup_data (PVH takes hvm_start_info, the 16-bit one the setup header).
ZERO_PAGE_ENTRIES = (EntryProtocol.BOOT64, EntryProtocol.BOOT32, EntryProtocol.VMLINUX)
#: Entry paths that may get data above 4 GiB (layout_rules.rule_above_4g).
ENTRIES_ABOVE_4G = (EntryProtocol.BOOT64, EntryProtocol.VMLINUX)
#: Entry paths whose kernel a loader may move (its relocation rule: bzImage
#: kernel_alignment; the vmlinux 2 MiB, layout_rules.VMLINUX_LOAD_ALIGN).
RELOCATABLE_ENTRIES = (EntryProtocol.BOOT64, EntryProtocol.BOOT32, EntryProtocol.REAL16,
                       EntryProtocol.VMLINUX)
#: How far a correct loader moves the kernel: whole alignments above pref_address.
RELOCATION_STEPS: tuple[int, ...] = (1, 2, 3, 8)
#: setup_data types the kernel reads and forgets (RNG seed: zeroed after use) or
#: does not know (parse_setup_data's default: ignored): a correct chain of them is
#: a layout any loader may pass.  source: arch/x86/kernel/setup.c, parse_setup_data.
HARMLESS_SETUP_TYPES: tuple[int, ...] = (int(SetupType.SETUP_RNG_SEED), 0x10, 0x100, 0x7FFF)
#: Where a correct loader may put the command line above 4 GiB: offsets into RAM there.
HIGH_CMDLINE_OFFSETS: tuple[int, ...] = (0, PAGE_SIZE, 1 * MiB - PAGE_SIZE)
#: SeaBIOS's reserved entry at the top of the MMIO gap: a shape real firmware gives.
SEABIOS_RESERVED = E820Entry(0xFEFFC000, 0x4000, E820Type.RESERVED)


# --------------------------------------------------------------------------------------
# Draws of each dimension
# --------------------------------------------------------------------------------------


def edge_or_uniform(src: Source, edges: Sequence[int], lo: int, hi: int,
                    step: int = 1, p_edge: float = 0.5) -> int:
    inside = [e for e in edges if lo <= e <= hi and e % step == 0]
    if inside and chance(src, p_edge):
        return src.choice(sorted(inside))
    return src.randrange(lo // step, hi // step + 1) * step


def draw_memory(src: Source, floor: int, ceiling: int) -> int:
    """Memory in [floor, ceiling] in QEMU's 8 KiB granule, half the time an edge."""
    floor = align_up(floor, MEMORY_GRANULE)
    edges = MEMORY_EDGES + tuple(floor + off for off in MEMORY_FLOOR_OFFSETS)
    return edge_or_uniform(src, edges, floor, max(floor, ceiling), MEMORY_GRANULE)


def draw_initrd(src: Source, max_size: int, formats: bool = True) -> InitrdSpec:
    """A payload size (half the time an edge), a compression, a seed; with *formats*
    sometimes two archives (split) or the payload alone (raw)."""
    size = edge_or_uniform(src, INITRD_SIZE_EDGES, 0, max_size)
    compression = src.choice(COMPRESSION_DRAWS)
    seed = src.randrange(0, 1 << 16)
    split = raw = False
    if formats:
        kind = src.random()
        split = kind < 0.15
        # An empty uncompressed raw initrd is no initrd at all (the loader refuses it).
        raw = 0.15 <= kind < 0.2 and not (size == 0 and compression is Compression.NONE)
    return InitrdSpec(size, compression, seed, split=split, raw=raw)


def draw_cmdline(src: Source, max_size: int, prefix: str = HARNESS_CMDLINE,
                 non_ascii: bool = False) -> str:
    """The prefix and boot-safe tokens, up to *max_size* bytes, sometimes right at it.

    "--" (init's arguments follow) only comes last: init takes at most 32 arguments
    (init/main.c MAX_INIT_ARGS) and panics past that.
    """
    tokens = [prefix] if prefix else []
    fill = chance(src, 0.1)  # now and then, right up to the limit
    for _ in range(src.randrange(0, 6) if not fill else 1_000_000):
        tok = draw_cmdline_token(src, non_ascii)
        if len(" ".join([*tokens, tok]).encode()) > max_size:
            break
        tokens.append(tok)
    if chance(src, 0.1):
        end = src.choice([t for t in SAFE_SPECIAL_TOKENS if t.startswith("--")])
        if len(" ".join([*tokens, end]).encode()) <= max_size:
            tokens.append(end)
    return " ".join(tokens)


def draw_cmdline_token(src: Source, non_ascii: bool = False) -> str:
    """One boot-safe token (never "--": that one only ends a line)."""
    kind = src.random()
    if kind < 0.1:
        return src.choice([t for t in SAFE_SPECIAL_TOKENS if not t.startswith("--")])
    if kind < 0.3:
        return f"{src.choice(SAFE_KEYS)}={src.choice(QUOTED_VALUES)}"
    if non_ascii and kind < 0.4:
        return f"{src.choice(SAFE_KEYS)}={src.choice(NON_ASCII_VALUES)}"
    return f"{src.choice(SAFE_KEYS)}{src.randrange(1000)}={src.choice(SAFE_VALUES)}"


def draw_e820(src: Source, memory: int, max_entries: int = 8) -> tuple[E820Entry, ...]:
    """A table of contiguous-ish entries with holes, odd types, sometimes shuffled
    (deliberately wrong: an override)."""
    entries = []
    addr = 0
    for _ in range(src.randrange(1, max_entries + 1)):
        addr += src.choice(E820_GAPS)
        size = src.choice((0, PAGE_SIZE, 0x9F000, 64 * MiB, max(PAGE_SIZE, memory // 2)))
        entries.append(E820Entry(addr, size, src.choice(E820_TYPES)))
        addr += size
    if chance(src, 0.3):
        entries = shuffled(src, entries)
    return tuple(entries)


def e820_shapes(memory: int) -> tuple[tuple[str, tuple[E820Entry, ...]], ...]:
    """Tables a correct firmware or loader may give for *memory* instead of ours: the
    same RAM once the kernel has sanitized them (e820_model.sanitize), in another
    order, split, duplicated, or with SeaBIOS's reserved page at the top of the gap."""
    table = plan_e820(qemu_pc(memory))
    ram_1m = table[2]  # [1 MiB, top of low RAM)
    cut = align_up(ram_1m.addr + 1, 2 * MiB) + 4 * MiB  # below any kernel's pref_address
    shapes: list[tuple[str, tuple[E820Entry, ...]]] = [
        ("reversed", tuple(reversed(table))),
        ("duplicated", (*table, table[0])),
        ("seabios", (*table, SEABIOS_RESERVED)),
    ]
    if ram_1m.end > cut:
        split = (E820Entry(ram_1m.addr, cut - ram_1m.addr, ram_1m.type),
                 E820Entry(cut, ram_1m.end - cut, ram_1m.type))
        shapes.append(("split", (*table[:2], *split, *table[3:])))
    return tuple(shapes)


def draw_setup_data_chain(src: Source) -> tuple[SetupDataNode, ...]:
    """One to three loader-placed nodes of harmless types (an RNG seed, types the
    kernel does not know), each payload its header's len: a correct chain."""
    nodes = []
    for _ in range(src.randrange(1, 4)):
        kind = src.choice(HARMLESS_SETUP_TYPES)
        size = 32 if kind == SetupType.SETUP_RNG_SEED else src.randrange(0, 65)
        nodes.append(SetupDataNode(kind, draw_bytes(src, size)))
    return tuple(nodes)


def draw_overrides(src: Source, limits: KernelLimits, memory: int,
                   entry: EntryProtocol = EntryProtocol.BOOT64) -> Overrides:
    """One to three loader decisions taken over, each drawn from the edge tables
    (layouts our loader would never make); only what *entry* hands over is overridden
    (PVH: hvm_start_info instead of boot_params and setup_data)."""
    fields: list[tuple[str, int]] = []
    start_info: list[tuple[str, int]] = []
    initrd_addr = cmdline_addr = kernel_load = cmdline_raw = None
    e820 = None
    setup_data: tuple[SetupDataNode, ...] = ()
    pvh = entry is EntryProtocol.PVH
    for _ in range(src.randrange(1, 4)):
        what = src.randrange(7)
        if what == 0 and pvh:
            name = src.choice(sorted(START_INFO_FIELDS))
            top = (1 << (8 * START_INFO_FIELDS[name][0].size)) - 1
            start_info.append((name, edge_or_uniform(
                src, (0, 1, top, PAGE_SIZE, FOUR_GIB - 1, limits.pref_address), 0, top)))
        elif what == 0:
            name = src.choice(WRITABLE_SETUP_HEADER_FIELDS)
            fields.append((name, edge_or_uniform(
                src, header_value_edges(name, limits.initrd_addr_max), 0, field_max(name))))
        elif what == 1:
            initrd_addr = edge_or_uniform(
                src, (limits.pref_address, limits.window_end - PAGE_SIZE, limits.window_end,
                      FOUR_GIB - PAGE_SIZE, FOUR_GIB),
                MIN_GUEST_MEMORY, max(memory, FOUR_GIB + PAGE_SIZE), PAGE_SIZE)
        elif what == 2:
            kernel_load = edge_or_uniform(
                src, (limits.pref_address - 2 * MiB, limits.pref_address + 2 * MiB, 2 * MiB,
                      limits.pref_address + PAGE_SIZE),
                1 * MiB, limits.pref_address * 2, PAGE_SIZE)
        elif what == 3:
            e820 = draw_e820(src, memory)
        elif what == 4:
            cmdline_addr = src.choice((0x20000, 0x90000, limits.pref_address + PAGE_SIZE,
                                       FOUR_GIB - PAGE_SIZE, FOUR_GIB + PAGE_SIZE,
                                       limits.window_end - 1))
        elif what == 5 and not pvh:
            node = SetupDataNode(src.randrange(1, 12), draw_bytes(src, src.randrange(64)))
            if chance(src, 0.3):  # a header len that contradicts the payload
                node = dataclasses.replace(node, length=src.choice(
                    (0, len(node.payload) + 1, 0xFFFFFFFF)))
            setup_data = (*setup_data, node)
        else:
            cmdline_raw = src.choice((b"", b"console=ttyS0", b"x" * 300,
                                      b"console=ttyS0 \xff\xfe\0"))
    return Overrides(fields=tuple(fields), initrd_addr=initrd_addr, cmdline_addr=cmdline_addr,
                     cmdline_raw=cmdline_raw, e820=e820, kernel_load=kernel_load,
                     setup_data=setup_data, start_info=tuple(start_info))


# --------------------------------------------------------------------------------------
# A whole case: dimensions in order, each with its draw and its fit
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSpace:
    """What cases of one campaign may be: kernels, bounds, and whether loader
    decisions are taken over (deliberately invalid layouts)."""

    kernels: tuple[tuple[str, KernelLimits], ...]
    min_memory: int = 0  # 0: each case's own smallest (min_memory, the kernel's floor)
    max_memory: int = DEFAULT_MAX_MEMORY
    max_initrd: int = 8 * MiB
    overrides: bool = False
    non_ascii: bool = False
    max_cmdline: int | None = None  # None: each kernel's cmdline_size
    #: Kernels' memory floors (bootfuzz.judge.memory_floor): cases get at least the
    #: floor for their initrd.  A kernel without one starts at the loader's least.
    floors: tuple[tuple[str, MemoryFloor], ...] = ()
    #: Draw the dimensions past PR 1's (entry path, placement, initrd format, the
    #: layouts of other correct loaders).  False: 64-bit, top, one cpio archive only.
    dimensions: bool = True
    #: The backend every case runs on, and the CPU our KVM VMM shows its guest (the
    #: kvm backend's; qemu-tcg shows QEMU's own).  Both run the qemu_pc RAM layout.
    backend: str = "qemu-tcg"
    cpu_template: CpuTemplate = CpuTemplate.BASELINE

    def limits(self, kernel: str) -> KernelLimits:
        for name, limits in self.kernels:
            if name == kernel:
                return limits
        raise KeyError(kernel)

    def memory_floor(self, kernel: str, limits: KernelLimits, initrd: InitrdSpec | None,
                     shift: int = 0) -> int:
        """The least memory a case of *kernel* with *initrd* is generated with."""
        floor = max(self.min_memory, min_memory(limits, initrd, shift))
        for name, kernel_floor in self.floors:
            if name == kernel:
                floor = max(floor, kernel_floor.floor(initrd) + shift)
        return floor


def _shift(case: BootCase, limits: KernelLimits) -> int:
    load = case.overrides.kernel_load
    return 0 if load is None else max(0, load - limits.pref_address)


def _high_room(case: BootCase, memory: int) -> int:
    """Bytes of RAM above 4 GiB a case's initrd and command line may share."""
    high = qemu_pc(memory).high if memory >= MIN_GUEST_MEMORY else None
    return 0 if high is None else high.size


def _least_for_high(initrd: InitrdSpec | None) -> int:
    """Memory with room above 4 GiB for *initrd* and a page-aligned command line."""
    need = (0 if initrd is None else initrd_size_bound(initrd)) + 2 * MiB
    return align_up(max(PC_SPLIT_THRESHOLD, PC_LOWMEM_WHEN_SPLIT + need), MEMORY_GRANULE)


def _needs_high(case: BootCase) -> bool:
    ov = case.overrides
    return (case.initrd_placement is InitrdPlacement.HIGH
            or (ov.cmdline_addr is not None and ov.cmdline_addr >= FOUR_GIB))


# Each dimension: (name, draw, fits).  draw(src, space, case) gives the case with that
# dimension drawn; fits(space, case) says whether the value the case holds still fits
# the dimensions before it.  Overrides-made dimensions write only their own field.

Draw = Callable[[Source, CaseSpace, BootCase], BootCase]
Fits = Callable[[CaseSpace, BootCase], bool]


def _draw_entry(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    entries = space.limits(case.kernel).entries
    entry = EntryProtocol.BOOT64
    if (space.dimensions and chance(src, 0.5)) or EntryProtocol.BOOT64 not in entries:
        entry = src.choice(entries)
    return dataclasses.replace(case, entry=entry)


def _fits_entry(space: CaseSpace, case: BootCase) -> bool:
    return case.entry in space.limits(case.kernel).entries


def _draw_initrd(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    return dataclasses.replace(case, initrd=draw_initrd(src, space.max_initrd,
                                                        space.dimensions))


def _fits_initrd(space: CaseSpace, case: BootCase) -> bool:
    spec = case.initrd
    return spec is None or (spec.size <= space.max_initrd and not (
        spec.raw and spec.size == 0 and spec.compression is Compression.NONE))


def _high_ok(space: CaseSpace, case: BootCase) -> bool:
    limits = space.limits(case.kernel)
    return (limits.above_4g and case.entry in ENTRIES_ABOVE_4G
            and _least_for_high(case.initrd) <= space.max_memory)


def _draw_placement(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    placement = InitrdPlacement.TOP
    if space.dimensions and case.initrd is not None:
        kind = src.random()
        if kind < 0.15 and _high_ok(space, case):
            placement = InitrdPlacement.HIGH
        elif kind < 0.4:
            placement = InitrdPlacement.LOW
    return dataclasses.replace(case, initrd_placement=placement)


def _fits_placement(space: CaseSpace, case: BootCase) -> bool:
    if case.initrd_placement is InitrdPlacement.HIGH:
        return case.initrd is not None and _high_ok(space, case)
    return True


def _draw_relocation(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    limits = space.limits(case.kernel)
    load = None
    if (space.dimensions and chance(src, 0.1) and limits.relocatable
            and case.entry in RELOCATABLE_ENTRIES):
        align = max(limits.kernel_alignment, 2 * MiB)  # the vmlinux's rule too
        load = limits.pref_address + src.choice(RELOCATION_STEPS) * align
        if space.memory_floor(case.kernel, limits, case.initrd,
                              load - limits.pref_address) > space.max_memory:
            load = None
    return dataclasses.replace(case, overrides=dataclasses.replace(case.overrides,
                                                                   kernel_load=load))


def _fits_relocation(space: CaseSpace, case: BootCase) -> bool:
    load = case.overrides.kernel_load
    if load is None or space.overrides:
        return True
    limits = space.limits(case.kernel)
    align = max(limits.kernel_alignment, 2 * MiB)
    return (limits.relocatable and case.entry in RELOCATABLE_ENTRIES
            and load > limits.pref_address and (load - limits.pref_address) % align == 0)


def _memory_floor(space: CaseSpace, case: BootCase) -> int:
    limits = space.limits(case.kernel)
    floor = space.memory_floor(case.kernel, limits, case.initrd, _shift(case, limits))
    if _needs_high(case):
        floor = max(floor, _least_for_high(case.initrd))
    return floor


def _draw_memory(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    floor = _memory_floor(space, case)
    return dataclasses.replace(case, memory=draw_memory(src, floor,
                                                        max(floor, space.max_memory)))


def _fits_memory(space: CaseSpace, case: BootCase) -> bool:
    return (case.memory % MEMORY_GRANULE == 0 and case.memory >= _memory_floor(space, case)
            and (case.memory <= space.max_memory
                 or case.memory == align_up(_memory_floor(space, case), MEMORY_GRANULE)))


def _longest_cmdline(space: CaseSpace, case: BootCase) -> int:
    limits = space.limits(case.kernel)
    return (limits.cmdline_size if space.max_cmdline is None
            else min(space.max_cmdline, limits.cmdline_size))


def _draw_cmdline(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    return dataclasses.replace(case, cmdline=draw_cmdline(
        src, _longest_cmdline(space, case), non_ascii=space.non_ascii))


def _fits_cmdline(space: CaseSpace, case: BootCase) -> bool:
    return len(case.cmdline.encode("utf-8", "surrogateescape")) <= _longest_cmdline(space, case)


def _high_cmdline_ok(space: CaseSpace, case: BootCase) -> bool:
    room = _high_room(case, case.memory)
    need = (initrd_size_bound(case.initrd) if case.initrd is not None
            and case.initrd_placement is InitrdPlacement.HIGH else 0)
    return (space.limits(case.kernel).above_4g and case.entry is EntryProtocol.BOOT64
            and room >= need + 2 * MiB)


def _draw_cmdline_addr(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    addr = None
    if space.dimensions and chance(src, 0.1) and _high_cmdline_ok(space, case):
        addr = FOUR_GIB + src.choice(HIGH_CMDLINE_OFFSETS)
    return dataclasses.replace(case, overrides=dataclasses.replace(case.overrides,
                                                                   cmdline_addr=addr))


def _fits_cmdline_addr(space: CaseSpace, case: BootCase) -> bool:
    addr = case.overrides.cmdline_addr
    return (addr is None or space.overrides
            or (addr - FOUR_GIB in HIGH_CMDLINE_OFFSETS and _high_cmdline_ok(space, case)))


def _draw_setup_data(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    nodes: tuple[SetupDataNode, ...] = ()
    if space.dimensions and chance(src, 0.15) and case.entry is not EntryProtocol.PVH:
        nodes = draw_setup_data_chain(src)
    return dataclasses.replace(case, overrides=dataclasses.replace(case.overrides,
                                                                   setup_data=nodes))


def _fits_setup_data(space: CaseSpace, case: BootCase) -> bool:
    return (not case.overrides.setup_data or space.overrides
            or case.entry is not EntryProtocol.PVH)


def _draw_e820_shape(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    table = None
    if space.dimensions and chance(src, 0.15):
        table = src.choice(e820_shapes(case.memory))[1]
    return dataclasses.replace(case, overrides=dataclasses.replace(case.overrides, e820=table))


def _fits_e820_shape(space: CaseSpace, case: BootCase) -> bool:
    table = case.overrides.e820
    return table is None or space.overrides or table in (
        t for _, t in e820_shapes(case.memory))


def _draw_wild(src: Source, space: CaseSpace, case: BootCase) -> BootCase:
    if not space.overrides or not chance(src, 0.5):
        return case
    wild = draw_overrides(src, space.limits(case.kernel), case.memory, case.entry)
    merged = dataclasses.replace(case.overrides, **{
        f.name: getattr(wild, f.name) for f in dataclasses.fields(Overrides)
        if getattr(wild, f.name) != getattr(Overrides(), f.name)})
    return dataclasses.replace(case, overrides=merged)


def _fits_wild(space: CaseSpace, case: BootCase) -> bool:
    return True


@dataclass(frozen=True)
class Dimension:
    name: str
    draw: Draw
    fits: Fits


#: The dimensions in the order they are drawn: each may depend on those before it.
DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("entry", _draw_entry, _fits_entry),
    Dimension("initrd", _draw_initrd, _fits_initrd),
    Dimension("placement", _draw_placement, _fits_placement),
    Dimension("relocation", _draw_relocation, _fits_relocation),
    Dimension("memory", _draw_memory, _fits_memory),
    Dimension("cmdline", _draw_cmdline, _fits_cmdline),
    Dimension("cmdline-address", _draw_cmdline_addr, _fits_cmdline_addr),
    Dimension("setup-data", _draw_setup_data, _fits_setup_data),
    Dimension("e820", _draw_e820_shape, _fits_e820_shape),
    Dimension("overrides", _draw_wild, _fits_wild),
)
DIMENSION_NAMES: tuple[str, ...] = tuple(d.name for d in DIMENSIONS)


def draw_case(src: Source, space: CaseSpace) -> BootCase:
    """A fresh case: a kernel, then every dimension in order.

    Without overrides it is one the loader must accept and lay out correctly
    (memory at least min_memory and the kernel's floor for its initrd, command line
    within cmdline_size, every extra dimension a layout of a correct loader).
    """
    name, _ = src.choice(space.kernels)
    case = BootCase(kernel=name, memory=MIN_GUEST_MEMORY, backend=space.backend,
                    cpu_template=space.cpu_template)
    for dim in DIMENSIONS:
        case = dim.draw(src, space, case)
    return case


def redraw(src: Source, space: CaseSpace, case: BootCase, dimension: str) -> BootCase:
    """*case* with *dimension* drawn afresh, and every later dimension that no longer
    fits drawn again (the rest kept): one dimension mutated, the case still sound."""
    index = DIMENSION_NAMES.index(dimension)
    case = DIMENSIONS[index].draw(src, space, case)
    for dim in DIMENSIONS[index + 1:]:
        if not dim.fits(space, case):
            case = dim.draw(src, space, case)
    return case


def misfits(space: CaseSpace, case: BootCase) -> list[str]:
    """The dimensions of *case* that do not fit *space* (empty: a sound case)."""
    if case.kernel not in {name for name, _ in space.kernels}:
        return ["kernel"]
    return [d.name for d in DIMENSIONS if not d.fits(space, case)]


__all__ = [
    "ARCHIVE_OVERHEAD_BOUND",
    "COMPRESSIONS",
    "DEBIAN_CLOUD_LIMITS",
    "DEFAULT_MAX_MEMORY",
    "DIMENSIONS",
    "DIMENSION_NAMES",
    "E820_GAPS",
    "E820_TYPES",
    "HARMLESS_SETUP_TYPES",
    "INITRD_SIZE_EDGES",
    "MEMORY_EDGES",
    "MEMORY_FLOOR_OFFSETS",
    "MEMORY_GRANULE",
    "MIN_GUEST_MEMORY",
    "NON_ASCII_VALUES",
    "QUOTED_VALUES",
    "SAFE_KEYS",
    "SAFE_SPECIAL_TOKENS",
    "SAFE_VALUES",
    "UNSAFE_TOKENS",
    "WRITABLE_SETUP_HEADER_FIELDS",
    "CaseSpace",
    "Dimension",
    "KernelLimits",
    "Source",
    "chance",
    "draw_bytes",
    "draw_case",
    "draw_cmdline",
    "draw_cmdline_token",
    "draw_e820",
    "draw_initrd",
    "draw_memory",
    "draw_overrides",
    "draw_setup_data_chain",
    "e820_shapes",
    "edge_or_uniform",
    "field_max",
    "header_value_edges",
    "initrd_size_bound",
    "min_memory",
    "misfits",
    "redraw",
    "shuffled",
]
