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
from bootfuzz.errors import BootfuzzError
from bootfuzz.guest.protocol import AGENT_FORMAT_VERSION
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.efi_map import EfiDescriptor, parse_efi_memmap
from bootfuzz.judge.patterns import (
    AGENT_PREFIX,
    FIRMWARE_ENTERED,
    LINUX_VERSION,
    OOPS,
    PANIC,
    WARNING,
    line_body,
)
from bootfuzz.kernel.capabilities import UnpackStart

SHA256_SIZE = 32


class MapKind(enum.StrEnum):
    """Which printed copy of the E820 table a line belongs to (the kernel's prefix)."""

    BIOS = "BIOS-e820"  # also the BIOS-88 / BIOS-e801 / Xen fallbacks
    EXTENDED = "extended"  # re-print after each SETUP_E820_EXT node
    SETUP_DATA = "reserve setup_data"
    USER = "user"  # after mem= / memmap=
    MODIFIED = "modified"  # after an MTRR trim


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
class PrintkRecord:
    """A kernel message's first console line and the lines after it, exact bytes.

    A message with newlines is one printk record shown as several lines, each with
    the first one's prefix (bootfuzz.judge.printk_model says which lines are its).
    """

    prefix: bytes  # what came before the message on its line: the printk timestamp
    first: bytes  # the message on its first line, after the text the parser matched
    following: tuple[bytes, ...]  # the console lines after it, whole ("\r" stripped)


#: The most console lines one record can fill (an empty line takes at least its
#: newline in printk's 2048-byte console buffer), so the most kept after a message.
MAX_RECORD_LINES = 2048


@dataclass(frozen=True)
class Observation:
    e820_tables: Mapping[MapKind, tuple[E820Line, ...]]
    bios_map_prefix: str | None  # "BIOS-e820", or the "BIOS-88"/"BIOS-e801" fallback
    command_line: str | None  # the first line's message, decoded for display
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
    #: The "Command line: " message exactly, with the lines printk may have split it into.
    command_line_record: PrintkRecord | None = None
    #: The same of start_kernel's "Kernel command line: " (the one device-tree kernels print).
    kernel_command_line_record: PrintkRecord | None = None
    #: The UEFI memory map the kernel printed (efi=debug on an EFI-stub boot), in order.
    efi_memmap: tuple[EfiDescriptor, ...] = ()
    #: The first line of each WARN() report ("WARNING: CPU: 0 PID: 1 at ...").
    warnings: tuple[str, ...] = ()

    @property
    def bios_e820(self) -> tuple[E820Line, ...]:
        return self.e820_tables.get(MapKind.BIOS, ())


_MEM = r"\[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]"
_MAP_PREFIXES = "|".join(["BIOS-e820", "BIOS-88", "BIOS-e801", "Xen", *(k.value for k in MapKind)])
_E820_LINE = re.compile(rf"({_MAP_PREFIXES}): {_MEM} (.*)")
COMMAND_LINE_PREFIX = "Command line: "
_COMMAND_LINE = re.compile(re.escape(COMMAND_LINE_PREFIX) + "(.*)")
KERNEL_COMMAND_LINE_PREFIX = "Kernel command line: "
_KERNEL_COMMAND_LINE = re.compile(re.escape(KERNEL_COMMAND_LINE_PREFIX) + "(.*)")
_RAMDISK = re.compile(rf"RAMDISK: {_MEM}$")
_RAMDISK_ALLOCATED = re.compile(rf"Allocated new RAMDISK: {_MEM}$")
_RAMDISK_MOVE = re.compile(rf"Move RAMDISK from {_MEM} to {_MEM}$")
_RAMDISK_NO_ROOM = re.compile(r"Cannot find place for new RAMDISK of size (-?\d{1,20})")
_UNPACK_FAILED = re.compile(r"Initramfs unpacking failed: (.*)")
_NOT_INITRAMFS = re.compile(r"rootfs image is not initramfs \((.*)\); looks like an initrd")
_FREEING_INITRD = re.compile(r"Freeing initrd memory: (\d{1,20})K")
_RUN_INIT = re.compile(r"Run (.+) as init process")
_LAST_PFN = re.compile(r"last_pfn = (0x[0-9a-f]+) max_arch_pfn = (0x[0-9a-f]+)")
_KERNEL_NOT_RAM = ".text .data .bss are not marked as E820_TYPE_RAM!"


def _range(m: re.Match[str], first: int) -> MemRange:
    return MemRange(int(m.group(first), 16), int(m.group(first + 1), 16))


def _lines(console: str | bytes) -> tuple[list[str], list[bytes] | None]:
    """The console's lines as text ("\r" before a newline stripped) and, for a bytes
    console, as the exact bytes."""
    if isinstance(console, str):
        return [line.rstrip("\r") for line in console.split("\n")], None
    raw = [line.rstrip(b"\r") for line in console.split(b"\n")]
    return [line.decode("utf-8", "replace") for line in raw], raw


def _exact(text: str) -> bytes:
    """The bytes a text line stands for (a surrogate escape is its byte)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        return text.encode("utf-8", "replace")


def _printk_record(texts: list[str], raw: list[bytes] | None, index: int,
                   prefix_len: int) -> PrintkRecord:
    """The record whose first line is line *index*, its message after *prefix_len*
    characters of the body."""
    line = raw[index] if raw is not None else _exact(texts[index])
    exact = line.decode("utf-8", "surrogateescape")
    body = line_body(exact)
    end = index + 1 + MAX_RECORD_LINES
    following = raw[index + 1 : end] if raw is not None else [
        _exact(t) for t in texts[index + 1 : end]]
    return PrintkRecord(
        prefix=_exact(exact[: len(exact) - len(body)]),
        first=_exact(body[prefix_len:]),
        following=tuple(following),
    )


def parse_transcript(console: str | bytes) -> Observation:
    """The observation of a console transcript.

    Give the bytes the backend printed (``Transcript.raw``) where a message is judged
    byte for byte (the command line, which may hold any byte); text (``Transcript.text``)
    serves every other field alike.
    """
    texts, raw = _lines(console)
    record: PrintkRecord | None = None
    kernel_record: PrintkRecord | None = None
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
    warnings: list[str] = []
    versions = 0
    for index, line in enumerate(texts):
        if line.startswith(AGENT_PREFIX):  # user space: no timestamp, and never stripped
            if found["agent"] is None and found["agent_error"] is None:
                found["agent"], found["agent_error"] = _parse_agent(line[len(AGENT_PREFIX) :])
            continue
        body = line_body(line)
        if LINUX_VERSION.regex.match(body):
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
            if found["command_line"] is None:
                record = _printk_record(texts, raw, index, len(COMMAND_LINE_PREFIX))
            first("command_line", m.group(1))
        elif m := _KERNEL_COMMAND_LINE.match(body):
            if found["kernel_command_line"] is None:
                kernel_record = _printk_record(texts, raw, index,
                                               len(KERNEL_COMMAND_LINE_PREFIX))
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
        elif m := PANIC.regex.match(body):
            panics.append(m.group(1))
            if no_room := _RAMDISK_NO_ROOM.fullmatch(m.group(1)):
                first("ramdisk_no_room_size", int(no_room.group(1)))
        elif OOPS.regex.match(body):
            oopses.append(body)
        elif WARNING.regex.match(body):
            warnings.append(body)
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
        warnings=tuple(warnings),
        command_line_record=record,
        kernel_command_line_record=kernel_record,
        efi_memmap=parse_efi_memmap(texts),
        **found,
    )


class _Corrupt(BootfuzzError):
    """The agent line is there but unreadable (truncated, interleaved, wrong shape)."""


#: Hex digits in whole bytes, nothing else (bytes.fromhex would also take spaces).
_HEX_BYTES = re.compile(r"(?:[0-9a-fA-F]{2})*")
#: A memmap address as the agent prints sysfs's "start"/"end" files.
_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")
#: A setup_data type as the agent prints it: the u32 type field in hex.
_SETUP_TYPE = re.compile(r"0x[0-9a-fA-F]{1,8}")
_ROOT = "(top level)"


def _parse_agent(text: str) -> tuple[AgentReport | None, str | None]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        return None, f"agent report is not JSON: {e}"
    try:
        return _agent_report(JsonReader("agent report", error=_Corrupt), doc), None
    except _Corrupt as e:
        return None, str(e.args[0])  # "agent report: <field path>: <what is wrong>"


def _hex(r: JsonReader, value: object, path: str, size: int | None = None) -> bytes:
    if not _HEX_BYTES.fullmatch(r.as_str(value, path)):
        raise r.fail(path, "not a string of hex digit pairs")
    return r.as_hex(value, path, size)


def _count(r: JsonReader, value: object, path: str) -> int:
    """A JSON number that counts something (the agent never writes one as a string)."""
    if isinstance(value, str):
        raise r.fail(path, "expected an integer, got str")
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise r.fail(path, f"{value} is negative")
    return r.as_int(value, path)


def _pattern(r: JsonReader, value: object, path: str, pattern: re.Pattern[str],
             what: str) -> str:
    text = r.as_str(value, path)
    if not pattern.fullmatch(text):
        raise r.fail(path, f"{text!r} is not {what}")
    return text


def _setup_data(r: JsonReader, entries: object) -> tuple[AgentSetupData, ...]:
    nodes = []
    for i, entry in enumerate(r.as_list(entries, "setup_data")):
        where = f"setup_data[{i}]"
        node = r.as_obj(entry, where)
        kind = _pattern(r, r.field(node, "type", where), f"{where}.type", _SETUP_TYPE,
                        "a 0x-prefixed 32-bit hex number")
        truncated = r.as_bool(node.get("truncated", False), f"{where}.truncated")
        data = _hex(r, r.field(node, "data", where), f"{where}.data")
        nodes.append(AgentSetupData(int(kind, 16), data, truncated))
    return tuple(nodes)


def _payload(r: JsonReader, value: object) -> AgentPayload:
    raw = r.as_obj(value, "payload")
    expected = _hex(r, r.field(raw, "expected", "payload"), "payload.expected")
    if expected and len(expected) != SHA256_SIZE:
        raise r.fail("payload.expected", f"expected {SHA256_SIZE} bytes, got {len(expected)}")
    return AgentPayload(
        size=_count(r, r.field(raw, "size", "payload"), "payload.size"),
        sha256=_hex(r, r.field(raw, "sha256", "payload"), "payload.sha256", SHA256_SIZE),
        expected=expected or None,  # empty: the agent was not told what to expect
    )


def _memmap(r: JsonReader, value: object) -> tuple[MemmapEntry, ...]:
    entries = []
    for i, entry in enumerate(r.as_list(value, "memmap")):
        where = f"memmap[{i}]"
        fields = r.as_list(entry, where)
        if len(fields) != 3:
            raise r.fail(where, f"expected [start, end, type], got {fields!r}")
        start, end = (int(_pattern(r, v, f"{where}[{n}]", _ADDRESS, "0x-prefixed hex"), 16)
                      for n, v in enumerate(fields[:2]))
        entries.append(MemmapEntry(start, end, r.as_str(fields[2], f"{where}[2]")))
    return tuple(entries)


def _agent_report(r: JsonReader, value: object) -> AgentReport:
    doc = r.as_obj(value, _ROOT)
    version = _count(r, r.field(doc, "v", ""), "v")
    if version != AGENT_FORMAT_VERSION:
        raise r.fail("v", f"version {version}, this parser reads {AGENT_FORMAT_VERSION}")
    errors = tuple(r.as_str(e, f"errors[{i}]")
                   for i, e in enumerate(r.as_list(r.field(doc, "errors", ""), "errors")))
    for key in ("cmdline", "boot_params"):  # null: the agent could not read the file
        if r.field(doc, key, "") is None:
            raise r.fail(key, f"the agent could not read it: {'; '.join(errors)}")
    payload = r.field(doc, "payload", "")
    return AgentReport(
        version=version,
        cmdline=_hex(r, doc["cmdline"], "cmdline"),
        payload=None if payload is None else _payload(r, payload),
        memmap=_memmap(r, r.field(doc, "memmap", "")),
        # Any length: the agent itself reports a short read in "errors".
        boot_params=_hex(r, doc["boot_params"], "boot_params"),
        errors=errors,
        # Added to format 1 later: an older agent's report simply has no nodes.
        setup_data=_setup_data(r, doc["setup_data"]) if "setup_data" in doc else (),
    )
