"""Edge tables and a seeded case generator, shared by the Hypothesis strategies and
the fuzzing campaign.

The strategies (bootfuzz.fuzz.strategies) draw from these tables through Hypothesis so
failures shrink; the campaign (bootfuzz.fuzz.campaign) draws from the *same* tables with
a seeded :class:`random.Random`, so ``--seed`` and ``--shard`` are deterministic
and the campaign needs no test dependency.  Pure: no I/O.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from bootfuzz.abi.bootparam import BOOT_PARAMS
from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.case import HARNESS_CMDLINE, BootCase, InitrdSpec, Overrides, SetupDataNode
from bootfuzz.compression import SUPPORTED, Compression
from bootfuzz.judge.memory_floor import MemoryFloor
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, GiB, KiB, MiB, align_up
from bootfuzz.loader.platform import PC_LOWMEM_WHEN_SPLIT, PC_SPLIT_THRESHOLD, QEMU_RAM_ALIGN

#: Memory sizes come in QEMU's -m granule; others are refused (bootfuzz.loader.platform).
MEMORY_GRANULE = QEMU_RAM_ALIGN

# --------------------------------------------------------------------------------------
# The kernel's numbers, for generation without an image at hand
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelLimits:
    """What case generation needs to know of a kernel image (its setup header)."""

    pref_address: int
    init_size: int
    initrd_addr_max: int
    cmdline_size: int

    @classmethod
    def of(cls, image: KernelImage) -> KernelLimits:
        return cls(image.pref_address, image.init_size, image.initrd_addr_max,
                   image.cmdline_size)

    @property
    def window_end(self) -> int:
        """End of the decompressor's window when loaded at pref_address (plan.py's rule)."""
        return self.pref_address + self.init_size


#: Debian 6.1 cloud (boot-protocol.md section 1): the default when no image is given.
DEBIAN_CLOUD_LIMITS = KernelLimits(
    pref_address=0x1000000, init_size=0x3378000, initrd_addr_max=0x7FFFFFFF, cmdline_size=2047
)

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


def min_memory(limits: KernelLimits, initrd: InitrdSpec | None = None) -> int:
    """The smallest page-aligned memory our loader accepts for this kernel and initrd.

    The decompressor's window [pref_address, pref_address + init_size) must fit in
    low RAM, and the initrd (page aligned) above it (plan.py, _place_kernel and
    _place_initrd).  With an initrd the bound is an estimate from above.
    """
    need = limits.window_end
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


# --------------------------------------------------------------------------------------
# Seeded generation (the campaign's)
# --------------------------------------------------------------------------------------


def _edge_or_uniform(rng: random.Random, edges: tuple[int, ...], lo: int, hi: int,
                     step: int = 1, p_edge: float = 0.5) -> int:
    inside = [e for e in edges if lo <= e <= hi and e % step == 0]
    if inside and rng.random() < p_edge:
        return rng.choice(inside)
    return rng.randrange(lo // step, hi // step + 1) * step


def random_memory(rng: random.Random, floor: int, ceiling: int) -> int:
    """Memory in [floor, ceiling] in QEMU's 8 KiB granule, half the time an edge."""
    floor = align_up(floor, MEMORY_GRANULE)
    edges = MEMORY_EDGES + tuple(floor + off for off in MEMORY_FLOOR_OFFSETS)
    return _edge_or_uniform(rng, edges, floor, max(floor, ceiling), MEMORY_GRANULE)


def random_initrd(rng: random.Random, max_size: int) -> InitrdSpec:
    size = _edge_or_uniform(rng, INITRD_SIZE_EDGES, 0, max_size)
    return InitrdSpec(size, rng.choice(COMPRESSIONS), rng.randrange(0, 1 << 16))


def random_cmdline(rng: random.Random, max_size: int, prefix: str = HARNESS_CMDLINE,
                   non_ascii: bool = False) -> str:
    """The prefix and boot-safe tokens, up to *max_size* bytes, sometimes right at it.

    "--" (init's arguments follow) only comes last: init takes at most 32 arguments
    (init/main.c MAX_INIT_ARGS) and panics past that.
    """
    tokens = [prefix] if prefix else []
    fill = rng.random() < 0.1  # now and then, right up to the limit
    middle = [t for t in SAFE_SPECIAL_TOKENS if not t.startswith("--")]
    for _ in range(rng.randrange(0, 6) if not fill else 1_000_000):
        kind = rng.random()
        if kind < 0.1:
            tok = rng.choice(middle)
        elif kind < 0.3:
            tok = f"{rng.choice(SAFE_KEYS)}={rng.choice(QUOTED_VALUES)}"
        elif non_ascii and kind < 0.4:
            tok = f"{rng.choice(SAFE_KEYS)}={rng.choice(NON_ASCII_VALUES)}"
        else:
            tok = f"{rng.choice(SAFE_KEYS)}{rng.randrange(1000)}={rng.choice(SAFE_VALUES)}"
        if len(" ".join([*tokens, tok]).encode()) > max_size:
            break
        tokens.append(tok)
    if rng.random() < 0.1:
        end = rng.choice([t for t in SAFE_SPECIAL_TOKENS if t.startswith("--")])
        if len(" ".join([*tokens, end]).encode()) <= max_size:
            tokens.append(end)
    return " ".join(tokens)


def random_overrides(rng: random.Random, limits: KernelLimits, memory: int) -> Overrides:
    """One to three loader decisions taken over, each drawn from the edge tables."""
    fields: list[tuple[str, int]] = []
    initrd_addr = cmdline_addr = kernel_load = None
    e820 = None
    setup_data: tuple[SetupDataNode, ...] = ()
    for _ in range(rng.randrange(1, 4)):
        what = rng.randrange(5)
        if what == 0:
            name = rng.choice(WRITABLE_SETUP_HEADER_FIELDS)
            fields.append((name, _edge_or_uniform(
                rng, header_value_edges(name, limits.initrd_addr_max), 0, field_max(name))))
        elif what == 1:
            initrd_addr = _edge_or_uniform(
                rng, (limits.pref_address, limits.window_end - PAGE_SIZE, limits.window_end),
                MIN_GUEST_MEMORY, memory, PAGE_SIZE)
        elif what == 2:
            kernel_load = _edge_or_uniform(
                rng, (limits.pref_address - 2 * MiB, limits.pref_address + 2 * MiB, 2 * MiB),
                1 * MiB, limits.pref_address * 2, PAGE_SIZE)
        elif what == 3:
            e820 = random_e820(rng, memory)
        else:
            cmdline_addr = rng.choice((0x20000, 0x90000, limits.pref_address + PAGE_SIZE))
            setup_data = (SetupDataNode(rng.randrange(1, 12), rng.randbytes(rng.randrange(64))),)
    return Overrides(fields=tuple(fields), initrd_addr=initrd_addr, cmdline_addr=cmdline_addr,
                     e820=e820, kernel_load=kernel_load, setup_data=setup_data)


def random_e820(rng: random.Random, memory: int, max_entries: int = 8) -> tuple[E820Entry, ...]:
    """A table of contiguous-ish entries with holes, odd types, sometimes shuffled."""
    entries = []
    addr = 0
    for _ in range(rng.randrange(1, max_entries + 1)):
        addr += rng.choice(E820_GAPS)
        size = rng.choice((0, PAGE_SIZE, 0x9F000, 64 * MiB, max(PAGE_SIZE, memory // 2)))
        entries.append(E820Entry(addr, size, rng.choice(E820_TYPES)))
        addr += size
    if rng.random() < 0.3:
        rng.shuffle(entries)
    return tuple(entries)


@dataclass(frozen=True)
class GeneratorConfig:
    """What a campaign generates: kernels, bounds, and whether to take over decisions."""

    kernels: tuple[tuple[str, KernelLimits], ...]
    seed: int
    min_memory: int = 0  # 0: each case's own smallest (min_memory, the kernel's floor)
    max_memory: int = DEFAULT_MAX_MEMORY
    max_initrd: int = 8 * MiB
    overrides: bool = False
    non_ascii: bool = False
    max_cmdline: int | None = None  # None: each kernel's cmdline_size
    #: Kernels' memory floors (bootfuzz.judge.memory_floor): cases get at least the
    #: floor for their initrd.  A kernel without one starts at the loader's least.
    floors: tuple[tuple[str, MemoryFloor], ...] = ()

    def memory_floor(self, kernel: str, limits: KernelLimits, initrd: InitrdSpec | None
                     ) -> int:
        """The least memory a case of *kernel* with *initrd* is generated with."""
        floor = max(self.min_memory, min_memory(limits, initrd))
        for name, kernel_floor in self.floors:
            if name == kernel:
                floor = max(floor, kernel_floor.floor(initrd))
        return floor


def case_rng(seed: int, index: int) -> random.Random:
    """The generator for case *index*: independent of every other index (sharding)."""
    return random.Random(f"bootfuzz:{seed}:{index}")


def generate_case(config: GeneratorConfig, index: int) -> BootCase:
    """Case number *index* of the campaign *config*: the same on every machine.

    Without overrides the case is one the loader must accept (memory at least
    min_memory for its initrd, command line within cmdline_size), with at least the
    kernel's memory floor for its initrd when the config has one.
    """
    rng = case_rng(config.seed, index)
    name, limits = rng.choice(config.kernels)
    initrd = random_initrd(rng, config.max_initrd)
    floor = config.memory_floor(name, limits, initrd)
    memory = random_memory(rng, floor, max(floor, config.max_memory))
    longest = limits.cmdline_size if config.max_cmdline is None else min(
        config.max_cmdline, limits.cmdline_size)
    cmdline = random_cmdline(rng, longest, non_ascii=config.non_ascii)
    ov = Overrides()
    if config.overrides and rng.random() < 0.5:
        ov = random_overrides(rng, limits, memory)
    return BootCase(kernel=name, memory=memory, cmdline=cmdline, initrd=initrd, overrides=ov)


# --------------------------------------------------------------------------------------
# Command lines as tokens (for the minimizer)
# --------------------------------------------------------------------------------------

_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*"?)+')


def split_cmdline(cmdline: str) -> list[str]:
    """Tokens as the kernel's next_arg sees them: spaces separate, double quotes group."""
    return _TOKEN.findall(cmdline)
