"""What a target promises about the machine it gives the kernel, as types.

A peer loader's bytes are unknown to us; what we know is what it promises: how it
splits RAM around the 32-bit MMIO gap, which RAM its firmware withholds, where it
puts the initrd.  bootfuzz.judge.validity judges a boot against these promises; the
promises of each known target are data in bootfuzz.peers.promises.  A field left
None is no promise, and the oracle that needs it answers unknown.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bootfuzz.case import EntryProtocol
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, align_down
from bootfuzz.loader.platform import Platform, RamRange

#: The largest 32-bit address (QEMU's initrd_max when the kernel may go above it).
U32_MAX = 0xFFFF_FFFF
U64_MAX = (1 << 64) - 1


class MemoryMeaning(enum.StrEnum):
    """What "memory size N" means on a target."""

    #: N bytes of RAM in total, split around the 32-bit MMIO gap (QEMU -m).
    TOTAL_RAM = "total-ram"
    #: RAM up to guest address N; the part of [0, N) inside the gap is lost.
    ADDRESS_SPAN = "address-span"


class MemoryMapSource(enum.StrEnum):
    """Where the kernel's memory map comes from on a target."""

    #: The firmware's E820 table, passed on by the loader (or written by ours).
    FIRMWARE_E820 = "firmware-e820"
    #: The UEFI memory map: the kernel's EFI stub derives its E820 from it
    #: (bootfuzz.judge.efi_map judges both).
    EFI_STUB = "efi-stub"
    #: The UEFI memory map, turned into an E820 by the loader itself (GRUB on EFI
    #: exits boot services and writes the zero page; the stub never runs).
    EFI_LOADER = "efi-loader"

    @property
    def efi(self) -> bool:
        return self is not MemoryMapSource.FIRMWARE_E820


class Anchor(enum.StrEnum):
    ABSOLUTE = "absolute"  # start/end are guest-physical addresses
    TOP_OF_LOW = "top-of-low"  # start/end are offsets below the top of low RAM


@dataclass(frozen=True)
class Withheld:
    """RAM the target's firmware keeps from the kernel (never printed as usable)."""

    name: str
    start: int
    end: int
    anchor: Anchor = Anchor.ABSOLUTE

    def resolve(self, low_end: int) -> tuple[int, int]:
        if self.anchor is Anchor.ABSOLUTE:
            return self.start, self.end
        return low_end - self.start, low_end - self.end

    @property
    def size(self) -> int:
        return abs(self.end - self.start)


@dataclass(frozen=True)
class GapRule:
    """Where RAM lies around the 32-bit MMIO gap for a memory size."""

    split_at: int  # from this size on, RAM is split: low part below, the rest from 4 GiB
    low_when_split: int

    def low_end(self, memory: int) -> int:
        return memory if memory < self.split_at else self.low_when_split

    def gap(self, memory: int) -> tuple[int, int]:
        """[start, end) of the hole below 4 GiB that is never RAM."""
        return self.low_end(memory), FOUR_GIB

    def platform(self, name: str, memory: int) -> Platform:
        low = self.low_end(memory)
        high = RamRange(FOUR_GIB, memory - low) if memory > low else None
        return Platform(name, memory, RamRange(0, low), high)


class KernelLimit(enum.StrEnum):
    """Which of the kernel's limits a loader's initrd placement consults."""

    ADDR_MAX = "initrd_addr_max"  # the header's initrd_addr_max
    ADDR_MAX_OR_4G = "initrd_addr_max, or 4 GiB - 1 with XLF_CAN_BE_LOADED_ABOVE_4G"
    #: The EFI stub's hard limit for an initrd it loads (LoadFile2): initrd_addr_max,
    #: or none with XLF_CAN_BE_LOADED_ABOVE_4G (the stub sets ext_ramdisk_image).
    ADDR_MAX_OR_ANY = "initrd_addr_max, or none with XLF_CAN_BE_LOADED_ABOVE_4G"
    NONE = "none"  # the PVH paths: no setup header is read


@dataclass(frozen=True)
class InitrdRule:
    """Where a loader puts the initrd: page aligned at the top of its allowed window.

    The window ends at the lower of the top of low RAM less ``reserve_top`` and the
    kernel limit the loader consults.  QEMU and qboot subtract the size from the
    *inclusive* limit (``(initrd_max - size) & ~4095``), one byte lower than from
    the exclusive end: ``inclusive_limit``.
    """

    description: str
    reserve_top: int = 0
    kernel_limit: KernelLimit = KernelLimit.ADDR_MAX
    inclusive_limit: bool = False
    #: The loader takes the highest *free* chunk below the window (GRUB's relocator):
    #: where its own allocations sit is not known, so the window's top is a bound only.
    upper_bound_only: bool = False

    #: The loader's own cap on the (inclusive) limit, and what it keeps below it:
    #: GRUB caps initrd_addr_max at 0x37FFFFFF and stays 64 KiB under.
    loader_cap: int | None = None
    margin: int = 0

    def limit(self, initrd_addr_max: int, high_ok: bool) -> int:
        """The highest address (inclusive) the initrd may reach, by the kernel's limit
        the loader consults and the loader's own cap and margin."""
        limit = {
            KernelLimit.ADDR_MAX: initrd_addr_max,
            KernelLimit.ADDR_MAX_OR_4G: U32_MAX if high_ok else initrd_addr_max,
            KernelLimit.ADDR_MAX_OR_ANY: U64_MAX if high_ok else initrd_addr_max,
            KernelLimit.NONE: U32_MAX,
        }[self.kernel_limit]
        if self.loader_cap is not None:
            limit = min(limit, self.loader_cap)
        return limit - self.margin

    def address(self, low_end: int, initrd_addr_max: int, high_ok: bool, size: int) -> int:
        limit = min(self.limit(initrd_addr_max, high_ok),
                    low_end - self.reserve_top - 1)  # inclusive
        top = limit if self.inclusive_limit else limit + 1
        return align_down(top - size, PAGE_SIZE)


@dataclass(frozen=True)
class TargetPromises:
    """What a target promises about the machine it gives the kernel; None: no promise."""

    description: str
    memory_meaning: MemoryMeaning = MemoryMeaning.TOTAL_RAM
    gap: GapRule | None = None
    withheld: tuple[Withheld, ...] | None = None
    #: Per entry protocol: the loader's initrd placement rule, where known.
    initrd_rules: tuple[tuple[EntryProtocol, InitrdRule], ...] = ()
    #: The plan (every byte written) is known: the exact oracles apply.
    exact: bool = False
    #: Entry protocols a case may ask for, and what the target really does for each.
    entries: tuple[tuple[EntryProtocol, str], ...] = ()
    #: Where the kernel's memory map comes from.
    memory_map: MemoryMapSource = MemoryMapSource.FIRMWARE_E820
    #: Bytes the loader itself puts before and after the command line it was given
    #: (GRUB's "BOOT_IMAGE=/vmlinuz ", OVMF's " initrd=initrd").
    cmdline_prefix: bytes = b""
    cmdline_suffix: bytes = b""

    def kernel_cmdline(self, asked: bytes) -> bytes:
        """The command line the kernel should see when the loader was given *asked*."""
        return self.cmdline_prefix + asked + self.cmdline_suffix

    def platform(self, memory: int) -> Platform | None:
        return None if self.gap is None else self.gap.platform(self.description, memory)

    def ram_promised(self, memory: int) -> int | None:
        """Bytes of RAM the kernel should see, before what the firmware withholds."""
        if self.gap is None:
            return None
        if self.memory_meaning is MemoryMeaning.TOTAL_RAM:
            return memory
        start, end = self.gap.gap(memory)
        return memory - max(0, min(memory, end) - start)

    def withheld_ranges(self, memory: int) -> tuple[tuple[str, int, int], ...] | None:
        if self.gap is None or self.withheld is None:
            return None
        low = self.gap.low_end(memory)
        return tuple((w.name, *w.resolve(low)) for w in self.withheld)

    def entry_note(self, entry: EntryProtocol) -> str | None:
        return dict(self.entries).get(entry)

    def initrd_rule(self, entry: EntryProtocol) -> InitrdRule | None:
        return dict(self.initrd_rules).get(entry)
