"""Our loader for the device-tree machines: an Image, a DTB we write, an initrd.  Pure.

The layout rule, stated once (docs/dt-boot.md):
* RAM is the machine's (bootfuzz.loader.virt); the /memory nodes describe it minus the
  case's holes, one node per part.  Blobs never go where the emulator or firmware keeps
  its own bytes (virt.VirtMachine.reserved) or into a hole.
* The Image goes at the first 2 MiB aligned base above those reserved areas, plus its
  text_offset (arm64 booting.rst; riscv boot.rst: PMD aligned), and the window
  [load, load + image_size) stays free of everything else.
* The DTB goes at the first 2 MiB boundary after that window (8-byte aligned, in a
  2 MiB block of its own, as booting.rst asks); the entry stub in the page before
  the Image's base (arm64: just above QEMU's own DTB; riscv64: at the top of the block
  left to OpenSBI).
* The initrd is page aligned: TOP (default) at the highest free place in the memory
  nodes, LOW right after the DTB's block.
* /chosen says bootargs, the initrd range [start, end) and a 32-byte rng-seed derived
  from the case (so a case replays byte for byte); stdout-path names the UART.
Entry: arm64 x0 = DTB, x1..x3 = 0 at the Image's first byte; riscv64 through OpenSBI
fw_dynamic with a0 = hart 0, a1 = DTB, a2 = fw_dynamic_info (next = the Image, S-mode).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from bootfuzz.abi.dt_image import IMAGE_BASE_ALIGN
from bootfuzz.abi.fdt import FDT_HEADER
from bootfuzz.abi.fw_dynamic import (
    FW_DYNAMIC_INFO,
    FW_DYNAMIC_INFO_MAGIC,
    FW_DYNAMIC_INFO_VERSION,
    NEXT_MODE_S,
)
from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, DtOverrides, InitrdPlacement
from bootfuzz.errors import CmdlineError, LayoutError
from bootfuzz.kernel.dt_image import DtKernelImage
from bootfuzz.loader.fdt_writer import Fdt, FdtNode, cells, prop_str, serialize
from bootfuzz.loader.plan import Blob, InitrdImage, PlacedInitrd
from bootfuzz.loader.platform import Fixture
from bootfuzz.loader.virt import (
    OPENSBI_SIZE,
    VirtMachine,
    device_nodes,
    root_props,
    uart_path,
)

PAGE = 4096
DTB_ALIGN = 8
#: booting.rst: the DTB must not exceed 2 MiB.
DTB_MAX = 2 << 20
DTB_BLOCK = 2 << 20
#: Bytes the entry stub and its parameters may take (one page).
STUB_SIZE = PAGE
#: The rng-seed we hand over (drivers/of/fdt.c feeds any length to add_bootloader_randomness).
RNG_SEED_SIZE = 32


def align_up(v: int, a: int) -> int:
    return (v + a - 1) // a * a


def align_down(v: int, a: int) -> int:
    return v // a * a


@dataclass(frozen=True)
class EntryState:
    """Registers at the jump into the kernel (or into OpenSBI, which passes them on)."""

    pc: int
    #: arm64: x0..x3; riscv64: a0..a2 as given to fw_dynamic.
    args: tuple[int, ...]
    #: riscv64: the fw_dynamic_info's next_addr (the kernel); arm64: the Image itself.
    kernel_entry: int


@dataclass(frozen=True)
class DtBootPlan:
    """A device-tree boot as our loader decided it; backends execute it, oracles judge it."""

    case: BootCase
    machine: VirtMachine
    blobs: tuple[Blob, ...]
    #: What the /memory nodes say, in order (address, size).
    memory: tuple[tuple[int, int], ...]
    address_cells: int
    size_cells: int
    kernel_load: int
    image_size: int
    dtb_addr: int
    dtb: bytes
    fdt: Fdt
    cmdline: bytes
    initrd: PlacedInitrd | None
    #: What /chosen says the initrd is ([start, end)); equals initrd's range unless overridden.
    chosen_initrd: tuple[int, int] | None
    rng_seed: bytes
    entry: EntryState
    #: Text offset and flags as the header said (the rules a layout must obey).
    image_header: dict[str, int]

    @property
    def arch(self) -> Arch:
        return self.machine.arch

    @property
    def kernel_window(self) -> tuple[int, int]:
        return (self.kernel_load, self.kernel_load + self.image_size)

    def blob(self, name: str) -> Blob:
        for b in self.blobs:
            if b.name == name:
                return b
        raise KeyError(name)


def memory_ranges(machine: VirtMachine, holes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The machine's RAM minus *holes*, as (address, size) parts, lowest first."""
    parts = [(machine.ram_start, machine.ram_end)]
    for addr, size in sorted(holes):
        if size <= 0 or addr % PAGE or size % PAGE:
            raise LayoutError(f"memory hole {addr:#x}+{size:#x} is not a non-empty page range")
        if not machine.in_ram(addr, addr + size):
            raise LayoutError(
                f"memory hole [{addr:#x}, {addr + size:#x}) is not inside the machine's RAM "
                f"[{machine.ram_start:#x}, {machine.ram_end:#x})"
            )
        out = []
        for s, e in parts:
            if addr >= e or addr + size <= s:
                out.append((s, e))
                continue
            if s < addr:
                out.append((s, addr))
            if addr + size < e:
                out.append((addr + size, e))
        parts = out
    return [(s, e - s) for s, e in parts]


def rng_seed(case: BootCase) -> bytes:
    """32 bytes fixed by the case, so a replay hands over the same seed."""
    h = hashlib.sha256(b"bootfuzz rng-seed\0" + case.arch.value.encode() + b"\0")
    h.update(case.cmdline.encode("utf-8", "surrogateescape"))
    return h.digest()[:RNG_SEED_SIZE]


class _Free:
    """Free RAM for blobs: the memory nodes minus what is taken, page granular."""

    def __init__(self, ranges: Sequence[tuple[int, int]], taken: Sequence[tuple[int, int]]):
        self.ranges = [(a, a + s) for a, s in ranges]
        self.taken = [(a, b) for a, b in taken]

    def take(self, start: int, end: int) -> None:
        self.taken.append((start, end))

    def fits(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.ranges) and not any(
            start < b and a < end for a, b in self.taken)

    def highest(self, size: int, align: int) -> int | None:
        """The highest *align*-aligned start where *size* bytes fit."""
        edges = sorted({e for _, e in self.ranges} | {a for a, _ in self.taken}, reverse=True)
        for top in edges:
            start = align_down(top - size, align)
            if self.fits(start, start + size):
                return start
        return None

    def lowest_from(self, floor: int, size: int, align: int) -> int | None:
        """The lowest *align*-aligned start at or above *floor* where *size* bytes fit."""
        edges = sorted({floor} | {s for s, _ in self.ranges} | {b for _, b in self.taken})
        for low in edges:
            start = align_up(max(low, floor), align)
            if self.fits(start, start + size):
                return start
        return None


def _chosen(plan_cmdline: bytes, bootargs: bytes, initrd: tuple[int, int] | None,
            seed: bytes, arch: Arch, ac: int) -> FdtNode:
    props: list[tuple[str, bytes]] = [("bootargs", bootargs)]
    if initrd is not None:
        props += [("linux,initrd-start", cells(initrd[0], 2 if initrd[0] >> 32 else ac)),
                  ("linux,initrd-end", cells(initrd[1], 2 if initrd[1] >> 32 else ac))]
    props += [("rng-seed", seed), ("stdout-path", prop_str(uart_path(arch)))]
    return FdtNode("chosen", tuple(props))


def build_fdt(arch: Arch, memory: Sequence[tuple[int, int]], ac: int, sc: int, bootargs: bytes,
              initrd: tuple[int, int] | None, seed: bytes,
              reservations: Sequence[tuple[int, int]] = ()) -> Fdt:
    """The tree our loader writes: root, devices, one /memory node per range, /chosen."""
    try:
        mem_nodes = tuple(
            FdtNode(f"memory@{addr:x}", (("device_type", prop_str("memory")),
                                         ("reg", cells(addr, ac) + cells(size, sc))))
            for addr, size in memory
        )
    except ValueError as exc:
        raise LayoutError(f"a memory node does not fit #address-cells {ac} / "
                          f"#size-cells {sc}: {exc}") from None
    root = FdtNode("", root_props(arch, ac, sc), (
        *device_nodes(arch, ac, sc), *mem_nodes,
        _chosen(b"", bootargs, initrd, seed, arch, ac)))
    return Fdt(root, tuple(reservations))


def _check_cells(value: int | None, default: int, what: str) -> int:
    v = default if value is None else value
    if v not in (1, 2):
        raise LayoutError(f"{what} {v} is not 1 or 2")
    return v


def dt_cmdline(case: BootCase) -> bytes:
    """The case's command line as /chosen/bootargs holds it (without its NUL), refused
    where the kernel would not read all of it."""
    cmdline = case.cmdline.encode("utf-8", "surrogateescape")
    if b"\0" in cmdline:
        raise CmdlineError("contains a NUL byte; the kernel would stop reading there")
    limit = case.arch.command_line_size
    if limit is not None and len(cmdline) >= limit:
        raise CmdlineError(f"{len(cmdline)} bytes is longer than the {case.arch.value} "
                           f"kernel's COMMAND_LINE_SIZE of {limit} allows ({limit - 1} "
                           "without the terminating NUL; the kernel would cut the rest)")
    return cmdline


def plan_dt_boot(case: BootCase, image: DtKernelImage,
                 initrd: InitrdImage | None = None) -> DtBootPlan:
    """Lay out *case* on QEMU virt for its architecture, by the rule in this module's doc."""
    if image.arch is not case.arch:
        raise LayoutError(f"the kernel is an {image.arch.value} Image, the case boots "
                          f"{case.arch.value}")
    machine = VirtMachine(case.arch, case.memory)
    ov: DtOverrides = case.dt
    reserved: tuple[Fixture, ...] = machine.reserved()
    nodes = memory_ranges(machine, case.mem_holes)
    written_memory = list(ov.memory) if ov.memory is not None else nodes
    ac = _check_cells(ov.address_cells, 2, "#address-cells")
    sc = _check_cells(ov.size_cells, 2, "#size-cells")
    # Blobs go only where the machine has RAM and the kernel is told of it.
    free = _Free(nodes, [(r.start, r.end) for r in reserved])
    floor = max(r.end for r in reserved if r.start == machine.ram_start)
    base = align_up(floor + (STUB_SIZE if case.arch is Arch.ARM64 else 0), IMAGE_BASE_ALIGN)
    load = base + (image.text_offset if case.arch is Arch.ARM64 else 0)
    if case.arch is Arch.RISCV64:
        load = machine.ram_start + max(image.text_offset, OPENSBI_SIZE)
    if not image.anywhere:
        raise LayoutError("the Image asks to be placed near the start of DRAM (flags bit 3 "
                          "clear); bootfuzz places kernels that may go anywhere")
    window = (load, load + image.image_size)
    if not free.fits(*window):
        raise LayoutError(f"the kernel's window [{window[0]:#x}, {window[1]:#x}) is not free "
                          f"RAM described by the memory nodes ({image.image_size} bytes needed)")
    free.take(*window)
    stub = (floor if case.arch is Arch.ARM64 else machine.ram_start + OPENSBI_SIZE - STUB_SIZE)
    if case.arch is Arch.ARM64:
        free.take(stub, stub + STUB_SIZE)
    cmdline = dt_cmdline(case)
    bootargs = ov.bootargs_raw if ov.bootargs_raw is not None else cmdline + b"\0"
    seed = rng_seed(case)
    # Size the DTB with a placeholder initrd range (its cells do not change with the value).
    size_probe = serialize(build_fdt(case.arch, written_memory, ac, sc, bootargs,
                                     (0, 0) if initrd else None, seed, ov.reservations))
    dtb_addr = ov.dtb_addr if ov.dtb_addr is not None else free.lowest_from(
        align_up(window[1], DTB_BLOCK), len(size_probe), DTB_BLOCK)
    if dtb_addr is None:
        raise LayoutError("no free 2 MiB block for the DTB above the kernel's window")
    dtb_span = (dtb_addr, dtb_addr + len(size_probe))
    free.take(dtb_addr, align_up(dtb_span[1], DTB_BLOCK) if ov.dtb_addr is None else dtb_span[1])
    placed: PlacedInitrd | None = None
    if initrd is not None:
        if case.initrd_placement is InitrdPlacement.LOW:
            addr = free.lowest_from(align_up(dtb_span[1], DTB_BLOCK), initrd.size, PAGE)
        else:
            addr = free.highest(initrd.size, PAGE)
        if addr is None:
            raise LayoutError(f"no free RAM for a {initrd.size}-byte initrd")
        free.take(addr, addr + initrd.size)
        placed = PlacedInitrd(addr, initrd.size, initrd.payload_sha256)
    chosen_initrd = None
    if placed is not None:
        chosen_initrd = (ov.initrd_start if ov.initrd_start is not None else placed.addr,
                         ov.initrd_end if ov.initrd_end is not None else placed.end)
    fdt = build_fdt(case.arch, written_memory, ac, sc, bootargs, chosen_initrd, seed,
                    ov.reservations)
    dtb = serialize(fdt, dict(ov.header))
    if ov.truncate is not None:
        dtb = dtb[: ov.truncate]
    if len(dtb) != len(size_probe) and ov.empty:
        raise LayoutError("the DTB changed size between sizing and writing")  # pragma: no cover
    if case.arch is Arch.ARM64:
        entry = EntryState(stub, (dtb_addr, 0, 0, 0), load)
        stub_blobs: tuple[Blob, ...] = ()
    else:
        info_addr = stub + STUB_SIZE - FW_DYNAMIC_INFO.size
        info = FW_DYNAMIC_INFO.build({
            "magic": FW_DYNAMIC_INFO_MAGIC, "version": FW_DYNAMIC_INFO_VERSION,
            "next_addr": load, "next_mode": NEXT_MODE_S, "options": 0,
            "boot_hart": (1 << 64) - 1,
        })
        entry = EntryState(stub, (0, dtb_addr, info_addr), load)
        stub_blobs = (Blob("fw_dynamic_info", info_addr, len(info), data=info),)
    blobs: list[Blob] = [Blob("kernel", load, len(image.data), data=image.data),
                         *stub_blobs, Blob("dtb", dtb_addr, len(dtb), data=dtb)]
    if placed is not None and initrd is not None:
        blobs.append(Blob("initrd", placed.addr, placed.size, path=initrd.path))
    return DtBootPlan(
        case=case, machine=machine, blobs=tuple(blobs), memory=tuple(written_memory),
        address_cells=ac, size_cells=sc, kernel_load=load, image_size=image.image_size,
        dtb_addr=dtb_addr, dtb=dtb, fdt=fdt, cmdline=cmdline, initrd=placed,
        chosen_initrd=chosen_initrd, rng_seed=seed, entry=entry,
        image_header={"text_offset": image.text_offset, "flags": image.flags,
                      "image_size": image.image_size},
    )


def fdt_header_fields() -> tuple[str, ...]:
    """The header fields an override may name."""
    return tuple(f.name for f in FDT_HEADER)
