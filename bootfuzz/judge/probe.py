"""Probe reports: the line a probe guest prints, parsed, and checked against the plan.

A probe (bootfuzz.guest.probes builds it) is entered exactly as a kernel is and prints
one ``BOOTFUZZ-PROBE {json}`` line with its registers and the boot information it was
given (the 16-bit probe: the setup header in its segment and what the BIOS
answered).  :func:`parse_probe_report` reads that line (a corrupt one is a value that
says why, never an exception) and :func:`check_probe` compares it with the BootPlan,
field by field and byte by byte.  Pure: the caller reads the initrd's edges.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bootfuzz.abi.bootparam import BOOT_PARAMS, BOOT_PARAMS_SIZE, E820_ENTRY_SIZE
from bootfuzz.abi.e820 import E820Entry, pack_table, unpack_table
from bootfuzz.abi.pvh import HVM_MEMMAP_TABLE_ENTRY, HVM_START_INFO
from bootfuzz.abi.structs import Struct
from bootfuzz.case import EntryProtocol
from bootfuzz.errors import BootfuzzError
from bootfuzz.guest.probes import (
    BIOS_16,
    BOOT_PARAMS_REPORTED,
    MODULE_REPORTED,
    PROBE16_PAGE_BYTES,
    PROBE_CMDLINE_BYTES,
    PROBE_ENTRIES,
    PROBE_FORMAT_VERSION,
    PROBE_GDT_MAX_BYTES,
    PROBE_LINE_PREFIX,
    REGS_16,
    REGS_64,
    REGS_PVH,
    SETUP_HEADER_REPORTED,
    START_INFO_REPORTED,
)
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.verdict import OracleResult, judged
from bootfuzz.loader.layout import PAGE_SIZE
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.real16 import bios_memory
from bootfuzz.loader.x86 import RFLAGS_IF, Cr0
from bootfuzz.transcript import GuestExit

# --- the report ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeReport:
    """One probe line, decoded.  Per entry the JSON keys differ; the meaning is shared."""

    entry: EntryProtocol
    regs: Mapping[str, int]
    gdt: bytes  # the descriptors at the GDTR's base, limit + 1 bytes (16: none, b"")
    #: boot_params fields (64), hvm_start_info fields (pvh) or setup_header fields
    #: (16), by name.
    params: Mapping[str, int]
    #: hvm_modlist_entry 0 (pvh with a module); None otherwise.
    module0: Mapping[str, int] | None
    #: The raw table: E820 entries (64) or hvm_memmap_table entries (pvh).
    memory_map: bytes
    cmdline: bytes  # up to and including the NUL, at most PROBE_CMDLINE_BYTES
    ramdisk_head: bytes
    ramdisk_tail: bytes
    #: The whole zero page (64), start_info page (pvh) or the first
    #: PROBE16_PAGE_BYTES of the setup segment (16), as the probe read it.
    page: bytes
    #: What the BIOS answered besides E820 (16 only; bootfuzz.guest.probes.BIOS_16).
    bios: Mapping[str, int] | None = None


@dataclass(frozen=True)
class ProbeReportError:
    """A probe line that is there but cannot be read: the message says why."""

    message: str
    line: str


class _Corrupt(BootfuzzError):
    """The probe line is there but unreadable."""


#: JSON keys per entry: (params, memory map, page); pvh adds "module0", 16 has "bios"
#: and no "gdt_hex" (real mode has no descriptors of the loader's).
_KEYS: dict[EntryProtocol, tuple[str, str, str]] = {
    EntryProtocol.BOOT64: ("boot_params", "e820_hex", "zero_page_hex"),
    EntryProtocol.PVH: ("start_info", "memmap_hex", "start_info_page_hex"),
    EntryProtocol.REAL16: ("setup_header", "e820_hex", "setup_page_hex"),
}
_REGS = {EntryProtocol.BOOT64: REGS_64, EntryProtocol.PVH: REGS_PVH,
         EntryProtocol.REAL16: REGS_16}
_PARAMS = {EntryProtocol.BOOT64: BOOT_PARAMS_REPORTED, EntryProtocol.PVH: START_INFO_REPORTED,
           EntryProtocol.REAL16: SETUP_HEADER_REPORTED}
_MAP_ENTRY_SIZE = {EntryProtocol.BOOT64: E820_ENTRY_SIZE,
                   EntryProtocol.PVH: HVM_MEMMAP_TABLE_ENTRY.size,
                   EntryProtocol.REAL16: E820_ENTRY_SIZE}
_PAGE_SIZE = {EntryProtocol.BOOT64: BOOT_PARAMS_SIZE, EntryProtocol.PVH: PAGE_SIZE,
              EntryProtocol.REAL16: PROBE16_PAGE_BYTES}
_ROOT = "(top level)"


def _ints(r: JsonReader, value: object, names: Sequence[str], path: str) -> dict[str, int]:
    """An object of exactly *names*, in order, each a "0x..." hex string."""
    obj = r.as_obj(value, path)
    if list(obj) != list(names):
        raise r.fail(path, f"keys {list(obj)}, expected {list(names)}")
    out: dict[str, int] = {}
    for name, item in obj.items():
        text = item if isinstance(item, str) else None
        try:
            if text is None or not text.startswith("0x"):
                raise ValueError
            out[name] = int(text[2:], 16)
        except ValueError:
            raise r.fail(f"{path}.{name}", f"{item!r} is not a 0x hex string") from None
    return out


def _decode(r: JsonReader, value: object) -> ProbeReport:
    obj = r.as_obj(value, _ROOT)
    version = r.field(obj, "v", "")
    if version != PROBE_FORMAT_VERSION:
        raise r.fail("v", f"format version {version!r}, expected {PROBE_FORMAT_VERSION}")
    entry_value = r.field(obj, "entry", "")
    entry = next((e for e in PROBE_ENTRIES if e.value == entry_value), None)
    if entry is None:
        known = ", ".join(e.value for e in PROBE_ENTRIES)
        raise r.fail("entry", f"{entry_value!r} is not a probe's entry ({known})")
    params_key, map_key, page_key = _KEYS[entry]
    real16 = entry is EntryProtocol.REAL16
    expected = ["v", "entry", "regs", *([] if real16 else ["gdt_hex"]), params_key,
                *(["module0"] if entry is EntryProtocol.PVH else []),
                *(["bios"] if real16 else []),
                map_key, "cmdline_hex", "ramdisk_head_hex", "ramdisk_tail_hex", page_key]
    if list(obj) != expected:
        raise r.fail(_ROOT, f"keys {list(obj)}, expected {expected}")
    module0 = None
    if entry is EntryProtocol.PVH and obj["module0"] is not None:
        module0 = _ints(r, obj["module0"], MODULE_REPORTED, "module0")
    bios = _ints(r, obj["bios"], [name for name, _ in BIOS_16], "bios") if real16 else None
    memory_map = r.as_hex(obj[map_key], map_key)
    if len(memory_map) % _MAP_ENTRY_SIZE[entry]:
        raise r.fail(map_key, f"{len(memory_map)} bytes, not whole entries of "
                              f"{_MAP_ENTRY_SIZE[entry]}")
    return ProbeReport(
        entry=entry,
        regs=_ints(r, obj["regs"], [name for name, _ in _REGS[entry]], "regs"),
        gdt=b"" if real16 else r.as_hex(obj["gdt_hex"], "gdt_hex"),
        params=_ints(r, obj[params_key], _PARAMS[entry], params_key),
        module0=module0,
        memory_map=memory_map,
        cmdline=r.as_hex(obj["cmdline_hex"], "cmdline_hex"),
        ramdisk_head=r.as_hex(obj["ramdisk_head_hex"], "ramdisk_head_hex"),
        ramdisk_tail=r.as_hex(obj["ramdisk_tail_hex"], "ramdisk_tail_hex"),
        page=r.as_hex(obj[page_key], page_key, _PAGE_SIZE[entry]),
        bios=bios,
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
        doc: Any = json.loads(line[len(prefix) :])
    except json.JSONDecodeError as e:
        return ProbeReportError(f"not one JSON object ({e.msg} at column {e.colno})", line)
    try:
        return _decode(JsonReader("probe report", error=_Corrupt), doc)
    except _Corrupt as e:
        return ProbeReportError(str(e.args[0]), line)  # "probe report: <field path>: ..."


# --- checking a report against the plan ---------------------------------------------

#: RFLAGS.IF.  source: Intel SDM vol. 1, 3.4.3.


def _exact(name: str, expected: Mapping[str, int], observed: Mapping[str, int]) -> OracleResult:
    def show(values: Mapping[str, int]) -> str:
        return " ".join(f"{k}={v:#x}" for k, v in values.items())

    wrong = [k for k in expected if observed.get(k) != expected[k]]
    shown = {k: observed[k] for k in expected if k in observed}
    return judged(name, not wrong, show(expected), show(shown),
                  f"differs: {', '.join(wrong)}" if wrong else "")


def _check_regs(plan: BootPlan, report: ProbeReport) -> list[OracleResult]:
    cpu, regs = plan.cpu, report.regs
    long_mode = report.entry is EntryProtocol.BOOT64
    real16 = report.entry is EntryProtocol.REAL16
    if real16:  # boot.rst promises CS:IP, the segments and SP; no register contents
        names: tuple[str, ...] = ("ip", "sp")
        planned: tuple[int, ...] = (cpu.rip, cpu.rsp)
    else:
        names = ("rip", "rsi", "rbx", "rsp") if long_mode else ("eip", "esi", "ebx", "esp")
        planned = (cpu.rip, cpu.rsi, cpu.rbx, cpu.rsp)
    results = [_exact(f"probe-{n}", {n: v}, regs) for n, v in zip(names, planned, strict=True)]
    # CR0: every bit the plan sets, and paging exactly as planned; bits a backend
    # may add on its own (ET, NE) are shown, not judged.
    required = cpu.cr0
    cr0 = regs["cr0"]
    results.append(judged(
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
    if real16:  # real mode: the GDTR is not the loader's to set
        return [*results, _check_interrupts(regs, "eflags")]
    try:
        gdt = plan.blob("gdt").data or b""
    except KeyError:
        gdt = b""
    want = gdt[: min(cpu.gdt_limit + 1, PROBE_GDT_MAX_BYTES)]
    results.append(judged("probe-gdt", report.gdt == want, want.hex() or "(no GDT planned)",
                          report.gdt.hex(), "the descriptors at the GDTR's base"))
    results.append(_exact("probe-gdtr", {"gdt_base": cpu.gdt_base, "gdt_limit": cpu.gdt_limit},
                          regs))
    results.append(_check_interrupts(regs, "rflags" if long_mode else "eflags"))
    return results


def _check_interrupts(regs: Mapping[str, int], flags_name: str) -> OracleResult:
    flags = regs[flags_name]
    interrupts = "set" if flags & RFLAGS_IF else "clear"
    return judged("probe-interrupts", not flags & RFLAGS_IF, f"{flags_name}.IF clear",
                  f"{flags_name}={flags:#x} (IF {interrupts})")


def _show_bytes(data: bytes) -> str:
    return repr(data) if len(data) <= 96 else f"{len(data)} bytes"


def _check_page(name: str, expected: bytes, observed: bytes, struct: Struct) -> OracleResult:
    if expected == observed:
        return judged(name, True, f"{len(expected)} bytes as planned",
                      f"{len(observed)} bytes equal")
    diff = [i for i, (a, b) in enumerate(zip(expected, observed, strict=False)) if a != b]
    where = []
    for offset in diff[:8]:
        owner = next((f.name for f in struct if f.offset <= offset < f.end), "?")
        where.append(f"{offset:#x} ({owner}): {expected[offset]:#04x} -> {observed[offset]:#04x}")
    more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
    return judged(name, False, f"{len(expected)} bytes as planned",
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


def check_probe(
    plan: BootPlan, report: ProbeReport, *, edges: tuple[bytes, bytes]
) -> list[OracleResult]:
    """The probe's report against the plan it was booted with: one result per aspect.

    *edges* are the first and last PROBE_RAMDISK_EDGE bytes of the planned initrd
    (empty without one), read by the caller (bootfuzz.run.probe.initrd_edges).
    """
    entry = plan.case.entry
    if report.entry is not entry:
        return [judged("probe-entry", False, entry.value, report.entry.value,
                       "the probe answered through another entry than the plan's")]
    results = [judged("probe-entry", True, entry.value, report.entry.value)]
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
    elif entry is EntryProtocol.REAL16:
        setup = plan.blob("setup").data or b""
        results.append(_exact("probe-setup-header",
                              {n: int(BOOT_PARAMS[n].decode(setup)) for n in SETUP_HEADER_REPORTED},
                              report.params))
        results.append(_check_page("probe-setup-page", setup[:PROBE16_PAGE_BYTES], report.page,
                                   BOOT_PARAMS))
        results.append(_check_bios(plan, report))
        # What our BIOS serves through INT 15h E820h: the plan's table, in order.
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
    results.append(judged("probe-memory-map", report.memory_map == want_map,
                          _show_entries(plan.e820), _show_entries(seen_map)))
    want_cmdline = (plan.cmdline + b"\0")[:PROBE_CMDLINE_BYTES]
    results.append(judged("probe-cmdline", report.cmdline == want_cmdline,
                          _show_bytes(want_cmdline), _show_bytes(report.cmdline)))
    head, tail = edges
    results.append(judged(
        "probe-ramdisk", (report.ramdisk_head, report.ramdisk_tail) == (head, tail),
        f"head {head.hex() or '-'} tail {tail.hex() or '-'}",
        f"head {report.ramdisk_head.hex() or '-'} tail {report.ramdisk_tail.hex() or '-'}",
    ))
    return results


def _check_bios(plan: BootPlan, report: ProbeReport) -> OracleResult:
    """E801h, 88h and the BDA as our BIOS derives them from the plan's table."""
    mem = bios_memory(plan.e820)
    want = {"e801_ax": mem.e801_low_kib, "e801_bx": mem.e801_high_blocks,
            "e801_cx": mem.e801_low_kib, "e801_dx": mem.e801_high_blocks,
            "ext_mem_kib": mem.ext_mem_kib, "base_mem_kib": mem.base_mem_kib}
    return _exact("probe-bios-memory", want, report.bios or {})


def _check_module0(plan: BootPlan, report: ProbeReport) -> OracleResult:
    if plan.initrd is None:
        return judged("probe-module0", report.module0 is None, "no module",
                      "no module" if report.module0 is None else str(dict(report.module0)))
    want = {"paddr": plan.initrd.addr, "size": plan.initrd.size, "cmdline_paddr": 0,
            "reserved": 0}
    if report.module0 is None:
        return judged("probe-module0", False, str(want), "no module")
    return _exact("probe-module0", want, report.module0)


def check_probe_exit(report: ProbeReport | ProbeReportError | None, guest_exit: GuestExit,
                 detail: str) -> OracleResult:
    """One readable probe report, then the guest's power-off through the exit port."""
    expected = "one probe report, then power-off through the exit port"
    if isinstance(report, ProbeReportError):
        return judged("probe-report", False, expected, f"corrupt report: {report.message}", detail)
    if report is None:
        return judged("probe-report", False, expected,
                      f"no probe report; guest exit: {guest_exit.value}", detail)
    return judged("probe-report", guest_exit is GuestExit.POWER_OFF, expected,
                  f"report, then {guest_exit.value}", detail)
