"""A kernel's memory floor: the least guest RAM it needs to unpack an initrd and run our agent.

A guest too small for its initrd ends in ``Kernel panic - not syncing: System is
deadlocked on memory`` (the OOM killer finds nothing to kill while the initramfs is
unpacked): a fact about the kernel, not about the loader.  A campaign generates cases
at or above the floor, and judges a failed boot below it ``below-floor``, never a finding.

What the kernel holds at its peak, while it unpacks the initramfs
(init/initramfs.c, do_populate_rootfs):

- the initrd image, reserved by reserve_initrd (memblock) until free_initrd_mem after
  the unpack: one byte per image byte;
- the unpacked files in rootfs, a tmpfs without swap (shmem pages nobody can reclaim):
  the payload rounded up to pages, one more byte per payload byte;
- the decompressor's buffers (lib/decompress_*.c with our encoders' settings,
  :data:`DECOMPRESSOR_MEMORY`): lz4's 8 MiB output chunk stands out;
- the kernel's struct page array, 2 MiB per 128 MiB section of RAM present
  (mm/sparse.c with SPARSEMEM_VMEMMAP: 64-byte struct pages, SECTION_SIZE_BITS 27);
- everything else the kernel allocated by then, which no formula gives: it is measured.

So the floor is measured by bisection over real boots (bootfuzz.fuzz.floors) at a few
gzip payload sizes, and this module turns those points into the floor for any
payload and compression: between two points, the straight line (the floor is convex
in the payload: from about 0.5 byte of RAM per payload byte for small payloads, where
the kernel's own growth after the unpack dominates, to 2 for large ones); above the
last, 2 bytes per byte and a framing allowance; below the first, the first.  The
struct pages are taken out before interpolating and put back for the RAM the floor
lands on, and other decompressors add their buffers.  A margin covers what differs
from boot to boot (:data:`FLOOR_MARGIN`: near the threshold, booting is a matter of
timing).

Pure: points in, floors out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from itertools import pairwise

from bootfuzz.case import InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.loader.layout import KiB, MiB, align_up
from bootfuzz.loader.platform import QEMU_RAM_ALIGN
from bootfuzz.units import format_size

#: RAM per section of the sparse memory model on x86-64 (SECTION_SIZE_BITS 27).
SECTION_SIZE = 128 * MiB
#: The struct pages of one section: 32768 pages of 64 bytes, allocated whole
#: for every section RAM reaches into (sparse_init_nid, __populate_section_memmap).
MEMMAP_PER_SECTION = SECTION_SIZE // (4 * KiB) * 64
#: The payload of the measured points is gzip-compressed (our default).
CALIBRATION_COMPRESSION = Compression.GZIP
#: What each decompressor allocates on top of the image and the unpacked files, with
#: our encoders' settings (bootfuzz.guest.initrd), rounded up; the calibration's own
#: gzip buffers are inside the measured points.
#: source: lib/decompress_unlz4.c (an 8 MiB output chunk, large_malloc), unzstd.c
#: (128 KiB in/out buffers and a dstream for our 1 MiB window), unxz.c/xz_dec_lzma2.c
#: (XZ_DYNALLOC: the 256 KiB dictionary of preset 0), decompress_unlzma.c (the
#: dictionary, at most 1 MiB), bunzip2.c (4 bytes per block byte: 100k blocks at
#: level 1), unlzo.c (256 KiB blocks), decompress_inflate.c (32 KiB window and buffer).
DECOMPRESSOR_MEMORY: Mapping[Compression, int] = {
    Compression.NONE: 0,
    Compression.GZIP: 128 * KiB,
    Compression.BZIP2: 512 * KiB,
    Compression.LZMA: 512 * KiB,
    Compression.XZ: 512 * KiB,
    Compression.LZO: 512 * KiB,
    Compression.LZ4: 8 * MiB + 128 * KiB,
    Compression.ZSTD: 2 * MiB,
}
#: RAM per payload byte past the largest measured point: the image and its unpacked copy.
LARGE_PAYLOAD_SLOPE = 2
#: Compressed random bytes grow by less than this fraction (bzip2, the worst, ~0.5 %).
FRAMING_FRACTION = 64
#: Added to every floor, the loader's points too.  Near its threshold a boot is a
#: matter of timing: the unpack runs asynchronously beside the other initcalls, and
#: under TCG the guest's timing follows the host's load; measured on debian-6.1-cloud
#: with two boots at a time, an 8 MiB payload booted at 81.25 MiB in the bisection
#: and failed once in eight at 82 MiB, a 2 MiB one failed three times in four at
#: 71 MiB and never at 71.5 MiB.  The bisection lands somewhere in that band of a
#: MiB or so; the margin puts the floor well above its top.  (Cases closer to the
#: loader's least are generated with --below-floor, where running short of memory is
#: below-floor.)
FLOOR_MARGIN = 4 * MiB
#: What a kernel short of memory can fail: the boot itself (the OOM panic, no agent),
#: the unpack (an error midway), the agent reading /payload, and the kernel's own bug
#: reports on the way (an allocation that cannot fail failing).  Every other oracle
#: answers from lines printed before the page allocator runs (e820, command line,
#: RAMDISK), from the plan alone (valid-*), or from the agent's report, which memory
#: does not change once the agent runs: a failure there is a finding at any memory.
SHORT_OF_MEMORY_ORACLES = frozenset({"boot", "kernel-clean", "initrd-unpacked",
                                     "payload-digest"})


def memmap_size(memory: int) -> int:
    """The struct pages a kernel allocates for *memory* bytes of RAM from address 0."""
    return -(-memory // SECTION_SIZE) * MEMMAP_PER_SECTION


@dataclass(frozen=True)
class FloorPoint:
    """One measurement: a gzip initrd with *payload* bytes booted at *memory* and not
    at *failed* (one bisection step below); *failed* None: it booted at the least
    memory our loader accepts, so the kernel's own floor is lower still."""

    payload: int
    memory: int
    failed: int | None = None

    @property
    def kernel_bound(self) -> bool:
        """Whether the kernel, not the loader, set this point."""
        return self.failed is not None


@dataclass(frozen=True)
class MemoryFloor:
    """One kernel's measured points (sorted by payload) and the floors they give."""

    kernel_sha256: str
    points: tuple[FloorPoint, ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a memory floor needs at least one measured point")
        object.__setattr__(self, "points", tuple(sorted(self.points, key=lambda p: p.payload)))

    def _without_memmap(self, payload: int) -> int:
        """The floor for a gzip payload, its struct pages taken out (interpolated)."""
        pts = [(p.payload, p.memory - memmap_size(p.memory)) for p in self.points]
        if payload <= pts[0][0]:
            return pts[0][1]
        for (s0, m0), (s1, m1) in pairwise(pts):
            if payload <= s1:
                return m0 + -(-(m1 - m0) * (payload - s0) // (s1 - s0))  # rounded up
        s, m = pts[-1]
        extra = payload - s
        return m + LARGE_PAYLOAD_SLOPE * extra + extra // FRAMING_FRACTION

    def floor(self, initrd: InitrdSpec | None) -> int:
        """The least RAM (in QEMU's granule) this kernel boots with *initrd* in."""
        payload = 0 if initrd is None else initrd.size
        need = self._without_memmap(payload) + FLOOR_MARGIN
        if initrd is not None and initrd.compression is not CALIBRATION_COMPRESSION:
            need += DECOMPRESSOR_MEMORY[initrd.compression] + payload // FRAMING_FRACTION
        memory = need
        while need + memmap_size(memory) > memory:  # the struct pages of what it adds
            memory = need + memmap_size(memory)
        return align_up(memory, QEMU_RAM_ALIGN)

    def describe(self, initrd: InitrdSpec | None) -> str:
        payload = "" if initrd is None else format_size(initrd.size)
        if payload[-1:].isdigit():
            payload += "-byte"
        what = ("no initrd" if initrd is None else
                f"a {payload} {initrd.compression.value} initrd")
        return f"{_size(self.floor(initrd))} for {what}"


def _size(value: int) -> str:
    text = format_size(value)
    return text if text[-1].isalpha() else f"{text} bytes"


def below_floor(memory: int, floor: int, failing: Collection[str]) -> bool:
    """Whether a failed boot with *memory* bytes and these failing oracles is the
    kernel running out of memory below its floor, rather than a finding."""
    return memory < floor and bool(failing) and set(failing) <= SHORT_OF_MEMORY_ORACLES


def below_floor_detail(memory: int, floor: MemoryFloor, initrd: InitrdSpec | None) -> str:
    return (f"{_size(memory)} of RAM is below the kernel's memory floor of "
            f"{floor.describe(initrd)} (bootfuzz.judge.memory_floor)")


__all__ = ["CALIBRATION_COMPRESSION", "DECOMPRESSOR_MEMORY", "FLOOR_MARGIN",
           "MEMMAP_PER_SECTION", "SECTION_SIZE", "SHORT_OF_MEMORY_ORACLES", "FloorPoint",
           "MemoryFloor", "below_floor", "below_floor_detail", "memmap_size"]
