"""The cpio "newc" archive format: a streaming writer and a strict reader.

The format follows the kernel's reader, init/initramfs.c, and
Documentation/driver-api/early-userspace/buffer-format.rst.  The writer is
deterministic (inodes numbered 1.. in order, uid/gid 0, mtime 0) and holds nothing
beyond the chunk it is given; the reader is stricter than the kernel on purpose, so
that an archive we wrote wrong is caught here, not in a guest.  What goes into our
initrds is bootfuzz.guest.initrd's business.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Protocol

from bootfuzz.errors import HarnessBug, InitramfsError

#: source: buffer-format.rst, c_magic ("070702" is the "crc" variant; we neither
#: write nor read it).
NEWC_MAGIC = b"070701"
#: The 13 header fields after the magic, in order (buffer-format.rst names them
#: c_ino ... c_chksum; GNU cpio and virtme call the last one "check").
NEWC_FIELDS: tuple[str, ...] = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
#: source: buffer-format.rst, "8 bytes" of zero-padded hexadecimal per field.
NEWC_FIELD_WIDTH = 8
NEWC_FIELD_MAX = (1 << (4 * NEWC_FIELD_WIDTH)) - 1
NEWC_HEADER_SIZE = len(NEWC_MAGIC) + len(NEWC_FIELDS) * NEWC_FIELD_WIDTH  # 110
#: source: buffer-format.rst, ALGN(4) before every header and before every data field.
NEWC_ALIGN = 4
#: source: buffer-format.rst, the end-of-archive marker.
NEWC_TRAILER = "TRAILER!!!"
#: GNU cpio pads the whole archive to its 512-byte block size; we do the same.
ARCHIVE_BLOCK = 512
#: source: include/uapi/linux/limits.h.  init/initramfs.c do_header() silently
#: skips an entry whose c_namesize is over PATH_MAX, so the writer refuses it.
PATH_MAX = 4096

_HEX_FIELD_RE = re.compile(rb"[0-9A-Fa-f]{%d}" % NEWC_FIELD_WIDTH)


def _align(value: int, alignment: int = NEWC_ALIGN) -> int:
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class NewcHeader:
    """One newc header; the field names are :data:`NEWC_FIELDS`, in the same order."""

    ino: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    mtime: int = 0
    filesize: int = 0
    devmajor: int = 0
    devminor: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0
    namesize: int = 0
    check: int = 0

    def encode(self) -> bytes:
        """The 110 header bytes; a value that needs more than 8 hex digits is refused."""
        out = [NEWC_MAGIC]
        for name in NEWC_FIELDS:
            value = getattr(self, name)
            if not 0 <= value <= NEWC_FIELD_MAX:
                raise InitramfsError(
                    f"c_{name} = {value} does not fit the {NEWC_FIELD_WIDTH} hex digits of "
                    f"a newc header (0 .. {NEWC_FIELD_MAX})"
                )
            out.append(b"%08X" % value)
        return b"".join(out)

    @classmethod
    def decode(cls, raw: bytes | memoryview, offset: int = 0) -> NewcHeader:
        """Parse the 110 bytes of a header found at *offset* of an archive (for messages)."""
        raw = bytes(raw)
        if len(raw) < NEWC_HEADER_SIZE:
            raise InitramfsError(
                f"truncated header at offset {offset}: {len(raw)} of {NEWC_HEADER_SIZE} bytes"
            )
        magic = raw[: len(NEWC_MAGIC)]
        if magic != NEWC_MAGIC:
            raise InitramfsError(f"bad magic {magic!r} at offset {offset} (want {NEWC_MAGIC!r})")
        values: dict[str, int] = {}
        for index, name in enumerate(NEWC_FIELDS):
            start = len(NEWC_MAGIC) + index * NEWC_FIELD_WIDTH
            text = raw[start : start + NEWC_FIELD_WIDTH]
            if not _HEX_FIELD_RE.fullmatch(text):
                raise InitramfsError(
                    f"c_{name} of the header at offset {offset} is not "
                    f"{NEWC_FIELD_WIDTH} hex digits: {text!r}"
                )
            values[name] = int(text, 16)
        return cls(**values)


assert tuple(f.name for f in fields(NewcHeader)) == NEWC_FIELDS
assert NEWC_HEADER_SIZE == 110  # source: init/initramfs.c do_start(), read_into(.., 110, ..)


def _encode_name(name: str) -> bytes:
    """The name field (with its NUL); refuses what the kernel would drop or misread."""
    if not name:
        raise InitramfsError("empty file name in a cpio archive")
    if "\0" in name:
        raise InitramfsError(f"file name {name!r} contains NUL")
    if name == NEWC_TRAILER:
        raise InitramfsError(f"file name {name!r} is the end-of-archive marker")
    encoded = name.encode("utf-8", "surrogateescape") + b"\0"
    if len(encoded) > PATH_MAX:
        raise InitramfsError(
            f"file name {name[:40]!r}... is {len(encoded)} bytes with its NUL; the kernel "
            f"skips names over PATH_MAX ({PATH_MAX})"
        )
    return encoded


def newc_entry_span(name: str, filesize: int) -> int:
    """Bytes one entry takes in an archive: header, name and data, each padded to 4."""
    namesize = len(name.encode("utf-8", "surrogateescape")) + 1
    # The name is padded so that header + name ends 4-aligned (init/initramfs.c
    # N_ALIGN), which is not the same as padding the name alone to 4.
    return _align(NEWC_HEADER_SIZE + namesize) + _align(filesize)


def newc_archive_size(entries: Iterable[tuple[str, int]]) -> int:
    """Size of the archive :class:`NewcWriter` writes for these (name, filesize) entries."""
    total = sum(newc_entry_span(name, size) for name, size in entries)
    total += newc_entry_span(NEWC_TRAILER, 0)
    return _align(total, ARCHIVE_BLOCK)


class BinarySink(Protocol):
    """Where bytes go: an open binary file, a BytesIO, or a compressing sink."""

    def write(self, data: bytes, /) -> object: ...


class NewcWriter:
    """Streams a newc archive into a sink, one entry at a time.

    Inode numbers count up from 1 in the order entries are added; uid, gid and
    mtime are 0.  Nothing is buffered: data chunks are passed through as they come.
    """

    def __init__(self, sink: BinarySink) -> None:
        self._sink = sink
        self._offset = 0
        self._next_ino = 1
        self._finished = False

    @property
    def offset(self) -> int:
        """Bytes written so far."""
        return self._offset

    def _put(self, data: bytes) -> None:
        if data:
            self._sink.write(data)
            self._offset += len(data)

    def _pad(self, alignment: int) -> None:
        self._put(b"\0" * (_align(self._offset, alignment) - self._offset))

    def _entry(
        self,
        name: str,
        mode: int,
        *,
        nlink: int = 1,
        filesize: int = 0,
        rdev: tuple[int, int] = (0, 0),
    ) -> None:
        """Header and name of one entry (the trailer too); the caller writes the data."""
        if self._finished:
            raise HarnessBug(f"entry {name!r} added after the archive's trailer")
        trailer = name == NEWC_TRAILER and mode == 0
        encoded = NEWC_TRAILER.encode() + b"\0" if trailer else _encode_name(name)
        header = NewcHeader(
            ino=0 if trailer else self._next_ino,
            mode=mode,
            nlink=nlink,
            filesize=filesize,
            rdevmajor=rdev[0],
            rdevminor=rdev[1],
            namesize=len(encoded),
        )
        try:
            raw = header.encode()
        except InitramfsError as exc:
            raise InitramfsError(f"entry {name!r}: {exc.args[0]}") from None
        self._put(raw)
        self._put(encoded)
        self._pad(NEWC_ALIGN)
        if not trailer:
            self._next_ino += 1

    @staticmethod
    def _check_perm(name: str, perm: int) -> None:
        if not 0 <= perm <= 0o7777:
            raise InitramfsError(f"entry {name!r}: permissions {perm:#o} are not in 0 .. 0o7777")

    def add_directory(self, name: str, perm: int = 0o755) -> None:
        """A directory; its parent must already be in the archive (the kernel mkdirs)."""
        self._check_perm(name, perm)
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def add_char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """A character device node (the kernel mknods it with rdev = major:minor)."""
        self._check_perm(name, perm)
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def add_file(self, name: str, size: int, chunks: Iterable[bytes], perm: int = 0o644) -> None:
        """A regular file of exactly *size* bytes, taken from *chunks* as they come."""
        self._check_perm(name, perm)
        self._entry(name, stat.S_IFREG | perm, filesize=size)
        written = 0
        for chunk in chunks:
            written += len(chunk)
            if written > size:
                raise HarnessBug(f"entry {name!r}: data runs past its declared {size} bytes")
            self._put(chunk)
        if written != size:
            raise HarnessBug(f"entry {name!r}: data gave {written} of its declared {size} bytes")
        self._pad(NEWC_ALIGN)

    def finish(self) -> int:
        """Write the TRAILER!!! record and pad to 512; return the archive's size."""
        self._entry(NEWC_TRAILER, 0)
        self._pad(ARCHIVE_BLOCK)
        self._finished = True
        return self._offset


@dataclass(frozen=True)
class NewcEntry:
    """One entry read back from an archive; its data is ``archive[offset:offset+size]``."""

    name: str
    header: NewcHeader
    offset: int  # where the data starts in the archive

    @property
    def mode(self) -> int:
        return self.header.mode

    @property
    def size(self) -> int:
        return self.header.filesize

    @property
    def rdev(self) -> tuple[int, int]:
        return (self.header.rdevmajor, self.header.rdevminor)

    def data(self, archive: bytes | memoryview) -> bytes:
        """The entry's bytes, copied out of *archive* (the buffer it was parsed from)."""
        return bytes(archive[self.offset : self.offset + self.size])


def parse_newc(data: bytes | bytearray | memoryview) -> list[NewcEntry]:
    """Read an uncompressed newc archive up to its TRAILER!!! (which is not returned).

    Stricter than the kernel on purpose: the trailer must be there, only NUL padding
    may follow it, and every field must be exactly 8 hex digits.  Any defect raises
    InitramfsError naming the offset; nothing else escapes.
    """
    view = memoryview(data).cast("B")
    end = len(view)
    entries: list[NewcEntry] = []
    offset = 0
    while True:
        if offset >= end:
            raise InitramfsError(f"archive ends at offset {end} without a {NEWC_TRAILER} record")
        header = NewcHeader.decode(view[offset : offset + NEWC_HEADER_SIZE], offset)
        name_start = offset + NEWC_HEADER_SIZE
        if header.namesize == 0:
            raise InitramfsError(f"header at offset {offset} has c_namesize 0")
        name_end = name_start + header.namesize
        if name_end > end:
            raise InitramfsError(
                f"name at offset {name_start} ({header.namesize} bytes) runs past the end "
                f"of the archive ({end} bytes)"
            )
        raw_name = view[name_start:name_end].tobytes()
        if raw_name[-1] != 0:
            raise InitramfsError(f"name at offset {name_start} is not NUL-terminated")
        if 0 in raw_name[:-1]:
            raise InitramfsError(f"name at offset {name_start} contains NUL before its end")
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        data_start = _align(name_end)
        data_end = data_start + header.filesize
        if header.filesize and data_end > end:  # an empty body may lack its padding
            raise InitramfsError(
                f"data of {name!r} at offset {data_start} ({header.filesize} bytes) runs "
                f"past the end of the archive ({end} bytes)"
            )
        if name == NEWC_TRAILER:
            if header.filesize:
                raise InitramfsError(
                    f"{NEWC_TRAILER} at offset {offset} has c_filesize {header.filesize} "
                    "(must be 0)"
                )
            rest = view[data_end:].tobytes()
            junk = len(rest) - len(rest.lstrip(b"\0"))
            if junk < len(rest):
                raise InitramfsError(
                    f"non-NUL byte at offset {data_end + junk} after {NEWC_TRAILER}"
                )
            return entries
        entries.append(NewcEntry(name=name, header=header, offset=data_start))
        offset = _align(data_end)
