"""The compressions the kernel can undo, named once: their magics and our decoders.

One enum serves both users: the bzImage payload (Kbuild's CONFIG_KERNEL_*, read by
bootfuzz.kernel.payload) and the initrd (CONFIG_RD_*, written by bootfuzz.guest.initrd).
Its values are what users see: reproducer JSON, ``--initrd-format``, the kernel
manifest.  Encoders belong to the initrd writer; this module only reads.

Every decoder stops at the end of its first stream or frame and ignores what follows:
Kbuild appends a 4-byte uncompressed size to every payload format but gzip
(``size_append`` in scripts/Makefile.lib), and a split initrd's next archive may
follow.  Every decoder is capped: a stream that expands past *max_size* is refused
before it fills memory.  Corrupt, truncated and oversized input all raise
:class:`DecompressError`; no library exception escapes.
"""

from __future__ import annotations

import bz2
import enum
import lzma
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Mapping

import lz4.block
import zstandard

from bootfuzz.errors import ConfigError, InitramfsError


class Compression(enum.StrEnum):
    """The formats the kernel decodes (lib/decompress_*.c), by the kernel's names."""

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

    @property
    def kernel_magic(self) -> bytes:
        """The bytes by which the kernel's decompress_method() recognises the format.

        source: lib/decompress.c compressed_formats[]: it matches KERNEL_MAGIC_SIZE
        bytes.  lzma's second byte is the low byte of the dictionary size, so an LZMA
        dictionary must be a multiple of 256 bytes to be recognised.
        """
        if self is Compression.NONE:
            raise ValueError("an uncompressed stream has no magic")
        return MAGICS[self][:KERNEL_MAGIC_SIZE]


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

#: Every format the kernel decodes is one we can write (lzo through the lzop command).
SUPPORTED: frozenset[Compression] = frozenset(Compression)

#: source: lib/decompress.c compressed_formats[].  The kernel matches two bytes; we
#: match each format's full magic so that a stray 0x5d or 0x02 is not taken for one.
MAGICS: Mapping[Compression, bytes] = {
    Compression.GZIP: b"\x1f\x8b",
    Compression.BZIP2: b"BZh",
    Compression.LZMA: b"\x5d\x00\x00",  # lc=3 lp=0 pb=2, dict a multiple of 64 KiB
    Compression.XZ: b"\xfd7zXZ\x00",
    Compression.LZO: b"\x89LZO",  # the lzop file header, which unlzo reads
    Compression.LZ4: b"\x02\x21\x4c\x18",  # legacy frame, ARCHIVE_MAGICNUMBER
    Compression.ZSTD: b"\x28\xb5\x2f\xfd",
}
#: "old gzip", which compressed_formats[] also lists as gzip; zlib itself rejects it.
OLD_GZIP_MAGIC = b"\x1f\x9e"
KERNEL_MAGIC_SIZE = 2
assert all(c in MAGICS for c in Compression if c is not Compression.NONE)


def detect(data: bytes) -> Compression | None:
    """The compressed format *data* starts with, by its magic; None if no format's."""
    if data.startswith(OLD_GZIP_MAGIC):
        return Compression.GZIP
    for compression, magic in MAGICS.items():
        if data.startswith(magic):
            return compression
    return None


# --- lzo through lzop --------------------------------------------------------------

#: The kernel's unlzo reads the lzop file format (header, then blocks with one
#: adler32 of the data each), which no well-kept Python package reads or writes
#: (python-lzo handles raw blocks only, and has no wheels): the lzop command does,
#: as in the kernel's own build (scripts/Makefile.lib, cmd_lzo).
LZOP = "lzop"
#: lzop's exit status for "finished, with a warning"; trailing bytes are only that.
_LZOP_WARNING = 2
_LZOP_TRAILING = b"ignoring trailing garbage"


def lzop_available() -> bool:
    return shutil.which(LZOP) is not None


def lzo_unsupported() -> InitramfsError:
    """The error for an lzo initrd or stream on a machine without lzop."""
    return InitramfsError(
        f"lzo compression needs the {LZOP} command (Debian package lzop; ./bootstrap "
        "installs it); choose one of: "
        + ", ".join(c.value for c in Compression if c in SUPPORTED)
    )


# --- decoders ----------------------------------------------------------------------

#: Largest output we agree to produce.  Debian's vmlinux are 55-70 MB; the cap only
#: stops a hostile stream from filling memory.
DEFAULT_MAX_SIZE = 1 << 30

#: source: lib/decompress_unlz4.c ARCHIVE_MAGICNUMBER (the legacy frame, lz4 -l).
LZ4_LEGACY_MAGIC = 0x184C2102
#: source: lib/decompress_unlz4.c LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE: the kernel
#: decodes each block into a buffer of this size, so no block may hold more.
LZ4_LEGACY_CHUNK_SIZE = 8 << 20
_U32LE = struct.Struct("<I")
assert MAGICS[Compression.LZ4] == _U32LE.pack(LZ4_LEGACY_MAGIC)

# The kernel uses `zstd -22 --ultra` (a 128 MiB window, scripts/Makefile.lib
# zstd22); accept up to the format's 64-bit maximum.
# source: lib/zstd/zstd.h ZSTD_WINDOWLOG_MAX_64
_ZSTD_MAX_WINDOW = 1 << 31
# zstd can expand 4 input bytes (an RLE block header and its byte) into a 128 KiB
# block, so feed it 1 KiB at a time: at most ~32 MiB past the cap before we check.
_ZSTD_FEED = 1024
_LZOP_READ = 1 << 16

_LibraryError = (
    zlib.error,
    lzma.LZMAError,
    OSError,  # bz2: "Invalid data stream"
    EOFError,
    ValueError,
    lz4.block.LZ4BlockError,
    zstandard.ZstdError,
)


class DecompressError(ConfigError):
    """Bytes that do not decode as their format: corrupt, truncated or too large.

    *reason* completes "<format> data ...", so a caller can name the stream its own way.
    """

    component = "decompress"

    def __init__(self, compression: Compression, reason: str) -> None:
        super().__init__(f"{compression.value} data {reason}")
        self.compression = compression
        self.reason = reason


class _Truncated(Exception):
    """The input ended before the stream's end marker."""


class _Corrupt(Exception):
    """The stream is inconsistent in a way no library call reports."""


class _TooLarge(Exception):
    """The output passed max_size."""


def decompress(data: bytes, compression: Compression, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The first stream of *data*, decoded as *compression*, at most *max_size* bytes."""
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, not {max_size}")
    if compression is Compression.LZO and not lzop_available():
        raise DecompressError(compression, f"needs the {LZOP} command (Debian package lzop)")
    try:
        return _DECODERS[compression](data, max_size)
    except _TooLarge:
        raise DecompressError(
            compression, f"decompresses to more than {max_size} bytes (max_size)"
        ) from None
    except _Truncated as exc:
        raise DecompressError(
            compression, f"does not decompress: truncated stream ({exc})"
        ) from None
    except _Corrupt as exc:
        raise DecompressError(compression, f"does not decompress: {exc}") from None
    except _LibraryError as exc:
        raise DecompressError(
            compression, f"does not decompress: {exc or type(exc).__name__}"
        ) from None


def _capped(out: bytes, max_size: int) -> bytes:
    if len(out) > max_size:
        raise _TooLarge
    return out


def _gunzip(data: bytes, max_size: int) -> bytes:
    # wbits 16+15: a gzip wrapper, whose CRC32 and ISIZE zlib verifies.
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = _capped(d.decompress(data, max_size + 1), max_size)
    if not d.eof:
        raise _Truncated("no gzip trailer")
    return out


def _bunzip2(data: bytes, max_size: int) -> bytes:
    d = bz2.BZ2Decompressor()
    out = _capped(d.decompress(data, max_length=max_size + 1), max_size)
    if not d.eof:
        raise _Truncated("no bzip2 end-of-stream marker")
    return out


def _unlzma(lzma_format: int, what: str) -> Callable[[bytes, int], bytes]:
    def decode(data: bytes, max_size: int) -> bytes:
        # One stream only: lzma.decompress() would read a size trailer as a second one.
        d = lzma.LZMADecompressor(format=lzma_format)
        out = _capped(d.decompress(data, max_length=max_size + 1), max_size)
        if not d.eof:
            raise _Truncated(f"no {what}")
        return out

    return decode


def _unlz4_legacy(data: bytes, max_size: int) -> bytes:
    """Walk the legacy frame as lib/decompress_unlz4.c does.

    After the magic come chunks of [u32 LE compressed size][LZ4 block], each block
    at most 8 MiB once decompressed.  A repeated magic starts a concatenated frame
    and is skipped.  The stream ends at the end of the data, at a zero size, or at
    the last four bytes: a payload's size_append trailer, which the boot
    decompressor strips off (it passes in_len - 4) and reads as the output size.
    The format has no checksum, so the trailer is checked against the output, and
    1-3 bytes left after a chunk (a chunk cut short and completed by trailer bytes)
    are refused.
    """
    magic = MAGICS[Compression.LZ4]
    if not data.startswith(magic):
        raise _Corrupt(f"no legacy lz4 magic {magic.hex()} at the start")
    pos = len(magic)
    parts: list[bytes] = []
    produced = 0
    while len(data) - pos >= _U32LE.size:
        (size,) = _U32LE.unpack_from(data, pos)
        if size == LZ4_LEGACY_MAGIC:
            pos += _U32LE.size
            continue
        if size == 0:
            break
        if len(data) - pos == _U32LE.size:
            if size != produced & 0xFFFFFFFF:
                raise _Corrupt(f"size trailer says {size} bytes, the chunks hold {produced}")
            break
        start = pos + _U32LE.size
        if size > len(data) - start:
            raise _Truncated(
                f"chunk at offset {pos:#x} declares {size} bytes, {len(data) - start} remain"
            )
        part = lz4.block.decompress(
            data[start : start + size], uncompressed_size=LZ4_LEGACY_CHUNK_SIZE
        )
        produced += len(part)
        if produced > max_size:
            raise _TooLarge
        parts.append(part)
        pos = start + size
    if 0 < len(data) - pos < _U32LE.size:
        raise _Truncated(f"{len(data) - pos} stray bytes after the chunk ending at {pos:#x}")
    return b"".join(parts)


def _unzstd(data: bytes, max_size: int) -> bytes:
    # Streaming: the kernel's frame may lack a content size, and one-shot
    # decompression would then refuse it.  decompressobj stops at the frame's end.
    d = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW).decompressobj()
    parts: list[bytes] = []
    produced = 0
    for pos in range(0, len(data), _ZSTD_FEED):
        part = d.decompress(data[pos : pos + _ZSTD_FEED])
        produced += len(part)
        if produced > max_size:
            raise _TooLarge
        parts.append(part)
        if d.eof:
            break
    if not d.eof:
        raise _Truncated("zstd frame incomplete")
    return b"".join(parts)


def _unlzop(data: bytes, max_size: int) -> bytes:
    """``lzop -d``, its output read up to the cap.  Input and messages go through
    files, so reading a capped output never waits on a full pipe."""
    with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as err:
        src.write(data)
        src.seek(0)
        with subprocess.Popen([LZOP, "-d", "-c", "-"], stdin=src, stdout=subprocess.PIPE,
                              stderr=err) as proc:
            assert proc.stdout is not None
            parts: list[bytes] = []
            produced = 0
            while chunk := proc.stdout.read(_LZOP_READ):
                produced += len(chunk)
                if produced > max_size:
                    proc.kill()
                    raise _TooLarge
                parts.append(chunk)
            status = proc.wait()
        err.seek(0)
        said = err.read()
    if status == _LZOP_WARNING and _LZOP_TRAILING in said:
        status = 0
    if status != 0:
        text = said.decode(errors="replace").strip() or f"exit status {status}"
        raise _Corrupt(text)  # lzop names itself
    return b"".join(parts)


def _uncompressed(data: bytes, max_size: int) -> bytes:
    return _capped(data, max_size)


_DECODERS: Mapping[Compression, Callable[[bytes, int], bytes]] = {
    Compression.NONE: _uncompressed,
    Compression.GZIP: _gunzip,
    Compression.BZIP2: _bunzip2,
    Compression.LZMA: _unlzma(lzma.FORMAT_ALONE, "lzma end marker"),
    Compression.XZ: _unlzma(lzma.FORMAT_XZ, "xz stream footer"),
    Compression.LZO: _unlzop,
    Compression.LZ4: _unlz4_legacy,
    Compression.ZSTD: _unzstd,
}
