"""A flattened device tree as data, and its serialization to a DTB (version 17).

Hand-written rather than through libfdt's Python binding: we must also write what
libfdt refuses to produce (a header whose totalsize lies, overlapping reservations,
a truncated blob) to fuzz the kernel's reader, the header is declared once in
bootfuzz.abi.fdt like every other boot structure, and the writer is forty lines.
Its output is checked against dtc, the reference implementation, in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bootfuzz.abi.fdt import (
    FDT_BEGIN_NODE,
    FDT_END,
    FDT_END_NODE,
    FDT_HEADER,
    FDT_LAST_COMP_VERSION,
    FDT_MAGIC,
    FDT_PROP,
    FDT_RESERVE_ENTRY,
    FDT_VERSION,
    pack_be,
    u32,
)

__all__ = ["Fdt", "FdtNode", "cells", "prop_str", "prop_strs", "prop_u32", "serialize"]


@dataclass(frozen=True)
class FdtNode:
    """A node: its name (``memory@40000000``), properties in order, children in order."""

    name: str
    props: tuple[tuple[str, bytes], ...] = ()
    children: tuple[FdtNode, ...] = ()

    def prop(self, name: str) -> bytes | None:
        for key, value in self.props:
            if key == name:
                return value
        return None

    def child(self, name: str) -> FdtNode | None:
        for c in self.children:
            if c.name == name:
                return c
        return None


@dataclass(frozen=True)
class Fdt:
    """A whole tree plus the DTB's memory reservation block (``/memreserve/``)."""

    root: FdtNode
    reservations: tuple[tuple[int, int], ...] = ()
    boot_cpuid_phys: int = 0


def prop_u32(*values: int) -> bytes:
    return b"".join(u32(v) for v in values)


def cells(value: int, count: int) -> bytes:
    """*value* as *count* big-endian 32-bit cells; ValueError if it does not fit."""
    if not 0 <= value < 1 << (32 * count):
        raise ValueError(f"{value:#x} does not fit in {count} cell(s)")
    return value.to_bytes(4 * count, "big")


def prop_str(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return data + b"\0"


def prop_strs(*texts: str) -> bytes:
    return b"".join(prop_str(t) for t in texts)


def _pad4(data: bytearray) -> None:
    data.extend(b"\0" * (-len(data) % 4))


def _struct_block(root: FdtNode) -> tuple[bytes, bytes]:
    block = bytearray()
    strings = bytearray()
    offsets: dict[str, int] = {}

    def name_off(name: str) -> int:
        if name not in offsets:
            offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return offsets[name]

    def node(n: FdtNode) -> None:
        block.extend(u32(FDT_BEGIN_NODE) + n.name.encode() + b"\0")
        _pad4(block)
        for key, value in n.props:
            block.extend(u32(FDT_PROP) + u32(len(value)) + u32(name_off(key)) + value)
            _pad4(block)
        for c in n.children:
            node(c)
        block.extend(u32(FDT_END_NODE))

    node(root)
    block.extend(u32(FDT_END))
    return bytes(block), bytes(strings)


def serialize(fdt: Fdt, header: Mapping[str, int] | None = None,
              extra_reservations: Iterable[tuple[int, int]] = ()) -> bytes:
    """The DTB: header, reservation block (8-aligned, ended by a zero entry), structure
    block, strings block.  *header* fields replace the computed ones (a faulty loader's)."""
    rsv = bytearray()
    for addr, size in (*fdt.reservations, *extra_reservations):
        rsv.extend(pack_be(FDT_RESERVE_ENTRY, {"address": addr, "size": size}))
    rsv.extend(bytes(FDT_RESERVE_ENTRY.size))
    struct_block, strings = _struct_block(fdt.root)
    off_rsv = FDT_HEADER.size  # 40: already 8-byte aligned
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(struct_block)
    total = off_strings + len(strings)
    values = {
        "magic": FDT_MAGIC,
        "totalsize": total,
        "off_dt_struct": off_struct,
        "off_dt_strings": off_strings,
        "off_mem_rsvmap": off_rsv,
        "version": FDT_VERSION,
        "last_comp_version": FDT_LAST_COMP_VERSION,
        "boot_cpuid_phys": fdt.boot_cpuid_phys,
        "size_dt_strings": len(strings),
        "size_dt_struct": len(struct_block),
    }
    values.update(header or {})
    return pack_be(FDT_HEADER, values) + bytes(rsv) + struct_block + strings


def find(root: FdtNode, path: str) -> FdtNode | None:
    """The node at an absolute path ("/chosen", "/memory@40000000")."""
    node: FdtNode | None = root
    for part in (p for p in path.split("/") if p):
        node = node.child(part) if node else None
    return node


def decode_cells(data: bytes, address_cells: int, size_cells: int) -> list[tuple[int, int]]:
    """A ``reg`` value as (address, size) pairs."""
    step = 4 * (address_cells + size_cells)
    out = []
    for i in range(0, len(data) - step + 1, step):
        a = int.from_bytes(data[i : i + 4 * address_cells], "big")
        s = int.from_bytes(data[i + 4 * address_cells : i + step], "big")
        out.append((a, s))
    return out


def node_names(nodes: Sequence[FdtNode]) -> list[str]:
    return [n.name for n in nodes]
