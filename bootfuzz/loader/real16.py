"""The 16-bit boot protocol: the kernel's own real-mode setup code runs.  Pure: no I/O.

The loader places the real-mode part (boot sector + setup sectors) at
REAL_MODE_BASE with the header filled in as boot.rst's "Sample boot
configuration" does, the protected-mode code at 1 MiB, and the BIOS data block
our firmware's BIOS serves (harness/firmware/bios16.S).  The setup code then asks
that BIOS for the memory map (INT 15h E820h) and builds boot_params itself, so
the kernel's own E820 probe is what the e820 oracle judges.
Sources: boot.rst ("Loading the rest of the kernel", "Running the kernel",
"Sample boot configuration"), shared/reference/boot-protocol.md 3.1,
arch/x86/boot/{header.S,main.c,memory.c}.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootfuzz.abi.bootparam import (
    BOOT_PARAMS,
    E820_MAX_ENTRIES_ZEROPAGE,
    LOADER_TYPE_UNDEFINED,
    SETUP_HEADER,
    LoadFlags,
)
from bootfuzz.abi.e820 import E820Entry, E820Type, pack_table
from bootfuzz.abi.handoff import (
    BIOS_DATA,
    BIOS_DATA_MAGIC,
    BIOS_DATA_SIZE,
    BIOS_E820_MAX_ENTRIES,
    BIOS_E820_TABLE_OFFSET,
    E801_BLOCK,
    E801_LOW_KIB_MAX,
    EXT_MEM_KIB_MAX,
    INT15_UNSUPPORTED,
    HandoffMode,
)
from bootfuzz.case import BootCase
from bootfuzz.cmdline import cmdline_bytes
from bootfuzz.errors import HarnessBug, LayoutError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.handover import told_by_setup_header, told_initrd
from bootfuzz.loader.layout import (
    BIOS_DATA_ADDR,
    FOUR_GIB,
    HIGH_MEMORY_START,
    LOW_RAM_END,
    KiB,
    MiB,
)
from bootfuzz.loader.placement import (
    check_blobs,
    encode_cmdline,
    initrd_blobs,
    initrd_placement,
    place_kernel,
    place_setup_data,
    plan_e820,
)
from bootfuzz.loader.plan import Blob, BootPlan, CpuState, InitrdImage
from bootfuzz.loader.platform import Platform
from bootfuzz.loader.x86 import Cr0

#: Where the real-mode part goes (boot.rst's X).  boot.rst asks for "as low as
#: possible"; below 64 KiB our firmware keeps what its BIOS serves while the
#: setup code runs (IVT, BDA, hand-off, BIOS data block, its stack), so X is the
#: first 64 KiB boundary above them, and the setup segment [X, X + 64 KiB) never
#: overlaps them.
REAL_MODE_BASE = 0x10000
#: The setup code's entry: segment X/16 + 0x20, offset 0.  source: boot.rst,
#: "Running the kernel" (jmp_far(seg+0x20, 0)).
SETUP_ENTRY_PARAGRAPHS = 0x20
#: boot.rst's memory map reserves [X, X + 0x8000) for the boot sector and setup.
REAL_MODE_CODE_MAX = 0x8000
#: End of the setup heap and initial SP, as an offset from X.  source: boot.rst,
#: "Sample boot configuration": heap_end = 0xe000 for protocol >= 2.02 bzImages.
HEAP_END = 0xE000
#: heap_end_ptr is "the offset of the end of the setup stack/heap, minus 0x0200".
#: source: boot.rst, heap_end_ptr.
HEAP_END_PTR_BIAS = 0x200
#: The command line sits right above the heap (boot.rst's sample:
#: cmd_line_ptr = base_ptr + heap_end), below the 640 KiB line.
CMDLINE_OFFSET = HEAP_END
#: The setup code copies at most this many E820 entries into boot_params.
#: source: arch/x86/boot/memory.c, ARRAY_SIZE(boot_params.e820_table).
SETUP_E820_MAX = E820_MAX_ENTRIES_ZEROPAGE

#: What our INT 16h AH=02h answers (no shift key down); main.c keyboard_init
#: stores it in boot_params.kbd_status.
KBD_STATUS_NONE = 0
#: main.c query_ist calls INT 15h with EAX = IST_SUPPORT, EDX = IST_REQUEST and
#: stores EAX..EDX in boot_params.ist_info whatever the BIOS said.  Our BIOS does
#: not serve it: AH becomes 86h, every other register stays.  source:
#: arch/x86/boot/main.c, query_ist.
IST_SUPPORT = 0xE980
IST_REQUEST = 0x47534943  # "GSIC"


@dataclass(frozen=True)
class BiosMemory:
    """The memory sizes our BIOS reports besides E820, derived from the table."""

    base_mem_kib: int  # BDA 0x413
    ext_mem_kib: int  # INT 15h AH=88h
    e801_low_kib: int  # INT 15h E801h AX/CX
    e801_high_blocks: int  # INT 15h E801h BX/DX


def _ram_end_from(table: tuple[E820Entry, ...], start: int) -> int:
    """End of the RAM that runs contiguously from *start* through the table's RAM entries."""
    end = start
    grew = True
    while grew:
        grew = False
        for e in table:
            if e.type == E820Type.RAM and e.addr <= end < e.end:
                end, grew = e.end, True
    return end


def bios_memory(table: tuple[E820Entry, ...]) -> BiosMemory:
    """BDA base memory, INT 15h 88h and E801h, consistent with *table*.

    Base memory is the RAM from 0 up to at most 640 KiB; 88h and E801h count the
    RAM that runs contiguously from 1 MiB (that is what they mean: an older
    BIOS's "extended memory"), E801h's blocks only up to 4 GiB.
    """
    base = min(_ram_end_from(table, 0), LOW_RAM_END) // KiB
    high_end = _ram_end_from(table, HIGH_MEMORY_START)
    ext_kib = (high_end - HIGH_MEMORY_START) // KiB
    above_16m = max(0, min(high_end, FOUR_GIB) - 16 * MiB)
    return BiosMemory(
        base_mem_kib=base,
        ext_mem_kib=min(ext_kib, EXT_MEM_KIB_MAX),
        e801_low_kib=min(ext_kib, E801_LOW_KIB_MAX),
        e801_high_blocks=above_16m // E801_BLOCK if ext_kib >= E801_LOW_KIB_MAX else 0,
    )


def expected_alt_mem_k(mem: BiosMemory) -> int:
    """boot_params.alt_mem_k as detect_memory_e801 computes it from our answer.

    source: arch/x86/boot/memory.c, detect_memory_e801 (CX/DX win when non-zero;
    AX == 15 MiB adds the blocks above 16 MiB).
    """
    ax, bx = mem.e801_low_kib, mem.e801_high_blocks
    if ax == E801_LOW_KIB_MAX:
        return (bx << 6) + ax
    return ax


def build_bios_data(table: tuple[E820Entry, ...]) -> bytes:
    """The block at BIOS_DATA_ADDR: the header, then the E820 entries in order."""
    if len(table) > BIOS_E820_MAX_ENTRIES:
        raise LayoutError(
            f"{len(table)} E820 entries do not fit our BIOS's table "
            f"({BIOS_E820_MAX_ENTRIES} at most)"
        )
    mem = bios_memory(table)
    block = bytearray(BIOS_DATA_SIZE)
    BIOS_DATA.pack_into(block, {
        "magic": BIOS_DATA_MAGIC,
        "e820_count": len(table),
        "base_mem_kib": mem.base_mem_kib,
        "ebda_segment": 0,  # no EBDA: nothing of ours lives there
        "ext_mem_kib": mem.ext_mem_kib,
        "e801_low_kib": mem.e801_low_kib,
        "e801_high_blocks": mem.e801_high_blocks,
    })
    raw = pack_table(table)
    block[BIOS_E820_TABLE_OFFSET : BIOS_E820_TABLE_OFFSET + len(raw)] = raw
    return bytes(block)


def setup_kernel_e820(table: tuple[E820Entry, ...]) -> tuple[E820Entry, ...]:
    """What detect_memory_e820 puts in boot_params: the first 128 entries, in order."""
    return table[:SETUP_E820_MAX]


def _unserved_ist_info() -> bytes:
    """boot_params.ist_info after our BIOS declined INT 15h AX=E980h (AH = 86h)."""
    eax = (IST_SUPPORT & ~0xFF00) | (INT15_UNSUPPORTED << 8)
    regs = (eax, 0, 0, IST_REQUEST)  # signature, command, event, perf_level
    return b"".join(r.to_bytes(4, "little") for r in regs)


def _real16_cpu(base: int) -> CpuState:
    """boot.rst "Running the kernel": CS = X/16 + 0x20, IP = 0, other segments X/16."""
    segment = base >> 4
    return CpuState(
        mode=HandoffMode.REAL_16,
        rip=0,
        rsi=0,
        rbx=0,
        rsp=HEAP_END,
        cr0=Cr0.ET,  # PE clear: real mode
        cr3=0,
        cr4=0,
        efer=0,
        gdt_base=0,
        gdt_limit=0,
        code_selector=segment + SETUP_ENTRY_PARAGRAPHS,
        data_selector=segment,
    )


def _header_overrides(fields: tuple[tuple[str, int], ...]) -> dict[str, int]:
    """Override fields, which here can only be setup_header fields: the setup code
    builds the rest of boot_params itself."""
    names = {f.name for f in SETUP_HEADER}
    bad = [name for name, _ in fields if name not in names]
    if bad:
        raise LayoutError(
            f"the 16-bit entry has no zero page of ours, only the setup header: "
            f"{', '.join(bad)} cannot be overridden"
        )
    return dict(fields)


def plan_boot16(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """Lay out *case* for the 16-bit boot protocol (our BIOS, the kernel's setup code)."""
    ov = case.overrides
    if ov.start_info:
        raise LayoutError("the 16-bit entry hands over the setup header, not hvm_start_info: "
                          "override fields instead of start_info")
    base = REAL_MODE_BASE
    real_mode_size = image.protected_mode_offset
    if real_mode_size > REAL_MODE_CODE_MAX:
        raise LayoutError(
            f"{image.source}: {image.setup_sects} setup sectors ({real_mode_size:#x} bytes) "
            f"exceed the {REAL_MODE_CODE_MAX:#x} bytes boot.rst allows the real-mode code"
        )
    # Protected-mode code at 1 MiB (boot.rst: "at address 0x100000" for a
    # bzImage); code32_start keeps the image's 0x100000 unless an override moves it.
    load, run = place_kernel(
        image, platform, HIGH_MEMORY_START if ov.kernel_load is None else ov.kernel_load,
        overridden=ov.kernel_load is not None,
    )
    placed = initrd_placement(case, image, platform, run + image.init_size, initrd)

    cmdline_addr = base + CMDLINE_OFFSET if ov.cmdline_addr is None else ov.cmdline_addr
    if ov.cmdline_raw is None:
        cmdline = encode_cmdline(case.cmdline, image)
        cmdline_data = cmdline + b"\0"
    else:
        cmdline, cmdline_data = cmdline_bytes(case.cmdline), ov.cmdline_raw
    if ov.cmdline_addr is None and cmdline_addr + len(cmdline_data) > LOW_RAM_END:
        raise HarnessBug("the command line does not fit between the heap and 640 KiB")

    e820 = plan_e820(platform) if ov.e820 is None else ov.e820
    bios_data = build_bios_data(e820)
    setup_head, setup_blobs = place_setup_data(ov.setup_data)

    header: dict[str, int] = {
        "type_of_loader": LOADER_TYPE_UNDEFINED,
        "loadflags": (image.header["loadflags"] & ~LoadFlags.KASLR_FLAG)
        | LoadFlags.CAN_USE_HEAP,
        "heap_end_ptr": HEAP_END - HEAP_END_PTR_BIAS,
        "cmd_line_ptr": cmdline_addr,
        "ramdisk_image": placed.addr if placed else 0,
        "ramdisk_size": placed.size if placed else 0,
        "setup_data": setup_head,
    }
    if load != image.header["code32_start"]:
        header["code32_start"] = load
    told_fields = _header_overrides(ov.fields)
    for name, value in header.items():
        width = SETUP_HEADER[name].size * 8
        if value >> width and name not in told_fields:
            raise LayoutError(
                f"the 16-bit entry's setup header holds a {width}-bit {name}: {value:#x} "
                f"cannot be written there (give fields.{name} to say what it holds)"
            )
    header.update(told_fields)
    real_mode = bytearray(image.data[:real_mode_size])
    try:
        SETUP_HEADER.pack_into(real_mode, header)
    except ValueError as exc:
        raise LayoutError(f"override: {exc}") from None

    pm_code = image.protected_mode_code
    blobs = [
        Blob("bios_data", BIOS_DATA_ADDR, len(bios_data), data=bios_data),
        Blob("setup", base, real_mode_size, data=bytes(real_mode)),
        Blob("cmdline", cmdline_addr, len(cmdline_data), data=cmdline_data),
        Blob("kernel", load, len(pm_code), data=pm_code),
        *setup_blobs,
        *initrd_blobs(placed, initrd),
    ]
    check_blobs(blobs, platform, own_layout=ov.empty)

    kernel_e820 = setup_kernel_e820(e820)
    table_field = BOOT_PARAMS["e820_table"]
    predicted: dict[str, int | bytes] = {
        "e820_entries": len(kernel_e820),
        "e820_table": pack_table(kernel_e820).ljust(table_field.size, b"\0"),
        "alt_mem_k": expected_alt_mem_k(bios_memory(e820)),
        "kbd_status": KBD_STATUS_NONE,
        "eddbuf_entries": 0,  # our INT 13h has no EDD
        "edd_mbr_sig_buf_entries": 0,  # nor disks to read an MBR from
        "sentinel": 0,
        "ist_info": _unserved_ist_info(),
    }
    # The setup code copies the header we wrote into its boot_params; these
    # fields the kernel leaves alone afterwards (loadflags and vid_mode it edits).
    for name in ("type_of_loader", "heap_end_ptr", "cmd_line_ptr", "ramdisk_image", "vid_mode",
                 "ramdisk_size", "code32_start", "setup_data"):
        value = header.get(name, image.header[name])
        predicted[name] = value
    return BootPlan(
        case=case,
        platform=platform,
        blobs=tuple(blobs),
        e820=e820,
        cpu=_real16_cpu(base),
        zero_page=b"",
        cmdline=cmdline,
        kernel_load=load,
        kernel_run=run,
        init_size=image.init_size,
        initrd=told_initrd(placed, told_by_setup_header(bytes(real_mode))),
        kernel_e820=kernel_e820,
        boot_params_fields=tuple(predicted.items()),
        image_header=image.header.fields,
    )
