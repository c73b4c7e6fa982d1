"""bootfuzz.kernel.payload and bootfuzz.kernel.vmlinux on payloads built here: a small
fake vmlinux, compressed in-process the way Kbuild does it (scripts/Makefile.lib),
followed by the size_append trailer."""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import random
import shutil
import struct
import subprocess
from collections.abc import Callable

import lz4.block
import pytest
import zstandard

from bootfuzz.compression import LZ4_LEGACY_CHUNK_SIZE, LZ4_LEGACY_MAGIC, Compression
from bootfuzz.errors import ImageError
from bootfuzz.kernel.payload import decompress_payload, detect_compression
from bootfuzz.kernel.vmlinux import (
    XEN_ELFNOTE_PHYS32_ENTRY,
    XEN_ELFNOTE_PHYS32_RELOC,
    LoadSegment,
    PvhReloc,
    read_vmlinux,
)

# --- a fake vmlinux --------------------------------------------------------------

EM_386 = 3  # source: include/uapi/linux/elf-em.h
EM_X86_64 = 62
PT_LOAD = 1  # source: include/uapi/linux/elf.h
PT_NOTE = 4
PF_R, PF_W, PF_X = 4, 2, 1
XEN_ELFNOTE_GUEST_OS = 6  # source: include/xen/interface/elfnote.h
XEN_ELFNOTE_VIRT_BASE = 3
NT_GNU_BUILD_ID = 3  # source: include/uapi/linux/elf.h

ENTRY = 0x1000000
LOAD_PADDR = 0x1000000
LOAD_VADDR = 0xFFFFFFFF81000000
PVH_ENTRY = 0x1000850
RELEASE = "6.99.0-7-fake-amd64"
BANNER = f"Linux version {RELEASE} (fuzz@example) (gcc 12) #1 SMP\n".encode()

# Layouts of the ELF structures (source: include/uapi/linux/elf.h): Elf{32,64}_Ehdr
# without e_ident, and Elf{32,64}_Phdr.
EHDR = {32: struct.Struct("<HHIIIIIHHHHHH"), 64: struct.Struct("<HHIQQQIHHHHHH")}
PHDR = {32: struct.Struct("<IIIIIIII"), 64: struct.Struct("<IIQQQQQQ")}
EI_NIDENT = 16


def note(name: bytes, n_type: int, desc: bytes) -> bytes:
    """One Elf_Nhdr note, name and desc padded to 4 bytes (include/linux/elfnote.h)."""
    name += b"\x00"

    def pad(b: bytes) -> bytes:
        return b + b"\x00" * (-len(b) % 4)

    return struct.pack("<III", len(name), len(desc), n_type) + pad(name) + pad(desc)


def xen(n_type: int, desc: bytes) -> bytes:
    return note(b"Xen", n_type, desc)


DEFAULT_NOTES = (
    xen(XEN_ELFNOTE_GUEST_OS, b"linux\x00")
    # type 3 is VIRT_BASE for Xen but NT_GNU_BUILD_ID in pyelftools' table
    + xen(XEN_ELFNOTE_VIRT_BASE, struct.pack("<Q", 0xFFFFFFFF80000000))
    + note(b"GNU", NT_GNU_BUILD_ID, bytes(range(20)))
    + xen(XEN_ELFNOTE_PHYS32_RELOC, struct.pack("<III", 0x200000, 0x1000000, 0x3FFFFFFF))
    + xen(XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<Q", PVH_ENTRY))
)


@functools.cache
def body(size: int = 64 * 1024) -> bytes:
    """Compressible but not trivial load data, so a flipped byte lands in real data."""
    rng = random.Random(1)
    words = [rng.randbytes(rng.randrange(1, 9)) for _ in range(64)]
    block = bytearray(BANNER)
    while len(block) < 64 * 1024:
        block += rng.choice(words)
    return (bytes(block[: 64 * 1024]) * (size // (64 * 1024) + 1))[:size]


def make_elf(
    *,
    elfclass: int = 64,
    notes: bytes = DEFAULT_NOTES,
    load: bytes | None = None,
    note_filesz: int | None = None,
    load_offset: int | None = None,
) -> bytes:
    """ELF header, a PT_LOAD and a PT_NOTE program header, the notes, the load data."""
    load = body() if load is None else load
    ehdr, phdr = EHDR[elfclass], PHDR[elfclass]
    phoff = EI_NIDENT + ehdr.size
    notes_at = phoff + 2 * phdr.size
    load_at = notes_at + len(notes)
    machine = EM_X86_64 if elfclass == 64 else EM_386
    ident = b"\x7fELF" + bytes([elfclass // 32, 1, 1]) + b"\x00" * 9
    header = ident + ehdr.pack(
        2, machine, 1, ENTRY, phoff, 0, 0, EI_NIDENT + ehdr.size, phdr.size, 2, 0, 0, 0
    )
    vaddr = LOAD_VADDR if elfclass == 64 else 0xC1000000
    load_fields = {
        "type": PT_LOAD,
        "offset": load_at if load_offset is None else load_offset,
        "vaddr": vaddr,
        "paddr": LOAD_PADDR,
        "filesz": len(load),
        "memsz": len(load) + 0x1000,
        "flags": PF_R | PF_X,
        "align": 0x200000,
    }
    note_fields = {
        "type": PT_NOTE,
        "offset": notes_at,
        "vaddr": 0,
        "paddr": 0,
        "filesz": len(notes) if note_filesz is None else note_filesz,
        "memsz": len(notes),
        "flags": PF_R,
        "align": 4,
    }
    order64 = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")
    order32 = ("type", "offset", "vaddr", "paddr", "filesz", "memsz", "flags", "align")
    order = order64 if elfclass == 64 else order32
    phdrs = b"".join(phdr.pack(*(f[k] for k in order)) for f in (load_fields, note_fields))
    return header + phdrs + notes + load


ELF = make_elf()

# --- the compressors, as Kbuild runs them ----------------------------------------


def size_append(data: bytes) -> bytes:
    """scripts/Makefile.lib size_append: the uncompressed size as u32 LE."""
    return struct.pack("<I", len(data) & 0xFFFFFFFF)


def lz4_legacy(data: bytes, chunk: int = LZ4_LEGACY_CHUNK_SIZE) -> bytes:
    """`lz4 -l`: the legacy magic, then [u32 LE compressed size][block] per chunk."""
    out = bytearray(struct.pack("<I", LZ4_LEGACY_MAGIC))
    for i in range(0, len(data), chunk):
        block = lz4.block.compress(data[i : i + chunk], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return bytes(out)


def xzkern(data: bytes) -> bytes:
    """scripts/xz_wrap.sh on x86: BCJ x86 + LZMA2, CRC32 check."""
    filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 6}]
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=filters)


def zstd22(data: bytes) -> bytes:
    """`zstd -22 --ultra` from a pipe: a checksum, no content size."""
    cctx = zstandard.ZstdCompressor(level=19, write_checksum=True, write_content_size=False)
    return cctx.compress(data)


COMPRESSORS: dict[Compression, Callable[[bytes], bytes]] = {
    Compression.GZIP: lambda d: gzip.compress(d, compresslevel=9, mtime=0),
    Compression.BZIP2: lambda d: bz2.compress(d, 9),
    Compression.LZMA: lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    Compression.XZ: xzkern,
    Compression.LZ4: lz4_legacy,
    Compression.ZSTD: zstd22,
}
FORMATS = list(COMPRESSORS)


@functools.cache
def payload(compression: Compression, data: bytes = ELF, trailer: bool = True) -> bytes:
    stream = COMPRESSORS[compression](data)
    return stream + size_append(data) if trailer else stream


def does_not_decompress(compression: Compression) -> str:
    return f"kernel image: payload ({compression.value}) does not decompress: "


# --- detect_compression ------------------------------------------------------------


@pytest.mark.parametrize(
    ("magic", "expected"),
    [
        (b"\x1f\x8b\x08\x00", Compression.GZIP),
        (b"\x1f\x9e\x08\x00", Compression.GZIP),
        (b"BZh9", Compression.BZIP2),
        (b"\x5d\x00\x00\x80\x00", Compression.LZMA),
        (b"\xfd7zXZ\x00\x00\x01", Compression.XZ),
        (b"\x89LZO\x00", Compression.LZO),
        (b"\x02\x21\x4c\x18", Compression.LZ4),
        (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
        (b"\x7fELF\x02", Compression.NONE),
    ],
)
def test_detect_compression_known_magic_names_format(
    magic: bytes, expected: Compression
) -> None:
    assert detect_compression(magic) is expected


@pytest.mark.parametrize("compression", FORMATS)
def test_detect_compression_compressor_output_names_format(
    compression: Compression,
) -> None:
    assert detect_compression(payload(compression)) is compression


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"\x00\x01\x02\x03\x04", "00 01 02 03"),
        (b"\x5d\x00", "5d 00"),  # one byte short of the lzma magic (pair: 5d 00 00 above)
        (b"\xfd7zXZ\x01", "fd 37 7a 58"),  # the xz magic with its last byte changed
        (b"", "<empty>"),
    ],
)
def test_detect_compression_unknown_magic_raises(data: bytes, shown: str) -> None:
    with pytest.raises(ImageError) as excinfo:
        detect_compression(data)
    assert str(excinfo.value) == f"kernel image: unknown payload compression (magic {shown})"


# --- decompress_payload: good streams ----------------------------------------------


@pytest.mark.parametrize("trailer", [True, False], ids=["size_append", "bare"])
@pytest.mark.parametrize("compression", FORMATS)
def test_decompress_payload_each_format_returns_elf(
    compression: Compression, trailer: bool
) -> None:
    assert decompress_payload(payload(compression, trailer=trailer)) == ELF


def test_decompress_payload_uncompressed_elf_returned_as_is() -> None:
    assert decompress_payload(ELF) == ELF


def test_decompress_payload_xz_with_stream_padding_returns_elf() -> None:
    stream = xzkern(ELF) + b"\x00" * 4 + size_append(ELF)
    assert decompress_payload(stream) == ELF


def test_decompress_payload_zstd_with_content_size_returns_elf() -> None:
    stream = zstandard.ZstdCompressor(write_content_size=True).compress(ELF)
    assert decompress_payload(stream + size_append(ELF)) == ELF


def test_decompress_payload_lz4_two_chunks_returns_elf() -> None:
    big = make_elf(load=body(LZ4_LEGACY_CHUNK_SIZE + 4096))
    stream = lz4_legacy(big)
    (first,) = struct.unpack_from("<I", stream, 4)
    assert len(stream) > 8 + first  # really two chunks
    assert decompress_payload(stream + size_append(big)) == big


def test_decompress_payload_lz4_repeated_magic_is_skipped() -> None:
    half = len(ELF) // 2
    stream = lz4_legacy(ELF[:half]) + lz4_legacy(ELF[half:])
    assert decompress_payload(stream + size_append(ELF)) == ELF


def test_decompress_payload_lz4_zero_size_ends_stream() -> None:
    stream = lz4_legacy(ELF) + b"\x00\x00\x00\x00" + b"junk after the end"
    assert decompress_payload(stream) == ELF


def test_decompress_payload_lz4_chunk_over_8mib_raises() -> None:
    big = make_elf(load=body(LZ4_LEGACY_CHUNK_SIZE))  # ELF headers push it past 8 MiB
    stream = lz4_legacy(big, chunk=len(big))
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(stream + size_append(big))
    assert str(excinfo.value).startswith(does_not_decompress(Compression.LZ4))


def test_decompress_payload_lz4_wrong_size_trailer_raises() -> None:
    stream = lz4_legacy(ELF) + struct.pack("<I", len(ELF) + 1)
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(stream)
    assert str(excinfo.value) == (
        "kernel image: payload (lz4) does not decompress: "
        f"size trailer says {len(ELF) + 1} bytes, the chunks hold {len(ELF)}"
    )


def test_decompress_payload_lz4_cut_stream_before_trailer_raises() -> None:
    stream = lz4_legacy(ELF)[:-1] + size_append(ELF)
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(stream)
    assert str(excinfo.value).startswith(does_not_decompress(Compression.LZ4))


def lzop9(data: bytes) -> bytes:
    """Kbuild's cmd_lzo: `lzop -9`, then size_append."""
    lzop = shutil.which("lzop")
    if lzop is None:
        pytest.skip("needs lzop (Debian package lzop)")
    return subprocess.run([lzop, "-9", "-c"], input=data, capture_output=True, check=True).stdout


def test_decompress_payload_lzo_through_lzop_ignores_the_trailer() -> None:
    assert decompress_payload(lzop9(ELF) + size_append(ELF)) == ELF


def test_decompress_payload_lzo_corrupt_header_raises() -> None:
    lzop9(b"")  # skips without lzop
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(b"\x89LZO\x00\r\n\x1a\n" + bytes(64))
    assert str(excinfo.value).startswith(does_not_decompress(Compression.LZO))


def test_decompress_payload_lzo_without_lzop_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bootfuzz.compression.LZOP", "no-such-lzop")
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(b"\x89LZO\x00\r\n\x1a\n" + bytes(64))
    assert str(excinfo.value) == (
        "kernel image: payload (lzo) needs the no-such-lzop command (Debian package lzop)"
    )


# --- decompress_payload: bad streams -----------------------------------------------


def flip_middle(compression: Compression, stream: bytes) -> bytes:
    """Flip one byte in the middle of the compressed data.

    lz4 legacy and lzma-alone carry no checksum, so a changed literal would decode
    to changed data without complaint (the kernel's own decoders cannot tell
    either).  For lz4 the flipped byte is the second chunk's size field; lzma-alone
    loses its range decoder's sync and never meets its end marker.
    """
    at = len(stream) // 2
    if compression is Compression.LZ4:
        (first,) = struct.unpack_from("<I", stream, 4)
        at = 8 + first + 3  # most significant byte of the second size field
    damaged = bytearray(stream)
    damaged[at] ^= 0xFF
    return bytes(damaged)


@pytest.mark.parametrize("compression", FORMATS)
def test_decompress_payload_flipped_byte_raises(compression: Compression) -> None:
    data = ELF
    if compression is Compression.LZ4:
        data = make_elf(load=body(LZ4_LEGACY_CHUNK_SIZE + 4096))
    damaged = flip_middle(compression, COMPRESSORS[compression](data)) + size_append(data)
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(damaged)
    assert str(excinfo.value).startswith(does_not_decompress(compression))


@pytest.mark.parametrize("cut", [1, 2], ids=["one_byte", "half"])
@pytest.mark.parametrize("compression", FORMATS)
def test_decompress_payload_truncated_stream_raises(
    compression: Compression, cut: int
) -> None:
    stream = payload(compression, trailer=False)
    short = stream[:-1] if cut == 1 else stream[: len(stream) // 2]
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(short)
    assert str(excinfo.value).startswith(does_not_decompress(compression))


def test_decompress_payload_lz4_truncated_chunk_names_offset() -> None:
    stream = lz4_legacy(ELF)
    (size,) = struct.unpack_from("<I", stream, 4)
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(stream[:-1])
    assert str(excinfo.value) == (
        "kernel image: payload (lz4) does not decompress: truncated stream "
        f"(chunk at offset 0x4 declares {size} bytes, {size - 1} remain)"
    )


@pytest.mark.parametrize("compression", FORMATS)
def test_decompress_payload_not_elf_raises(compression: Compression) -> None:
    not_elf = b"\x7fELG" + ELF[4:]  # one byte off the ELF magic
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(payload(compression, not_elf))
    assert str(excinfo.value) == "kernel image: decompressed payload is not an ELF image"


@pytest.mark.parametrize("compression", [*FORMATS, Compression.NONE])
def test_decompress_payload_max_size_exact_passes(compression: Compression) -> None:
    stream = ELF if compression is Compression.NONE else payload(compression)
    assert decompress_payload(stream, max_size=len(ELF)) == ELF


@pytest.mark.parametrize("compression", [*FORMATS, Compression.NONE])
def test_decompress_payload_max_size_one_short_raises(compression: Compression) -> None:
    stream = ELF if compression is Compression.NONE else payload(compression)
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(stream, max_size=len(ELF) - 1)
    assert str(excinfo.value) == (
        f"kernel image: payload ({compression.value}) decompresses to more than "
        f"{len(ELF) - 1} bytes (max_size)"
    )


def test_decompress_payload_negative_max_size_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="max_size"):
        decompress_payload(ELF, max_size=-1)


# --- read_vmlinux ------------------------------------------------------------------


def test_read_vmlinux_fake_elf64_reads_everything() -> None:
    info = read_vmlinux(ELF)
    load_at = EI_NIDENT + EHDR[64].size + 2 * PHDR[64].size + len(DEFAULT_NOTES)
    assert info.entry == ENTRY
    assert info.machine == "EM_X86_64"
    assert info.elfclass == 64
    assert info.segments == (
        LoadSegment(
            p_offset=load_at,
            p_paddr=LOAD_PADDR,
            p_vaddr=LOAD_VADDR,
            p_filesz=len(body()),
            p_memsz=len(body()) + 0x1000,
            p_flags=PF_R | PF_X,
        ),
    )
    assert info.pvh_entry == PVH_ENTRY
    assert info.pvh_reloc == PvhReloc(align=0x200000, min_addr=0x1000000, max_addr=0x3FFFFFFF)
    assert info.linux_version == RELEASE


def test_read_vmlinux_phys32_entry_4_byte_desc_reads_u32() -> None:
    elf = make_elf(notes=xen(XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", PVH_ENTRY)))
    assert read_vmlinux(elf).pvh_entry == PVH_ENTRY


def test_read_vmlinux_elf32_reads_class_machine_and_entry() -> None:
    elf = make_elf(elfclass=32, notes=xen(XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", 0x1234)))
    info = read_vmlinux(elf)
    assert (info.elfclass, info.machine, info.entry) == (32, "EM_386", ENTRY)
    assert info.pvh_entry == 0x1234
    assert [s.p_paddr for s in info.segments] == [LOAD_PADDR]


@pytest.mark.parametrize(
    ("desc", "expected"),
    [
        (b"", PvhReloc(0x200000, 0, 0xFFFFFFFF)),
        (struct.pack("<I", 0x1000), PvhReloc(0x1000, 0, 0xFFFFFFFF)),
        (struct.pack("<II", 0x1000, 0x4000000), PvhReloc(0x1000, 0x4000000, 0xFFFFFFFF)),
    ],
    ids=["empty", "align_only", "align_min"],
)
def test_read_vmlinux_short_phys32_reloc_takes_defaults(desc: bytes, expected: PvhReloc) -> None:
    assert read_vmlinux(make_elf(notes=xen(XEN_ELFNOTE_PHYS32_RELOC, desc))).pvh_reloc == expected


def test_read_vmlinux_without_pvh_notes_gives_none() -> None:
    info = read_vmlinux(make_elf(notes=xen(XEN_ELFNOTE_GUEST_OS, b"linux\x00")))
    assert (info.pvh_entry, info.pvh_reloc) == (None, None)


def test_read_vmlinux_type_18_of_another_owner_is_ignored() -> None:
    elf = make_elf(notes=note(b"Linux", XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<I", 1)))
    assert read_vmlinux(elf).pvh_entry is None


def test_read_vmlinux_without_banner_gives_no_version() -> None:
    assert read_vmlinux(make_elf(load=bytes(4096))).linux_version is None


@pytest.mark.parametrize(
    ("notes", "message"),
    [
        (
            xen(XEN_ELFNOTE_PHYS32_ENTRY, bytes(6)),
            "Xen PHYS32_ENTRY note has a 6-byte descriptor (expected 4 or 8)",
        ),
        (
            xen(XEN_ELFNOTE_PHYS32_RELOC, bytes(16)),
            "Xen PHYS32_RELOC note has a 16-byte descriptor (expected up to three u32)",
        ),
        (
            xen(XEN_ELFNOTE_PHYS32_RELOC, bytes(6)),
            "Xen PHYS32_RELOC note has a 6-byte descriptor (expected up to three u32)",
        ),
    ],
    ids=["entry_6", "reloc_16", "reloc_6"],
)
def test_read_vmlinux_bad_descriptor_size_raises(notes: bytes, message: str) -> None:
    with pytest.raises(ImageError) as excinfo:
        read_vmlinux(make_elf(notes=notes))
    assert str(excinfo.value) == f"kernel image: {message}"


def test_read_vmlinux_note_overrunning_segment_raises() -> None:
    good = xen(XEN_ELFNOTE_PHYS32_ENTRY, struct.pack("<Q", PVH_ENTRY))
    bad = good[:4] + struct.pack("<I", 12) + good[8:]  # descsz 8 -> 12
    with pytest.raises(ImageError) as excinfo:
        read_vmlinux(make_elf(notes=bad))
    assert str(excinfo.value) == (
        "kernel image: ELF note at segment offset 0x0 overruns its PT_NOTE segment"
    )


def test_read_vmlinux_note_header_cut_short_raises() -> None:
    with pytest.raises(ImageError) as excinfo:
        read_vmlinux(make_elf(note_filesz=8))  # less than one 12-byte Elf_Nhdr
    assert str(excinfo.value) == "kernel image: ELF note at segment offset 0x0 is cut short"


def test_read_vmlinux_segment_past_end_of_file_raises() -> None:
    with pytest.raises(ImageError) as excinfo:
        read_vmlinux(make_elf(load_offset=len(ELF) - 100))
    assert str(excinfo.value).startswith("kernel image: PT_LOAD segment at offset ")


@pytest.mark.parametrize(
    "damage",
    [
        lambda e: e[:40],  # cut inside the ELF header
        lambda e: e[:1] + b"X" + e[2:],  # bad magic
        lambda e: e[:4] + b"\x07" + e[5:],  # EI_CLASS neither 1 nor 2
    ],
    ids=["truncated_header", "bad_magic", "bad_class"],
)
def test_read_vmlinux_broken_elf_raises(damage: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ImageError) as excinfo:
        read_vmlinux(damage(ELF))
    assert str(excinfo.value).startswith("kernel image: vmlinux is not a readable ELF image: ")
