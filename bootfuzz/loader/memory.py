"""What guest memory holds once a plan's blobs are written.  Pure: no I/O.

A plan lists its blobs in the order a loader writes them.  Two rules make every
layout an override can express runnable, as on the real machine:

* bytes where the machine has no RAM are not stored (``Platform.stored_ranges``:
  nothing in the legacy video/BIOS area, the 32-bit MMIO gap or beyond RAM);
* where two blobs overlap, the one written later holds the bytes.

Both backends write exactly the pieces computed here (QEMU-TCG one ``-device
loader`` per piece, our KVM VMM into its memory), so the kernel finds the same
bytes on both.  The layout rules (bootfuzz.judge.layout_rules) report every byte
lost, with :func:`lost_bytes`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from bootfuzz.loader.plan import Blob
from bootfuzz.loader.platform import Platform, RegionKind


@dataclass(frozen=True)
class Piece:
    """``blob``'s bytes [offset, offset + size), stored at guest address *addr*."""

    blob: Blob
    offset: int
    addr: int
    size: int

    @property
    def end(self) -> int:
        return self.addr + self.size

    @property
    def whole(self) -> bool:
        return self.offset == 0 and self.size == self.blob.size


@dataclass(frozen=True)
class Lost:
    """``blob``'s bytes at [addr, end) that memory does not hold after the write:
    they fell where the machine has no RAM (*region*), or *by* was written over them."""

    blob: Blob
    addr: int
    end: int
    region: RegionKind | None = None
    by: Blob | None = None

    @property
    def reason(self) -> str:
        if self.region is not None:
            return f"not stored: no RAM in the {self.region.value}"
        assert self.by is not None
        return f"overwritten by {self.by.name}"


def _intervals(blobs: Sequence[Blob], platform: Platform
               ) -> list[tuple[int, int, int, RegionKind | None]]:
    """Elementary [a, b) slices covered by some blob: (a, b, owner index, region if not RAM).

    The owner is the last blob in write order that covers the slice.
    """
    regions = platform.regions()
    points = {b.addr for b in blobs} | {b.end for b in blobs}
    points |= {r.start for r in regions} | {r.end for r in regions}
    out = []
    for a, b in itertools.pairwise(sorted(points)):
        owner = None
        for i, blob in enumerate(blobs):
            if blob.addr <= a and b <= blob.end:
                owner = i
        if owner is None:
            continue
        region = next(r for r in regions if r.start <= a < r.end)
        out.append((a, b, owner, None if region.ram else region.kind))
    return out


def memory_pieces(blobs: Sequence[Blob], platform: Platform) -> tuple[Piece, ...]:
    """The pieces of *blobs* memory holds, lowest address first, none overlapping."""
    pieces: list[Piece] = []
    for a, b, owner, no_ram in _intervals(blobs, platform):
        if no_ram is not None:
            continue
        blob = blobs[owner]
        last = pieces[-1] if pieces else None
        if last is not None and last.blob is blob and last.end == a:
            pieces[-1] = Piece(blob, last.offset, last.addr, last.size + b - a)
        else:
            pieces.append(Piece(blob, a - blob.addr, a, b - a))
    return tuple(pieces)


def lost_bytes(blobs: Sequence[Blob], platform: Platform) -> tuple[Lost, ...]:
    """Every range of a blob that memory does not hold: outside RAM, or written over."""
    lost: list[Lost] = []
    slices = _intervals(blobs, platform)
    for i, blob in enumerate(blobs):
        for a, b, owner, no_ram in slices:
            if not (blob.addr <= a and b <= blob.end):
                continue
            if no_ram is not None:
                new = Lost(blob, a, b, region=no_ram)
            elif owner != i:
                new = Lost(blob, a, b, by=blobs[owner])
            else:
                continue
            prev = lost[-1] if lost else None
            if (prev is not None and prev.blob is blob and prev.end == a
                    and prev.region is new.region and prev.by is new.by):
                lost[-1] = Lost(blob, prev.addr, b, new.region, new.by)
            else:
                lost.append(new)
    return tuple(lost)


def read_memory(blobs: Sequence[Blob], platform: Platform, addr: int, size: int
                ) -> bytes | None:
    """The *size* bytes at *addr* once *blobs* are written, or None where that is unknown
    here: bytes no blob stored, or bytes of a file-backed blob (an initrd)."""
    if size <= 0:
        return b""
    end = addr + size
    out = bytearray()
    cursor = addr
    for piece in memory_pieces(blobs, platform):
        if piece.end <= cursor or piece.addr >= end:
            continue
        if piece.addr > cursor or piece.blob.data is None:
            return None
        take = min(piece.end, end) - cursor
        start = piece.offset + cursor - piece.addr
        out += piece.blob.data[start : start + take]
        cursor += take
        if cursor == end:
            return bytes(out)
    return None
