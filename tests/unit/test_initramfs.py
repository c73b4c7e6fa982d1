"""The initrd builder: newc writer and reader, payload, compressions, spec, cache.

These use the Python decompressors only; tests/integration/test_initramfs_cpio.py
checks the same archives with the real cpio, gzip, xz, lz4 and zstd tools.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.case import InitrdSpec
from bootfuzz.compression import (
    LZ4_LEGACY_CHUNK_SIZE,
    LZ4_LEGACY_MAGIC,
    SUPPORTED,
    Compression,
    DecompressError,
    decompress,
)
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError, InitramfsError
from bootfuzz.guest import initrd
from bootfuzz.guest.cpio import (
    NEWC_FIELDS,
    NEWC_HEADER_SIZE,
    PATH_MAX,
    NewcHeader,
    NewcWriter,
    newc_archive_size,
    parse_newc,
)
from bootfuzz.guest.initrd import (
    BuiltInitrd,
    InitrdWriteError,
    archive_size,
    build_initrd,
    cache_name,
    cached_initrd,
    compress,
    payload_bytes,
    write_initrd_archive,
)
from tests.fakes import FAKE_AGENT as AGENT  # what the `agent` fixture (tests/conftest.py) holds

# One regular file "a" (mode 0644, data "hi"), then the trailer, padded to 512.
# Written out by hand from buffer-format.rst, field by field.
GOLDEN_ONE_FILE = (
    b"070701"
    b"00000001"  # c_ino: the first entry
    b"000081A4"  # c_mode: S_IFREG | 0644
    b"00000000"  # c_uid
    b"00000000"  # c_gid
    b"00000001"  # c_nlink
    b"00000000"  # c_mtime
    b"00000002"  # c_filesize: "hi"
    b"00000000"  # c_maj
    b"00000000"  # c_min
    b"00000000"  # c_rmaj
    b"00000000"  # c_rmin
    b"00000002"  # c_namesize: "a" + NUL
    b"00000000"  # c_chksum
    b"a\0"  # offset 110: header + name = 112, already 4-aligned
    b"hi\0\0"  # offset 112: data padded to 116
    b"070701"
    b"00000000"  # c_ino 0 for the trailer (as GNU cpio writes it)
    b"00000000"  # c_mode
    b"00000000"
    b"00000000"
    b"00000001"  # c_nlink
    b"00000000"
    b"00000000"  # c_filesize must be 0
    b"00000000"
    b"00000000"
    b"00000000"
    b"00000000"
    b"0000000B"  # c_namesize: "TRAILER!!!" + NUL
    b"00000000"
    b"TRAILER!!!\0"  # offset 226 .. 237
    b"\0\0\0" + b"\0" * (512 - 240)  # to 240  # archive padded to 512
)
#: Where GOLDEN_ONE_FILE's parts are, by the comments above.
GOLDEN_DATA_OFFSET = 112
GOLDEN_DATA_END = 114
GOLDEN_TRAILER_OFFSET = 116
GOLDEN_TRAILER_END = 237
#: The trailer's name padded to 4 bytes; the padding is not read, as in init/initramfs.c.
GOLDEN_TRAILER_PADDED_END = 240


def one_file_archive() -> bytes:
    out = io.BytesIO()
    writer = NewcWriter(out)
    writer.add_file("a", 2, [b"hi"])
    assert writer.finish() == 512
    return out.getvalue()


def mutated(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def field_offset(name: str, entry_offset: int = 0) -> int:
    return entry_offset + 6 + NEWC_FIELDS.index(name) * 8


def small_archive(spec: InitrdSpec) -> tuple[bytes, str]:
    out = io.BytesIO()
    digest = write_initrd_archive(out, spec, AGENT)
    return out.getvalue(), digest


# ---------------------------------------------------------------------- newc header


def test_newc_header_size_is_110() -> None:
    assert NEWC_HEADER_SIZE == 110
    assert len(NewcHeader().encode()) == 110


def test_newc_header_distinct_fields_round_trip() -> None:
    values = {name: (0x1000_0001 * (i + 1)) & 0xFFFFFFFF for i, name in enumerate(NEWC_FIELDS)}
    header = NewcHeader(**values)
    raw = header.encode()
    assert raw[:6] == b"070701"
    assert raw[6:14] == b"10000001"  # upper-case hex, zero-padded
    assert NewcHeader.decode(raw) == header


def test_newc_header_lower_case_hex_decodes() -> None:
    raw = mutated(NewcHeader().encode(), field_offset("mode"), b"000081a4")
    assert NewcHeader.decode(raw).mode == 0o100644


def test_newc_header_field_max_encodes_and_one_more_is_refused() -> None:
    assert NewcHeader(filesize=0xFFFFFFFF).encode()[field_offset("filesize") :][:8] == b"FFFFFFFF"
    with pytest.raises(InitramfsError) as info:
        NewcHeader(filesize=1 << 32).encode()
    assert str(info.value) == (
        "initramfs: c_filesize = 4294967296 does not fit the 8 hex digits of a newc header "
        "(0 .. 4294967295)"
    )


def test_newc_header_negative_field_is_refused() -> None:
    with pytest.raises(InitramfsError, match=r"c_ino = -1 does not fit"):
        NewcHeader(ino=-1).encode()


def test_newc_header_truncated_is_refused() -> None:
    with pytest.raises(InitramfsError) as info:
        NewcHeader.decode(NewcHeader().encode()[:109], offset=4)
    assert str(info.value) == "initramfs: truncated header at offset 4: 109 of 110 bytes"


def test_newc_header_old_binary_magic_is_refused() -> None:
    with pytest.raises(InitramfsError) as info:
        NewcHeader.decode(mutated(NewcHeader().encode(), 5, b"7"))
    assert str(info.value) == "initramfs: bad magic b'070707' at offset 0 (want b'070701')"


@pytest.mark.parametrize("bad", [b"0000000G", b"0x000001", b"+0000001", b" 0000001", b"0000_001"])
def test_newc_header_non_hex_field_is_refused(bad: bytes) -> None:
    raw = mutated(NewcHeader().encode(), field_offset("namesize"), bad)
    with pytest.raises(InitramfsError) as info:
        NewcHeader.decode(raw)
    assert str(info.value) == (
        f"initramfs: c_namesize of the header at offset 0 is not 8 hex digits: {bad!r}"
    )


# ---------------------------------------------------------------------- newc writer


def test_newc_writer_one_file_matches_golden_bytes() -> None:
    assert one_file_archive() == GOLDEN_ONE_FILE


def test_newc_writer_archive_size_matches_every_name_alignment() -> None:
    # Names of 1..8 bytes put header + name at every residue mod 4.
    for length in range(1, 9):
        for size in (0, 1, 3, 4, 5):
            out = io.BytesIO()
            writer = NewcWriter(out)
            writer.add_file("n" * length, size, [b"x" * size])
            total = writer.finish()
            assert total == len(out.getvalue()) == newc_archive_size([("n" * length, size)])
            assert total % 512 == 0
            (entry,) = parse_newc(out.getvalue())
            assert entry.offset % 4 == 0
            assert entry.data(out.getvalue()) == b"x" * size


def test_newc_writer_entries_read_back_with_kinds_and_inodes() -> None:
    out = io.BytesIO()
    writer = NewcWriter(out)
    writer.add_directory("dev")
    writer.add_char_device("dev/console", 5, 1)
    writer.add_file("init", 3, [b"a", b"", b"bc"], perm=0o755)
    writer.finish()
    data = out.getvalue()
    entries = parse_newc(data)
    assert [e.name for e in entries] == ["dev", "dev/console", "init"]
    assert [e.header.ino for e in entries] == [1, 2, 3]
    assert [e.header.nlink for e in entries] == [2, 1, 1]
    assert entries[0].mode == stat.S_IFDIR | 0o755
    assert entries[1].mode == stat.S_IFCHR | 0o600
    assert entries[1].rdev == (5, 1)
    assert entries[2].mode == stat.S_IFREG | 0o755
    assert entries[2].data(data) == b"abc"
    assert all(e.header.mtime == e.header.uid == e.header.gid == 0 for e in entries)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "initramfs: empty file name in a cpio archive"),
        ("a\0b", "initramfs: file name 'a\\x00b' contains NUL"),
        ("TRAILER!!!", "initramfs: file name 'TRAILER!!!' is the end-of-archive marker"),
    ],
)
def test_newc_writer_bad_name_is_refused(name: str, message: str) -> None:
    out = io.BytesIO()
    with pytest.raises(InitramfsError) as info:
        NewcWriter(out).add_directory(name)
    assert str(info.value) == message
    assert out.getvalue() == b""


def test_newc_writer_name_at_path_max_passes_and_one_longer_is_refused() -> None:
    NewcWriter(io.BytesIO()).add_directory("d" * (PATH_MAX - 1))  # namesize == PATH_MAX
    with pytest.raises(InitramfsError, match=r"is 4097 bytes with its NUL; the kernel skips"):
        NewcWriter(io.BytesIO()).add_directory("d" * PATH_MAX)


class _StopBeforeData(Exception):
    pass


def _no_data() -> Iterator[bytes]:
    raise _StopBeforeData
    yield b""  # pragma: no cover


def test_newc_writer_file_of_max_size_gets_a_header_and_one_more_is_refused() -> None:
    out = io.BytesIO()
    with pytest.raises(_StopBeforeData):  # the header went out; the data would follow
        NewcWriter(out).add_file("big", 0xFFFFFFFF, _no_data())
    assert out.getvalue()[field_offset("filesize") :][:8] == b"FFFFFFFF"
    out = io.BytesIO()
    with pytest.raises(InitramfsError) as info:
        NewcWriter(out).add_file("big", 1 << 32, _no_data())
    assert str(info.value) == (
        "initramfs: entry 'big': c_filesize = 4294967296 does not fit the 8 hex digits of a "
        "newc header (0 .. 4294967295)"
    )
    assert out.getvalue() == b""


def test_newc_writer_bad_permissions_are_refused() -> None:
    with pytest.raises(InitramfsError, match=r"^initramfs: entry 'x': permissions 0o10000 are"):
        NewcWriter(io.BytesIO()).add_directory("x", perm=0o10000)


def test_newc_writer_short_data_is_a_harness_bug() -> None:
    with pytest.raises(HarnessBug, match=r"entry 'f': data gave 1 of its declared 2 bytes"):
        NewcWriter(io.BytesIO()).add_file("f", 2, [b"x"])


def test_newc_writer_long_data_is_a_harness_bug() -> None:
    with pytest.raises(HarnessBug, match=r"entry 'f': data runs past its declared 2 bytes"):
        NewcWriter(io.BytesIO()).add_file("f", 2, [b"xyz"])


def test_newc_writer_entry_after_trailer_is_a_harness_bug() -> None:
    writer = NewcWriter(io.BytesIO())
    writer.finish()
    with pytest.raises(HarnessBug, match=r"added after the archive's trailer"):
        writer.add_directory("late")


# ---------------------------------------------------------------------- newc reader


def test_parse_newc_golden_reads_one_entry() -> None:
    (entry,) = parse_newc(GOLDEN_ONE_FILE)
    assert (entry.name, entry.mode, entry.size, entry.rdev, entry.offset) == (
        "a",
        0o100644,
        2,
        (0, 0),
        112,
    )
    assert entry.data(GOLDEN_ONE_FILE) == b"hi"


def test_parse_newc_trailer_without_block_padding_is_accepted() -> None:
    assert [e.name for e in parse_newc(GOLDEN_ONE_FILE[:GOLDEN_TRAILER_END])] == ["a"]


def golden_cut_message(cut: int) -> str:
    """What parse_newc must say of GOLDEN_ONE_FILE[:cut], from the golden layout above."""
    end = f"runs past the end of the archive ({cut} bytes)"
    if cut == 0 or GOLDEN_DATA_END <= cut <= GOLDEN_TRAILER_OFFSET:
        return f"archive ends at offset {cut} without a TRAILER!!! record"
    if cut < NEWC_HEADER_SIZE:
        return f"truncated header at offset 0: {cut} of {NEWC_HEADER_SIZE} bytes"
    if cut < GOLDEN_DATA_OFFSET:
        return f"name at offset {NEWC_HEADER_SIZE} (2 bytes) {end}"
    if cut < GOLDEN_DATA_END:
        return f"data of 'a' at offset {GOLDEN_DATA_OFFSET} (2 bytes) {end}"
    trailer_name = GOLDEN_TRAILER_OFFSET + NEWC_HEADER_SIZE
    if cut < trailer_name:
        return (f"truncated header at offset {GOLDEN_TRAILER_OFFSET}: "
                f"{cut - GOLDEN_TRAILER_OFFSET} of {NEWC_HEADER_SIZE} bytes")
    return f"name at offset {trailer_name} (11 bytes) {end}"


def test_parse_newc_every_cut_before_the_trailer_ends_is_named() -> None:
    got, want = [], []
    for cut in range(GOLDEN_TRAILER_END):
        with pytest.raises(InitramfsError) as info:
            parse_newc(GOLDEN_ONE_FILE[:cut])
        got.append(str(info.value))
        want.append(f"initramfs: {golden_cut_message(cut)}")
    assert got == want


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOLDEN_ONE_FILE[:50], "truncated header at offset 0: 50 of 110 bytes"),
        (GOLDEN_ONE_FILE[:116], "archive ends at offset 116 without a TRAILER!!! record"),
        (GOLDEN_ONE_FILE[:200], "truncated header at offset 116: 84 of 110 bytes"),
        (GOLDEN_ONE_FILE[:113], "data of 'a' at offset 112 (2 bytes) runs past the end of "
                                "the archive (113 bytes)"),
        (GOLDEN_ONE_FILE[:111], "name at offset 110 (2 bytes) runs past the end of the "
                                "archive (111 bytes)"),
        (b"", "archive ends at offset 0 without a TRAILER!!! record"),
        (mutated(GOLDEN_ONE_FILE, 0, b"070702"),
         "bad magic b'070702' at offset 0 (want b'070701')"),
        (mutated(GOLDEN_ONE_FILE, 116 + 5, b"2"),
         "bad magic b'070702' at offset 116 (want b'070701')"),
        (mutated(GOLDEN_ONE_FILE, field_offset("filesize") + 7, b"g"),
         "c_filesize of the header at offset 0 is not 8 hex digits: b'0000000g'"),
        (mutated(GOLDEN_ONE_FILE, 111, b"b"), "name at offset 110 is not NUL-terminated"),
        (mutated(GOLDEN_ONE_FILE, 110, b"\0"), "name at offset 110 contains NUL before its end"),
        (mutated(GOLDEN_ONE_FILE, field_offset("namesize"), b"00000000"),
         "header at offset 0 has c_namesize 0"),
        (mutated(GOLDEN_ONE_FILE, field_offset("namesize"), b"00001000"),
         "name at offset 110 (4096 bytes) runs past the end of the archive (512 bytes)"),
        (mutated(GOLDEN_ONE_FILE, field_offset("filesize"), b"00001000"),
         "data of 'a' at offset 112 (4096 bytes) runs past the end of the archive (512 bytes)"),
        (mutated(GOLDEN_ONE_FILE, field_offset("filesize", 116), b"00000002"),
         "TRAILER!!! at offset 116 has c_filesize 2 (must be 0)"),
        (mutated(GOLDEN_ONE_FILE, 300, b"\x01"), "non-NUL byte at offset 300 after TRAILER!!!"),
        (mutated(GOLDEN_ONE_FILE, 240, b"0"), "non-NUL byte at offset 240 after TRAILER!!!"),
    ],
)  # fmt: skip
def test_parse_newc_defect_raises_exact_error(data: bytes, message: str) -> None:
    with pytest.raises(InitramfsError) as info:
        parse_newc(data)
    assert str(info.value) == f"initramfs: {message}"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=4),
    st.integers(0, 512),
)
def test_parse_newc_any_mutation_is_refused_or_parses_inside_the_archive(
    edits: list[tuple[int, int]], cut: int
) -> None:
    """Up to four changed bytes and a cut: an InitramfsError (no foreign exception), or
    an archive that still ends in the golden TRAILER!!! record, uncut, with only NULs
    after its padding, and its one entry inside it (four bytes make no second record)."""
    data = bytearray(GOLDEN_ONE_FILE)
    for offset, value in edits:
        data[offset] = value
    data = data[:cut]
    try:
        entries = parse_newc(bytes(data))
    except InitramfsError:
        return
    assert cut >= GOLDEN_TRAILER_END
    assert not any(data[GOLDEN_TRAILER_PADDED_END:])
    (entry,) = entries
    assert entry.offset + entry.size <= GOLDEN_TRAILER_OFFSET


# ---------------------------------------------------------------------- payload


def test_payload_bytes_follows_documented_formula() -> None:
    seed, size = 7, (1 << 20) + 5
    expected = b"".join(
        hashlib.shake_256(
            b"bootfuzz-payload\0" + seed.to_bytes(8, "little") + i.to_bytes(8, "little")
        ).digest(n)
        for i, n in enumerate([1 << 20, 5])
    )
    assert b"".join(payload_bytes(seed, size)) == expected


@pytest.mark.parametrize(
    ("seed", "size", "sha256"),
    [
        (0, 1000, "9acafda672d498f678caf2f7d8bb4f66d1290f9066d49c9627c27d36d0b91cf0"),
        (1, (1 << 20) + 3, "f0a03a96ae3cb670f7e084aaa728bd0bfc9a07f69e847d80ba19951cbc9fce85"),
        (2**64 - 1, 64, "53babc6ee6f2bf4bd1c6af6cd004b2e724ae3d3e2d81708711c3184ea4d17edb"),
    ],
)
def test_payload_bytes_digest_is_pinned(seed: int, size: int, sha256: str) -> None:
    """Reproducers record (seed, size): these bytes must never change."""
    assert hashlib.sha256(b"".join(payload_bytes(seed, size))).hexdigest() == sha256


def test_payload_bytes_first_bytes_are_pinned() -> None:
    assert b"".join(payload_bytes(0, 16)).hex() == "3b25af3f722d5b14bc4a3876cbfe9910"


def test_payload_bytes_chunks_are_at_most_one_mib() -> None:
    sizes = [len(c) for c in payload_bytes(3, (2 << 20) + 1)]
    assert sizes == [1 << 20, 1 << 20, 1]
    assert list(payload_bytes(3, 0)) == []


def test_payload_bytes_shorter_size_is_a_prefix() -> None:
    long = b"".join(payload_bytes(5, (1 << 20) + 100))
    assert b"".join(payload_bytes(5, 1 << 20)) == long[: 1 << 20]
    assert b"".join(payload_bytes(5, 77)) == long[:77]


def test_payload_bytes_seeds_differ() -> None:
    assert b"".join(payload_bytes(0, 32)) != b"".join(payload_bytes(1, 32))


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        (-1, "payload seed -1 is outside 0 .. 2**64-1"),
        (2**64, "payload seed 18446744073709551616 is outside 0 .. 2**64-1"),
        (True, "payload seed True is not an integer"),
        ("1", "payload seed '1' is not an integer"),
    ],
)
def test_payload_bytes_bad_seed_is_refused(seed: object, message: str) -> None:
    with pytest.raises(InitramfsError) as info:
        next(payload_bytes(seed, 1))  # type: ignore[arg-type]
    assert str(info.value) == f"initramfs: {message}"


# ---------------------------------------------------------------------- compression


def test_compression_values_are_the_kernel_names() -> None:
    assert [c.value for c in Compression] == [
        "none",
        "gzip",
        "bzip2",
        "lzma",
        "xz",
        "lzo",
        "lz4",
        "zstd",
    ]
    assert Compression("xz") is Compression.XZ
    assert Compression.parse("zstd") is Compression.ZSTD


def test_compression_every_kernel_format_is_supported() -> None:
    assert set(Compression) == SUPPORTED


def test_compression_unknown_name_is_refused() -> None:
    with pytest.raises(InitramfsError) as info:
        Compression.parse("rar")
    assert str(info.value) == (
        "initramfs: unknown compression 'rar'; choose one of: "
        "none, gzip, bzip2, lzma, xz, lzo, lz4, zstd"
    )


def test_compression_lzo_without_lzop_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bootfuzz.compression.LZOP", "no-such-lzop")
    with pytest.raises(InitramfsError) as info:
        compress(b"x", Compression.LZO)
    assert str(info.value) == (
        "initramfs: lzo compression needs the no-such-lzop command (Debian package lzop; "
        "./bootstrap installs it); choose one of: none, gzip, bzip2, lzma, xz, lzo, lz4, zstd"
    )


@pytest.mark.parametrize("compression", sorted(SUPPORTED))
def test_compress_round_trips_through_python_decompressor(compression: Compression) -> None:
    archive, _ = small_archive(InitrdSpec(size=5000, compression=compression, seed=9))
    packed = compress(archive, compression)
    assert decompress(packed, compression) == archive


@pytest.mark.parametrize("compression", sorted(SUPPORTED - {Compression.NONE}))
def test_decompress_truncated_input_raises_decompress_error(compression: Compression) -> None:
    archive, _ = small_archive(InitrdSpec(size=5000, compression=compression))
    packed = compress(archive, compression)
    with pytest.raises(DecompressError, match=rf"^decompress: {compression.value} data does not "
                       "decompress: "):
        decompress(packed[: len(packed) // 2], compression)


@pytest.mark.parametrize("compression", sorted(SUPPORTED - {Compression.NONE}))
def test_compress_output_starts_with_kernel_magic(compression: Compression) -> None:
    assert compress(b"x" * 1000, compression)[:2] == compression.kernel_magic


def test_uncompressed_archive_starts_with_cpio_magic_the_kernel_reads_directly() -> None:
    archive, _ = small_archive(InitrdSpec(size=1, compression=Compression.NONE))
    assert archive[:6] == b"070701"  # unpack_to_rootfs: '0' at offset 0 means plain cpio


def test_gzip_header_has_mtime_zero_and_no_flags() -> None:
    packed = compress(b"hello", Compression.GZIP)
    assert packed[:3] == b"\x1f\x8b\x08"  # magic, deflate
    assert packed[3] == 0  # FLG: no FNAME/FEXTRA/FCOMMENT/FHCRC
    assert packed[4:8] == b"\0\0\0\0"  # MTIME


def test_xz_stream_flags_say_crc32() -> None:
    packed = compress(b"hello", Compression.XZ)
    assert packed[:6] == b"\xfd7zXZ\0"
    assert packed[6:8] == b"\x00\x01"  # stream flags: check type 1 = CRC32 (not 4 = CRC64)


def test_lzma_alone_header_has_small_dictionary_and_unknown_size() -> None:
    packed = compress(b"hello", Compression.LZMA)
    assert packed[0] == 0x5D  # lc=3, lp=0, pb=2: (pb*5 + lp)*9 + lc
    assert int.from_bytes(packed[1:5], "little") == 256 << 10  # preset 0 dictionary
    assert packed[5:13] == b"\xff" * 8  # uncompressed size -1: end marker follows
    assert lzma.decompress(packed, format=lzma.FORMAT_ALONE) == b"hello"


def test_lz4_legacy_frame_has_magic_and_8_mib_blocks() -> None:
    data = bytes(LZ4_LEGACY_CHUNK_SIZE) + b"tail"
    packed = compress(data, Compression.LZ4)
    assert int.from_bytes(packed[:4], "little") == LZ4_LEGACY_MAGIC
    first = int.from_bytes(packed[4:8], "little")
    second_at = 8 + first
    second = int.from_bytes(packed[second_at : second_at + 4], "little")
    assert second_at + 4 + second == len(packed)  # exactly two blocks, nothing after
    assert decompress(packed, Compression.LZ4) == data


def test_lz4_legacy_bad_magic_is_refused() -> None:
    packed = mutated(compress(b"hello", Compression.LZ4), 0, b"\x04")
    with pytest.raises(DecompressError) as info:
        decompress(packed, Compression.LZ4)
    assert str(info.value) == (
        "decompress: lz4 data does not decompress: no legacy lz4 magic 02214c18 at the start"
    )


def test_zstd_frame_records_content_size_and_small_window() -> None:
    data = b"".join(payload_bytes(0, 3 << 20))
    packed = compress(data, Compression.ZSTD)
    params = zstandard.get_frame_parameters(packed)
    assert params.content_size == len(data)
    assert params.window_size <= 1 << 20
    assert params.has_checksum


# ---------------------------------------------------------------------- spec


def test_initrd_spec_defaults() -> None:
    spec = InitrdSpec(size=0)
    assert (spec.compression, spec.seed) == (Compression.GZIP, 0)


def test_initrd_spec_boundaries_pass() -> None:
    InitrdSpec(size=0xFFFFFFFF, seed=2**64 - 1)
    InitrdSpec(size=0, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": -1}, "payload size -1 is negative"),
        ({"size": 1 << 32}, "payload size 4294967296 is over 4294967295, the largest file a "
                            "cpio newc header can describe"),
        ({"size": 1.0}, "payload size 1.0 is not an integer"),
        ({"size": 1, "seed": -1}, "payload seed -1 is outside 0 .. 2**64-1"),
        ({"size": 1, "seed": 2**64}, "payload seed 18446744073709551616 is outside 0 .. 2**64-1"),
        ({"size": 1, "compression": "rar"}, "unknown compression 'rar'; choose one of: none, "
                                            "gzip, bzip2, lzma, xz, lzo, lz4, zstd"),
    ],
)  # fmt: skip
def test_initrd_spec_invalid_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InitramfsError) as info:
        InitrdSpec(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == f"initramfs: {message}"
    assert isinstance(info.value, ConfigError)


def test_initrd_spec_compression_name_is_coerced() -> None:
    assert InitrdSpec(size=1, compression="xz").compression is Compression.XZ  # type: ignore[arg-type]


# ---------------------------------------------------------------------- build


def test_write_initrd_archive_layout() -> None:
    spec = InitrdSpec(size=3000, compression=Compression.NONE, seed=4)
    archive, digest = small_archive(spec)
    assert len(archive) == archive_size(spec, AGENT)
    entries = {e.name: e for e in parse_newc(archive)}
    names = ["dev", "dev/console", "proc", "sys", "init", "payload", "payload.sha256"]
    assert list(entries) == names
    assert entries["dev/console"].mode == stat.S_IFCHR | 0o600
    assert entries["dev/console"].rdev == (5, 1)
    for name in ("dev", "proc", "sys"):
        assert stat.S_ISDIR(entries[name].mode)
    assert entries["init"].mode == stat.S_IFREG | 0o755
    assert entries["init"].data(archive) == AGENT
    payload = entries["payload"].data(archive)
    assert payload == b"".join(payload_bytes(4, 3000))
    assert digest == hashlib.sha256(payload).hexdigest()
    assert entries["payload.sha256"].data(archive) == digest.encode()
    assert len(digest) == 64 and digest == digest.lower()


@pytest.mark.parametrize("compression", sorted(SUPPORTED))
def test_build_initrd_image_unpacks_to_the_archive(
    compression: Compression, agent: Path, tmp_path: Path
) -> None:
    spec = InitrdSpec(size=20_000, compression=compression, seed=11)
    out = tmp_path / f"initrd{compression.suffix}"
    built = build_initrd(spec, agent, out)
    image = out.read_bytes()
    archive, digest = small_archive(spec)
    assert built == BuiltInitrd(path=out, size=len(image), payload_sha256=digest, spec=spec)
    assert decompress(image, compression) == archive
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("compression", sorted(SUPPORTED))
def test_build_initrd_is_deterministic(
    compression: Compression, agent: Path, tmp_path: Path
) -> None:
    spec = InitrdSpec(size=10_000, compression=compression, seed=3)
    one = build_initrd(spec, agent, tmp_path / "one")
    two = build_initrd(spec, agent, tmp_path / "two")
    assert one.path.read_bytes() == two.path.read_bytes()


def test_build_initrd_empty_payload(agent: Path, tmp_path: Path) -> None:
    built = build_initrd(InitrdSpec(size=0), agent, tmp_path / "i.gz")
    archive = decompress(built.path.read_bytes(), Compression.GZIP)
    entries = {e.name: e for e in parse_newc(archive)}
    assert entries["payload"].size == 0
    assert built.payload_sha256 == hashlib.sha256(b"").hexdigest()
    assert entries["payload.sha256"].data(archive) == built.payload_sha256.encode()


def test_build_initrd_missing_agent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InitramfsError) as info:
        build_initrd(InitrdSpec(size=1), tmp_path / "nope", tmp_path / "out")
    assert str(info.value) == f"initramfs: agent {tmp_path / 'nope'}: No such file or directory"
    assert list(tmp_path.iterdir()) == []


def test_build_initrd_empty_agent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "agent").write_bytes(b"")
    with pytest.raises(InitramfsError, match=r"^initramfs: agent .*/agent is empty$"):
        build_initrd(InitrdSpec(size=1), tmp_path / "agent", tmp_path / "out")


def test_build_initrd_unwritable_directory_is_infrastructure(agent: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    out = blocker / "initrd"  # its directory cannot be made: a file has the name
    with pytest.raises(InitrdWriteError) as info:
        build_initrd(InitrdSpec(size=1), agent, out)
    assert isinstance(info.value, InfrastructureError)
    assert str(info.value) == f"initramfs: cannot write {out}: File exists"


def test_build_initrd_failure_leaves_no_file(
    agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object) -> str:
        raise HarnessBug("boom")

    monkeypatch.setattr(initrd, "write_initrd_archive", boom)
    with pytest.raises(HarnessBug):
        build_initrd(InitrdSpec(size=1), agent, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent"]


def test_build_initrd_replaces_existing_output(agent: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"old")
    build_initrd(InitrdSpec(size=1, compression=Compression.NONE), agent, out)
    assert parse_newc(out.read_bytes())[0].name == "dev"


def _peak_build_memory(spec: InitrdSpec, agent: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        build_initrd(spec, agent, out)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_build_initrd_gzip_streams_payload_in_bounded_memory(agent: Path, tmp_path: Path) -> None:
    spec = InitrdSpec(size=8 << 20, compression=Compression.GZIP)
    # A payload chunk (1 MiB) and its compressed output, never the 8 MiB payload.
    assert _peak_build_memory(spec, agent, tmp_path / "big") < 4 << 20


def test_build_initrd_lz4_holds_one_block_not_the_payload(agent: Path, tmp_path: Path) -> None:
    spec = InitrdSpec(size=40 << 20, compression=Compression.LZ4)
    # One 8 MiB chunk, its block and the framed block: about 3 x 8 MiB, whatever the size.
    assert _peak_build_memory(spec, agent, tmp_path / "big") < 30 << 20


# ---------------------------------------------------------------------- cache


def test_cached_initrd_builds_once_then_hits(
    agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = InitrdSpec(size=1000, compression=Compression.ZSTD, seed=2)
    first = cached_initrd(spec, agent, tmp_path)
    assert first.path.parent == tmp_path / "initrd"
    assert first.path.name == cache_name(spec, hashlib.sha256(AGENT).hexdigest())
    meta = json.loads(first.path.with_name(first.path.name + ".json").read_text())
    assert meta["payload_sha256"] == first.payload_sha256
    mtime = first.path.stat().st_mtime_ns

    def no_build(*_: object) -> BuiltInitrd:
        raise AssertionError("cache hit must not rebuild")

    monkeypatch.setattr(initrd, "_build", no_build)
    second = cached_initrd(spec, agent, tmp_path)
    assert second == first
    assert second.path.stat().st_mtime_ns == mtime


def test_cached_initrd_key_covers_spec_and_agent(agent: Path, tmp_path: Path) -> None:
    base = InitrdSpec(size=100)
    paths = {
        cached_initrd(base, agent, tmp_path).path,
        cached_initrd(InitrdSpec(size=101), agent, tmp_path).path,
        cached_initrd(InitrdSpec(size=100, seed=1), agent, tmp_path).path,
        cached_initrd(InitrdSpec(size=100, compression=Compression.XZ), agent, tmp_path).path,
    }
    agent.write_bytes(AGENT + b"!")
    paths.add(cached_initrd(base, agent, tmp_path).path)
    assert len(paths) == 5


@pytest.mark.parametrize("damage", ["missing", "garbage", "size"])
def test_cached_initrd_incomplete_entry_is_rebuilt(
    agent: Path, tmp_path: Path, damage: str
) -> None:
    spec = InitrdSpec(size=100)
    first = cached_initrd(spec, agent, tmp_path)
    meta_path = first.path.with_name(first.path.name + ".json")
    if damage == "missing":
        meta_path.unlink()
    elif damage == "garbage":
        meta_path.write_text("{")
    else:
        first.path.write_bytes(b"short")
    again = cached_initrd(spec, agent, tmp_path)
    assert again == first
    assert decompress(again.path.read_bytes(), Compression.GZIP)[:6] == b"070701"


def test_cached_initrd_default_dir_is_bootfuzz_cache(
    agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(tmp_path / "c"))
    built = cached_initrd(InitrdSpec(size=10), agent)
    assert built.path.parent == tmp_path / "c" / "initrd"


def test_cached_initrd_home_default(
    agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOOTFUZZ_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    built = cached_initrd(InitrdSpec(size=10), agent)
    assert built.path.parent == tmp_path / "home" / ".cache" / "bootfuzz" / "initrd"
