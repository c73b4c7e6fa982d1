"""Loader invariants: every plan the loader makes obeys boot.rst, for any size it accepts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.abi.bootparam import BOOT_PARAMS, SETUP_HEADER_FIELDS, LoadFlags
from bootfuzz.abi.e820 import E820Type, unpack_table
from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import BootCase, EntryProtocol
from bootfuzz.errors import CmdlineError, HarnessBug, LayoutError
from bootfuzz.kernel.image import KernelImage, parse_kernel_image
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, GiB, MiB
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import PLANNERS, plan_boot
from bootfuzz.loader.platform import qemu_pc
from tests.fakes import FakeInitrd, fake_bzimage

IMAGE = parse_kernel_image(fake_bzimage())
# A kernel with a Debian-sized decompression window (6.1 generic).
BIG_IMAGE = parse_kernel_image(fake_bzimage(init_size=0x3F98000))


#: Header fields a 32/64-bit loader writes (boot.rst "W"/"M" fields we set).
LOADER_WRITTEN = {"type_of_loader", "loadflags", "cmd_line_ptr", "ramdisk_image",
                  "ramdisk_size", "hardware_subarch", "setup_data"}


def plan(memory: int, initrd_size: int | None = 8 * MiB, cmdline: str = "console=ttyS0",
         image: KernelImage = IMAGE) -> BootPlan:
    case = BootCase(kernel="fake", memory=memory, cmdline=cmdline)
    initrd = FakeInitrd(initrd_size) if initrd_size is not None else None
    return plan_boot(case, image, qemu_pc(memory), initrd)


def field(p: BootPlan, name: str) -> int:
    value = BOOT_PARAMS[name].decode(p.zero_page)
    assert isinstance(value, int)
    return value


def check_invariants(p: BootPlan) -> None:
    zp = p.zero_page
    # Header copied from the image, sentinel zero, loader fields written.
    assert zp[0x1EF] == 0
    assert field(p, "type_of_loader") != 0
    assert not field(p, "loadflags") & LoadFlags.KASLR_FLAG
    assert field(p, "loadflags") & LoadFlags.LOADED_HIGH
    image = BIG_IMAGE if p.init_size == BIG_IMAGE.init_size else IMAGE
    for f in SETUP_HEADER_FIELDS:
        if f.name not in LOADER_WRITTEN:
            assert field(p, f.name) == image.header[f.name], f.name
    # Command line: where the pointer says, NUL-terminated, within cmdline_size.
    cmd = p.blob("cmdline")
    ptr = field(p, "cmd_line_ptr") | field(p, "ext_cmd_line_ptr") << 32
    assert ptr == cmd.addr and cmd.data is not None and cmd.data.endswith(b"\0")
    assert len(cmd.data) - 1 <= IMAGE.cmdline_size
    # E820: what the zero page says is the plan's table; RAM never in the MMIO gap.
    table = unpack_table(zp[0x2D0:], field(p, "e820_entries"))
    assert tuple(table) == p.e820
    gap_start, gap_end = p.platform.mmio_gap
    ram = [x for x in table if x.type == E820Type.RAM]
    for x in ram:
        assert x.end <= gap_start or x.addr >= gap_end
    legacy_hole = 0x100000 - 0xA0000
    assert sum(x.size for x in ram) == p.case.memory - legacy_hole
    # Kernel window inside RAM below the gap, at an aligned address.
    run, end = p.kernel_window
    assert run % IMAGE.kernel_alignment == 0 and end <= gap_start
    # initrd: page aligned, inside RAM, below initrd_addr_max, outside the window.
    if p.initrd is not None:
        i = p.initrd
        assert i.addr % PAGE_SIZE == 0
        assert i.end - 1 <= IMAGE.initrd_addr_max
        assert i.addr >= end
        assert any(x.addr <= i.addr and i.end <= x.end for x in ram)
        assert field(p, "ramdisk_image") | field(p, "ext_ramdisk_image") << 32 == i.addr
        assert field(p, "ramdisk_size") == i.size
    # Blobs disjoint; page tables cover all RAM (up to their 64 GiB capacity).
    blobs = sorted(p.blobs, key=lambda b: b.addr)
    assert all(a.end <= b.addr for a, b in itertools.pairwise(blobs))
    assert p.blob("page_tables").size >= (2 + min(64, -(-p.platform.top_of_ram // GiB))) * 4096


def test_plan_256m_invariants_and_top_placement() -> None:
    p = plan(256 * MiB)
    check_invariants(p)
    assert p.initrd is not None
    assert p.initrd.addr == 256 * MiB - 8 * MiB  # the top of RAM
    assert p.cpu.rip == p.kernel_load + 0x200 and p.cpu.rsi == p.blob("zero_page").addr


def test_plan_5g_splits_ram_around_the_gap() -> None:
    p = plan(5 * GiB)
    check_invariants(p)
    ram = [(x.addr, x.end) for x in p.e820 if x.type == E820Type.RAM]
    assert ram == [(0, 0xA0000), (0x100000, 3 * GiB), (FOUR_GIB, FOUR_GIB + 2 * GiB)]
    assert p.initrd is not None and p.initrd.end <= 0x80000000  # initrd_addr_max + 1


def test_plan_memory_at_split_threshold() -> None:
    below = plan(0xE0000000 - 2 * MiB)
    at = plan(0xE0000000)
    assert below.platform.high is None and at.platform.high is not None
    check_invariants(below)
    check_invariants(at)


def test_plan_memory_1m_is_refused() -> None:
    with pytest.raises(LayoutError, match="memory size 1024 KiB is impossible"):
        plan(1 * MiB)


def test_plan_memory_too_small_for_kernel_window_names_init_size() -> None:
    with pytest.raises(LayoutError, match=r"needs init_size 0x3f98000 bytes up to 0x4f98000"):
        plan(64 * MiB, image=BIG_IMAGE)


def test_plan_kernel_window_exact_fit_boundary() -> None:
    window_end = 0x1000000 + 0x800000
    plan(window_end, initrd_size=None)  # exactly enough
    with pytest.raises(LayoutError):
        plan(window_end - PAGE_SIZE, initrd_size=None)


def test_plan_initrd_exact_fit_boundary() -> None:
    memory = 64 * MiB
    room = memory - (0x1000000 + 0x800000)
    assert plan(memory, initrd_size=room).initrd is not None
    with pytest.raises(LayoutError, match="does not fit"):
        plan(memory, initrd_size=room + 1)


def test_plan_cmdline_at_limit_and_one_over() -> None:
    plan(256 * MiB, cmdline="x" * 2047)
    with pytest.raises(CmdlineError, match="2048 bytes is longer than the kernel's cmdline_size"):
        plan(256 * MiB, cmdline="x" * 2048)


def test_plan_cmdline_with_nul_refused() -> None:
    with pytest.raises(CmdlineError, match="NUL"):
        plan(256 * MiB, cmdline="a\0b")


@settings(max_examples=300, deadline=None)
@given(
    memory=st.integers(32, 48 * 1024).map(lambda mib: mib * MiB)
    | st.integers(0x2000, 0x1000000).map(lambda pages: pages * PAGE_SIZE),
    initrd_size=st.integers(1, 256 * MiB),
)
def test_plan_invariants_hold_for_every_accepted_case(memory: int, initrd_size: int) -> None:
    try:
        p = plan(memory, initrd_size=initrd_size)
    except LayoutError:
        return  # refusals are checked by the boundary tests above
    check_invariants(p)


def test_pvh_start_info_layout_and_memmap() -> None:
    from bootfuzz.abi.pvh import HVM_MEMMAP_TABLE_ENTRY, HVM_MODLIST_ENTRY, HVM_START_INFO
    from bootfuzz.loader.layout import PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR, PVH_START_INFO_ADDR
    from bootfuzz.loader.placement import plan_e820
    from bootfuzz.loader.plan import PlacedInitrd
    from bootfuzz.loader.pvh import build_start_info

    e820 = plan_e820(qemu_pc(5 * GiB))
    page = build_start_info(0x4B000, e820, PlacedInitrd(0x7F000000, 0x123456, "0" * 64))
    info = HVM_START_INFO.parse(page)
    assert info["magic"] == 0x336EC578 and info["version"] == 1
    assert info["nr_modules"] == 1 and info["modlist_paddr"] == PVH_MODLIST_ADDR
    assert info["cmdline_paddr"] == 0x4B000 and info["rsdp_paddr"] == 0
    assert info["memmap_paddr"] == PVH_MEMMAP_ADDR and info["memmap_entries"] == len(e820)
    module = HVM_MODLIST_ENTRY.parse(page, PVH_MODLIST_ADDR - PVH_START_INFO_ADDR)
    assert (module["paddr"], module["size"]) == (0x7F000000, 0x123456)
    for i, entry in enumerate(e820):
        got = HVM_MEMMAP_TABLE_ENTRY.parse(
            page, PVH_MEMMAP_ADDR - PVH_START_INFO_ADDR + 24 * i)
        assert (got["addr"], got["size"], got["type"]) == (entry.addr, entry.size, entry.type)


def test_pvh_kernel_e820_appends_the_isa_hole_below_127_entries() -> None:
    from bootfuzz.abi.e820 import E820Entry
    from bootfuzz.loader.pvh import pvh_kernel_e820

    table = tuple(E820Entry(i * 0x1000, 0x1000, 1) for i in range(126))
    assert pvh_kernel_e820(table)[-1] == E820Entry(0xA0000, 0x60000, 2)
    full = tuple(E820Entry(i * 0x1000, 0x1000, 1) for i in range(127))
    assert pvh_kernel_e820(full) == full


def test_every_entry_protocol_has_a_planner() -> None:
    assert set(PLANNERS) == set(EntryProtocol)


@pytest.mark.parametrize(("entry", "mode"), [
    (EntryProtocol.BOOT64, HandoffMode.LONG_64),
    (EntryProtocol.BOOT32, HandoffMode.PROTECTED_32),
    (EntryProtocol.REAL16, HandoffMode.REAL_16),
])
def test_plan_boot_dispatches_on_the_entry(entry: EntryProtocol, mode: HandoffMode) -> None:
    case = BootCase(kernel="fake", memory=256 * MiB, cmdline="console=ttyS0", entry=entry)
    assert plan_boot(case, IMAGE, qemu_pc(256 * MiB)).cpu.mode is mode


def test_plan_boot_refuses_a_platform_of_another_size() -> None:
    case = BootCase(kernel="fake", memory=256 * MiB, cmdline="console=ttyS0")
    with pytest.raises(HarnessBug, match="another memory size"):
        plan_boot(case, IMAGE, qemu_pc(512 * MiB))
