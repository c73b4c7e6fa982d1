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

import enum
from dataclasses import dataclass

from bootfuzz.errors import LayoutError
from bootfuzz.loader.layout import (
    BIOS_AREA_START,
    FOUR_GIB,
    HIGH_MEMORY_START,
    LOW_RAM_END,
    PAGE_SIZE,
    GiB,
    KiB,
    MiB,
)

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
#: The end of the guest-physical address space a pointer can name (64 bits).
ADDRESS_SPACE_END = 1 << 64

#: The legacy area below 1 MiB: VGA memory, then option ROMs, then the BIOS.
#: source: the PC memory map; QEMU hw/i386/pc.c (isa-bios below 1 MiB).
VGA_WINDOW_START = LOW_RAM_END
OPTION_ROM_START = 0xC0000
#: Devices QEMU ``pc`` maps at fixed addresses in the 32-bit MMIO gap.
#: source: QEMU include/hw/i386/apic.h (APIC_DEFAULT_ADDRESS), hw/i386/pc.c
#: (IO_APIC_DEFAULT_ADDRESS), include/hw/timer/hpet.h (HPET_BASE).
IOAPIC_BASE = 0xFEC00000
HPET_BASE = 0xFED00000
LAPIC_BASE = 0xFEE00000


class RegionKind(enum.StrEnum):
    """The parts of a PC's physical address space, lowest first."""

    LOW_RAM = "low RAM"
    LEGACY = "legacy video and BIOS ROM area"
    RAM_1M = "RAM above 1 MiB"
    MMIO_GAP = "32-bit MMIO gap"
    RAM_4G = "RAM above 4 GiB"
    BEYOND_RAM = "space beyond RAM"


#: Regions where the machine has RAM a loader can write and the kernel may use.
RAM_KINDS = frozenset({RegionKind.LOW_RAM, RegionKind.RAM_1M, RegionKind.RAM_4G})


@dataclass(frozen=True)
class Fixture:
    """Something the machine keeps at a fixed address (a device, a ROM)."""

    name: str
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Region:
    """One part of the address space: [start, end), what it is, what lives in it."""

    kind: RegionKind
    start: int
    end: int
    fixtures: tuple[Fixture, ...] = ()

    @property
    def ram(self) -> bool:
        """Bytes written here are stored, and the kernel may use them as memory."""
        return self.kind in RAM_KINDS


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

    def regions(self) -> tuple[Region, ...]:
        """The whole 64-bit address space, cut into the regions of a PC (docs/platform-rules.md).

        RAM below the gap is [0, 640 KiB) and [1 MiB, low end): the legacy area
        between them holds VGA memory and ROMs, so a loader cannot store bytes
        there (QEMU keeps RAM under it, reachable only through the chipset's
        shadowing) and the kernel never uses it as RAM (trim_bios_range).
        """
        legacy = (
            Fixture("VGA window", VGA_WINDOW_START, OPTION_ROM_START - VGA_WINDOW_START),
            Fixture("option ROMs", OPTION_ROM_START, BIOS_AREA_START - OPTION_ROM_START),
            Fixture("BIOS ROM (low copy)", BIOS_AREA_START,
                    HIGH_MEMORY_START - BIOS_AREA_START),
        )
        gap0, gap1 = self.mmio_gap
        gap_fixtures = (
            Fixture("PCI devices' memory BARs", gap0, IOAPIC_BASE - gap0),
            Fixture("IOAPIC", IOAPIC_BASE, 4 * KiB),
            Fixture("HPET", HPET_BASE, 1 * KiB),
            Fixture("LAPIC", LAPIC_BASE, 1 * MiB),
            Fixture("BIOS ROM at the reset vector", FIRMWARE_TOP_BASE, FIRMWARE_SIZE),
        )
        regions = [
            Region(RegionKind.LOW_RAM, 0, LOW_RAM_END),
            Region(RegionKind.LEGACY, LOW_RAM_END, HIGH_MEMORY_START, legacy),
            Region(RegionKind.RAM_1M, HIGH_MEMORY_START, self.low.end),
            Region(RegionKind.MMIO_GAP, gap0, gap1, gap_fixtures),
        ]
        if self.high is not None:
            regions.append(Region(RegionKind.RAM_4G, self.high.start, self.high.end))
        regions.append(Region(RegionKind.BEYOND_RAM, self.top_of_ram if self.high else gap1,
                              ADDRESS_SPACE_END))
        return tuple(regions)

    def stored_ranges(self) -> tuple[tuple[int, int], ...]:
        """[start, end) of every range where bytes a loader writes are kept."""
        return tuple((r.start, r.end) for r in self.regions() if r.ram)

    def regions_touched(self, start: int, end: int) -> tuple[Region, ...]:
        """The regions [start, end) overlaps, lowest first."""
        return tuple(r for r in self.regions() if r.start < end and start < r.end)


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
