"""A tiny declarative codec: a structure is a tuple of fields, each with a name,
an offset, a size and (for boot-protocol fields) the protocol version that added it.

The same declaration parses and serializes, and out-of-range values raise instead
of being truncated (ctypes would silently wrap them).  Hand-written rather than
``construct`` because every structure here is a flat table of little-endian
integers and byte strings with fixed offsets, and the offsets themselves are the
documentation we want to read side by side with boot.rst.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from bootfuzz.errors import HarnessBug


@dataclass(frozen=True)
class Field:
    """One field of a packed little-endian structure."""

    name: str
    offset: int
    size: int
    #: Boot protocol version that introduced the field ((major << 8) | minor); 0 = always.
    version: int = 0
    #: True for byte strings (arrays, magic text); False for unsigned integers.
    raw: bool = False
    doc: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.size

    def decode(self, buf: bytes | bytearray | memoryview, base: int = 0) -> int | bytes:
        chunk = bytes(buf[base + self.offset : base + self.end])
        if len(chunk) != self.size:
            raise HarnessBug(f"field {self.name} reads past the buffer")
        return chunk if self.raw else int.from_bytes(chunk, "little")

    def encode(self, value: int | bytes) -> bytes:
        if self.raw:
            if not isinstance(value, bytes | bytearray) or len(value) != self.size:
                raise ValueError(f"{self.name}: needs exactly {self.size} bytes")
            return bytes(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{self.name}: needs an integer, got {value!r}")
        if not 0 <= value < 1 << (8 * self.size):
            raise ValueError(f"{self.name}: {value:#x} does not fit in {self.size} bytes")
        return value.to_bytes(self.size, "little")


class Struct:
    """An ordered, checked set of fields."""

    def __init__(self, name: str, size: int, fields: Iterable[Field]) -> None:
        self.name = name
        self.size = size
        self.fields = tuple(fields)
        self.by_name = {f.name: f for f in self.fields}
        if len(self.by_name) != len(self.fields):
            raise HarnessBug(f"{name}: duplicate field names")
        last_end = 0
        for f in sorted(self.fields, key=lambda f: f.offset):
            if f.offset < last_end:
                raise HarnessBug(f"{name}.{f.name} overlaps the field before it")
            last_end = f.end
        if last_end > size:
            raise HarnessBug(f"{name}: fields end at {last_end:#x}, past size {size:#x}")

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def parse(self, buf: bytes | bytearray | memoryview, base: int = 0) -> dict[str, int | bytes]:
        if len(buf) < base + self.size:
            raise ValueError(f"{self.name}: needs {self.size} bytes, have {len(buf) - base}")
        return {f.name: f.decode(buf, base) for f in self.fields}

    def pack_into(
        self, buf: bytearray, values: Mapping[str, int | bytes], base: int = 0
    ) -> None:
        """Write *values* (a subset of the fields) into *buf* at *base*."""
        for name, value in values.items():
            try:
                f = self.by_name[name]
            except KeyError:
                raise ValueError(f"{self.name} has no field {name!r}") from None
            buf[base + f.offset : base + f.end] = f.encode(value)

    def build(self, values: Mapping[str, int | bytes]) -> bytes:
        buf = bytearray(self.size)
        self.pack_into(buf, values)
        return bytes(buf)
