"""Where a machine really has RAM, as opposed to what the E820 table claims.

The E820 table we write must agree with the machine the backend emulates, so the
platform belongs to the backend and the loader plans against it.  QEMU's ``pc``
machine (hw/i386/pc_piix.c) keeps all RAM below 4 GiB until the size reaches
3.5 GiB; from there it puts 3 GiB below (gigabyte alignment of current machine
types) and the rest from 4 GiB up.  The hole between the top of low RAM and
4 GiB is the 32-bit MMIO gap (PCI, IOAPIC 0xfec00000, LAPIC 0xfee00000, and the
BIOS image mapped just below 4 GiB); nothing there is RAM.  Our own KVM VMM uses
the same split so results compare across backends.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootfuzz.errors import LayoutError
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, GiB, MiB

#: From this size on, QEMU pc splits RAM around the gap.  source: pc_piix.c
PC_SPLIT_THRESHOLD = 0xE0000000
#: Low RAM when split (gigabyte-aligned).  source: pc_piix.c, gigabyte_align
PC_LOWMEM_WHEN_SPLIT = 3 * GiB
#: The largest guest we agree to plan: far past what tests use, well inside what a
#: 4-level identity map and QEMU accept.
MAX_GUEST_MEMORY = 1 << 40
#: Our firmware image is mapped at the top of the 4 GiB space.
FIRMWARE_SIZE = 64 * 1024
FIRMWARE_TOP_BASE = FOUR_GIB - FIRMWARE_SIZE


@dataclass(frozen=True)
class RamRange:
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Platform:
    """A machine's RAM split around its 32-bit MMIO gap."""

    name: str
    memory: int
    low: RamRange  # [0, low end)
    high: RamRange | None  # [4 GiB, ...) when memory spills over the gap

    @property
    def mmio_gap(self) -> tuple[int, int]:
        """[start, end) of the 32-bit hole that is never RAM."""
        return (self.low.end, FOUR_GIB)

    @property
    def top_of_ram(self) -> int:
        return self.high.end if self.high else self.low.end

    def ram_ranges(self) -> tuple[RamRange, ...]:
        return (self.low,) if self.high is None else (self.low, self.high)


def check_memory_size(memory: int) -> None:
    """Reject sizes no machine can have, before anything is laid out."""
    if memory <= 0:
        raise LayoutError(f"memory size {memory} is not positive")
    if memory % PAGE_SIZE:
        raise LayoutError(f"memory size {memory:#x} is not a multiple of 4 KiB")
    if memory < 2 * MiB:
        raise LayoutError(
            f"memory size {memory // 1024} KiB is impossible: below 2 MiB no x86 guest "
            "has room for the kernel above 1 MiB"
        )
    if memory > MAX_GUEST_MEMORY:
        raise LayoutError(f"memory size {memory:#x} exceeds the supported 1 TiB")


#: QEMU rounds -m up to this; a size between would give the guest another machine
#: than the one planned.  source: softmmu/vl.c, set_memory_options, QEMU_ALIGN_UP.
QEMU_RAM_ALIGN = 8 * 1024


def qemu_pc(memory: int) -> Platform:
    """The RAM of ``qemu-system-x86_64 -M pc -m <memory>``."""
    check_memory_size(memory)
    if memory % QEMU_RAM_ALIGN:
        raise LayoutError(
            f"memory size {memory:#x} is not a multiple of 8 KiB: QEMU rounds -m up, so the "
            "guest would get another machine than the one planned"
        )
    if memory < PC_SPLIT_THRESHOLD:
        return Platform("qemu-pc", memory, RamRange(0, memory), None)
    low = PC_LOWMEM_WHEN_SPLIT
    return Platform("qemu-pc", memory, RamRange(0, low), RamRange(FOUR_GIB, memory - low))
