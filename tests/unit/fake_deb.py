"""Build small .deb files in memory for the deb and kernels tests.

Written independently of bootfuzz/deb.py (tarfile and zstandard on the writing
side, the ar layout from ar(5)), so a shared misreading cannot hide a bug.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
from collections.abc import Callable, Mapping, Sequence

import zstandard

from bootfuzz.abi.bootparam import (
    BOOT_FLAG_MAGIC,
    HDRS_MAGIC,
    SECTOR_SIZE,
    SETUP_HEADER,
    LoadFlags,
)


def ar_archive(members: Sequence[tuple[str, bytes]]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members:
        out += f"{name:<16}{'0':<12}{'0':<6}{'0':<6}{'100644':<8}{len(data):<10}`\n".encode()
        out += data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def tar_bytes(files: Mapping[str, bytes], *, prefix: str = "./") -> bytes:
    """An uncompressed tar with directory entries, as dpkg-deb lays it out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = {prefix.rstrip("/") or "."}
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add(prefix + "/".join(parts[:i]))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(prefix + path)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress_tar(raw_tar: bytes, suffix: str) -> bytes:
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "": bytes,
        ".xz": lzma.compress,
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".zst": zstandard.ZstdCompressor(write_checksum=True).compress,
    }
    return compressors[suffix](raw_tar)


def build_deb(
    files: Mapping[str, bytes],
    *,
    data_suffix: str = ".xz",
    prefix: str = "./",
    extra_members: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """A format-2.0 .deb with a control.tar.xz and data.tar<data_suffix>.

    ``extra_members`` go between debian-binary and control.tar (dpkg ignores
    names starting with "_"), handy for odd sizes that need ar padding.
    """
    control = compress_tar(tar_bytes({"control": b"Package: fake\n"}), ".xz")
    data = compress_tar(tar_bytes(files, prefix=prefix), data_suffix)
    return ar_archive(
        [
            ("debian-binary", b"2.0\n"),
            *extra_members,
            ("control.tar.xz", control),
            (f"data.tar{data_suffix}", data),
        ]
    )


def fake_bzimage(*, magic: bytes = b"\x02\x21\x4c\x18", filler: int = 0) -> bytes:
    """A header-only "bzImage" that bootfuzz.kernel.image accepts, its payload starting with
    ``magic`` (default: the lz4 legacy frame).  ``filler`` changes the last byte so
    two images can differ in sha256 only.
    """
    setup_sects = 3
    payload_offset, payload_length, pm_size = 0x40, 0x40, 0x100
    pm_start = (setup_sects + 1) * SECTOR_SIZE
    buf = bytearray(pm_start + pm_size)
    SETUP_HEADER.pack_into(
        buf,
        {
            "setup_sects": setup_sects,
            "syssize": pm_size // 16,
            "boot_flag": BOOT_FLAG_MAGIC,
            "jump": 0x6AEB,  # "jmp short +0x6a": the header runs to 0x26c (2.15)
            "header": HDRS_MAGIC,
            "version": 0x020F,
            "loadflags": LoadFlags.LOADED_HIGH,
            "payload_offset": payload_offset,
            "payload_length": payload_length,
            "init_size": 0x100000,
        },
    )
    start = pm_start + payload_offset
    buf[start : start + len(magic)] = magic
    buf[-1] = filler
    return bytes(buf)
