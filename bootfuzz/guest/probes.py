"""Probe guests: tiny programs entered exactly as a kernel is, that report their entry state.

A kernel's log says little about the machine state it was entered in; a probe
says everything.  ``harness/probes/probe64.S`` is the protected-mode code of a
minimal bzImage (64-bit entry at offset 0x200) and ``probe_pvh.S`` a minimal
ELF64 "vmlinux" with the Xen PHYS32_ENTRY note, carried uncompressed as that
bzImage's payload, so one image boots through both entry protocols of our
loader unchanged.  At entry each probe saves its registers, reads the boot
information through the pointer it was given, prints one line on COM1::

    BOOTFUZZ-PROBE {"v":1,"entry":"64","regs":{...},"boot_params":{...},...}

and leaves through the exit port.  :func:`check_probe` compares that line with
the BootPlan, field by field and byte by byte.

The assembler sees every offset and constant through a generated include
(:func:`probes_include`), the bzImage header is serialized from
``SETUP_HEADER``, and builds are cached like the harness's
(:func:`bootfuzz.guest.harness.cached_build`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from bootfuzz.abi.e820 import E820Entry, pack_table, unpack_table
from bootfuzz.abi.pvh import HVM_MEMMAP_TABLE_ENTRY, HVM_MODLIST_ENTRY, HVM_START_INFO
from bootfuzz.abi.structs import Struct
from bootfuzz.cache import cache_root
from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.errors import BootfuzzError, ConfigError, HarnessBug, InfrastructureError
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
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.vmlinux import XEN_ELFNOTE_PHYS32_ENTRY, XEN_NOTE_NAME
from bootfuzz.loader.layout import PAGE_SIZE, MiB, align_up
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.x86 import MSR_EFER, Cr0
from bootfuzz.run.console import run_console
from bootfuzz.transcript import GuestExit, Transcript

# --- the report's shape -----------------------------------------------------------

#: The entry protocols a probe answers (the 32-bit, 16-bit and vmlinux entries: not yet).
PROBE_ENTRIES: tuple[EntryProtocol, ...] = (EntryProtocol.BOOT64, EntryProtocol.PVH)
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

#: One setup sector holds the whole header (it ends at 0x26c) and the version string.
PROBE_SETUP_SECTS = 1
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
PROBE_VERSION_STRING = b"bootfuzz-probe (64-bit and PVH entry probe)"
#: Bump when the build recipe changes in a way the key would not see.
_RECIPE_VERSION = 1

PROBE_SOURCE_DIR = HARNESS_SOURCE_DIR / "probes"
PROBE_ASFLAGS: tuple[str, ...] = ("--64", "--fatal-warnings")
PROBE64_LDFLAGS: tuple[str, ...] = (
    "-m", "elf_x86_64", "-nostdlib", "-z", "noexecstack", "-Ttext=0", "--oformat", "binary",
)  # fmt: skip
PROBE_PVH_LDFLAGS: tuple[str, ...] = (
    "-m", "elf_x86_64", "-nostdlib", "-z", "noexecstack", "-z", "max-page-size=0x1000",
    "--build-id=none",
)  # fmt: skip

INCLUDE_NAME = "probes.inc"
PVH_LDSCRIPT_NAME = "probe_pvh.ld"
PROBE64_NAME = "probe64.bin"
PROBE_PVH_NAME = "probe_pvh.elf"
BZIMAGE_NAME = "probe.bzImage"


@dataclass(frozen=True)
class ProbeImages:
    """One cached probe build: the bzImage to boot, and its two parts."""

    bzimage: Path  # protected-mode code = probe64, payload = the PVH ELF
    probe64: Path  # the flat protected-mode code
    pvh_elf: Path
    directory: Path


def _field_macro(name: str, struct: Struct, names: Sequence[str]) -> list[str]:
    lines = [f".macro {name}"]
    for field_name in names:
        f = struct[field_name]
        if f.raw:
            raise HarnessBug(f"{struct.name}.{field_name} is not an integer field")
        lines.append(f"\tFIELD {field_name}, {f.offset:#x}, {f.size}")
    return [*lines, "\tEND_FIELDS", ".endm"]


def _regs_macro(name: str, regs: Sequence[tuple[str, int]]) -> list[str]:
    lines = [f".macro {name}"]
    lines += [f"\tFIELD {reg}, saved_{reg}-saved, {size}" for reg, size in regs]
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
    ]
    prefixes = {BOOT_PARAMS.name: "BP", HVM_START_INFO.name: "HSI", HVM_MODLIST_ENTRY.name: "MOD"}
    equ += [
        (f"{prefixes[s.name]}_{n.upper()}", s[n].offset, f"{s.name}.{n}, {size} bytes")
        for s, n, size in _ASM_OPERANDS
    ]
    lines = [
        "# Generated by bootfuzz/probes.py from bootfuzz/abi/*.py.  Do not edit.",
        *(f".equ {name}, {value:#x}  # {why}" for name, value, why in equ),
        ".macro PROBE_HEAD_64", f"\t.asciz {as_string(_head(EntryProtocol.BOOT64))}", ".endm",
        ".macro PROBE_HEAD_PVH", f"\t.asciz {as_string(_head(EntryProtocol.PVH))}", ".endm",
        ".macro XEN_NOTE_NAME", f"\t.asciz {as_string(XEN_NOTE_NAME.decode())}", ".endm",
        *_field_macro("FIELDS_BOOT_PARAMS", BOOT_PARAMS, BOOT_PARAMS_REPORTED),
        *_field_macro("FIELDS_START_INFO", HVM_START_INFO, START_INFO_REPORTED),
        *_field_macro("FIELDS_MODULE", HVM_MODLIST_ENTRY, MODULE_REPORTED),
        *_regs_macro("FIELDS_REGS_64", REGS_64),
        *_regs_macro("FIELDS_REGS_PVH", REGS_PVH),
    ]
    return "\n".join(lines) + "\n"


def pvh_linker_script() -> str:
    """One PT_LOAD for code and tables (with the note), one for data and bss, one PT_NOTE."""
    return f"""/* Generated by bootfuzz/probes.py.  Do not edit. */
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


def compose_bzimage(pm_code: bytes, payload: bytes) -> bytes:
    """Boot sector + setup sector (header, version string) + pm code + payload."""
    payload_offset = align_up(len(pm_code), 16)
    pm = pm_code + bytes(payload_offset - len(pm_code)) + payload
    pm += bytes(align_up(len(pm), 16) - len(pm))
    if len(pm) > PROBE_INIT_SIZE:
        raise HarnessBug(f"probe protected-mode code is {len(pm)} bytes, over init_size")
    setup = bytearray((PROBE_SETUP_SECTS + 1) * SECTOR_SIZE)
    SETUP_HEADER.pack_into(setup, probe_header_values(len(pm), payload_offset, len(payload)))
    version = PROBE_VERSION_STRING + b"\0"
    setup[_VERSION_STRING_OFFSET : _VERSION_STRING_OFFSET + len(version)] = version
    if len(setup) != (PROBE_SETUP_SECTS + 1) * SECTOR_SIZE:
        raise HarnessBug("the probe's setup sectors overflowed")
    return bytes(setup) + pm


def _probe_sources() -> list[Path]:
    files = sorted(p for p in PROBE_SOURCE_DIR.rglob("*") if p.is_file())
    if {p.name for p in files} < {"probe64.S", "probe_pvh.S", "probe_common.inc"}:
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
    elf = (out / PROBE_PVH_NAME).read_bytes()
    image = compose_bzimage((out / PROBE64_NAME).read_bytes(), elf)
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
    )


# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeReport:
    """One probe line, decoded.  Per entry the JSON keys differ; the meaning is shared."""

    entry: EntryProtocol
    regs: Mapping[str, int]
    gdt: bytes  # the descriptors at the GDTR's base, limit + 1 bytes
    #: boot_params fields (64) or hvm_start_info fields (pvh), by name.
    params: Mapping[str, int]
    #: hvm_modlist_entry 0 (pvh with a module); None otherwise.
    module0: Mapping[str, int] | None
    #: The raw table: E820 entries (64) or hvm_memmap_table entries (pvh).
    memory_map: bytes
    cmdline: bytes  # up to and including the NUL, at most PROBE_CMDLINE_BYTES
    ramdisk_head: bytes
    ramdisk_tail: bytes
    #: The whole zero page (64) or start_info page (pvh), as the probe read it.
    page: bytes


@dataclass(frozen=True)
class ProbeReportError:
    """A probe line that is there but cannot be read: the message says why."""

    message: str
    line: str


class _Corrupt(Exception):
    pass


#: JSON keys per entry: (params, memory map, page); pvh adds "module0".
_KEYS: dict[EntryProtocol, tuple[str, str, str]] = {
    EntryProtocol.BOOT64: ("boot_params", "e820_hex", "zero_page_hex"),
    EntryProtocol.PVH: ("start_info", "memmap_hex", "start_info_page_hex"),
}
_REGS = {EntryProtocol.BOOT64: REGS_64, EntryProtocol.PVH: REGS_PVH}
_PARAMS = {EntryProtocol.BOOT64: BOOT_PARAMS_REPORTED, EntryProtocol.PVH: START_INFO_REPORTED}
_MAP_ENTRY_SIZE = {EntryProtocol.BOOT64: E820_ENTRY_SIZE,
                   EntryProtocol.PVH: HVM_MEMMAP_TABLE_ENTRY.size}
_PAGE_SIZE = {EntryProtocol.BOOT64: BOOT_PARAMS_SIZE, EntryProtocol.PVH: PAGE_SIZE}


def _ints(obj: Any, names: Sequence[str], what: str) -> dict[str, int]:
    if not isinstance(obj, dict):
        raise _Corrupt(f"{what} is not an object")
    if list(obj) != list(names):
        raise _Corrupt(f"{what} has keys {list(obj)}, expected {list(names)}")
    out: dict[str, int] = {}
    for name, value in obj.items():
        if not isinstance(value, str) or not value.startswith("0x"):
            raise _Corrupt(f"{what}.{name} is {value!r}, not a 0x hex string")
        try:
            out[name] = int(value[2:], 16)
        except ValueError:
            raise _Corrupt(f"{what}.{name} is {value!r}, not a 0x hex string") from None
    return out


def _hex(obj: Mapping[str, Any], key: str) -> bytes:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _Corrupt(f"{key} is missing or not a string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _Corrupt(f"{key} is not an even number of hex digits") from None


def _decode(obj: Any) -> ProbeReport:
    if not isinstance(obj, dict):
        raise _Corrupt("the report is not a JSON object")
    if obj.get("v") != PROBE_FORMAT_VERSION:
        raise _Corrupt(f"format version {obj.get('v')!r}, expected {PROBE_FORMAT_VERSION}")
    entry = next((e for e in PROBE_ENTRIES if e.value == obj.get("entry")), None)
    if entry is None:
        raise _Corrupt(f"unknown probe entry {obj.get('entry')!r}")
    params_key, map_key, page_key = _KEYS[entry]
    expected = ["v", "entry", "regs", "gdt_hex", params_key,
                *(["module0"] if entry is EntryProtocol.PVH else []),
                map_key, "cmdline_hex", "ramdisk_head_hex", "ramdisk_tail_hex", page_key]
    if list(obj) != expected:
        raise _Corrupt(f"keys {list(obj)}, expected {expected}")
    module0 = None
    if entry is EntryProtocol.PVH and obj["module0"] is not None:
        module0 = _ints(obj["module0"], MODULE_REPORTED, "module0")
    memory_map = _hex(obj, map_key)
    if len(memory_map) % _MAP_ENTRY_SIZE[entry]:
        raise _Corrupt(f"{map_key} is {len(memory_map)} bytes, not whole entries")
    page = _hex(obj, page_key)
    if len(page) != _PAGE_SIZE[entry]:
        raise _Corrupt(f"{page_key} is {len(page)} bytes, not {_PAGE_SIZE[entry]}")
    return ProbeReport(
        entry=entry,
        regs=_ints(obj["regs"], [name for name, _ in _REGS[entry]], "regs"),
        gdt=_hex(obj, "gdt_hex"),
        params=_ints(obj[params_key], _PARAMS[entry], params_key),
        module0=module0,
        memory_map=memory_map,
        cmdline=_hex(obj, "cmdline_hex"),
        ramdisk_head=_hex(obj, "ramdisk_head_hex"),
        ramdisk_tail=_hex(obj, "ramdisk_tail_hex"),
        page=page,
    )


def parse_probe_report(text: str) -> ProbeReport | ProbeReportError | None:
    """The probe line in a console transcript: None if there is none, an error value
    if it is cut short, corrupt, or there is more than one (the guest ran twice)."""
    prefix = PROBE_LINE_PREFIX + " "
    lines = [line.rstrip("\r") for line in text.splitlines() if line.startswith(prefix)]
    if not lines:
        return None
    line = lines[0]
    if len(lines) > 1:
        return ProbeReportError(f"{len(lines)} probe lines: the guest ran more than once", line)
    try:
        return _decode(json.loads(line[len(prefix) :]))
    except json.JSONDecodeError as e:
        return ProbeReportError(f"not one JSON object ({e.msg} at column {e.colno})", line)
    except _Corrupt as e:
        return ProbeReportError(str(e), line)


# --- checking a report against the plan ---------------------------------------------

#: RFLAGS.IF.  source: Intel SDM vol. 1, 3.4.3.
RFLAGS_IF = 1 << 9


def _ok(name: str, ok: bool, expected: str, observed: str, detail: str = "") -> OracleResult:
    return OracleResult(name, Verdict.PASS if ok else Verdict.FAIL, expected, observed, detail)


def _exact(name: str, expected: Mapping[str, int], observed: Mapping[str, int]) -> OracleResult:
    def show(values: Mapping[str, int]) -> str:
        return " ".join(f"{k}={v:#x}" for k, v in values.items())

    wrong = [k for k in expected if observed.get(k) != expected[k]]
    shown = {k: observed[k] for k in expected if k in observed}
    return _ok(name, not wrong, show(expected), show(shown),
               f"differs: {', '.join(wrong)}" if wrong else "")


def _check_regs(plan: BootPlan, report: ProbeReport) -> list[OracleResult]:
    cpu, regs = plan.cpu, report.regs
    long_mode = report.entry is EntryProtocol.BOOT64
    names = ("rip", "rsi", "rbx", "rsp") if long_mode else ("eip", "esi", "ebx", "esp")
    planned = (cpu.rip, cpu.rsi, cpu.rbx, cpu.rsp)
    results = [_exact(f"probe-{n}", {n: v}, regs) for n, v in zip(names, planned, strict=True)]
    # CR0: every bit the plan sets, and paging exactly as planned; bits a backend
    # may add on its own (ET, NE) are shown, not judged.
    required = cpu.cr0
    cr0 = regs["cr0"]
    results.append(_ok(
        "probe-cr0", cr0 & required == required and (cr0 & Cr0.PG) == (required & Cr0.PG),
        f"bits {required:#x} set, PG {'set' if required & Cr0.PG else 'clear'}", f"{cr0:#x}",
    ))
    if long_mode:
        results.append(_exact("probe-cr3", {"cr3": cpu.cr3}, regs))
    results.append(_exact("probe-cr4", {"cr4": cpu.cr4}, regs))
    if long_mode:
        results.append(_exact("probe-efer", {"efer": cpu.efer}, regs))
    results.append(_exact("probe-cs", {"cs": cpu.code_selector}, regs))
    results.append(_exact("probe-data-segments", {s: cpu.data_selector for s in ("ds", "es", "ss")},
                          regs))
    try:
        gdt = plan.blob("gdt").data or b""
    except KeyError:
        gdt = b""
    want = gdt[: min(cpu.gdt_limit + 1, PROBE_GDT_MAX_BYTES)]
    results.append(_ok("probe-gdt", report.gdt == want, want.hex() or "(no GDT planned)",
                       report.gdt.hex(), "the descriptors at the GDTR's base"))
    results.append(_exact("probe-gdtr", {"gdt_base": cpu.gdt_base, "gdt_limit": cpu.gdt_limit},
                          regs))
    flags_name = "rflags" if long_mode else "eflags"
    flags = regs[flags_name]
    results.append(_ok("probe-interrupts", not flags & RFLAGS_IF, f"{flags_name}.IF clear",
                       f"{flags_name}={flags:#x} (IF {'set' if flags & RFLAGS_IF else 'clear'})"))
    return results


def _show_bytes(data: bytes) -> str:
    return repr(data) if len(data) <= 96 else f"{len(data)} bytes"


def _check_page(name: str, expected: bytes, observed: bytes, struct: Struct) -> OracleResult:
    if expected == observed:
        return _ok(name, True, f"{len(expected)} bytes as planned", f"{len(observed)} bytes equal")
    diff = [i for i, (a, b) in enumerate(zip(expected, observed, strict=False)) if a != b]
    where = []
    for offset in diff[:8]:
        owner = next((f.name for f in struct if f.offset <= offset < f.end), "?")
        where.append(f"{offset:#x} ({owner}): {expected[offset]:#04x} -> {observed[offset]:#04x}")
    more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
    return _ok(name, False, f"{len(expected)} bytes as planned",
               f"{len(diff)} bytes differ", "; ".join(where) + more)


def _show_entries(entries: Sequence[E820Entry]) -> str:
    return " ".join(f"[{e.addr:#x}+{e.size:#x} {e.type}]" for e in entries)


def _memmap_bytes(entries: Sequence[E820Entry]) -> bytes:
    return b"".join(
        HVM_MEMMAP_TABLE_ENTRY.build({"addr": e.addr, "size": e.size, "type": e.type})
        for e in entries
    )


def _memmap_entries(raw: bytes) -> list[E820Entry]:
    size = HVM_MEMMAP_TABLE_ENTRY.size
    out = []
    for i in range(0, len(raw) - len(raw) % size, size):
        v = HVM_MEMMAP_TABLE_ENTRY.parse(raw, i)
        out.append(E820Entry(int(v["addr"]), int(v["size"]), int(v["type"])))
    return out


def initrd_edges(plan: BootPlan) -> tuple[bytes, bytes]:
    """The first and last PROBE_RAMDISK_EDGE bytes of the planned initrd (empty without one)."""
    if plan.initrd is None:
        return b"", b""
    blob = plan.blob("initrd")
    n = min(blob.size, PROBE_RAMDISK_EDGE)
    if blob.data is not None:
        return blob.data[:n], blob.data[blob.size - n : blob.size]
    if blob.path is None:
        raise HarnessBug("initrd blob has neither data nor path")
    try:
        with blob.path.open("rb") as f:
            head = f.read(n)
            f.seek(blob.size - n)
            tail = f.read(n)
    except OSError as e:
        raise InfrastructureError(f"cannot read the initrd {blob.path}: {e.strerror}") from None
    return head, tail


def check_probe(
    plan: BootPlan, report: ProbeReport, *, edges: tuple[bytes, bytes] | None = None
) -> list[OracleResult]:
    """The probe's report against the plan it was booted with: one result per aspect.

    *edges* are the initrd's first and last bytes; by default they are read from
    the plan's initrd file (:func:`initrd_edges`).
    """
    entry = plan.case.entry
    if report.entry is not entry:
        return [_ok("probe-entry", False, entry.value, report.entry.value,
                    "the probe answered through another entry than the plan's")]
    results = [_ok("probe-entry", True, entry.value, report.entry.value)]
    results += _check_regs(plan, report)
    if entry is EntryProtocol.BOOT64:
        struct: Struct = BOOT_PARAMS
        page = plan.zero_page
        results.append(_exact("probe-boot-params",
                              {n: int(BOOT_PARAMS[n].decode(page)) for n in BOOT_PARAMS_REPORTED},
                              report.params))
        results.append(_check_page("probe-zero-page", page, report.page, struct))
        want_map = pack_table(plan.e820)
        seen_map = unpack_table(report.memory_map, len(report.memory_map) // E820_ENTRY_SIZE)
    else:
        page = plan.blob("pvh_start_info").data or b""
        results.append(_exact(
            "probe-start-info",
            {n: int(HVM_START_INFO[n].decode(page)) for n in START_INFO_REPORTED},
            report.params,
        ))
        results.append(_check_page("probe-start-info-page", page, report.page, HVM_START_INFO))
        results.append(_check_module0(plan, report))
        want_map = _memmap_bytes(plan.e820)
        seen_map = _memmap_entries(report.memory_map)
    results.append(_ok("probe-memory-map", report.memory_map == want_map,
                       _show_entries(plan.e820), _show_entries(seen_map)))
    want_cmdline = (plan.cmdline + b"\0")[:PROBE_CMDLINE_BYTES]
    results.append(_ok("probe-cmdline", report.cmdline == want_cmdline,
                       _show_bytes(want_cmdline), _show_bytes(report.cmdline)))
    head, tail = edges if edges is not None else initrd_edges(plan)
    results.append(_ok(
        "probe-ramdisk", (report.ramdisk_head, report.ramdisk_tail) == (head, tail),
        f"head {head.hex() or '-'} tail {tail.hex() or '-'}",
        f"head {report.ramdisk_head.hex() or '-'} tail {report.ramdisk_tail.hex() or '-'}",
    ))
    return results


def _check_module0(plan: BootPlan, report: ProbeReport) -> OracleResult:
    if plan.initrd is None:
        return _ok("probe-module0", report.module0 is None, "no module",
                   "no module" if report.module0 is None else str(dict(report.module0)))
    want = {"paddr": plan.initrd.addr, "size": plan.initrd.size, "cmdline_paddr": 0,
            "reserved": 0}
    if report.module0 is None:
        return _ok("probe-module0", False, str(want), "no module")
    return _exact("probe-module0", want, report.module0)


# --- running a probe ----------------------------------------------------------------

#: The probe's command line: short enough to be read whole, NUL included.
PROBE_CMDLINE = 'bootfuzz.probe=1 quoted="a b c"'
#: A small initrd, so the ramdisk fields and the module are exercised; gzip ends in
#: its CRC and size, so the tail the probe reads is distinctive (not cpio padding).
PROBE_INITRD = InitrdSpec(size=4096, compression=Compression.GZIP, seed=7)
PROBE_TIMEOUT = 120.0  # nested KVM is slow; a probe takes well under a second on TCG
PROBE_SILENCE_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProbeResult:
    plan: BootPlan
    transcript: Transcript
    guest_exit: GuestExit
    report: ProbeReport | ProbeReportError | None
    oracles: tuple[OracleResult, ...]
    verdict: Verdict
    run_dir: Path


def _exit_oracle(report: ProbeReport | ProbeReportError | None, guest_exit: GuestExit,
                 detail: str) -> OracleResult:
    expected = "one probe report, then power-off through the exit port"
    if isinstance(report, ProbeReportError):
        return _ok("probe-report", False, expected, f"corrupt report: {report.message}", detail)
    if report is None:
        return _ok("probe-report", False, expected,
                   f"no probe report; guest exit: {guest_exit.value}", detail)
    return _ok("probe-report", guest_exit is GuestExit.POWER_OFF, expected,
               f"report, then {guest_exit.value}", detail)


def run_probe(
    entry: EntryProtocol | str,
    backend: str,
    memory: int,
    run_dir: Path | None = None,
    *,
    cmdline: str = PROBE_CMDLINE,
    initrd: InitrdSpec | None = PROBE_INITRD,
    timeout: float = PROBE_TIMEOUT,
    silence_timeout: float = PROBE_SILENCE_TIMEOUT,
) -> ProbeResult:
    """Plan a probe boot with our loader, run it on *backend*, check the report."""
    from bootfuzz.guest.harness import build_harness
    from bootfuzz.guest.initrd import cached_initrd
    from bootfuzz.kernel.image import load_kernel_image
    from bootfuzz.loader.planner import plan_boot
    from bootfuzz.run.backends import get_backend
    from bootfuzz.run.boot import new_run_dir

    chosen = next((e for e in PROBE_ENTRIES if e.value == str(entry)), None)
    if chosen is None:
        known = ", ".join(e.value for e in PROBE_ENTRIES)
        raise ConfigError(f"no probe answers the entry {str(entry)!r} (probes exist for: {known})")
    entry = chosen
    be = get_backend(backend)
    platform = be.platform(memory)
    be.check_available()
    images = build_probes()
    harness = build_harness()
    image = load_kernel_image(images.bzimage)
    built = cached_initrd(initrd, harness.agent) if initrd is not None else None
    case = BootCase(kernel=str(images.bzimage), memory=memory, cmdline=cmdline, initrd=initrd,
                    entry=entry, backend=backend)
    plan = plan_boot(case, image, platform, built)
    run_dir = run_dir or new_run_dir(case)
    argv = be.prepare(plan, harness, run_dir)
    (run_dir / "command.json").write_text(json.dumps(argv, indent=1) + "\n")
    try:
        transcript = run_console(argv, timeout=timeout, silence_timeout=silence_timeout,
                                 log_path=run_dir / "console.log")
    finally:
        for path in run_dir.glob("*.bin"):
            path.unlink(missing_ok=True)
    from bootfuzz.run.exits import classify_exit

    guest_exit = classify_exit(transcript, be.exit_statuses)
    report = parse_probe_report(transcript.text)
    results = [_exit_oracle(report, guest_exit, transcript.end_detail)]
    if isinstance(report, ProbeReport):
        results += check_probe(plan, report)
    verdicts = {r.verdict for r in results}
    verdict = (Verdict.FAIL if Verdict.FAIL in verdicts
               else Verdict.UNKNOWN if Verdict.UNKNOWN in verdicts else Verdict.PASS)
    return ProbeResult(plan, transcript, guest_exit, report, tuple(results), verdict, run_dir)


def format_results(result: ProbeResult) -> str:
    width = max(len(r.name) for r in result.oracles)
    lines = []
    for r in result.oracles:
        lines.append(f"{r.name:<{width}}  {r.verdict.value:<7}  expected: {r.expected}")
        if r.verdict is not Verdict.PASS or r.observed != r.expected:
            lines.append(f"{'':<{width}}  {'':<7}  observed: {r.observed}")
        if r.detail:
            lines.append(f"{'':<{width}}  {'':<7}  detail:   {r.detail}")
    lines.append(f"verdict: {result.verdict.value}  (run dir {result.run_dir})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootfuzz.guest.probes run|build``."""
    from bootfuzz.units import parse_size

    parser = argparse.ArgumentParser(prog="python -m bootfuzz.guest.probes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="boot a probe through our loader and check its report")
    run.add_argument("--entry", choices=[e.value for e in PROBE_ENTRIES], default="64")
    run.add_argument("--backend", default="qemu-tcg")
    run.add_argument("--mem", default="256M", help="guest RAM (default 256M)")
    run.add_argument("--no-initrd", action="store_true", help="boot without an initrd")
    run.add_argument("--run-dir", type=Path, default=None)
    run.add_argument("--json", action="store_true", help="print the oracles as JSON")
    build = sub.add_parser("build", help="build (or find) the probe images, print their paths")
    build.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            images = build_probes(args.cache_dir)
            print(f"bzimage={images.bzimage}\nprobe64={images.probe64}\npvh_elf={images.pvh_elf}")
            return 0
        memory = parse_size(args.mem)
        if args.run_dir is not None:
            args.run_dir.mkdir(parents=True, exist_ok=True)
        result = run_probe(args.entry, args.backend, memory, args.run_dir,
                           initrd=None if args.no_initrd else PROBE_INITRD)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    except (InfrastructureError, HarnessBug, OSError) as e:
        print(e, file=sys.stderr)
        return 3
    except BootfuzzError as e:  # pragma: no cover - the tree has no other branch
        print(e, file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps({
            "verdict": result.verdict.value,
            "oracles": [{"name": r.name, "verdict": r.verdict.value, "expected": r.expected,
                         "observed": r.observed, "detail": r.detail} for r in result.oracles],
        }, indent=1))
    else:
        print(format_results(result))
    return 0 if result.verdict is Verdict.PASS else 1


if __name__ == "__main__":
    sys.exit(main())
