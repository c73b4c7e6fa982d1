"""Build small .deb files in memory for the deb and kernels tests (the kernel images
inside them come from tests/fakes.py).

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
