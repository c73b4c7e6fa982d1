"""The 16-bit boot protocol's plan: real-mode part, header fields, BIOS data block."""

from __future__ import annotations

import pytest

from bootfuzz.abi.bootparam import BOOT_PARAMS, SETUP_HEADER, LoadFlags
from bootfuzz.abi.e820 import E820Entry, E820Type, unpack_table
from bootfuzz.abi.handoff import (
    BIOS_DATA,
    BIOS_DATA_MAGIC,
    BIOS_E820_MAX_ENTRIES,
    BIOS_E820_TABLE_OFFSET,
    HandoffMode,
)
from bootfuzz.case import BootCase, EntryProtocol, Overrides
from bootfuzz.errors import LayoutError
from bootfuzz.guest.harness import handoff_include
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import KernelImage, parse_kernel_image
from bootfuzz.loader.layout import BIOS_DATA_ADDR, FOUR_GIB, LOW_RAM_END, GiB, KiB, MiB
from bootfuzz.loader.placement import plan_e820
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.loader.real16 import (
    HEAP_END,
    REAL_MODE_BASE,
    BiosMemory,
    bios_memory,
    build_bios_data,
    expected_alt_mem_k,
)
from tests.fakes import FakeInitrd, fake_bzimage

IMAGE = parse_kernel_image(fake_bzimage())
RAM, RESERVED = E820Type.RAM, E820Type.RESERVED


NO_OVERRIDES = Overrides()


def plan16(memory: int = 256 * MiB, cmdline: str = "console=ttyS0",
           image: KernelImage = IMAGE,
           overrides: Overrides = NO_OVERRIDES, initrd: int | None = 8 * MiB) -> BootPlan:
    case = BootCase(kernel="fake", memory=memory, cmdline=cmdline, entry=EntryProtocol.REAL16,
                    overrides=overrides)
    return plan_boot(case, image, qemu_pc(memory),
                     FakeInitrd(initrd) if initrd is not None else None)


def header(p: BootPlan, name: str) -> int:
    value = SETUP_HEADER[name].decode(p.blob("setup").data or b"")
    assert isinstance(value, int)
    return value


def predicted(p: BootPlan) -> dict[str, int | bytes]:
    return dict(p.boot_params_fields)


def test_plan16_real_mode_part_is_the_images_first_sectors_at_base() -> None:
    p = plan16()
    setup = p.blob("setup")
    assert setup.addr == REAL_MODE_BASE == 0x10000
    assert setup.size == (IMAGE.setup_sects + 1) * 512
    assert setup.data is not None
    written = {"type_of_loader", "loadflags", "heap_end_ptr", "cmd_line_ptr",
               "ramdisk_image", "ramdisk_size", "setup_data"}
    original = IMAGE.data[: setup.size]
    mask = bytearray(b"\1" * setup.size)
    for name in written:
        f = SETUP_HEADER[name]
        mask[f.offset : f.end] = bytes(f.size)
    assert all(a == b for a, b, m in zip(setup.data, original, mask, strict=True) if m)


def test_plan16_header_fields_follow_the_16bit_protocol() -> None:
    p = plan16()
    assert p.initrd is not None
    assert header(p, "type_of_loader") == 0xFF
    flags = header(p, "loadflags")
    assert flags & LoadFlags.CAN_USE_HEAP and flags & LoadFlags.LOADED_HIGH
    assert not flags & LoadFlags.KASLR_FLAG
    assert header(p, "heap_end_ptr") == HEAP_END - 0x200 == 0xDE00
    assert header(p, "ramdisk_image") == p.initrd.addr
    assert header(p, "ramdisk_size") == p.initrd.size
    assert header(p, "code32_start") == IMAGE.header["code32_start"] == 0x100000
    assert header(p, "vid_mode") == IMAGE.header["vid_mode"]


def test_plan16_cmdline_lies_above_the_heap_below_640k() -> None:
    p = plan16(cmdline="x" * IMAGE.cmdline_size)
    cmd = p.blob("cmdline")
    assert header(p, "cmd_line_ptr") == cmd.addr == REAL_MODE_BASE + HEAP_END
    assert cmd.data == b"x" * IMAGE.cmdline_size + b"\0"
    assert cmd.addr >= REAL_MODE_BASE + HEAP_END and cmd.end <= LOW_RAM_END
    assert p.cmdline == b"x" * IMAGE.cmdline_size


def test_plan16_protected_mode_code_at_1mib_and_window_above() -> None:
    p = plan16()
    kernel = p.blob("kernel")
    assert kernel.addr == p.kernel_load == 0x100000
    assert kernel.data == IMAGE.protected_mode_code
    assert p.kernel_run == IMAGE.pref_address  # the decompressor's rule from 1 MiB
    assert p.initrd is not None and p.initrd.addr >= p.kernel_run + p.init_size


def test_plan16_cpu_is_real_mode_at_setup_entry() -> None:
    cpu = plan16().cpu
    assert cpu.mode is HandoffMode.REAL_16
    assert (cpu.code_selector, cpu.rip) == (0x1020, 0)
    assert cpu.data_selector == 0x1000
    assert cpu.rsp == HEAP_END
    assert not cpu.cr0 & 1  # PE clear


def test_plan16_has_no_zero_page_and_predicts_setup_built_fields() -> None:
    p = plan16(memory=256 * MiB)
    assert p.zero_page == b""
    assert p.kernel_e820 == p.e820 == plan_e820(qemu_pc(256 * MiB))
    want = predicted(p)
    assert p.initrd is not None
    assert want["e820_entries"] == len(p.e820)
    table = want["e820_table"]
    assert isinstance(table, bytes) and len(table) == BOOT_PARAMS["e820_table"].size
    assert tuple(unpack_table(table, len(p.e820))) == p.e820
    assert want["cmd_line_ptr"] == 0x1E000
    assert (want["ramdisk_image"], want["ramdisk_size"]) == (p.initrd.addr, p.initrd.size)
    assert want["type_of_loader"] == 0xFF
    assert want["alt_mem_k"] == 0x3FC00  # 15 MiB + 240 MiB in 64 KiB blocks, in KiB
    assert want["ist_info"] == bytes.fromhex("80860000" "00000000" "00000000" "43495347")


def test_plan16_bios_data_block_holds_the_table_in_order() -> None:
    p = plan16(memory=5 * GiB)
    blob = p.blob("bios_data")
    assert blob.addr == BIOS_DATA_ADDR and blob.data is not None
    head = BIOS_DATA.parse(blob.data)
    assert head["magic"] == BIOS_DATA_MAGIC
    assert head["e820_count"] == len(p.e820) == 5
    assert tuple(unpack_table(blob.data[BIOS_E820_TABLE_OFFSET:], 5)) == p.e820
    assert blob.data[BIOS_E820_TABLE_OFFSET + 5 * 20 :].strip(b"\0") == b""


def _table(ram_end: int) -> tuple[E820Entry, ...]:
    return (E820Entry(0, LOW_RAM_END, RAM), E820Entry(0xF0000, 0x10000, RESERVED),
            E820Entry(MiB, ram_end - MiB, RAM))


def test_bios_memory_256m_caps_88h_and_splits_e801() -> None:
    assert bios_memory(_table(256 * MiB)) == BiosMemory(
        base_mem_kib=640, ext_mem_kib=63 * 1024, e801_low_kib=15 * 1024,
        e801_high_blocks=240 * 16)


def test_bios_memory_88h_cap_boundary() -> None:
    assert bios_memory(_table(64 * MiB)).ext_mem_kib == 63 * 1024
    assert bios_memory(_table(64 * MiB - 4 * KiB)).ext_mem_kib == 63 * 1024 - 4


def test_bios_memory_e801_16m_boundary() -> None:
    at = bios_memory(_table(16 * MiB))
    assert (at.e801_low_kib, at.e801_high_blocks) == (15 * 1024, 0)
    below = bios_memory(_table(16 * MiB - 4 * KiB))
    assert (below.e801_low_kib, below.e801_high_blocks) == (15 * 1024 - 4, 0)
    above = bios_memory(_table(16 * MiB + 64 * KiB))
    assert (above.e801_low_kib, above.e801_high_blocks) == (15 * 1024, 1)


def test_bios_memory_counts_adjacent_ram_entries_and_stops_at_a_hole() -> None:
    split = (*_table(8 * MiB), E820Entry(8 * MiB, 8 * MiB, RAM))
    assert bios_memory(split).ext_mem_kib == 15 * 1024
    holed = (*_table(8 * MiB), E820Entry(8 * MiB + 4 * KiB, 8 * MiB, RAM))
    assert bios_memory(holed).ext_mem_kib == 7 * 1024


def test_bios_memory_e801_blocks_stop_at_4g() -> None:
    mem = bios_memory((E820Entry(0, LOW_RAM_END, RAM), E820Entry(MiB, 8 * GiB, RAM)))
    assert mem.e801_high_blocks == (FOUR_GIB - 16 * MiB) // (64 * KiB)


def test_bios_memory_no_ram_at_1m_reports_zero_extended() -> None:
    mem = bios_memory((E820Entry(0, LOW_RAM_END, RAM), E820Entry(2 * MiB, MiB, RAM)))
    assert (mem.ext_mem_kib, mem.e801_low_kib, mem.e801_high_blocks) == (0, 0, 0)


def test_expected_alt_mem_k_follows_detect_memory_e801() -> None:
    assert expected_alt_mem_k(BiosMemory(640, 0, 15 * 1024, 3)) == (3 << 6) + 15 * 1024
    assert expected_alt_mem_k(BiosMemory(640, 0, 15 * 1024 - 1, 0)) == 15 * 1024 - 1


def _alternating(count: int) -> tuple[E820Entry, ...]:
    head = (E820Entry(0, LOW_RAM_END, RAM), E820Entry(MiB, 127 * MiB, RAM))
    tail = tuple(E820Entry(128 * MiB + i * 4 * KiB, 4 * KiB, RESERVED if i % 2 == 0 else RAM)
                 for i in range(count - len(head)))
    return head + tail


def test_plan16_setup_reads_at_most_128_entries() -> None:
    p = plan16(overrides=Overrides(e820=_alternating(129)))
    assert len(p.e820) == 129 and p.kernel_e820 == p.e820[:128]
    assert predicted(p)["e820_entries"] == 128
    p = plan16(overrides=Overrides(e820=_alternating(128)))
    assert p.kernel_e820 == p.e820 and predicted(p)["e820_entries"] == 128


def test_build_bios_data_table_capacity_boundary() -> None:
    build_bios_data(_alternating(BIOS_E820_MAX_ENTRIES))
    with pytest.raises(LayoutError, match=r"^loader: 204 E820 entries do not fit our BIOS's table "
                                          r"\(203 at most\)$"):
        build_bios_data(_alternating(BIOS_E820_MAX_ENTRIES + 1))


def test_plan16_setup_sectors_boundary() -> None:
    ok = parse_kernel_image(fake_bzimage(setup_sects=63))
    assert plan16(image=ok).blob("setup").size == 0x8000
    big = parse_kernel_image(fake_bzimage(setup_sects=64))
    with pytest.raises(LayoutError, match=r"64 setup sectors \(0x8200 bytes\) exceed the "
                                          r"0x8000 bytes boot.rst allows"):
        plan16(image=big)


def test_plan16_zero_page_field_override_is_rejected() -> None:
    with pytest.raises(LayoutError, match=r"only the setup header: alt_mem_k cannot be "
                                          r"overridden$"):
        plan16(overrides=Overrides(fields=(("alt_mem_k", 1),)))


def test_plan16_header_override_is_written_and_predicted() -> None:
    p = plan16(overrides=Overrides(fields=(("type_of_loader", 0x71),)))
    assert header(p, "type_of_loader") == 0x71
    assert predicted(p)["type_of_loader"] == 0x71


def test_plan16_kernel_load_override_sets_code32_start() -> None:
    p = plan16(overrides=Overrides(kernel_load=0x200000))
    assert p.blob("kernel").addr == header(p, "code32_start") == 0x200000
    assert predicted(p)["code32_start"] == 0x200000


def test_plan16_initrd_above_4g_cannot_be_described_unless_the_header_is_given() -> None:
    """The setup header's ramdisk_image has 32 bits: an initrd at 5 GiB cannot be written
    there.  Saying what the header holds (a faulty loader's truncation) makes it a layout
    that runs, and the rules flag it."""
    with pytest.raises(LayoutError, match="holds a 32-bit ramdisk_image: 0x140000000 "
                                          r"cannot be written there \(give fields.ramdisk_image"):
        plan16(memory=8 * GiB, overrides=Overrides(initrd_addr=5 * GiB))
    truncated = plan16(memory=8 * GiB, overrides=Overrides(
        initrd_addr=5 * GiB, fields=(("ramdisk_image", (5 * GiB) & 0xFFFFFFFF),)))
    assert truncated.blob("initrd").addr == 5 * GiB
    assert truncated.initrd is not None and truncated.initrd.addr == GiB
    bad = {r.name for r in check_layout(truncated) if r.verdict is Verdict.FAIL}
    assert {"valid-initrd-fields", "valid-below-4g"} <= bad


def test_handoff_include_declares_the_bios_block_and_bda() -> None:
    text = handoff_include()
    equ = {ln.split()[1].rstrip(","): int(ln.split()[2], 16)
           for ln in text.splitlines() if ln.startswith(".equ")}
    assert equ["HANDOFF_MODE_REAL_16"] == HandoffMode.REAL_16
    assert equ["BIOS_DATA_ADDR"] == BIOS_DATA_ADDR
    assert equ["BIOS_E820_TABLE"] == BIOS_E820_TABLE_OFFSET
    assert equ["BD_E820_COUNT"] == BIOS_DATA["e820_count"].offset
    assert equ["BDA_BASE_MEM_KIB"] == 0x13 and equ["BDA_EBDA_SEGMENT"] == 0x0E
    assert equ["E820_SMAP"] == int.from_bytes(b"PAMS", "little")
