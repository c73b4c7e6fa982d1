"""From a bzImage's compressed payload to the ELF vmlinux, and what its ELF notes say.

The loader needs the vmlinux for two things the setup header does not carry: the
PT_LOAD layout (direct 64-bit entry) and the Xen PVH notes (PVH entry).  Kbuild
builds the payload as ``compress(vmlinux.bin + vmlinux.relocs)`` followed, for
every format but gzip, by a 4-byte little-endian uncompressed size
(``size_append`` in scripts/Makefile.lib; arch/x86/boot/compressed/Makefile), and
mkpiggy counts that trailer in ``payload_length``.  So every decoder here stops at
the end of its first stream or frame and ignores what follows.

Every failure caused by the bytes (unknown magic, corrupt or truncated stream, a
decompression bomb, an output that is not ELF, a malformed note) raises
:class:`~bootfuzz.errors.ImageError`; no decompressor or pyelftools exception
escapes.
"""

from __future__ import annotations

import bz2
import io
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import lz4.block
import zstandard
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from bootfuzz.errors import ImageError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ELF_MAGIC",
    "LZ4_LEGACY_CHUNK_SIZE",
    "LZ4_LEGACY_MAGIC",
    "XEN_ELFNOTE_PHYS32_ENTRY",
    "XEN_ELFNOTE_PHYS32_RELOC",
    "LoadSegment",
    "PayloadCompression",
    "PvhReloc",
    "VmlinuxInfo",
    "decompress_payload",
    "detect_compression",
    "read_vmlinux",
]

#: Largest vmlinux we agree to produce.  Debian's are 55-70 MB; the cap only
#: stops a hostile payload from filling memory.
DEFAULT_MAX_SIZE = 1 << 30

# source: include/uapi/linux/elf.h (ELFMAG)
ELF_MAGIC = b"\x7fELF"


class PayloadCompression(StrEnum):
    """The formats Kbuild can compress vmlinux.bin with (CONFIG_KERNEL_*)."""

    GZIP = "gzip"
    BZIP2 = "bzip2"
    LZMA = "lzma"
    XZ = "xz"
    LZO = "lzo"
    LZ4 = "lz4"
    ZSTD = "zstd"
    NONE = "none"  # an uncompressed ELF


# source: lib/decompress.c compressed_formats[] (the kernel matches two bytes; we
# match the full magic of each format so a stray 0x5d or 0x02 is not taken for one).
_MAGICS: tuple[tuple[bytes, PayloadCompression], ...] = (
    (b"\x1f\x8b", PayloadCompression.GZIP),
    (b"\x1f\x9e", PayloadCompression.GZIP),  # "old gzip"; zlib itself rejects it
    (b"BZh", PayloadCompression.BZIP2),
    (b"\x5d\x00\x00", PayloadCompression.LZMA),  # lc=3 lp=0 pb=2, dict a multiple of 64 KiB
    (b"\xfd7zXZ\x00", PayloadCompression.XZ),
    (b"\x89LZO", PayloadCompression.LZO),
    (b"\x02\x21\x4c\x18", PayloadCompression.LZ4),  # legacy frame, ARCHIVE_MAGICNUMBER
    (b"\x28\xb5\x2f\xfd", PayloadCompression.ZSTD),
    (ELF_MAGIC, PayloadCompression.NONE),
)

# source: lib/decompress_unlz4.c ARCHIVE_MAGICNUMBER and
# LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE (what `lz4 -l` writes).
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_CHUNK_SIZE = 8 << 20
_U32LE = struct.Struct("<I")

# The kernel uses `zstd -22 --ultra` (a 128 MiB window, scripts/Makefile.lib
# zstd22); accept up to the format's 64-bit maximum.
# source: lib/zstd/zstd.h ZSTD_WINDOWLOG_MAX_64
_ZSTD_MAX_WINDOW = 1 << 31
# zstd can expand 4 input bytes (an RLE block header and its byte) into a 128 KiB
# block, so feed it 1 KiB at a time: at most ~32 MiB past the cap before we check.
_ZSTD_FEED = 1024

_DecompressError = (
    zlib.error,
    lzma.LZMAError,
    OSError,  # bz2: "Invalid data stream"
    EOFError,
    ValueError,
    lz4.block.LZ4BlockError,
    zstandard.ZstdError,
)


class _Truncated(Exception):
    """The input ended before the stream's end marker."""


class _Corrupt(Exception):
    """The stream is inconsistent in a way no library call reports."""


class _TooLarge(Exception):
    """The output passed max_size."""


def detect_compression(payload: bytes) -> PayloadCompression:
    """Name the payload's format from its magic, as the decompressor stub would."""
    for magic, compression in _MAGICS:
        if payload.startswith(magic):
            return compression
    shown = " ".join(f"{b:02x}" for b in payload[:4]) or "<empty>"
    raise ImageError(f"unknown payload compression (magic {shown})")


def decompress_payload(payload: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Return the ELF image (vmlinux.bin, plus vmlinux.relocs if built) the payload holds.

    Trailing bytes after the first stream (the size_append trailer) are ignored.
    """
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, not {max_size}")
    compression = detect_compression(payload)
    if compression is PayloadCompression.LZO:
        raise ImageError("payload (lzo) is not supported: bootfuzz has no LZO decompressor")
    decoder = _DECODERS[compression]
    try:
        out = decoder(payload, max_size)
    except _TooLarge:
        raise ImageError(
            f"payload ({compression.value}) decompresses to more than {max_size} bytes (max_size)"
        ) from None
    except _Truncated as exc:
        raise ImageError(
            f"payload ({compression.value}) does not decompress: truncated stream ({exc})"
        ) from None
    except _Corrupt as exc:
        raise ImageError(f"payload ({compression.value}) does not decompress: {exc}") from None
    except _DecompressError as exc:
        raise ImageError(
            f"payload ({compression.value}) does not decompress: {exc or type(exc).__name__}"
        ) from exc
    if not out.startswith(ELF_MAGIC):
        raise ImageError("decompressed payload is not an ELF image")
    return out


def _capped(out: bytes, max_size: int) -> bytes:
    if len(out) > max_size:
        raise _TooLarge
    return out


def _gunzip(payload: bytes, max_size: int) -> bytes:
    # wbits 16+15: a gzip wrapper, whose CRC32 and ISIZE zlib verifies.
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = _capped(d.decompress(payload, max_size + 1), max_size)
    if not d.eof:
        raise _Truncated("no gzip trailer")
    return out


def _bunzip2(payload: bytes, max_size: int) -> bytes:
    d = bz2.BZ2Decompressor()
    out = _capped(d.decompress(payload, max_length=max_size + 1), max_size)
    if not d.eof:
        raise _Truncated("no bzip2 end-of-stream marker")
    return out


def _unlzma(lzma_format: int, what: str) -> Callable[[bytes, int], bytes]:
    def decode(payload: bytes, max_size: int) -> bytes:
        # One stream only: lzma.decompress() would read the trailer as a second one.
        d = lzma.LZMADecompressor(format=lzma_format)
        out = _capped(d.decompress(payload, max_length=max_size + 1), max_size)
        if not d.eof:
            raise _Truncated(f"no {what}")
        return out

    return decode


def _unlz4_legacy(payload: bytes, max_size: int) -> bytes:
    """Walk the legacy frame as lib/decompress_unlz4.c does.

    After the magic come chunks of [u32 LE compressed size][LZ4 block], each block
    at most 8 MiB once decompressed.  A repeated magic starts a concatenated frame
    and is skipped.  The stream ends at the end of the data, at a zero size, or at
    the last four bytes: the size_append trailer, which the boot decompressor strips
    off (it passes in_len - 4) and reads as the output size.  The format has no
    checksum, so the trailer is checked against the output, and 1-3 bytes left after
    a chunk (a chunk cut short and completed by trailer bytes) are refused.
    """
    pos = len(_U32LE.pack(LZ4_LEGACY_MAGIC))
    parts: list[bytes] = []
    produced = 0
    while len(payload) - pos >= _U32LE.size:
        (size,) = _U32LE.unpack_from(payload, pos)
        if size == LZ4_LEGACY_MAGIC:
            pos += _U32LE.size
            continue
        if size == 0:
            break
        if len(payload) - pos == _U32LE.size:
            if size != produced & 0xFFFFFFFF:
                raise _Corrupt(f"size trailer says {size} bytes, the chunks hold {produced}")
            break
        start = pos + _U32LE.size
        if size > len(payload) - start:
            raise _Truncated(
                f"chunk at offset {pos:#x} declares {size} bytes, {len(payload) - start} remain"
            )
        part = lz4.block.decompress(
            payload[start : start + size], uncompressed_size=LZ4_LEGACY_CHUNK_SIZE
        )
        produced += len(part)
        if produced > max_size:
            raise _TooLarge
        parts.append(part)
        pos = start + size
    if 0 < len(payload) - pos < _U32LE.size:
        raise _Truncated(f"{len(payload) - pos} stray bytes after the chunk ending at {pos:#x}")
    return b"".join(parts)


def _unzstd(payload: bytes, max_size: int) -> bytes:
    # Streaming: the kernel's frame may lack a content size, and one-shot
    # decompression would then refuse it.  decompressobj stops at the frame's end.
    d = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW).decompressobj()
    parts: list[bytes] = []
    produced = 0
    for pos in range(0, len(payload), _ZSTD_FEED):
        part = d.decompress(payload[pos : pos + _ZSTD_FEED])
        produced += len(part)
        if produced > max_size:
            raise _TooLarge
        parts.append(part)
        if d.eof:
            break
    if not d.eof:
        raise _Truncated("zstd frame incomplete")
    return b"".join(parts)


def _uncompressed(payload: bytes, max_size: int) -> bytes:
    return _capped(payload, max_size)


_DECODERS: dict[PayloadCompression, Callable[[bytes, int], bytes]] = {
    PayloadCompression.GZIP: _gunzip,
    PayloadCompression.BZIP2: _bunzip2,
    PayloadCompression.LZMA: _unlzma(lzma.FORMAT_ALONE, "lzma end marker"),
    PayloadCompression.XZ: _unlzma(lzma.FORMAT_XZ, "xz stream footer"),
    PayloadCompression.LZ4: _unlz4_legacy,
    PayloadCompression.ZSTD: _unzstd,
    PayloadCompression.NONE: _uncompressed,
}


# --- the vmlinux ELF ------------------------------------------------------------

# Xen ELF note types Linux emits (name "Xen").
# source: include/xen/interface/elfnote.h
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_GUEST_VERSION = 7
XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_ELFNOTE_PHYS32_RELOC = 19
XEN_NOTE_NAME = b"Xen"

# Defaults for the PHYS32_RELOC fields a note leaves out.
# source: include/xen/interface/elfnote.h (XEN_ELFNOTE_PHYS32_RELOC comment)
PVH_RELOC_DEFAULT_ALIGN = 0x200000
PVH_RELOC_DEFAULT_MIN = 0
PVH_RELOC_DEFAULT_MAX = 0xFFFFFFFF

# Elf32_Nhdr and Elf64_Nhdr are both three Elf_Word (u32): namesz, descsz, type;
# name and desc are each padded to the segment's alignment (4 on Linux).
# source: include/uapi/linux/elf.h
_NHDR_FIELDS = "III"

# init/version-timestamp.c linux_banner: "Linux version " UTS_RELEASE " (" ...
_BANNER = re.compile(rb"Linux version (\S+) \(")


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD program header: where the loader copies bytes to."""

    p_offset: int
    p_paddr: int
    p_vaddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int


@dataclass(frozen=True)
class PvhReloc:
    """XEN_ELFNOTE_PHYS32_RELOC: where a PVH loader may place a relocatable kernel."""

    align: int
    min_addr: int
    max_addr: int  # last byte of the image


@dataclass(frozen=True)
class VmlinuxInfo:
    """What the loader needs from a vmlinux for the direct and PVH entries."""

    entry: int
    machine: str
    elfclass: int
    segments: tuple[LoadSegment, ...]
    pvh_entry: int | None
    pvh_reloc: PvhReloc | None
    linux_version: str | None


@dataclass(frozen=True)
class _Note:
    name: bytes
    type: int
    desc: bytes


def read_vmlinux(elf: bytes) -> VmlinuxInfo:
    """Read the entry, PT_LOAD segments and Xen PVH notes of a vmlinux."""
    try:
        elffile = ELFFile(io.BytesIO(elf))
        endian = "<" if elffile.little_endian else ">"
        segments: list[LoadSegment] = []
        notes: list[_Note] = []
        for segment in elffile.iter_segments():
            if segment["p_type"] in ("PT_LOAD", "PT_NOTE"):
                _check_in_file(segment["p_type"], segment["p_offset"], segment["p_filesz"], elf)
            if segment["p_type"] == "PT_LOAD":
                segments.append(
                    LoadSegment(
                        p_offset=segment["p_offset"],
                        p_paddr=segment["p_paddr"],
                        p_vaddr=segment["p_vaddr"],
                        p_filesz=segment["p_filesz"],
                        p_memsz=segment["p_memsz"],
                        p_flags=segment["p_flags"],
                    )
                )
            elif segment["p_type"] == "PT_NOTE":
                notes.extend(_parse_notes(segment.data(), segment["p_align"], endian))
        entry = int(elffile.header["e_entry"])
        machine = str(elffile.header["e_machine"])
        elfclass = int(elffile.elfclass)
    except (ELFError, struct.error, ValueError, KeyError, IndexError) as exc:
        raise ImageError(f"vmlinux is not a readable ELF image: {exc}") from None

    pvh_entry: int | None = None
    pvh_reloc: PvhReloc | None = None
    for note in notes:
        if note.name != XEN_NOTE_NAME:
            continue
        if note.type == XEN_ELFNOTE_PHYS32_ENTRY and pvh_entry is None:
            pvh_entry = _phys32_entry(note.desc, endian)
        elif note.type == XEN_ELFNOTE_PHYS32_RELOC and pvh_reloc is None:
            pvh_reloc = _phys32_reloc(note.desc, endian)

    banner = _BANNER.search(elf)
    return VmlinuxInfo(
        entry=entry,
        machine=machine,
        elfclass=elfclass,
        segments=tuple(segments),
        pvh_entry=pvh_entry,
        pvh_reloc=pvh_reloc,
        linux_version=banner.group(1).decode("ascii", "replace") if banner else None,
    )


def _check_in_file(p_type: str, offset: int, filesz: int, elf: bytes) -> None:
    if offset + filesz > len(elf):
        raise ImageError(
            f"{p_type} segment at offset {offset:#x} ({filesz} bytes) runs past the end "
            f"of the {len(elf)}-byte file"
        )


def _parse_notes(data: bytes, p_align: int, endian: str) -> list[_Note]:
    """Split a PT_NOTE segment into notes.

    Done by hand: pyelftools 0.33 names note types by the GNU table whatever the
    owner, so Xen's type 3 comes back as "NT_GNU_BUILD_ID".
    """
    header = struct.Struct(endian + _NHDR_FIELDS)
    align = 8 if p_align == 8 else 4
    notes: list[_Note] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < header.size:
            raise ImageError(f"ELF note at segment offset {pos:#x} is cut short")
        namesz, descsz, n_type = header.unpack_from(data, pos)
        name_at = pos + header.size
        desc_at = name_at + _align_up(namesz, align)
        end = desc_at + _align_up(descsz, align)
        if desc_at + descsz > len(data):
            raise ImageError(f"ELF note at segment offset {pos:#x} overruns its PT_NOTE segment")
        name = data[name_at : name_at + namesz].rstrip(b"\x00")
        notes.append(_Note(name=name, type=n_type, desc=data[desc_at : desc_at + descsz]))
        pos = end
    return notes


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _phys32_entry(desc: bytes, endian: str) -> int:
    # ".quad" on x86_64 up to at least 6.1, ".long" on i386 and later kernels.
    if len(desc) == 4:
        return int(struct.unpack(endian + "I", desc)[0])
    if len(desc) == 8:
        return int(struct.unpack(endian + "Q", desc)[0])
    raise ImageError(f"Xen PHYS32_ENTRY note has a {len(desc)}-byte descriptor (expected 4 or 8)")


def _phys32_reloc(desc: bytes, endian: str) -> PvhReloc:
    # "up to three 32bit values": align, min, max; missing ones take defaults.
    if len(desc) % 4 or len(desc) > 12:
        raise ImageError(
            f"Xen PHYS32_RELOC note has a {len(desc)}-byte descriptor (expected up to three u32)"
        )
    values = list(struct.unpack(f"{endian}{len(desc) // 4}I", desc))
    defaults = [PVH_RELOC_DEFAULT_ALIGN, PVH_RELOC_DEFAULT_MIN, PVH_RELOC_DEFAULT_MAX]
    align, min_addr, max_addr = values + defaults[len(values) :]
    return PvhReloc(align=align, min_addr=min_addr, max_addr=max_addr)
