"""bootfuzz.kernel.deb on small .debs built in code (tests/unit/fake_deb.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fake_deb import ar_archive, build_deb, compress_tar, tar_bytes

from bootfuzz.errors import ConfigError
from bootfuzz.kernel.deb import (
    AR_HEADER,
    AR_MAGIC,
    DebError,
    DebPart,
    extract_members,
    extract_to_files,
    list_ar_members,
    list_members,
)

VMLINUZ = "boot/vmlinuz-9.9.9-fake"
CONFIG = "boot/config-9.9.9-fake"
MODULE = "lib/modules/9.9.9-fake/kernel/fake.ko"
FILES = {
    VMLINUZ: bytes(range(256)) * 40,
    CONFIG: b"CONFIG_FAKE=y\n",
    MODULE: b"\x7fELF" + b"\0" * 100,
}
#: Offset of the first ar member header (right after the magic).
FIRST_HEADER = len(AR_MAGIC)


def write(tmp_path: Path, data: bytes, name: str = "k.deb") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def deb(tmp_path: Path) -> Path:
    return write(tmp_path, build_deb(FILES))


def data_member_offset(path: Path) -> tuple[int, int]:
    data = next(m for m in list_ar_members(path) if m.name.startswith("data.tar"))
    return data.offset, data.size


# ----------------------------------------------------------------------------- good input


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz", ".bz2", ".zst"])
def test_extract_members_each_compression_returns_contents(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, build_deb(FILES, data_suffix=suffix))
    assert extract_members(path, [VMLINUZ, CONFIG]) == {
        VMLINUZ: FILES[VMLINUZ],
        CONFIG: FILES[CONFIG],
    }


def test_extract_members_leading_dot_slash_tolerated_keys_as_given(deb: Path) -> None:
    got = extract_members(deb, ["./" + CONFIG, VMLINUZ])
    assert got == {"./" + CONFIG: FILES[CONFIG], VMLINUZ: FILES[VMLINUZ]}


def test_extract_members_tar_without_dot_prefix_matches_dotted_request(tmp_path: Path) -> None:
    path = write(tmp_path, build_deb(FILES, prefix=""))
    assert extract_members(path, ["./" + CONFIG]) == {"./" + CONFIG: FILES[CONFIG]}


def test_list_members_data_normalizes_names(deb: Path) -> None:
    names = list_members(deb)
    assert names[0] == "."
    assert set(names) >= {"boot", VMLINUZ, CONFIG, MODULE}
    assert not [n for n in names if n.startswith("./")]


def test_list_members_control_part_reads_control_tar(deb: Path) -> None:
    assert list_members(deb, part=DebPart.CONTROL) == [".", "control"]
    assert extract_members(deb, ["./control"], part=DebPart.CONTROL) == {
        "./control": b"Package: fake\n"
    }


def test_extract_to_files_writes_and_hashes(deb: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    got = extract_to_files(deb, {VMLINUZ: dest})
    assert dest.read_bytes() == FILES[VMLINUZ]
    assert got[VMLINUZ].sha256 == hashlib.sha256(FILES[VMLINUZ]).hexdigest()
    assert got[VMLINUZ].size == len(FILES[VMLINUZ])
    assert got[VMLINUZ].path == dest


@pytest.mark.parametrize("extra", [b"ab", b"abc"], ids=["even", "odd-padded"])
def test_list_ar_members_member_sizes_even_and_odd_are_skipped_correctly(
    tmp_path: Path, extra: bytes
) -> None:
    path = write(tmp_path, build_deb(FILES, extra_members=[("_extra", extra)]))
    assert [m.name for m in list_ar_members(path)] == [
        "debian-binary",
        "_extra",
        "control.tar.xz",
        "data.tar.xz",
    ]
    assert extract_members(path, [CONFIG]) == {CONFIG: FILES[CONFIG]}


def test_list_ar_members_gnu_slash_terminated_names_accepted(tmp_path: Path) -> None:
    data = compress_tar(tar_bytes(FILES), ".xz")
    path = write(tmp_path, ar_archive([("debian-binary/", b"2.0\n"), ("data.tar.xz/", data)]))
    assert extract_members(path, [CONFIG]) == {CONFIG: FILES[CONFIG]}


# ----------------------------------------------------------------------------- bad input


def test_deb_error_is_config_error() -> None:
    assert issubclass(DebError, ConfigError)


def test_list_members_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "absent.deb"
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: no such file"


@pytest.mark.parametrize(
    "data", [b"", b"PK\x03\x04" + b"\0" * 100, b"!<arch>"], ids=["empty", "zip", "short-magic"]
)
def test_list_members_foreign_file_raises(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: not a Debian package (no ar archive signature)"


def test_list_members_empty_ar_archive_raises(tmp_path: Path) -> None:
    path = write(tmp_path, AR_MAGIC)
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: not a Debian package (empty ar archive)"


def test_list_members_static_library_raises(tmp_path: Path) -> None:
    path = write(tmp_path, ar_archive([("foo.o", b"\x7fELF")]))
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == (
        f"deb: {path}: not a Debian package (first ar member is 'foo.o', expected 'debian-binary')"
    )


def test_list_members_format_3_raises(tmp_path: Path) -> None:
    good = build_deb(FILES)
    at = good.index(b"2.0\n")
    path = write(tmp_path, good[:at] + b"3" + good[at + 1 :])
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == (
        f"deb: {path}: unsupported Debian package format (debian-binary is not 2.x)"
    )


def test_list_members_header_one_byte_short_raises(tmp_path: Path) -> None:
    good = build_deb(FILES)
    path = write(tmp_path, good[: FIRST_HEADER + AR_HEADER.size - 1])
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: truncated ar member header at offset 8"


def test_list_members_header_complete_but_no_data_raises(tmp_path: Path) -> None:
    """The pair of the test above: a whole header parses, then its 4 data bytes are missing."""
    good = build_deb(FILES)
    path = write(tmp_path, good[: FIRST_HEADER + AR_HEADER.size])
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == (
        f"deb: {path}: truncated: ar member 'debian-binary' needs 4 bytes, 0 remain"
    )


def test_list_members_data_member_cut_short_raises(tmp_path: Path, deb: Path) -> None:
    offset, size = data_member_offset(deb)
    good = deb.read_bytes()
    assert len(good) == offset + size  # the last member: no padding byte to cut first
    path = write(tmp_path, good[:-10], "cut.deb")
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == (
        f"deb: {path}: truncated: ar member 'data.tar.xz' needs {size} bytes, {size - 10} remain"
    )


def test_list_members_bad_fmag_raises(tmp_path: Path) -> None:
    good = bytearray(build_deb(FILES))
    good[FIRST_HEADER + AR_HEADER.size - 2] = ord("x")  # ar_fmag "`\n" -> "x\n"
    path = write(tmp_path, bytes(good))
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: corrupt ar member header at offset 8"


def test_list_members_non_decimal_size_raises(tmp_path: Path) -> None:
    good = bytearray(build_deb(FILES))
    size_field = FIRST_HEADER + 48  # ar_size follows name 16, date 12, uid 6, gid 6, mode 8
    good[size_field] = ord("z")
    path = write(tmp_path, bytes(good))
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: corrupt ar member header at offset 8"


@pytest.mark.parametrize("suffix", [".xz", ".gz", ".zst"])
def test_list_members_compressed_stream_cut_in_half_raises(tmp_path: Path, suffix: str) -> None:
    data = compress_tar(tar_bytes(FILES), suffix)
    deb = ar_archive([("debian-binary", b"2.0\n"), (f"data.tar{suffix}", data[: len(data) // 2])])
    path = write(tmp_path, deb)
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: data.tar{suffix} is corrupt or truncated"


@pytest.mark.parametrize("suffix", [".xz", ".zst"])
def test_list_members_flipped_byte_in_stream_raises(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, build_deb(FILES, data_suffix=suffix))
    offset, size = data_member_offset(path)
    bad = bytearray(path.read_bytes())
    bad[offset + size // 2] ^= 0xFF
    path.write_bytes(bytes(bad))
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: data.tar{suffix} is corrupt or truncated"


def test_list_members_no_data_tar_raises(tmp_path: Path) -> None:
    path = write(tmp_path, ar_archive([("debian-binary", b"2.0\n")]))
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == f"deb: {path}: no data.tar.* member in the package"


def test_list_members_unknown_compression_raises(tmp_path: Path) -> None:
    path = write(tmp_path, ar_archive([("debian-binary", b"2.0\n"), ("data.tar.lzma", b"x")]))
    with pytest.raises(DebError) as exc:
        list_members(path)
    assert str(exc.value) == (
        f"deb: {path}: data.tar.lzma uses an unsupported compression (known: data.tar, "
        "data.tar.gz, data.tar.xz, data.tar.bz2, data.tar.zst)"
    )


def test_extract_members_member_not_found_raises(deb: Path) -> None:
    with pytest.raises(DebError) as exc:
        extract_members(deb, [CONFIG, "boot/nope"])
    assert str(exc.value) == f"deb: {deb}: no member 'boot/nope' in data.tar.xz"


def test_extract_members_directory_raises(deb: Path) -> None:
    with pytest.raises(DebError) as exc:
        extract_members(deb, ["./boot/"])
    assert str(exc.value) == f"deb: {deb}: './boot/' in data.tar.xz is not a regular file"


@pytest.mark.parametrize("suffix", [".xz", ".zst", ".gz"])
def test_extract_members_cut_inside_data_member_names_the_shortfall(
    tmp_path: Path, suffix: str
) -> None:
    """Every cut of the data member is detected, and the error says what is missing."""
    good = build_deb({CONFIG: FILES[CONFIG]}, data_suffix=suffix)
    path = write(tmp_path, good)
    offset, size = data_member_offset(path)
    got, want = [], []
    for n in range(offset, offset + size):
        path.write_bytes(good[:n])
        with pytest.raises(DebError) as exc:
            extract_members(path, [CONFIG])
        got.append(str(exc.value))
        want.append(f"deb: {path}: truncated: ar member 'data.tar{suffix}' needs {size} "
                    f"bytes, {n - offset} remain")
    assert got == want


#: Every compressed form: each carries a check over the data that the reader verifies by
#: decoding to the stream's end.  (A plain data.tar has none over file contents.)
@pytest.mark.parametrize("suffix", [".xz", ".zst", ".gz", ".bz2"])
def test_extract_members_any_cut_or_flip_raises_deb_error_or_reads_the_same(
    tmp_path: Path, suffix: str
) -> None:
    """Any prefix or single flipped byte of a good .deb: a DebError naming the file (no
    foreign exception), or, for a flip in a byte the reader does not use (an ar date,
    the control member), the very contents of the good one; never other contents.  Only
    the ar padding byte after the data member may be cut without an error."""
    good = build_deb({CONFIG: FILES[CONFIG]}, data_suffix=suffix)
    path = write(tmp_path, good)
    offset, size = data_member_offset(path)
    prefix = f"deb: {path}: "
    for n in range(offset + size):
        path.write_bytes(good[:n])
        with pytest.raises(DebError) as exc:
            extract_members(path, [CONFIG])
        assert str(exc.value).startswith(prefix), (n, str(exc.value))
    for i in range(len(good)):
        flipped = bytearray(good)
        flipped[i] ^= 0xFF
        path.write_bytes(bytes(flipped))
        try:
            got = extract_members(path, [CONFIG])
        except DebError as e:
            assert str(e).startswith(prefix), (i, str(e))
            continue
        assert got == {CONFIG: FILES[CONFIG]}, f"byte {i} flipped, read {got!r}"
