"""The device-tree part of a reproducer file: the architecture, the memory holes and the
DTB overrides.  bootfuzz.fuzz.reproducer reads and writes the rest.

    "arch": "aarch64",
    "mem_holes": [["0xc0000000", "0x10000000"]],
    "dt": {"initrd_end": "0x4ffff000", "memory": [["0x40000000", "0x2200000"], ...],
           "dtb_addr": ..., "header": {"totalsize": 100}, "truncate": 64,
           "reservations": [[addr, size]], "address_cells": 1, "size_cells": 1,
           "bootargs_raw_hex": "..."}

A file without "arch" is an x86_64 case, as every reproducer before these existed.
"""

from __future__ import annotations

from typing import Any

from bootfuzz.abi.fdt import FDT_HEADER
from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, DtOverrides
from bootfuzz.jsonread import JsonReader

DT_TOP_KEYS = frozenset({"arch", "mem_holes", "dt"})
_DT_KEYS = {"initrd_start", "initrd_end", "memory", "dtb_addr", "header", "truncate",
            "reservations", "address_cells", "size_cells", "bootargs_raw_hex"}
_TOP = (1 << 64) - 1


def _ranges(r: JsonReader, value: object, at: str) -> tuple[tuple[int, int], ...]:
    out = []
    for i, item in enumerate(r.as_list(value, at)):
        pair = r.as_list(item, f"{at}[{i}]")
        if len(pair) != 2:
            raise r.fail(f"{at}[{i}]", "expected [address, size]")
        out.append((r.as_int(pair[0], f"{at}[{i}][0]", 0, _TOP),
                    r.as_int(pair[1], f"{at}[{i}][1]", 0, _TOP)))
    return tuple(out)


def dt_overrides(r: JsonReader, doc: dict[str, Any]) -> DtOverrides:
    r.keys(doc, _DT_KEYS, "dt")

    def opt(key: str) -> int | None:
        return None if doc.get(key) is None else r.as_int(doc[key], f"dt.{key}", 0, _TOP)

    header = []
    for name, value in r.as_obj(doc.get("header", {}), "dt.header").items():
        if name not in FDT_HEADER.by_name:
            raise r.fail(f"dt.header.{name}", "not an fdt_header field")
        header.append((name, r.as_int(value, f"dt.header.{name}", 0, 1 << 32)))
    raw = doc.get("bootargs_raw_hex")
    return DtOverrides(
        initrd_start=opt("initrd_start"), initrd_end=opt("initrd_end"),
        memory=None if doc.get("memory") is None else _ranges(r, doc["memory"], "dt.memory"),
        dtb_addr=opt("dtb_addr"), header=tuple(header), truncate=opt("truncate"),
        reservations=_ranges(r, doc.get("reservations", []), "dt.reservations"),
        address_cells=opt("address_cells"), size_cells=opt("size_cells"),
        bootargs_raw=None if raw is None else r.as_hex(raw, "dt.bootargs_raw_hex"),
    )


def dt_case_fields(r: JsonReader, top: dict[str, Any]) -> dict[str, Any]:
    """BootCase keyword arguments for the device-tree keys of a reproducer."""
    arch = Arch(r.as_choice(top.get("arch", Arch.X86_64.value), "arch", [a.value for a in Arch]))
    return {
        "arch": arch,
        "mem_holes": _ranges(r, top.get("mem_holes", []), "mem_holes"),
        "dt": dt_overrides(r, r.as_obj(top.get("dt", {}), "dt")),
    }


def _hex(v: int) -> str:
    return f"{v:#x}"


def dt_json(case: BootCase) -> dict[str, Any]:
    """The device-tree keys of *case*'s reproducer (none for an x86 case)."""
    if not case.arch.device_tree:
        return {}
    doc: dict[str, Any] = {"arch": case.arch.value}
    if case.mem_holes:
        doc["mem_holes"] = [[_hex(a), _hex(s)] for a, s in case.mem_holes]
    ov = case.dt
    d: dict[str, Any] = {}
    for key in ("initrd_start", "initrd_end", "dtb_addr", "truncate"):
        if getattr(ov, key) is not None:
            d[key] = _hex(getattr(ov, key))
    for key in ("address_cells", "size_cells"):
        if getattr(ov, key) is not None:
            d[key] = getattr(ov, key)
    if ov.memory is not None:
        d["memory"] = [[_hex(a), _hex(s)] for a, s in ov.memory]
    if ov.reservations:
        d["reservations"] = [[_hex(a), _hex(s)] for a, s in ov.reservations]
    if ov.header:
        d["header"] = dict(ov.header)
    if ov.bootargs_raw is not None:
        d["bootargs_raw_hex"] = ov.bootargs_raw.hex()
    if d:
        doc["dt"] = d
    return doc
