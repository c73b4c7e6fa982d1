"""Read files out of a Debian binary package (.deb) without dpkg.

A .deb is an ``ar`` archive holding ``debian-binary``, ``control.tar.*`` and
``data.tar.*`` (source: deb(5)).  The ar reader is hand-written: the format is a
magic line and fixed 60-byte headers, about twenty lines of code, and no
well-kept PyPI library covers it better; a dependency would cost more than it
saves.  The tar members go through :mod:`tarfile` in streaming mode, so a 70 MB
kernel package is decompressed once, front to back, and reading stops
as soon as every requested member has been seen.  zstd, which dpkg has accepted
since 1.21.18 and :mod:`tarfile` does not know on Python 3.11, goes through the
``zstandard`` package's streaming reader.

Every failure caused by the file (foreign, truncated, corrupt, member missing)
raises :class:`DebError` with one message; decompressor and tarfile exceptions
never escape.
"""

from __future__ import annotations

import bz2
import enum
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import zstandard

from bootfuzz.errors import ConfigError

__all__ = [
    "AR_MAGIC",
    "ArMember",
    "DebError",
    "DebPart",
    "ExtractedFile",
    "extract_members",
    "extract_to_files",
    "list_ar_members",
    "list_members",
]


class DebError(ConfigError):
    """A .deb is foreign, truncated or corrupt, or lacks a requested member."""

    component = "deb"


# source: ar(5) / GNU binutils include/ar.h: "!<arch>\n", then per member a
# 60-byte header: ar_name[16] ar_date[12] ar_uid[6] ar_gid[6] ar_mode[8]
# ar_size[10] ar_fmag[2] = "`\n"; member data is padded to an even offset.
AR_MAGIC = b"!<arch>\n"
AR_HEADER = struct.Struct("16s12s6s6s8s10s2s")
AR_FMAG = b"`\n"
assert AR_HEADER.size == 60

# source: deb(5): the first member is "debian-binary" and holds the format version.
DEB_BINARY_MEMBER = "debian-binary"
DEB_FORMAT_MAJOR = b"2."

#: Bytes copied per read when streaming a member to a file.
CHUNK_SIZE = 1 << 20

#: What a corrupt or cut-off compressed tar raises from inside the stdlib/zstandard.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    lzma.LZMAError,
    zlib.error,
    EOFError,
    zstandard.ZstdError,
    OSError,  # gzip.BadGzipFile and bz2's "Invalid data stream"
    ValueError,
)


class DebPart(enum.Enum):
    """The two tar archives inside a .deb, by ar member name prefix."""

    DATA = "data.tar"
    CONTROL = "control.tar"


@dataclass(frozen=True)
class ArMember:
    """One member of the outer ar archive: where its bytes sit in the file."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ExtractedFile:
    """A member written to disk, hashed while it streamed past."""

    member: str
    path: Path
    size: int
    sha256: str


class _Window(io.RawIOBase):
    """A read-only view of ``size`` bytes of an open file, from its current position.

    Decompressors read until EOF; this makes EOF the end of the ar member, not
    the end of the .deb.
    """

    def __init__(self, raw: BinaryIO, size: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        data = self._raw.read(want)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _normalize(name: str) -> str:
    """Member names compare without a leading "./" or "/" (dpkg writes "./boot/...")."""
    return posixpath.normpath(name.lstrip("/"))


def _parse_ar(f: BinaryIO, path: Path) -> list[ArMember]:
    size = os.fstat(f.fileno()).st_size
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise DebError(f"{path}: not a Debian package (no ar archive signature)")
    members: list[ArMember] = []
    pos = len(AR_MAGIC)
    while pos < size:
        raw = f.read(AR_HEADER.size)
        if len(raw) < AR_HEADER.size:
            raise DebError(f"{path}: truncated ar member header at offset {pos}")
        name_b, _date, _uid, _gid, _mode, size_b, fmag = AR_HEADER.unpack(raw)
        if fmag != AR_FMAG:
            raise DebError(f"{path}: corrupt ar member header at offset {pos}")
        # GNU ar ends names with "/"; dpkg pads with spaces only.
        name = name_b.decode("ascii", "replace").rstrip(" ").removesuffix("/")
        try:
            msize = int(size_b.decode("ascii").strip())
        except ValueError:
            raise DebError(f"{path}: corrupt ar member header at offset {pos}") from None
        start = pos + AR_HEADER.size
        if start + msize > size:
            raise DebError(
                f"{path}: truncated: ar member {name!r} needs {msize} bytes, {size - start} remain"
            )
        members.append(ArMember(name, start, msize))
        pos = start + msize + (msize & 1)
        f.seek(pos)
    if not members:
        raise DebError(f"{path}: not a Debian package (empty ar archive)")
    if members[0].name != DEB_BINARY_MEMBER:
        raise DebError(
            f"{path}: not a Debian package (first ar member is {members[0].name!r}, "
            f"expected {DEB_BINARY_MEMBER!r})"
        )
    f.seek(members[0].offset)
    if not f.read(members[0].size).startswith(DEB_FORMAT_MAJOR):
        raise DebError(f"{path}: unsupported Debian package format (debian-binary is not 2.x)")
    return members


def list_ar_members(deb_path: Path) -> list[ArMember]:
    """The outer ar members, checked to be a format-2 .deb."""
    with _open(deb_path) as f:
        return _parse_ar(f, deb_path)


def _open(deb_path: Path) -> BinaryIO:
    try:
        return open(deb_path, "rb")
    except FileNotFoundError:
        raise DebError(f"{deb_path}: no such file") from None
    except OSError as exc:
        raise DebError(f"{deb_path}: cannot open ({exc.strerror})") from None


#: ar member suffix -> a decompressing reader over the member's bytes.  tarfile then
#: reads plain tar ("r|"), and we can read the decompressed stream to its very end:
#: only there do gzip (CRC32 and size), xz (its check) and zstd (content checksum)
#: verify what they produced.  tarfile's own "r|gz" never checks the gzip trailer.
_SUFFIXES = ("", ".gz", ".xz", ".bz2", ".zst")


def _decompressing(raw: IO[bytes], suffix: str) -> IO[bytes]:
    # The reader lives as long as the ar member window under it (see _open_tar).
    if suffix == ".gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if suffix == ".xz":
        return lzma.LZMAFile(raw)
    if suffix == ".bz2":
        return bz2.BZ2File(raw)
    if suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def _drain(src: IO[bytes], deb_path: Path, ar_name: str) -> None:
    """Read the decompressed stream to its end, so its integrity check runs."""
    try:
        while src.read(CHUNK_SIZE):
            pass
    except _DECODE_ERRORS as exc:
        raise _corrupt(deb_path, ar_name) from exc


@contextmanager
def _open_tar(deb_path: Path, part: DebPart) -> Iterator[tuple[tarfile.TarFile, str]]:
    with _open(deb_path) as f:
        members = _parse_ar(f, deb_path)
        found = [m for m in members if m.name.startswith(part.value)]
        if not found:
            raise DebError(f"{deb_path}: no {part.value}.* member in the package")
        member = found[0]
        suffix = member.name.removeprefix(part.value)
        if suffix not in _SUFFIXES:
            known = ", ".join(part.value + s for s in _SUFFIXES)
            raise DebError(
                f"{deb_path}: {member.name} uses an unsupported compression (known: {known})"
            )
        f.seek(member.offset)
        window = io.BufferedReader(_Window(f, member.size))
        src = _decompressing(window, suffix)
        try:
            tar = tarfile.open(fileobj=src, mode="r|")  # noqa: SIM115 (closed by `with tar`)
        except _DECODE_ERRORS as exc:
            raise _corrupt(deb_path, member.name) from exc
        with tar:
            yield tar, member.name
            # Whatever the caller read, the rest of the stream must decode and check
            # out: a flipped byte must never pass as other contents.
            _drain(src, deb_path, member.name)


def _corrupt(deb_path: Path, ar_name: str) -> DebError:
    return DebError(f"{deb_path}: {ar_name} is corrupt or truncated")


def _walk(tar: tarfile.TarFile, deb_path: Path, ar_name: str) -> Iterator[tarfile.TarInfo]:
    """Iterate tar entries, translating decoder errors raised between entries."""
    while True:
        try:
            info = tar.next()
        except _DECODE_ERRORS as exc:
            raise _corrupt(deb_path, ar_name) from exc
        if info is None:
            return
        yield info


def list_members(deb_path: Path, *, part: DebPart = DebPart.DATA) -> list[str]:
    """Every path in the data (or control) archive, without the leading "./"."""
    with _open_tar(deb_path, part) as (tar, ar_name):
        return [_normalize(info.name) for info in _walk(tar, deb_path, ar_name)]


def _stream_members(
    deb_path: Path,
    members: Sequence[str],
    part: DebPart,
    sink: Callable[[str, Iterator[bytes]], None],
) -> None:
    """Feed each requested member's chunks to ``sink(requested_name, chunks)``.

    Stops reading the archive once all members were seen.  Decoder errors are
    translated here; anything ``sink`` raises (a full disk) passes through.
    """
    wanted: dict[str, str] = {}
    for name in members:
        wanted.setdefault(_normalize(name), name)
    with _open_tar(deb_path, part) as (tar, ar_name):
        for info in _walk(tar, deb_path, ar_name):
            requested = wanted.pop(_normalize(info.name), None)
            if requested is None:
                continue
            if not info.isfile():
                raise DebError(f"{deb_path}: {requested!r} in {ar_name} is not a regular file")
            fobj = tar.extractfile(info)
            assert fobj is not None  # isfile() guarantees a file object

            def chunks(fobj: IO[bytes] = fobj) -> Iterator[bytes]:
                while True:
                    try:
                        data = fobj.read(CHUNK_SIZE)
                    except _DECODE_ERRORS as exc:
                        raise _corrupt(deb_path, ar_name) from exc
                    if not data:
                        return
                    yield data

            sink(requested, chunks())
            if not wanted:
                return
        missing = ", ".join(repr(n) for n in wanted.values())
        raise DebError(f"{deb_path}: no member {missing} in {ar_name}")


def extract_members(
    deb_path: Path, members: Sequence[str], *, part: DebPart = DebPart.DATA
) -> dict[str, bytes]:
    """Read the named members into memory, keyed by the names as given."""
    out: dict[str, bytes] = {}

    def sink(name: str, chunks: Iterator[bytes]) -> None:
        out[name] = b"".join(chunks)

    _stream_members(deb_path, members, part, sink)
    return out


def extract_to_files(
    deb_path: Path, targets: Mapping[str, Path], *, part: DebPart = DebPart.DATA
) -> dict[str, ExtractedFile]:
    """Stream each member to its target path, hashing on the way.

    The targets are written in place (callers that need atomicity pass temporary
    paths and rename).  Keyed by the member names as given.
    """
    out: dict[str, ExtractedFile] = {}

    def sink(name: str, chunks: Iterator[bytes]) -> None:
        digest = hashlib.sha256()
        size = 0
        dest = targets[name]
        with open(dest, "wb") as w:
            for data in chunks:
                digest.update(data)
                size += len(data)
                w.write(data)
        out[name] = ExtractedFile(name, dest, size, digest.hexdigest())

    _stream_members(deb_path, list(targets), part, sink)
    return out
