"""The plan model: what our loader decided, as data the backends and oracles share.

A plan is every byte our loader puts in guest memory (named blobs at addresses),
the E820 table it describes, and the CPU state at the jump.  Backends only execute
plans; oracles compare what the kernel saw with the plan.  Making a plan is the
entry modules' work (bootfuzz.loader.planner picks one); this module only says
what a plan is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import BootCase
from bootfuzz.kernel.vmlinux import PvhReloc
from bootfuzz.loader.platform import Platform


class InitrdImage(Protocol):
    """What the loader needs of a built initrd (the guest stage's BuiltInitrd)."""

    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def payload_sha256(self) -> str: ...


@dataclass(frozen=True)
class Blob:
    """Bytes at a guest-physical address: in memory (data) or in a file (path)."""

    name: str
    addr: int
    size: int
    data: bytes | None = None
    path: Path | None = None

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class CpuState:
    """Registers at the kernel's first instruction; both backends reproduce it exactly."""

    mode: HandoffMode
    rip: int
    rsi: int
    rbx: int
    rsp: int
    cr0: int
    cr3: int
    cr4: int
    efer: int
    gdt_base: int
    gdt_limit: int
    code_selector: int
    data_selector: int


@dataclass(frozen=True)
class PlacedInitrd:
    """The initrd range the kernel is told about (bootfuzz.loader.handover).  The blob
    named "initrd" says where its bytes went; the two differ only by an override."""

    addr: int
    size: int
    payload_sha256: str

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class BootPlan:
    """A boot as our loader decided it.  *blobs* are in the order they are written:
    where two overlap (an override's doing) the later one's bytes are in memory, and
    bytes outside RAM are not stored (bootfuzz.loader.memory)."""

    case: BootCase
    platform: Platform
    blobs: tuple[Blob, ...]
    e820: tuple[E820Entry, ...]
    cpu: CpuState
    zero_page: bytes
    cmdline: bytes  # as written, without the terminating NUL
    kernel_load: int
    kernel_run: int  # where the decompressor runs: [run, run + init_size) is its window
    init_size: int
    initrd: PlacedInitrd | None
    #: The table the kernel starts from before sanitizing it: what we wrote, plus
    #: what its entry code adds (PVH appends the ISA hole).
    kernel_e820: tuple[E820Entry, ...] = ()
    #: For entries where the kernel builds its own boot_params (PVH): the fields it
    #: must show.  Empty for the 64-bit entry, whose whole zero_page is compared.
    boot_params_fields: tuple[tuple[str, int | bytes], ...] = ()
    #: The kernel image's setup header as read (the rules a layout must obey).
    image_header: Mapping[str, int] = field(default_factory=dict)
    #: The whole table when it overflows the zero page into a SETUP_E820_EXT node:
    #: the kernel prints it again as its "extended" map.
    kernel_e820_ext: tuple[E820Entry, ...] | None = None
    #: PVH relocation limits from the vmlinux's PHYS32_RELOC note (6.12), if any.
    pvh_reloc: PvhReloc | None = None
    #: Where the kernel loads when nobody moves it: pref_address for a bzImage, the
    #: first PT_LOAD's p_paddr for a vmlinux.  kernel_load differs only by an override.
    kernel_default_load: int = 0

    @property
    def kernel_window(self) -> tuple[int, int]:
        return (self.kernel_run, self.kernel_run + self.init_size)

    def blob(self, name: str) -> Blob:
        for b in self.blobs:
            if b.name == name:
                return b
        raise KeyError(name)
