"""Guest-kernel block coverage under QEMU-TCG: the plugin's map file, read and normalized.

The plugin (harness/coverage/blockcov.c, built by bootfuzz.guest.coverage_tools) records
the start address of every guest block QEMU translates, once each, into an
open-addressing hash set in a file it maps shared: the pages are the page
cache's, so what a killed QEMU recorded up to its end is in the file.
Translation time, not execution time: a block is recorded when first
translated (QEMU translates a block before its first execution and again only
after its cache is flushed), which costs one hash insert per translation and
nothing per execution.

Here that raw set of guest addresses is split by where it ran: the kernel
proper (virtual, and physical before the kernel switches to its own page
tables), normalized to offsets from ``_text`` by the boot's KASLR slide
(bootfuzz.kernel.symbols.find_slide), so blocks of two boots of one kernel
compare; the decompressor, as offsets from the protected-mode code's load
address (it carries no symbols); the real-mode setup code, as offsets from its
load address; and the rest (our firmware, the agent, unplaced) only counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bootfuzz.errors import ConfigError, StorageError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.guest.coverage_tools import MAP_HEADER, MAP_HEADER_SIZE, MAP_MAGIC, MAP_VERSION
from bootfuzz.kernel.image import KernelImage
from bootfuzz.kernel.symbols import SymbolTable, find_slide
from bootfuzz.loader.plan import BootPlan

#: The map file in a run directory.
MAP_NAME = "coverage.map"
#: Where the map lives while QEMU runs: a tmpfs.  On a disk filesystem the first
#: write to each page of a shared file mapping goes through the filesystem
#: (ext4 here: block allocation, the journal), in QEMU's vCPU thread; measured on
#: this machine under load, QEMU's wall time per CPU second 2.92 with the map on
#: ext4, 2.46 on /dev/shm, 2.45 without the plugin (medians of 5).  A tmpfs file
#: outlives a killed QEMU just the same; it is moved into the run directory after.
LIVE_MAP_DIR = Path("/dev/shm")
#: coverage.json, what `bootfuzz boot --coverage` writes beside console.log.
JSON_NAME = "coverage.json"
#: Kernel (upper-half) addresses on x86-64 start here.
KERNEL_SPACE = 0xFFFF_8000_0000_0000
#: Where the kernel proper can run physically before its own page tables: below
#: MAXMEM, 64 TiB with 4-level paging (arch/x86/include/asm/pgtable_64_types.h).
PHYSICAL_LIMIT = 1 << 46


def live_map_path(run_dir: Path) -> Path:
    """Where the plugin writes the map of the run in *run_dir* (moved there after)."""
    if LIVE_MAP_DIR.is_dir() and os.access(LIVE_MAP_DIR, os.W_OK):
        digest = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:24]
        return LIVE_MAP_DIR / f"bootfuzz-coverage-{digest}.map"
    return run_dir / MAP_NAME


def keep_map(live: Path, run_dir: Path) -> None:
    """Move the map the plugin wrote at *live* into *run_dir* (if it wrote one)."""
    final = run_dir / MAP_NAME
    if live == final or not live.exists():
        return
    try:
        shutil.move(live, final)
    except OSError as exc:
        live.unlink(missing_ok=True)
        raise StorageError.writing(final, exc) from None


def plugin_argv(plugin: Path, map_path: Path) -> list[str]:
    """QEMU's arguments that load the block-coverage plugin writing into *map_path*
    (any QEMU system emulator of ours: TCG runs plugins for every target)."""
    def opt(path: Path) -> str:  # a QEMU option value: commas doubled, or QEMU splits
        return str(path).replace(",", ",,")
    return ["-plugin", f"{opt(plugin)},map={opt(map_path)}"]


@runtime_checkable
class CoverageBackend(Protocol):
    """A backend that can record block coverage (only QEMU-TCG runs plugins)."""

    def coverage_argv(self, plugin: Path, map_path: Path) -> list[str]: ...


@dataclass(frozen=True)
class RawMap:
    """The guest addresses a map file holds, and what its header says was lost."""

    addresses: frozenset[int]
    dropped: int


def read_map(path: Path) -> RawMap:
    """The addresses recorded in the map file at *path* (complete even if QEMU was killed)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read the coverage map {path}: {exc.strerror}") from None
    if len(data) < MAP_HEADER_SIZE:
        raise ConfigError(f"coverage map {path} is {len(data)} bytes, shorter than its header")
    header = MAP_HEADER.parse(data)
    log2, dropped = int(header["log2_slots"]), int(header["dropped"])
    if header["magic"] != MAP_MAGIC or header["version"] != MAP_VERSION:
        raise ConfigError(f"{path} is not a version {MAP_VERSION} bootfuzz coverage map")
    slots = array("Q")
    slots.frombytes(data[MAP_HEADER_SIZE:MAP_HEADER_SIZE + (8 << log2)])
    found = set(slots)
    found.discard(0)
    if header["zero_seen"]:
        found.add(0)
    return RawMap(frozenset(found), dropped)


@dataclass(frozen=True)
class Region:
    """Guest-physical code our plan placed, whose blocks are reported as offsets."""

    name: str
    start: int
    end: int


def plan_regions(plan: BootPlan, kernel_init_size: int) -> tuple[Region, ...]:
    """Where the setup code and the decompressor run in *plan*'s boot.

    The decompressor runs in place and from its copy near the end of the buffer
    it decompresses into (arch/x86/boot/compressed/head_64.S), both inside
    ``[load, load + init_size)`` of the protected-mode code's load address.
    """
    regions = []
    for blob in plan.blobs:
        if blob.name == "setup":
            regions.append(Region("setup", blob.addr, blob.end))
        elif blob.name == "kernel":
            regions.append(Region("decompressor", blob.addr,
                                  blob.addr + max(kernel_init_size, blob.size)))
    return tuple(regions)


@dataclass(frozen=True)
class BlockCoverage:
    """One boot's covered blocks, comparable across boots of the same kernel.

    *blocks* are kernel block offsets from ``_text`` (KASLR removed); *symbols*
    names them (functions()); *regions* holds the early code without symbols
    as offsets per region ("decompressor", "setup").
    """

    kernel_sha256: str
    blocks: frozenset[int]
    symbols: SymbolTable = field(compare=False, repr=False)
    #: Where ``_text`` was in this boot, virtually and physically (None: not found).
    text_base: int | None = None
    physical_base: int | None = None
    regions: Mapping[str, frozenset[int]] = field(default_factory=dict)
    #: Blocks in none of the above (our firmware, the agent, modules, JIT code).
    other: int = 0
    #: Blocks the plugin could not store (its set was full): none in practice.
    dropped: int = 0

    def blocks_per_function(self) -> dict[str, int]:
        """Function name -> how many of its blocks ran, for every function reached."""
        counts: Counter[str] = Counter()
        for offset in self.blocks:
            fn = self.symbols.function_at(offset)
            if fn is not None:
                counts[fn.name] += 1
        return dict(counts)

    def functions(self) -> frozenset[str]:
        """The kernel functions reached: the boot-path functions of this boot."""
        return frozenset(self.blocks_per_function())

    def init_functions(self) -> frozenset[str]:
        """The functions reached in .init.text (code that exists only to boot)."""
        names = set()
        for offset in self.blocks:
            fn = self.symbols.function_at(offset)
            if fn is not None and fn.init:
                names.add(fn.name)
        return frozenset(names)

    def name(self, offset: int) -> str:
        """``function+0xN`` for a kernel block offset, ``_text+0xN`` outside any function."""
        fn = self.symbols.function_at(offset)
        return f"_text+{offset:#x}" if fn is None else f"{fn.name}+{offset - fn.start:#x}"

    def to_json(self) -> dict[str, Any]:
        """The coverage.json form: counts, then functions with their blocks, then offsets."""
        per_function = self.blocks_per_function()
        init = self.init_functions()
        return {
            "kernel_sha256": self.kernel_sha256,
            "text_base": None if self.text_base is None else f"{self.text_base:#x}",
            "physical_base": None if self.physical_base is None else f"{self.physical_base:#x}",
            "blocks": len(self.blocks),
            "functions_reached": len(per_function),
            "init_functions_reached": len(init),
            "other_blocks": self.other,
            "dropped": self.dropped,
            "functions": {n: {"blocks": per_function[n], "init": n in init}
                          for n in sorted(per_function)},
            "regions": {r: sorted(v) for r, v in sorted(self.regions.items())},
            "block_offsets": sorted(self.blocks),
        }


def normalize(raw: Iterable[int], symbols: SymbolTable, kernel_sha256: str,
              regions: Iterable[Region] = (), dropped: int = 0) -> BlockCoverage:
    """Split *raw* guest addresses by where they ran and remove this boot's KASLR slide.

    Upper-half addresses are the kernel at its virtual slide.  Below that, the
    kernel proper first runs at its physical address (head_64.S, until it jumps
    to its virtual one): those blocks count for the kernel too, wherever the
    decompressor put it (with KASLR off that is the load address itself, and
    the decompressor's own first blocks there are then counted as the kernel's).
    The rest below goes to the plan's regions, else to *other*.
    """
    addresses = frozenset(raw)
    upper = [a for a in addresses if a >= KERNEL_SPACE]
    lower = [a for a in addresses if a < KERNEL_SPACE]
    kernel: set[int] = set()
    other = 0
    virt = find_slide(upper, symbols)
    if virt is not None:
        base, text_end = virt.base, symbols.text_end
        init_start, init_end = symbols.init_start, symbols.init_end
        kernel = {a - base for a in upper
                  if 0 <= a - base < text_end or init_start <= a - base < init_end}
    other += len(upper) - len(kernel)
    phys = find_slide([a for a in lower if a < PHYSICAL_LIMIT], symbols, entered_at_base=True)
    early: dict[str, set[int]] = {}
    region_list = tuple(regions)
    for addr in lower:
        if phys is not None and symbols.in_code(addr - phys.base):
            kernel.add(addr - phys.base)
            continue
        for region in region_list:
            if region.start <= addr < region.end:
                early.setdefault(region.name, set()).add(addr - region.start)
                break
        else:
            other += 1
    return BlockCoverage(
        kernel_sha256=kernel_sha256,
        blocks=frozenset(kernel),
        symbols=symbols,
        text_base=None if virt is None else virt.base,
        physical_base=None if phys is None else phys.base,
        regions={k: frozenset(v) for k, v in early.items()},
        other=other,
        dropped=dropped,
    )

def collect(map_path: Path, symbols: SymbolTable, kernel_sha256: str, plan: BootPlan,
            image: KernelImage) -> BlockCoverage:
    """The coverage of the boot of *plan* that wrote *map_path*, named with *symbols*
    (its kernel's: bootfuzz.run.kallsyms.kernel_symbols)."""
    raw = read_map(map_path)
    return normalize(raw.addresses, symbols, kernel_sha256,
                     plan_regions(plan, image.init_size), raw.dropped)


def write_coverage(run_dir: Path, coverage: BlockCoverage) -> dict[str, Any]:
    """coverage.json in *run_dir*; returns its summary (counts and the file's path)."""
    path = run_dir / JSON_NAME
    doc = coverage.to_json()
    try:
        atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    except OSError as exc:
        raise StorageError.writing(path, exc) from None
    keys = ("blocks", "functions_reached", "init_functions_reached", "text_base",
            "physical_base", "other_blocks", "dropped")
    return {**{k: doc[k] for k in keys}, "file": str(path)}
