"""Probe guests: tiny programs entered exactly as a kernel is, that report their entry state.

A kernel's log says little about the machine state it was entered in; a probe
says everything.  ``harness/probes/probe64.S`` is the protected-mode code of a
minimal bzImage (64-bit entry at offset 0x200), ``probe16.S`` the real-mode code
in its setup sectors (the 16-bit entry: our BIOS below it), and ``probe_pvh.S`` a
minimal ELF64 "vmlinux" with the Xen PHYS32_ENTRY note, carried uncompressed as
that bzImage's payload, so one image boots through three entry protocols of our
loader unchanged.  At entry each probe saves its registers, reads the boot
information through the pointer it was given (the 16-bit probe: the setup header
in its own segment, and the BIOS's answers), prints one line on COM1::

    BOOTFUZZ-PROBE {"v":1,"entry":"64","regs":{...},"boot_params":{...},...}

and leaves through the exit port.  This module builds the images and owns the
report's shape (both sides read these constants); bootfuzz.judge.probe parses the
line and compares it with the BootPlan, bootfuzz.run.probe boots a probe, and
``python -m bootfuzz.cli.probes`` does both from the command line.

The assembler sees every offset and constant through a generated include
(:func:`probes_include`), the bzImage header is serialized from
``SETUP_HEADER``, and builds are cached like the harness's
(:func:`bootfuzz.guest.harness.cached_build`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi.bootparam import (
    BOOT_FLAG_MAGIC,
    BOOT_PARAMS,
    BOOT_PARAMS_SIZE,
    E820_ENTRY_SIZE,
    E820_MAX_ENTRIES_ZEROPAGE,
    E820_TABLE_OFFSET,
    HDRS_MAGIC,
    SECTOR_SIZE,
    SETUP_HEADER,
    STARTUP_64_OFFSET,
    LoadFlags,
    XLoadFlags,
)
from bootfuzz.abi.handoff import BDA, BDA_ADDR, E820_SMAP
from bootfuzz.abi.pvh import HVM_MEMMAP_TABLE_ENTRY, HVM_MODLIST_ENTRY, HVM_START_INFO
from bootfuzz.abi.structs import Struct
from bootfuzz.cache import cache_root
from bootfuzz.case import EntryProtocol
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError
from bootfuzz.guest.harness import (
    HARNESS_SOURCE_DIR,
    as_string,
    build_key,
    build_tools,
    cached_build,
    run_build_step,
)
from bootfuzz.guest.protocol import (
    AGENT_EXIT_PORT,
    AGENT_EXIT_VALUE,
    COM1_BASE,
    UART_LSR,
    UART_LSR_THRE,
)
from bootfuzz.kernel.vmlinux import XEN_ELFNOTE_PHYS32_ENTRY, XEN_NOTE_NAME
from bootfuzz.loader.layout import PAGE_SIZE, MiB, align_up
from bootfuzz.loader.x86 import MSR_EFER

# --- the report's shape -----------------------------------------------------------

#: The entry protocols a probe answers (the 32-bit and vmlinux entries: not yet).
PROBE_ENTRIES: tuple[EntryProtocol, ...] = (
    EntryProtocol.BOOT64, EntryProtocol.PVH, EntryProtocol.REAL16)
#: The probe's line starts with this word, a space, then one JSON object.
PROBE_LINE_PREFIX = "BOOTFUZZ-PROBE"
#: The JSON object's "v": bump when the report's shape changes.
PROBE_FORMAT_VERSION = 1
#: Command line bytes a probe reads: up to and including the NUL, at most this many.
PROBE_CMDLINE_BYTES = 64
#: Bytes the probe reads at each end of the ramdisk (fewer if it is smaller).
PROBE_RAMDISK_EDGE = 16
#: The PVH probe follows at most this many memory map entries.
PROBE_MEMMAP_MAX_ENTRIES = 128
#: The probes dump the GDT the GDTR points at, at most this many bytes.
PROBE_GDT_MAX_BYTES = 256
#: Each probe's own stack (the 64-bit protocol's stack is the loader's, PVH has none).
PROBE_STACK_SIZE = 4096

#: (name, bytes) of the registers each probe reports, in report order.  The
#: assembly keeps one ``saved_<name>`` slot per register; gdt_limit and gdt_base
#: are adjacent so sgdt fills both.
REGS_64: tuple[tuple[str, int], ...] = (
    ("rsi", 8), ("rbx", 8), ("rsp", 8), ("rip", 8), ("rflags", 8),
    ("cr0", 8), ("cr3", 8), ("cr4", 8), ("efer", 8),
    ("cs", 2), ("ds", 2), ("es", 2), ("ss", 2),
    ("gdt_limit", 2), ("gdt_base", 8),
)  # fmt: skip
REGS_PVH: tuple[tuple[str, int], ...] = (
    ("ebx", 4), ("esi", 4), ("esp", 4), ("eip", 4), ("eflags", 4),
    ("cr0", 4), ("cr4", 4),
    ("cs", 2), ("ds", 2), ("es", 2), ("ss", 2),
    ("gdt_limit", 2), ("gdt_base", 4),
)  # fmt: skip

#: The 16-bit probe's registers: the segments and SP as the setup code finds them, IP
#: derived from where the entry's jump landed (CS-relative), flags, CR0, CR4.
REGS_16: tuple[tuple[str, int], ...] = (
    ("cs", 2), ("ip", 2), ("ds", 2), ("es", 2), ("fs", 2), ("gs", 2), ("ss", 2), ("sp", 2),
    ("eflags", 4), ("cr0", 4), ("cr4", 4),
)  # fmt: skip
#: What the 16-bit probe asks the BIOS besides E820: INT 15h E801h (AX, BX, CX, DX),
#: INT 15h AH=88h (AX), and the BDA's base memory word, as the setup code and the
#: kernel read them.  Slots are ``saved_bios_<name>`` in the probe.
BIOS_16: tuple[tuple[str, int], ...] = (
    ("e801_ax", 2), ("e801_bx", 2), ("e801_cx", 2), ("e801_dx", 2), ("ext_mem_kib", 2),
    ("base_mem_kib", 2),
)  # fmt: skip
#: The setup_header fields the 16-bit probe reports, read in its own segment where
#: the loader wrote them (the offsets are boot_params', the header's place in both).
SETUP_HEADER_REPORTED: tuple[str, ...] = (
    "setup_sects", "boot_flag", "jump", "header", "version", "type_of_loader", "loadflags",
    "code32_start", "ramdisk_image", "ramdisk_size", "heap_end_ptr", "cmd_line_ptr",
    "initrd_addr_max", "cmdline_size", "setup_data", "pref_address", "init_size",
)  # fmt: skip
#: The 16-bit probe's "page": the first bytes of its segment (boot sector, then the
#: sector with the header and the version string), compared byte for byte.
PROBE16_PAGE_BYTES = 0x400
#: Where boot.rst's setup entry lands (CS = X/16 + 0x20, IP = 0) in the real-mode part.
SETUP_ENTRY_OFFSET = 0x200
#: The 16-bit probe's stack (its BIOS calls run on it too).
PROBE16_STACK_BYTES = 0x400
#: The 16-bit probe's code, buffers and stack stay below X + this: boot.rst's
#: "Kernel setup" area, which every loader leaves to the setup code.
PROBE16_FOOTPRINT_MAX = 0x8000

#: boot_params fields the 64-bit probe reports by name (offsets from BOOT_PARAMS).
BOOT_PARAMS_REPORTED: tuple[str, ...] = (
    "boot_flag", "header", "version", "type_of_loader", "loadflags",
    "cmd_line_ptr", "ext_cmd_line_ptr",
    "ramdisk_image", "ext_ramdisk_image", "ramdisk_size", "ext_ramdisk_size",
    "e820_entries", "sentinel", "hardware_subarch", "setup_data",
    "kernel_alignment", "init_size", "pref_address",
)  # fmt: skip
START_INFO_REPORTED: tuple[str, ...] = tuple(f.name for f in HVM_START_INFO)
MODULE_REPORTED: tuple[str, ...] = tuple(f.name for f in HVM_MODLIST_ENTRY)

#: What the assembly reads with a fixed operand size: (struct, field, bytes).
#: Checked when the include is generated, so a changed declaration cannot
#: silently misread.
_ASM_OPERANDS: tuple[tuple[Struct, str, int], ...] = (
    (BOOT_PARAMS, "init_size", 4),
    (BOOT_PARAMS, "e820_entries", 1),
    (BOOT_PARAMS, "cmd_line_ptr", 4),
    (BOOT_PARAMS, "ext_cmd_line_ptr", 4),
    (BOOT_PARAMS, "ramdisk_image", 4),
    (BOOT_PARAMS, "ext_ramdisk_image", 4),
    (BOOT_PARAMS, "ramdisk_size", 4),
    (BOOT_PARAMS, "ext_ramdisk_size", 4),
    (HVM_START_INFO, "nr_modules", 4),
    (HVM_START_INFO, "modlist_paddr", 8),
    (HVM_START_INFO, "cmdline_paddr", 8),
    (HVM_START_INFO, "memmap_paddr", 8),
    (HVM_START_INFO, "memmap_entries", 4),
    (HVM_MODLIST_ENTRY, "paddr", 8),
    (HVM_MODLIST_ENTRY, "size", 8),
)

# --- the probe bzImage --------------------------------------------------------------

#: The first setup sector holds the header (it ends at 0x26c) and the version string;
#: the 16-bit probe's code follows from PROBE16_OFFSET, in the sectors after it.
PROBE_SETUP_SECTS = 8
PROBE16_OFFSET = 0x400
#: Where the 6.1/6.12 kernels want to be: the probe asks for the same.
PROBE_PREF_ADDRESS = 16 * MiB  # source: Debian configs, CONFIG_PHYSICAL_START=0x1000000
PROBE_KERNEL_ALIGNMENT = 2 * MiB  # source: Debian configs, CONFIG_PHYSICAL_ALIGN=0x200000
PROBE_MIN_ALIGNMENT_LOG2 = 21  # source: arch/x86/boot/header.S, MIN_KERNEL_ALIGN_LG2 (x86_64)
PROBE_INIT_SIZE = 2 * MiB
PROBE_CMDLINE_SIZE = 2047  # source: arch/x86/include/asm/setup.h, COMMAND_LINE_SIZE - 1
PROBE_INITRD_ADDR_MAX = 0x7FFFFFFF  # source: arch/x86/boot/header.S, initrd_addr_max
PROBE_BOOT_PROTOCOL = 0x020F  # source: boot.rst, protocol 2.15 (Linux 6.1 and 6.12)
#: The PVH probe's PT_LOAD physical address (and the 6.1 vmlinux's).
PVH_LOAD_ADDR = 16 * MiB
#: kernel_version points here (boot.rst: the string's offset minus 0x200).
_VERSION_STRING_OFFSET = 0x280
PROBE_VERSION_STRING = b"bootfuzz-probe (16-bit, 64-bit and PVH entry probe)"
#: Bump when the build recipe changes in a way the key would not see.
_RECIPE_VERSION = 1

PROBE_SOURCE_DIR = HARNESS_SOURCE_DIR / "probes"
PROBE_ASFLAGS: tuple[str, ...] = ("--64", "--fatal-warnings")
PROBE64_LDFLAGS: tuple[str, ...] = (
    "-m", "elf_x86_64", "-nostdlib", "-z", "noexecstack", "-Ttext=0", "--oformat", "binary",
)  # fmt: skip
#: Linked where it lies in the real-mode part, so its addresses are offsets from X.
PROBE16_LDFLAGS: tuple[str, ...] = (
    "-m", "elf_x86_64", "-nostdlib", "-z", "noexecstack", f"-Ttext={PROBE16_OFFSET:#x}",
    "--oformat", "binary",
)  # fmt: skip
PROBE_PVH_LDFLAGS: tuple[str, ...] = (
    "-m", "elf_x86_64", "-nostdlib", "-z", "noexecstack", "-z", "max-page-size=0x1000",
    "--build-id=none",
)  # fmt: skip

INCLUDE_NAME = "probes.inc"
PVH_LDSCRIPT_NAME = "probe_pvh.ld"
PROBE64_NAME = "probe64.bin"
PROBE16_NAME = "probe16.bin"
PROBE_PVH_NAME = "probe_pvh.elf"
BZIMAGE_NAME = "probe.bzImage"


@dataclass(frozen=True)
class ProbeImages:
    """One cached probe build: the bzImage to boot, and its two parts."""

    bzimage: Path  # setup code = probe16, protected-mode code = probe64, payload = the PVH ELF
    probe64: Path  # the flat protected-mode code
    pvh_elf: Path
    directory: Path
    probe16: Path  # the real-mode code, linked at PROBE16_OFFSET


def _field_macro(name: str, struct: Struct, names: Sequence[str]) -> list[str]:
    lines = [f".macro {name}"]
    for field_name in names:
        f = struct[field_name]
        if f.raw:
            raise HarnessBug(f"{struct.name}.{field_name} is not an integer field")
        lines.append(f"\tFIELD {field_name}, {f.offset:#x}, {f.size}")
    return [*lines, "\tEND_FIELDS", ".endm"]


def _regs_macro(name: str, regs: Sequence[tuple[str, int]], prefix: str = "saved_") -> list[str]:
    lines = [f".macro {name}"]
    lines += [f"\tFIELD {reg}, {prefix}{reg}-saved, {size}" for reg, size in regs]
    return [*lines, "\tEND_FIELDS", ".endm"]


def _head(entry: EntryProtocol) -> str:
    """The line's fixed start, up to the entry: both sides build it from these constants."""
    return f'{PROBE_LINE_PREFIX} {{"v":{PROBE_FORMAT_VERSION},"entry":"{entry.value}"'


def probes_include() -> str:
    """The assembler include (``.equ`` lines and macros) both probes read."""
    for struct, field_name, size in _ASM_OPERANDS:
        if struct[field_name].size != size:
            raise HarnessBug(f"the probes read {struct.name}.{field_name} as {size} bytes")
    equ: list[tuple[str, int, str]] = [
        ("COM1_BASE", COM1_BASE, "serial port"),
        ("UART_LSR", UART_LSR, "line status register offset"),
        ("UART_LSR_THRE", UART_LSR_THRE, "transmit holding register empty"),
        ("EXIT_PORT", AGENT_EXIT_PORT, "harness.AGENT_EXIT_PORT"),
        ("EXIT_VALUE", AGENT_EXIT_VALUE, "harness.AGENT_EXIT_VALUE"),
        ("MSR_EFER", MSR_EFER, "x86.MSR_EFER"),
        ("STARTUP_64_OFFSET", STARTUP_64_OFFSET, "64-bit entry in the pm code"),
        ("BP_SIZE", BOOT_PARAMS_SIZE, "boot_params"),
        ("BP_E820_TABLE", E820_TABLE_OFFSET, "boot_params.e820_table"),
        ("E820_ENTRY_SIZE", E820_ENTRY_SIZE, "struct boot_e820_entry"),
        ("E820_MAX_ENTRIES", E820_MAX_ENTRIES_ZEROPAGE, "E820_MAX_ENTRIES_ZEROPAGE"),
        ("MEMMAP_ENTRY_SIZE", HVM_MEMMAP_TABLE_ENTRY.size, "hvm_memmap_table_entry"),
        ("MEMMAP_MAX_ENTRIES", PROBE_MEMMAP_MAX_ENTRIES, "PROBE_MEMMAP_MAX_ENTRIES"),
        ("START_INFO_PAGE_SIZE", PAGE_SIZE, "the start_info page"),
        ("CMDLINE_BYTES", PROBE_CMDLINE_BYTES, "PROBE_CMDLINE_BYTES"),
        ("RAMDISK_EDGE", PROBE_RAMDISK_EDGE, "PROBE_RAMDISK_EDGE"),
        ("PROBE_STACK_SIZE", PROBE_STACK_SIZE, "PROBE_STACK_SIZE"),
        ("GDT_MAX_BYTES", PROBE_GDT_MAX_BYTES, "PROBE_GDT_MAX_BYTES"),
        ("XEN_ELFNOTE_PHYS32_ENTRY", XEN_ELFNOTE_PHYS32_ENTRY, "Xen elfnote.h"),
        ("SETUP_ENTRY_OFFSET", SETUP_ENTRY_OFFSET, "boot.rst: CS = X/16 + 0x20, IP = 0"),
        ("PROBE16_PAGE_BYTES", PROBE16_PAGE_BYTES, "PROBE16_PAGE_BYTES"),
        ("PROBE16_STACK_BYTES", PROBE16_STACK_BYTES, "PROBE16_STACK_BYTES"),
        ("E820_SMAP", E820_SMAP, "INT 15h E820h signature"),
        ("BDA_BASE_MEM_KIB", BDA_ADDR + BDA["base_mem_kib"].offset, "BDA 0x413"),
    ]
    prefixes = {BOOT_PARAMS.name: "BP", HVM_START_INFO.name: "HSI", HVM_MODLIST_ENTRY.name: "MOD"}
    equ += [
        (f"{prefixes[s.name]}_{n.upper()}", s[n].offset, f"{s.name}.{n}, {size} bytes")
        for s, n, size in _ASM_OPERANDS
    ]
    lines = [
        "# Generated by bootfuzz/guest/probes.py from bootfuzz/abi/*.py.  Do not edit.",
        *(f".equ {name}, {value:#x}  # {why}" for name, value, why in equ),
        ".macro PROBE_HEAD_64", f"\t.asciz {as_string(_head(EntryProtocol.BOOT64))}", ".endm",
        ".macro PROBE_HEAD_PVH", f"\t.asciz {as_string(_head(EntryProtocol.PVH))}", ".endm",
        ".macro PROBE_HEAD_16", f"\t.asciz {as_string(_head(EntryProtocol.REAL16))}", ".endm",
        ".macro XEN_NOTE_NAME", f"\t.asciz {as_string(XEN_NOTE_NAME.decode())}", ".endm",
        *_field_macro("FIELDS_BOOT_PARAMS", BOOT_PARAMS, BOOT_PARAMS_REPORTED),
        *_field_macro("FIELDS_START_INFO", HVM_START_INFO, START_INFO_REPORTED),
        *_field_macro("FIELDS_MODULE", HVM_MODLIST_ENTRY, MODULE_REPORTED),
        *_regs_macro("FIELDS_REGS_64", REGS_64),
        *_regs_macro("FIELDS_REGS_PVH", REGS_PVH),
        *_regs_macro("FIELDS_REGS_16", REGS_16),
        *_regs_macro("FIELDS_BIOS_16", BIOS_16, "saved_bios_"),
        *_field_macro("FIELDS_SETUP_HEADER", BOOT_PARAMS, SETUP_HEADER_REPORTED),
    ]
    return "\n".join(lines) + "\n"


def pvh_linker_script() -> str:
    """One PT_LOAD for code and tables (with the note), one for data and bss, one PT_NOTE."""
    return f"""/* Generated by bootfuzz/guest/probes.py.  Do not edit. */
OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(pvh_entry)
PHDRS
{{
	text PT_LOAD FLAGS(5);
	data PT_LOAD FLAGS(6);
	note PT_NOTE FLAGS(4);
}}
SECTIONS
{{
	. = {PVH_LOAD_ADDR:#x};
	.text : {{ *(.text) }} :text
	.rodata : {{ *(.rodata) }} :text
	.notes : {{ *(.note.Xen) }} :text :note
	. = ALIGN({PAGE_SIZE:#x});
	.data : {{ *(.data) }} :data
	.bss : {{ *(.bss) }} :data
	/DISCARD/ : {{ *(.comment) *(.note.GNU-stack) }}
}}
"""


def probe_header_values(pm_size: int, payload_offset: int, payload_length: int) -> dict[str, int]:
    """The setup_header of the probe bzImage (boot.rst, "Details of header fields")."""
    header_field = SETUP_HEADER["header"]
    # The 2-byte jump at 0x200 skips the header; its displacement is what
    # header_end() reads to know how long the header is.  source: boot.rst, jump.
    jump_disp = SETUP_HEADER["kernel_info_offset"].end - header_field.offset
    return {
        "setup_sects": PROBE_SETUP_SECTS,
        "syssize": align_up(pm_size, 16) // 16,  # source: boot.rst, 16-byte paragraphs
        "boot_flag": BOOT_FLAG_MAGIC,
        "jump": 0xEB | (jump_disp << 8),  # source: Intel SDM, EB cb = jmp rel8
        "header": HDRS_MAGIC,
        "version": PROBE_BOOT_PROTOCOL,
        "kernel_version": _VERSION_STRING_OFFSET - 0x200,  # source: boot.rst, kernel_version
        "loadflags": int(LoadFlags.LOADED_HIGH),
        "kernel_alignment": PROBE_KERNEL_ALIGNMENT,
        "relocatable_kernel": 1,
        "min_alignment": PROBE_MIN_ALIGNMENT_LOG2,
        "xloadflags": int(XLoadFlags.XLF_KERNEL_64 | XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G),
        "cmdline_size": PROBE_CMDLINE_SIZE,
        "initrd_addr_max": PROBE_INITRD_ADDR_MAX,
        "payload_offset": payload_offset,
        "payload_length": payload_length,
        "pref_address": PROBE_PREF_ADDRESS,
        "init_size": PROBE_INIT_SIZE,
    }


def _near_jump(at: int, to: int) -> bytes:
    """``jmp rel16`` at offset *at* to offset *to* (Intel SDM vol. 2: E9 cw)."""
    return b"\xe9" + ((to - (at + 3)) & 0xFFFF).to_bytes(2, "little")


def compose_bzimage(pm_code: bytes, payload: bytes, setup_code: bytes = b"") -> bytes:
    """Boot sector + setup sectors (header, version string, the 16-bit probe's
    *setup_code* at PROBE16_OFFSET) + pm code + payload.

    The setup entry's 2-byte jump (the "jump" field) ends at the header's end; a
    near jump there goes on to PROBE16_OFFSET.
    """
    payload_offset = align_up(len(pm_code), 16)
    pm = pm_code + bytes(payload_offset - len(pm_code)) + payload
    pm += bytes(align_up(len(pm), 16) - len(pm))
    if len(pm) > PROBE_INIT_SIZE:
        raise HarnessBug(f"probe protected-mode code is {len(pm)} bytes, over init_size")
    size = (PROBE_SETUP_SECTS + 1) * SECTOR_SIZE
    if PROBE16_OFFSET + len(setup_code) > size:
        raise HarnessBug(f"the 16-bit probe ({len(setup_code)} bytes) overflows the "
                         f"{PROBE_SETUP_SECTS} setup sectors")
    setup = bytearray(size)
    SETUP_HEADER.pack_into(setup, probe_header_values(len(pm), payload_offset, len(payload)))
    header_end = SETUP_HEADER["kernel_info_offset"].end
    setup[header_end : header_end + 3] = _near_jump(header_end, PROBE16_OFFSET)
    version = PROBE_VERSION_STRING + b"\0"
    if header_end + 3 > _VERSION_STRING_OFFSET:
        raise HarnessBug("the probe's jump overlaps its version string")
    setup[_VERSION_STRING_OFFSET : _VERSION_STRING_OFFSET + len(version)] = version
    if _VERSION_STRING_OFFSET + len(version) > PROBE16_OFFSET:
        raise HarnessBug("the probe's version string overlaps its 16-bit code")
    setup[PROBE16_OFFSET : PROBE16_OFFSET + len(setup_code)] = setup_code
    footprint = (align_up(PROBE16_OFFSET + len(setup_code), 16) + PROBE_CMDLINE_BYTES
                 + 2 * PROBE_RAMDISK_EDGE + E820_MAX_ENTRIES_ZEROPAGE * E820_ENTRY_SIZE
                 + PROBE16_STACK_BYTES)
    if footprint > PROBE16_FOOTPRINT_MAX:
        raise HarnessBug(f"the 16-bit probe needs {footprint:#x} bytes of its segment, over "
                         f"{PROBE16_FOOTPRINT_MAX:#x}")
    return bytes(setup) + pm


def _probe_sources() -> list[Path]:
    files = sorted(p for p in PROBE_SOURCE_DIR.rglob("*") if p.is_file())
    if not {"probe64.S", "probe16.S", "probe_pvh.S", "probe_common.inc"} <= {
            p.name for p in files}:
        raise InfrastructureError(
            f"probe sources not found under {PROBE_SOURCE_DIR} "
            "(bootfuzz must run from its source tree)"
        )
    return files


def _build_probes_into(out: Path, tools: Mapping[str, Path], include: str, ldscript: str) -> None:
    from bootfuzz.kernel.image import parse_kernel_image
    from bootfuzz.kernel.vmlinux import read_vmlinux

    (out / INCLUDE_NAME).write_text(include)
    (out / PVH_LDSCRIPT_NAME).write_text(ldscript)
    asm: list[str | os.PathLike[str]] = [tools["as"], *PROBE_ASFLAGS, "-I", out,
                                          "-I", PROBE_SOURCE_DIR]
    run_build_step([*asm, "-o", out / "probe64.o", PROBE_SOURCE_DIR / "probe64.S"],
                   "assembling the 64-bit probe")
    ld: list[str | os.PathLike[str]] = [tools["ld"]]
    run_build_step([*ld, *PROBE64_LDFLAGS, "-o", out / PROBE64_NAME, out / "probe64.o"],
                   "linking the 64-bit probe")
    run_build_step([*asm, "-o", out / "probe_pvh.o", PROBE_SOURCE_DIR / "probe_pvh.S"],
                   "assembling the PVH probe")
    run_build_step([*ld, *PROBE_PVH_LDFLAGS, "-T", out / PVH_LDSCRIPT_NAME,
                    "-o", out / PROBE_PVH_NAME, out / "probe_pvh.o"],
                   "linking the PVH probe")
    run_build_step([*asm, "-o", out / "probe16.o", PROBE_SOURCE_DIR / "probe16.S"],
                   "assembling the 16-bit probe")
    run_build_step([*ld, *PROBE16_LDFLAGS, "-o", out / PROBE16_NAME, out / "probe16.o"],
                   "linking the 16-bit probe")
    elf = (out / PROBE_PVH_NAME).read_bytes()
    image = compose_bzimage((out / PROBE64_NAME).read_bytes(), elf,
                            (out / PROBE16_NAME).read_bytes())
    # Our own loader must take it, or the probe tests nothing.
    try:
        parse_kernel_image(image, source=BZIMAGE_NAME)
        if read_vmlinux(elf).pvh_entry is None:
            raise HarnessBug("the PVH probe has no PHYS32_ENTRY note")
    except ConfigError as e:
        raise HarnessBug(f"our loader refuses the probe image: {e}") from None
    (out / BZIMAGE_NAME).write_bytes(image)


def build_probes(cache_dir: Path | None = None) -> ProbeImages:
    """Builds the probe images from harness/probes, or returns the cached build."""
    tools = {k: v for k, v in build_tools().items() if k in ("as", "ld")}
    include = probes_include()
    ldscript = pvh_linker_script()
    inputs = [("recipe", str(_RECIPE_VERSION).encode())]
    inputs += [(p.relative_to(PROBE_SOURCE_DIR).as_posix(), p.read_bytes())
               for p in _probe_sources()]
    inputs += [
        ("asflags", "\0".join(PROBE_ASFLAGS).encode()),
        ("ld64", "\0".join(PROBE64_LDFLAGS).encode()),
        ("ld16", "\0".join(PROBE16_LDFLAGS).encode()),
        ("ldpvh", "\0".join(PROBE_PVH_LDFLAGS).encode()),
        ("include", include.encode()),
        ("ldscript", ldscript.encode()),
        ("header", repr(sorted(probe_header_values(0, 0, 0).items())).encode()),
        ("version", PROBE_VERSION_STRING),
    ]
    root = cache_root(cache_dir) / "probes"
    final = cached_build(root, build_key(inputs, tools),
                         lambda out: _build_probes_into(out, tools, include, ldscript))
    return ProbeImages(
        bzimage=final / BZIMAGE_NAME,
        probe64=final / PROBE64_NAME,
        pvh_elf=final / PROBE_PVH_NAME,
        directory=final,
        probe16=final / PROBE16_NAME,
    )
