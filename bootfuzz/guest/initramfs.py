"""The initrd our guests boot with: a cpio "newc" archive, compressed the kernel's way.

Contents (in archive order; names are relative, the kernel unpacks them into /):

==================  ===========================  ==========================================
``dev``             directory 0755
``dev/console``     char device 5,1, mode 0600   so /init has a console before devtmpfs
``proc``, ``sys``   directories 0755             mount points for the agent
``init``            regular 0755                 the static guest agent (built elsewhere)
``payload``         regular 0644                 :func:`payload_bytes` (seed, size)
``payload.sha256``  regular 0644                 SHA-256 of ``payload``, 64 lower-case hex
                                                 digits, no newline
==================  ===========================  ==========================================

``payload.sha256`` follows ``payload`` so the digest is computed while the payload
streams past: nothing is held in memory beyond one payload chunk and the
compressor's state, whatever the size.

The archive is deterministic: inodes numbered 1.. in order, uid/gid 0, mtime 0,
so a spec and an agent give the same bytes on every machine (up to the compression
library's version).  The format follows the kernel's reader, init/initramfs.c, and
Documentation/driver-api/early-userspace/buffer-format.rst.
"""

from __future__ import annotations

import bz2
import contextlib
import enum
import hashlib
import io
import json
import lzma
import os
import queue
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import lz4.block
import zstandard

from bootfuzz.errors import HarnessBug, InfrastructureError, InitramfsError

# --------------------------------------------------------------------------------------
# cpio newc
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# Payload
# --------------------------------------------------------------------------------------

#: Domain-separation prefix of the payload generator.  Never change it:
#: reproducers record (seed, size) and expect the same bytes.
PAYLOAD_DOMAIN = b"bootfuzz-payload\0"
PAYLOAD_CHUNK = 1 << 20


def payload_bytes(seed: int, size: int) -> Iterator[bytes]:
    """Yield the *size* bytes of the payload for *seed*, in chunks of at most 1 MiB.

    Exactly: chunk i (i = 0, 1, ...) is the first min(1 MiB, bytes left) bytes of
    ``SHAKE256(b"bootfuzz-payload\\0" || le64(seed) || le64(i))``; the payload is
    the chunks concatenated, so it is the same bytes whatever size is asked for, up
    to that size.  Reproducers depend on this; a unit test pins a digest.
    """
    _check_seed(seed)
    _check_size(size)
    seed_bytes = seed.to_bytes(8, "little")
    index = 0
    left = size
    while left:
        n = min(PAYLOAD_CHUNK, left)
        yield hashlib.shake_256(PAYLOAD_DOMAIN + seed_bytes + index.to_bytes(8, "little")).digest(n)
        left -= n
        index += 1


# --------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------


class Compression(enum.StrEnum):
    """The initramfs compressions the kernel can unpack (lib/decompress_*.c)."""

    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    LZMA = "lzma"
    XZ = "xz"
    LZO = "lzo"
    LZ4 = "lz4"
    ZSTD = "zstd"

    @classmethod
    def parse(cls, text: str) -> Compression:
        """The member named *text*; an unknown name is the user's error."""
        try:
            return cls(text)
        except ValueError:
            raise InitramfsError(
                f"unknown compression {text!r}; choose one of: "
                + ", ".join(c.value for c in cls if c in SUPPORTED)
            ) from None

    @property
    def suffix(self) -> str:
        """The usual file-name suffix after ".cpio" (empty for none)."""
        return _SUFFIXES[self]


_SUFFIXES: Mapping[Compression, str] = {
    Compression.NONE: "",
    Compression.GZIP: ".gz",
    Compression.BZIP2: ".bz2",
    Compression.LZMA: ".lzma",
    Compression.XZ: ".xz",
    Compression.LZO: ".lzo",
    Compression.LZ4: ".lz4",
    Compression.ZSTD: ".zst",
}

#: The two bytes by which the kernel recognises each format (source: lib/decompress.c
#: compressed_formats).  Note lzma's second byte is the low byte of the dictionary
#: size, so an LZMA dictionary must be a multiple of 256 bytes to be recognised.
KERNEL_MAGIC: Mapping[Compression, bytes] = {
    Compression.GZIP: b"\x1f\x8b",
    Compression.BZIP2: b"BZ",
    Compression.LZMA: b"\x5d\x00",
    Compression.XZ: b"\xfd\x37",
    Compression.LZO: b"\x89\x4c",
    Compression.LZ4: b"\x02\x21",
    Compression.ZSTD: b"\x28\xb5",
}

#: Every format the kernel decodes (lzo through the lzop command: see LZOP).
SUPPORTED: frozenset[Compression] = frozenset(Compression)

# Levels: our initrds are mostly random bytes, so compression is there for the
# format (to exercise the kernel's decompressor), not for the ratio.  Always the
# fastest setting the format has.
#: zlib level 1; gzip header with mtime 0 and no FNAME (decompress_inflate.c skips
#: FNAME only: no FEXTRA/FCOMMENT/FHCRC, which zlib's gzip header never sets).
GZIP_LEVEL = 1
#: source: zlib.h deflateInit2, windowBits 16 + 15 selects the gzip wrapper.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: 100 kB blocks: the least memory for the kernel's bunzip2 (decompress_bunzip2.c).
BZIP2_LEVEL = 1
#: Preset 0 (dictionary 256 KiB: unlzma allocates a buffer of the dictionary size,
#: decompress_unlzma.c) with the cheapest match finder settings; incompressible data
#: goes ~1.6x faster than plain preset 0.
_LZMA_FAST: Mapping[str, int] = {
    "preset": 0,
    "mode": lzma.MODE_FAST,
    "mf": lzma.MF_HC4,
    "nice_len": 8,
    "depth": 1,
}
#: The kernel's XZ decoder (lib/xz, XZ_DEC_ANY_CHECK unset) knows only the NONE and
#: CRC32 checks; xz(1)'s default CRC64 would make it fail "unsupported check".
XZ_CHECK = lzma.CHECK_CRC32
#: source: lib/decompress_unlz4.c ARCHIVE_MAGICNUMBER (the legacy lz4 frame, lz4 -l).
LZ4_LEGACY_MAGIC = 0x184C2102
#: source: lib/decompress_unlz4.c LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE: the kernel
#: decodes each block into a buffer of this size, so no block may hold more.
LZ4_LEGACY_CHUNK = 8 << 20
ZSTD_LEVEL = 1
#: 1 MiB window.  The kernel's unzstd allocates the whole window for initramfs
#: (multi-call mode) and refuses windows over 128 MiB (ZSTD_WINDOWSIZE_MAX).
ZSTD_WINDOW_LOG = 20


class _Encoder(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Lz4LegacyEncoder:
    """lz4's legacy frame: magic, then [le32 compressed size][raw lz4 block] per 8 MiB.

    Holds at most one 8 MiB chunk plus the write that filled it, as lz4 -l does.
    """

    def __init__(self) -> None:
        self._magic = LZ4_LEGACY_MAGIC.to_bytes(4, "little")
        self._buffer = bytearray()

    def _block(self, size: int) -> bytes:
        with memoryview(self._buffer) as view, view[:size] as chunk:
            block: bytes = lz4.block.compress(chunk, store_size=False)
        del self._buffer[:size]
        head, self._magic = self._magic, b""
        return head + len(block).to_bytes(4, "little") + block

    def compress(self, data: bytes, /) -> bytes:
        self._buffer += data
        out = b""
        while len(self._buffer) >= LZ4_LEGACY_CHUNK:
            out += self._block(LZ4_LEGACY_CHUNK)
        return out

    def flush(self) -> bytes:
        out = self._block(len(self._buffer)) if self._buffer else b""
        return self._magic + out


#: The kernel's unlzo reads the lzop file format (header, then blocks with one
#: adler32 of the data each), which no well-kept Python package writes (python-lzo
#: gives raw blocks only, and has no wheels): the lzop command writes it, as the
#: kernel's own build does (scripts/Makefile.lib, cmd_lzo).  Level 1: fastest.
LZOP = "lzop"
LZOP_ARGV = (LZOP, "-1", "-c", "-")


def _lzo_unsupported() -> InitramfsError:
    return InitramfsError(
        f"lzo compression needs the {LZOP} command (Debian package lzop; ./bootstrap "
        "installs it); choose one of: "
        + ", ".join(c.value for c in Compression if c in SUPPORTED)
    )


class _LzopEncoder:
    """Streams through an lzop process; a reader thread drains its output so the
    pipes never fill up, and compress() hands back what has arrived."""

    def __init__(self) -> None:
        if shutil.which(LZOP) is None:
            raise _lzo_unsupported()
        self._proc = subprocess.Popen(LZOP_ARGV, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for chunk in iter(lambda: self._proc.stdout.read(1 << 16), b""):  # type: ignore[union-attr]
            self._chunks.put(chunk)

    def _drain(self) -> bytes:
        out = bytearray()
        while not self._chunks.empty():
            out += self._chunks.get()
        return bytes(out)

    def compress(self, data: bytes, /) -> bytes:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        return self._drain()

    def flush(self) -> bytes:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._reader.join()
        if self._proc.wait() != 0:
            raise InitramfsError(f"{LZOP} failed with exit status {self._proc.returncode}")
        return self._drain()


def _encoder(compression: Compression, total: int) -> _Encoder:
    """A streaming compressor for *compression*; *total* is the uncompressed size."""
    if compression is Compression.NONE:
        return _Identity()
    if compression is Compression.GZIP:
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    if compression is Compression.BZIP2:
        return bz2.BZ2Compressor(BZIP2_LEVEL)
    if compression is Compression.LZMA:
        # FORMAT_ALONE writes the 13-byte header with size -1 (unknown) and an end
        # marker; unlzma accepts that (it stops at the marker).
        lzma1: dict[str, Any] = {"id": lzma.FILTER_LZMA1, **_LZMA_FAST}
        return lzma.LZMACompressor(format=lzma.FORMAT_ALONE, filters=[lzma1])
    if compression is Compression.XZ:
        lzma2: dict[str, Any] = {"id": lzma.FILTER_LZMA2, **_LZMA_FAST}
        return lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=XZ_CHECK, filters=[lzma2])
    if compression is Compression.LZ4:
        return _Lz4LegacyEncoder()
    if compression is Compression.ZSTD:
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, window_log=ZSTD_WINDOW_LOG, write_content_size=True, write_checksum=True
        )
        cobj: _Encoder = zstandard.ZstdCompressor(compression_params=params).compressobj(size=total)
        return cobj
    return _LzopEncoder()


class CompressingSink:
    """A sink that compresses what it is given into *out*; call close() to end the stream."""

    def __init__(self, out: BinarySink, compression: Compression, total: int = -1) -> None:
        self._out = out
        self._encoder = _encoder(compression, total)

    def write(self, data: bytes, /) -> int:
        out = self._encoder.compress(data)
        if out:
            self._out.write(out)
        return len(data)

    def close(self) -> None:
        self._out.write(self._encoder.flush())


def compress(data: bytes, compression: Compression) -> bytes:
    """*data* compressed as build_initrd would (for tests and small archives)."""
    encoder = _encoder(compression, len(data))
    return encoder.compress(data) + encoder.flush()


def _lz4_legacy_decompress(data: bytes) -> bytes:
    magic = LZ4_LEGACY_MAGIC.to_bytes(4, "little")
    if data[:4] != magic:
        raise InitramfsError(f"lz4 data does not start with the legacy magic {magic.hex()}")
    out = bytearray()
    offset = 4
    while offset < len(data):
        if offset + 4 > len(data):
            raise InitramfsError(f"lz4 block size at offset {offset} is truncated")
        size = int.from_bytes(data[offset : offset + 4], "little")
        offset += 4
        if size == LZ4_LEGACY_MAGIC:  # lz4 -l may concatenate streams
            continue
        if offset + size > len(data):
            raise InitramfsError(f"lz4 block at offset {offset} ({size} bytes) is truncated")
        try:
            out += lz4.block.decompress(
                data[offset : offset + size], uncompressed_size=LZ4_LEGACY_CHUNK
            )
        except lz4.block.LZ4BlockError as exc:
            raise InitramfsError(f"lz4 block at offset {offset} does not decode: {exc}") from None
        offset += size
    return bytes(out)


def decompress(data: bytes, compression: Compression) -> bytes:
    """Undo :func:`compress`; corrupt input raises InitramfsError, nothing else."""
    try:
        if compression is Compression.NONE:
            return data
        if compression is Compression.GZIP:
            return zlib.decompress(data, _GZIP_WBITS)
        if compression is Compression.BZIP2:
            return bz2.decompress(data)
        if compression is Compression.LZMA:
            return lzma.decompress(data, format=lzma.FORMAT_ALONE)
        if compression is Compression.XZ:
            return lzma.decompress(data, format=lzma.FORMAT_XZ)
        if compression is Compression.LZ4:
            return _lz4_legacy_decompress(data)
        if compression is Compression.ZSTD:
            dobj = zstandard.ZstdDecompressor().decompressobj()
            out: bytes = dobj.decompress(data)
            if not dobj.eof:
                raise InitramfsError("zstd data is truncated")
            return out
    except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise InitramfsError(f"{compression.value} data does not decompress: {exc}") from None
    if shutil.which(LZOP) is None:
        raise _lzo_unsupported()
    done = subprocess.run([LZOP, "-d", "-c", "-"], input=data, capture_output=True, check=False)
    if done.returncode != 0:
        raise InitramfsError(f"lzo data does not decompress: {done.stderr.decode().strip()}")
    return done.stdout


# --------------------------------------------------------------------------------------
# Spec, build and cache
# --------------------------------------------------------------------------------------

#: source: the cpio newc c_filesize field (8 hex digits).
MAX_PAYLOAD_SIZE = NEWC_FIELD_MAX
SEED_LIMIT = 1 << 64
#: Bump whenever the archive's bytes for a given spec and agent change (layout,
#: payload, compressor settings): it is part of the cache key.
FORMAT_VERSION = 1

PAYLOAD_NAME = "payload"
PAYLOAD_SHA256_NAME = "payload.sha256"
INIT_NAME = "init"
#: source: Documentation/admin-guide/devices.txt, 5 = alternate tty, minor 1 = /dev/console.
CONSOLE_RDEV = (5, 1)


def _check_seed(seed: object) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InitramfsError(f"payload seed {seed!r} is not an integer")
    if not 0 <= seed < SEED_LIMIT:
        raise InitramfsError(f"payload seed {seed} is outside 0 .. 2**64-1")


def _check_size(size: object) -> None:
    if not isinstance(size, int) or isinstance(size, bool):
        raise InitramfsError(f"payload size {size!r} is not an integer")
    if size < 0:
        raise InitramfsError(f"payload size {size} is negative")
    if size > MAX_PAYLOAD_SIZE:
        raise InitramfsError(
            f"payload size {size} is over {MAX_PAYLOAD_SIZE}, the largest file a cpio "
            "newc header can describe"
        )


@dataclass(frozen=True)
class InitrdSpec:
    """What an initrd holds: a payload of *size* bytes made from *seed*, compressed."""

    size: int  # exact size of /payload in bytes (0: an empty payload file)
    compression: Compression = Compression.GZIP
    seed: int = 0  # 0 <= seed < 2**64
    #: Two concatenated archives, as distributions ship them (an uncompressed early
    #: cpio, then the compressed main one): /init and /dev in the first, the payload
    #: in the second, compressed.  The kernel must unpack both.
    split: bool = False
    #: Not a cpio archive at all: the payload alone, compressed.  The kernel's unpacker
    #: rejects it (the "looks like an initrd" path), so there is no /init and the
    #: boot must end in the no-root panic.
    raw: bool = False

    def __post_init__(self) -> None:
        _check_size(self.size)
        _check_seed(self.seed)
        if not isinstance(self.compression, Compression):
            object.__setattr__(self, "compression", Compression.parse(str(self.compression)))
        if self.compression is Compression.LZO and shutil.which(LZOP) is None:
            raise _lzo_unsupported()
        if self.split and self.raw:
            raise InitramfsError("an initrd is either split cpio archives or raw, not both")


@dataclass(frozen=True)
class BuiltInitrd:
    """A finished initrd image on disk."""

    path: Path  # the finished (compressed) initrd image
    size: int  # bytes of that image
    payload_sha256: str
    spec: InitrdSpec


class InitrdWriteError(InfrastructureError):
    """The initrd could not be written (disk full, no permission)."""

    component = "initramfs"


def _read_agent(agent: Path) -> bytes:
    try:
        data = agent.read_bytes()
    except OSError as exc:
        raise InitramfsError(f"agent {agent}: {exc.strerror or exc}") from None
    if not data:
        raise InitramfsError(f"agent {agent} is empty")
    return data


def _members(agent: bytes) -> tuple[tuple[str, int], ...]:
    """(name, filesize) of every entry write_initrd_archive writes, in order."""
    return (("dev", 0), ("dev/console", 0), ("proc", 0), ("sys", 0), (INIT_NAME, len(agent)))


def archive_size(spec: InitrdSpec, agent: bytes) -> int:
    """Size of the uncompressed archive build_initrd writes for *spec* and *agent*."""
    return newc_archive_size(
        (*_members(agent), (PAYLOAD_NAME, spec.size), (PAYLOAD_SHA256_NAME, 64))
    )


def _hashing(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _write_skeleton(writer: NewcWriter, agent: bytes) -> None:
    writer.add_directory("dev")
    writer.add_char_device("dev/console", *CONSOLE_RDEV, perm=0o600)
    writer.add_directory("proc")
    writer.add_directory("sys")
    writer.add_file(INIT_NAME, len(agent), (agent,), perm=0o755)


def early_archive(agent: bytes) -> bytes:
    """The first, uncompressed archive of a split initrd: /dev, /proc, /sys and /init."""
    buf = io.BytesIO()
    writer = NewcWriter(buf)
    _write_skeleton(writer, agent)
    writer.finish()
    return buf.getvalue()


def payload_archive_size(spec: InitrdSpec) -> int:
    return newc_archive_size(((PAYLOAD_NAME, spec.size), (PAYLOAD_SHA256_NAME, 64)))


def write_payload_archive(sink: BinarySink, spec: InitrdSpec) -> str:
    """The second archive of a split initrd; returns the payload's SHA-256 (hex)."""
    writer = NewcWriter(sink)
    digest = hashlib.sha256()
    writer.add_file(PAYLOAD_NAME, spec.size, _hashing(payload_bytes(spec.seed, spec.size), digest))
    hexdigest = digest.hexdigest()
    writer.add_file(PAYLOAD_SHA256_NAME, len(hexdigest), (hexdigest.encode("ascii"),))
    writer.finish()
    return hexdigest


def write_initrd_archive(sink: BinarySink, spec: InitrdSpec, agent: bytes) -> str:
    """Stream the uncompressed archive into *sink*; return the payload's SHA-256 (hex)."""
    writer = NewcWriter(sink)
    _write_skeleton(writer, agent)
    digest = hashlib.sha256()
    writer.add_file(PAYLOAD_NAME, spec.size, _hashing(payload_bytes(spec.seed, spec.size), digest))
    hexdigest = digest.hexdigest()
    writer.add_file(PAYLOAD_SHA256_NAME, len(hexdigest), (hexdigest.encode("ascii"),))
    total = writer.finish()
    if total != archive_size(spec, agent):
        raise HarnessBug(
            f"archive is {total} bytes, archive_size() said {archive_size(spec, agent)}"
        )
    return hexdigest


@contextlib.contextmanager
def _atomic_output(out: Path) -> Iterator[Any]:
    """A binary file that becomes *out* only if the block finishes (temp + os.replace)."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise InitrdWriteError(f"cannot create a file in {out.parent}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            yield fh
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InitrdWriteError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build(spec: InitrdSpec, agent: bytes, out: Path) -> BuiltInitrd:
    with _atomic_output(out) as fh:
        if spec.raw:
            sink = CompressingSink(fh, spec.compression, spec.size)
            digest = hashlib.sha256()
            for chunk in payload_bytes(spec.seed, spec.size):
                digest.update(chunk)
                sink.write(chunk)
            payload_sha256 = digest.hexdigest()
        elif spec.split:
            fh.write(early_archive(agent))  # 512-aligned: the next archive starts on its own
            sink = CompressingSink(fh, spec.compression, payload_archive_size(spec))
            payload_sha256 = write_payload_archive(sink, spec)
        else:
            sink = CompressingSink(fh, spec.compression, archive_size(spec, agent))
            payload_sha256 = write_initrd_archive(sink, spec, agent)
        sink.close()
    return BuiltInitrd(path=out, size=out.stat().st_size, payload_sha256=payload_sha256, spec=spec)


def build_initrd(spec: InitrdSpec, agent: Path, out: Path) -> BuiltInitrd:
    """Build the initrd for *spec* with *agent* as /init into *out* (replaced atomically)."""
    return _build(spec, _read_agent(agent), out)


def default_cache_dir() -> Path:
    """$BOOTFUZZ_CACHE, else ~/.cache/bootfuzz."""
    env = os.environ.get("BOOTFUZZ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bootfuzz"


def cache_name(spec: InitrdSpec, agent_sha256: str) -> str:
    """The cache file name: readable, and unique per (format, spec, agent)."""
    return (
        f"v{FORMAT_VERSION}-{spec.compression.value}-{spec.size}-{spec.seed:016x}-"
        f"{agent_sha256[:16]}{'-split' if spec.split else ''}"
        f"{'.raw' if spec.raw else '.cpio'}{spec.compression.suffix}"
    )


def _metadata(spec: InitrdSpec, agent_sha256: str) -> dict[str, object]:
    return {
        "format_version": FORMAT_VERSION,
        "size": spec.size,
        "compression": spec.compression.value,
        "seed": spec.seed,
        "split": spec.split,
        "raw": spec.raw,
        "agent_sha256": agent_sha256,
    }


def _cached(path: Path, meta_path: Path, expected: Mapping[str, object]) -> tuple[int, str] | None:
    """(image size, payload sha256) of a complete cache entry, or None to rebuild."""
    try:
        meta = json.loads(meta_path.read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
        return None
    digest = meta.get("payload_sha256")
    if meta.get("image_size") != size or not isinstance(digest, str):
        return None
    return size, digest


def cached_initrd(
    spec: InitrdSpec,
    agent: Path,
    cache_dir: Path | None = None,
) -> BuiltInitrd:
    """The initrd for (*spec*, *agent*) from ``<cache>/initrd/``, built there if missing.

    *cache_dir* is the bootfuzz cache root (default :func:`default_cache_dir`).  The
    key is the spec, the agent's SHA-256 and FORMAT_VERSION.  The image is written
    first and its JSON sidecar last, so an interrupted build is rebuilt next time.
    """
    agent_bytes = _read_agent(agent)  # read once: the key and the image see the same bytes
    agent_sha256 = hashlib.sha256(agent_bytes).hexdigest()
    directory = (cache_dir if cache_dir is not None else default_cache_dir()) / "initrd"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitrdWriteError(f"cannot create {directory}: {exc.strerror or exc}") from None
    path = directory / cache_name(spec, agent_sha256)
    meta_path = path.with_name(path.name + ".json")
    expected = _metadata(spec, agent_sha256)
    hit = _cached(path, meta_path, expected)
    if hit is not None:
        return BuiltInitrd(path=path, size=hit[0], payload_sha256=hit[1], spec=spec)
    built = _build(spec, agent_bytes, path)
    meta = {**expected, "image_size": built.size, "payload_sha256": built.payload_sha256}
    with _atomic_output(meta_path) as fh:
        fh.write(json.dumps(meta, indent=1, sort_keys=True).encode() + b"\n")
    return built
