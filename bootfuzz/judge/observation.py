"""Turn a console transcript into a structured :class:`Observation`.

Pure: text in, frozen record out, no exceptions for strange input.  The oracles
compare this record with the loader's plan, so every field keeps the kernel's own
numbers (inclusive ends as printed) and the first occurrence of each message;
interpretation belongs to the oracles.  Formats: boot-protocol.md section 4.

A transcript of a guest that reset holds two boots; the record describes the
first one and only counts the later ``Linux version`` lines.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bootfuzz.abi.e820 import kernel_type_from_words
from bootfuzz.guest.harness import (
    AGENT_FORMAT_VERSION,
    AGENT_LINE_PREFIX,
    FIRMWARE_BAD_MAGIC_MESSAGE,
    FIRMWARE_BAD_MODE_MESSAGE,
    FIRMWARE_ENTERING_MESSAGE,
)

#: Our guest agent prints exactly one line starting with this, then powers off.
AGENT_PREFIX = AGENT_LINE_PREFIX + " "
#: Our firmware stub's last line before it jumps to the kernel.
FIRMWARE_ENTERED = FIRMWARE_ENTERING_MESSAGE.rstrip("\n")
#: Our firmware stub refused the hand-off block and halted.
FIRMWARE_ERRORS = tuple(
    m.rstrip("\n") for m in (FIRMWARE_BAD_MAGIC_MESSAGE, FIRMWARE_BAD_MODE_MESSAGE)
)
SHA256_SIZE = 32


class MapKind(enum.StrEnum):
    """Which printed copy of the E820 table a line belongs to (the kernel's prefix)."""

    BIOS = "BIOS-e820"  # also the BIOS-88 / BIOS-e801 / Xen fallbacks
    EXTENDED = "extended"  # re-print after each SETUP_E820_EXT node
    SETUP_DATA = "reserve setup_data"
    USER = "user"  # after mem= / memmap=
    MODIFIED = "modified"  # after an MTRR trim


class UnpackStart(enum.StrEnum):
    """The two spellings of the initramfs unpack message (BLK_DEV_RAM y/m vs n)."""

    TRYING = "Trying to unpack rootfs image as initramfs..."
    UNPACKING = "Unpacking initramfs..."


@dataclass(frozen=True)
class E820Line:
    start: int
    end: int  # inclusive, as printed
    type_text: str

    @property
    def type(self) -> int | None:
        """The E820 type number the words stand for (RAM for "usable")."""
        return kernel_type_from_words(self.type_text)


@dataclass(frozen=True)
class MemRange:
    start: int
    end: int  # inclusive, as printed


@dataclass(frozen=True)
class RamdiskMove:
    source: MemRange
    dest: MemRange


@dataclass(frozen=True)
class AgentPayload:
    size: int
    sha256: bytes
    expected: bytes | None  # None when the agent was not told what to expect


@dataclass(frozen=True)
class MemmapEntry:
    """One /sys/firmware/memmap/<n> directory."""

    start: int
    end: int  # inclusive, as sysfs shows it
    type: str


@dataclass(frozen=True)
class AgentSetupData:
    """One /sys/kernel/boot_params/setup_data/<n> directory, as the kernel shows it."""

    type: int  # the "type" file (for an indirect node, the setup_indirect's type)
    data: bytes  # the "data" file: the payload, or an indirect node's target
    truncated: bool = False  # the agent stopped reading "data" at its cap


@dataclass(frozen=True)
class AgentReport:
    version: int
    cmdline: bytes  # /proc/cmdline, exactly
    payload: AgentPayload | None
    memmap: tuple[MemmapEntry, ...]
    boot_params: bytes  # /sys/kernel/boot_params/data (4096 bytes unless errors say why)
    errors: tuple[str, ...]  # what the agent itself could not read
    #: The kernel's setup_data nodes in chain order (an agent without the key: none).
    setup_data: tuple[AgentSetupData, ...] = ()


@dataclass(frozen=True)
class Observation:
    e820_tables: Mapping[MapKind, tuple[E820Line, ...]]
    bios_map_prefix: str | None  # "BIOS-e820", or the "BIOS-88"/"BIOS-e801" fallback
    command_line: str | None
    kernel_command_line: str | None
    ramdisk: MemRange | None
    ramdisk_allocated: MemRange | None
    ramdisk_move: RamdiskMove | None
    ramdisk_no_room_size: int | None  # "Cannot find place for new RAMDISK of size N"
    unpack_start: UnpackStart | None
    unpack_failure: str | None  # "Initramfs unpacking failed: <reason>"
    not_initramfs: str | None  # "rootfs image is not initramfs (<reason>)"
    initrd_freed_kib: int | None
    linux_version_count: int
    linux_version: str | None
    panics: tuple[str, ...]
    oopses: tuple[str, ...]  # first line of each BUG/Oops/GPF report
    init_process: str | None
    last_pfn: int | None
    max_arch_pfn: int | None
    kernel_not_ram: bool  # ".text .data .bss are not marked as E820_TYPE_RAM!"
    firmware_entered: bool
    agent: AgentReport | None
    agent_error: str | None

    @property
    def bios_e820(self) -> tuple[E820Line, ...]:
        return self.e820_tables.get(MapKind.BIOS, ())


# A printk timestamp (and optional PRINTK_CALLER tag); anything before it on the
# same line is noise such as the BIOS's escape sequences.
_PRINTK_PREFIX = re.compile(r"^.*?\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])? ")
_MEM = r"\[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]"
_MAP_PREFIXES = "|".join(["BIOS-e820", "BIOS-88", "BIOS-e801", "Xen", *(k.value for k in MapKind)])
_E820_LINE = re.compile(rf"({_MAP_PREFIXES}): {_MEM} (.*)")
_COMMAND_LINE = re.compile(r"Command line: (.*)")
_KERNEL_COMMAND_LINE = re.compile(r"Kernel command line: (.*)")
_RAMDISK = re.compile(rf"RAMDISK: {_MEM}$")
_RAMDISK_ALLOCATED = re.compile(rf"Allocated new RAMDISK: {_MEM}$")
_RAMDISK_MOVE = re.compile(rf"Move RAMDISK from {_MEM} to {_MEM}$")
_RAMDISK_NO_ROOM = re.compile(r"Cannot find place for new RAMDISK of size (-?\d{1,20})")
_UNPACK_FAILED = re.compile(r"Initramfs unpacking failed: (.*)")
_NOT_INITRAMFS = re.compile(r"rootfs image is not initramfs \((.*)\); looks like an initrd")
_FREEING_INITRD = re.compile(r"Freeing initrd memory: (\d{1,20})K")
_LINUX_VERSION = re.compile(r"Linux version .*")
_PANIC = re.compile(r"Kernel panic - not syncing: (.*)")
#: The panic a kernel with no usable /init in its initramfs ends in (no root= either).
#: source: init/do_mounts.c, mount_block_root(): "VFS: Unable to mount root fs on %s".
NO_ROOT_PANIC = "VFS: Unable to mount root fs"
#: The first line of a kernel oops report.  source: arch/x86/kernel/dumpstack.c
#: (__die_header), traps.c, lib/bug.c, arch/x86/mm/fault.c.
OOPS_REGEX = r"(?:kernel BUG at |BUG: |Oops: |general protection fault|invalid opcode: )"
_OOPS = re.compile(OOPS_REGEX)
_RUN_INIT = re.compile(r"Run (.+) as init process")
_LAST_PFN = re.compile(r"last_pfn = (0x[0-9a-f]+) max_arch_pfn = (0x[0-9a-f]+)")
_KERNEL_NOT_RAM = ".text .data .bss are not marked as E820_TYPE_RAM!"


def line_body(line: str) -> str:
    """The message part of a console line: the printk timestamp and noise before it removed."""
    return _PRINTK_PREFIX.sub("", line, count=1)


def _range(m: re.Match[str], first: int) -> MemRange:
    return MemRange(int(m.group(first), 16), int(m.group(first + 1), 16))


def parse_transcript(text: str) -> Observation:
    found: dict[str, Any] = {
        "bios_map_prefix": None, "command_line": None, "kernel_command_line": None,
        "ramdisk": None, "ramdisk_allocated": None, "ramdisk_move": None,
        "ramdisk_no_room_size": None, "unpack_start": None, "unpack_failure": None,
        "not_initramfs": None, "initrd_freed_kib": None, "linux_version": None,
        "init_process": None, "last_pfn": None, "max_arch_pfn": None,
        "kernel_not_ram": False, "firmware_entered": False, "agent": None, "agent_error": None,
    }  # fmt: skip

    def first(name: str, value: object) -> None:
        if found[name] is None:
            found[name] = value

    tables: dict[MapKind, list[E820Line]] = {}
    previous_map: MapKind | None = None  # the map the previous line belonged to
    panics: list[str] = []
    oopses: list[str] = []
    versions = 0
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r")
        if line.startswith(AGENT_PREFIX):  # user space: no timestamp, and never stripped
            if found["agent"] is None and found["agent_error"] is None:
                found["agent"], found["agent_error"] = _parse_agent(line[len(AGENT_PREFIX) :])
            continue
        body = line_body(line)
        if _LINUX_VERSION.match(body):
            versions += 1
            first("linux_version", body)
        if versions > 1:
            continue
        current_map = None
        if m := _E820_LINE.match(body):
            prefix = m.group(1)
            current_map = MapKind.BIOS if prefix.startswith(("BIOS", "Xen")) else MapKind(prefix)
            if current_map is not previous_map:  # each print is the whole table: keep the last
                tables[current_map] = []
            if current_map is MapKind.BIOS:
                found["bios_map_prefix"] = prefix
            tables[current_map].append(
                E820Line(int(m.group(2), 16), int(m.group(3), 16), m.group(4))
            )
        elif m := _COMMAND_LINE.match(body):
            first("command_line", m.group(1))
        elif m := _KERNEL_COMMAND_LINE.match(body):
            first("kernel_command_line", m.group(1))
        elif m := _RAMDISK.match(body):
            first("ramdisk", _range(m, 1))
        elif m := _RAMDISK_ALLOCATED.match(body):
            first("ramdisk_allocated", _range(m, 1))
        elif m := _RAMDISK_MOVE.match(body):
            first("ramdisk_move", RamdiskMove(_range(m, 1), _range(m, 3)))
        elif body in (UnpackStart.TRYING, UnpackStart.UNPACKING):
            first("unpack_start", UnpackStart(body))
        elif m := _UNPACK_FAILED.match(body):
            first("unpack_failure", m.group(1))
        elif m := _NOT_INITRAMFS.match(body):
            first("not_initramfs", m.group(1))
        elif m := _FREEING_INITRD.match(body):
            first("initrd_freed_kib", int(m.group(1)))
        elif m := _PANIC.match(body):
            panics.append(m.group(1))
            if no_room := _RAMDISK_NO_ROOM.fullmatch(m.group(1)):
                first("ramdisk_no_room_size", int(no_room.group(1)))
        elif _OOPS.match(body):
            oopses.append(body)
        elif m := _RUN_INIT.match(body):
            first("init_process", m.group(1))
        elif m := _LAST_PFN.match(body):
            first("last_pfn", int(m.group(1), 16))
            first("max_arch_pfn", int(m.group(2), 16))
        elif body == _KERNEL_NOT_RAM:
            found["kernel_not_ram"] = True
        elif body.startswith(FIRMWARE_ENTERED):
            found["firmware_entered"] = True
        previous_map = current_map
    return Observation(
        e820_tables={k: tuple(v) for k, v in tables.items()},
        linux_version_count=versions,
        panics=tuple(panics),
        oopses=tuple(oopses),
        **found,
    )


class _Corrupt(ValueError):
    """The agent line is there but unreadable (truncated, interleaved, wrong shape)."""


def _parse_agent(text: str) -> tuple[AgentReport | None, str | None]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return None, f"agent report is not JSON: {e}"
    try:
        return _agent_report(doc), None
    except _Corrupt as e:
        return None, f"agent report: {e}"


def _get(doc: object, key: str, kind: type, where: str = "") -> Any:
    if not isinstance(doc, dict):
        raise _Corrupt(f"{where or 'the report'} is not an object")
    if key not in doc:
        raise _Corrupt(f"{where}{key!r} is missing")
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Corrupt(f"{where}{key!r} is not of type {kind.__name__}")
    return value


def _hex(value: str, what: str, size: int | None = None) -> bytes:
    if not re.fullmatch(r"(?:[0-9a-fA-F]{2})*", value):
        raise _Corrupt(f"{what} is not a hex string")
    data = bytes.fromhex(value)
    if size is not None and len(data) != size:
        raise _Corrupt(f"{what} is {len(data)} bytes, expected {size}")
    return data


def _address(value: object) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"0x[0-9a-fA-F]+", value):
        raise _Corrupt(f"memmap address {value!r} is not 0x-prefixed hex")
    return int(value, 16)


def _setup_data(entries: list[object]) -> tuple[AgentSetupData, ...]:
    nodes = []
    for i, entry in enumerate(entries):
        where = f"setup_data[{i}] "
        if not isinstance(entry, dict):
            raise _Corrupt(f"{where}is not an object")
        kind = _get(entry, "type", str, where)
        if not re.fullmatch(r"0x[0-9a-fA-F]{1,8}", kind):
            raise _Corrupt(f"{where}type {kind!r} is not a 0x-prefixed 32-bit hex number")
        truncated = entry.get("truncated", False)
        if not isinstance(truncated, bool):
            raise _Corrupt(f"{where}'truncated' is not of type bool")
        data = _hex(_get(entry, "data", str, where), f"{where}data")
        nodes.append(AgentSetupData(int(kind, 16), data, truncated))
    return tuple(nodes)


def _agent_report(doc: object) -> AgentReport:
    version = _get(doc, "v", int)
    if version != AGENT_FORMAT_VERSION:
        raise _Corrupt(f"version {version}, this parser reads {AGENT_FORMAT_VERSION}")
    errors = _get(doc, "errors", list)
    if not all(isinstance(e, str) for e in errors):
        raise _Corrupt("'errors' holds a non-string")
    for key in ("cmdline", "boot_params"):  # null: the agent could not read the file
        if _get(doc, key, object) is None:
            raise _Corrupt(f"the agent could not read {key}: {'; '.join(errors)}")
    payload = None
    if _get(doc, "payload", object) is not None:
        raw = _get(doc, "payload", dict)
        size = _get(raw, "size", int, "payload ")
        if size < 0:
            raise _Corrupt(f"payload size {size} is negative")
        expected = _get(raw, "expected", str, "payload ")
        payload = AgentPayload(
            size=size,
            sha256=_hex(_get(raw, "sha256", str, "payload "), "payload sha256", SHA256_SIZE),
            expected=_hex(expected, "payload expected", SHA256_SIZE) if expected else None,
        )
    memmap = []
    for entry in _get(doc, "memmap", list):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str)):
            raise _Corrupt(f"memmap entry {entry!r} is not [start, end, type]")
        memmap.append(MemmapEntry(_address(entry[0]), _address(entry[1]), entry[2]))
    return AgentReport(
        version=version,
        cmdline=_hex(_get(doc, "cmdline", str), "cmdline"),
        payload=payload,
        memmap=tuple(memmap),
        # Any length: the agent itself reports a short read in "errors".
        boot_params=_hex(_get(doc, "boot_params", str), "boot_params"),
        errors=tuple(errors),
        # Added to format 1 later: an older agent's report simply has no nodes.
        setup_data=_setup_data(_get(doc, "setup_data", list))
        if isinstance(doc, dict) and "setup_data" in doc else (),
    )
