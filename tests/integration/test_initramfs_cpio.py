"""Our initrds as the real tools see them: GNU cpio, gzip, bzip2, xz, lz4, zstd.

Each test skips (with the tool's name) when the tool is not installed; Debian
packages: cpio, gzip, bzip2, xz-utils, lz4, zstd.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bootfuzz.case import InitrdSpec
from bootfuzz.compression import LZ4_LEGACY_CHUNK_SIZE, Compression
from bootfuzz.guest.initrd import build_initrd, write_initrd_archive
from tests.fakes import FAKE_AGENT as AGENT  # what the `agent` fixture (tests/conftest.py) holds

#: The command that decompresses each format to stdout, as a user would run it.
DECOMPRESSORS: dict[Compression, list[str]] = {
    Compression.GZIP: ["gzip", "-dc"],
    Compression.BZIP2: ["bzip2", "-dc"],
    Compression.LZMA: ["xz", "--format=lzma", "-dc"],
    Compression.XZ: ["xz", "-dc"],
    Compression.LZ4: ["lz4", "-dc"],
    Compression.ZSTD: ["zstd", "-dc"],
}

EXPECTED_NAMES = ["dev", "dev/console", "proc", "sys", "init", "payload", "payload.sha256"]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def run(argv: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, check=True, timeout=120)


def archive(spec: InitrdSpec) -> bytes:
    out = io.BytesIO()
    write_initrd_archive(out, spec, AGENT)
    return out.getvalue()


def test_cpio_lists_our_names_in_order() -> None:
    """GNU cpio -it reads the uncompressed archive and lists exactly our entries."""
    need("cpio")
    listing = run(["cpio", "-it"], archive(InitrdSpec(size=5000, compression=Compression.NONE)))
    assert listing.stdout.decode().splitlines() == EXPECTED_NAMES


def test_cpio_shows_console_as_char_device_5_1() -> None:
    """cpio -itv shows dev/console as crw------- 5, 1 and the sizes we wrote."""
    need("cpio")
    data = archive(InitrdSpec(size=5000, compression=Compression.NONE))
    lines = run(["cpio", "-itv"], data).stdout.decode().splitlines()
    by_name = {line.rsplit(" ", 1)[1]: line for line in lines}
    assert re.fullmatch(r"crw------- +1 root +root +5, +1 .* dev/console", by_name["dev/console"])
    assert by_name["init"].startswith("-rwxr-xr-x ")
    assert re.search(rf" {len(AGENT)} .* init$", by_name["init"])
    assert re.search(r" 5000 .* payload$", by_name["payload"])
    assert re.search(r" 64 .* payload\.sha256$", by_name["payload.sha256"])
    for name in ("dev", "proc", "sys"):
        assert by_name[name].startswith("drwxr-xr-x ")


def test_cpio_extracts_payload_and_digest(tmp_path: Path) -> None:
    """cpio -i extracts the payload; its SHA-256 is what payload.sha256 holds."""
    need("cpio")
    spec = InitrdSpec(size=70_000, compression=Compression.NONE, seed=5)
    data = archive(spec)
    # Pattern arguments pick the regular files: mknod of dev/console needs root.
    subprocess.run(
        ["cpio", "-id", "--quiet", "payload", "payload.sha256", "init"],
        input=data,
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    digest = (tmp_path / "payload.sha256").read_bytes()
    assert re.fullmatch(rb"[0-9a-f]{64}", digest)
    sha = run(["sha256sum"], (tmp_path / "payload").read_bytes()).stdout.split()[0]
    assert sha == digest
    assert (tmp_path / "init").read_bytes() == AGENT


@pytest.mark.parametrize("compression", sorted(DECOMPRESSORS))
def test_real_tool_decompresses_to_the_exact_archive(
    compression: Compression, agent: Path, tmp_path: Path
) -> None:
    """gzip/bzip2/xz/lz4/zstd -dc on our image gives back the uncompressed archive."""
    argv = DECOMPRESSORS[compression]
    need(argv[0])
    spec = InitrdSpec(size=300_000, compression=compression, seed=8)
    built = build_initrd(spec, agent, tmp_path / f"initrd{compression.suffix}")
    assert run(argv, built.path.read_bytes()).stdout == archive(spec)


def test_lz4_tool_reads_multi_block_legacy_frame(agent: Path, tmp_path: Path) -> None:
    """lz4 -dc reads our legacy frame across the 8 MiB block boundary."""
    need("lz4")
    spec = InitrdSpec(size=LZ4_LEGACY_CHUNK_SIZE + 12345, compression=Compression.LZ4, seed=1)
    built = build_initrd(spec, agent, tmp_path / "initrd.lz4")
    assert run(["lz4", "-dc"], built.path.read_bytes()).stdout == archive(spec)


def test_xz_tool_reports_crc32_check(agent: Path, tmp_path: Path) -> None:
    """xz --robot -lv: every stream and block uses CRC32, which the kernel supports."""
    need("xz")
    built = build_initrd(InitrdSpec(size=1000, compression=Compression.XZ), agent, tmp_path / "i")
    listing = subprocess.run(
        ["xz", "--robot", "-lv", str(built.path)], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    checks = {
        line.split("\t")[0]: line.split("\t")
        for line in listing.splitlines()
        if line.split("\t")[0] in ("stream", "block")
    }
    assert checks["stream"][8] == "CRC32"
    assert checks["block"][9] == "CRC32"


def test_zstd_tool_reports_small_window_and_content_size(agent: Path, tmp_path: Path) -> None:
    """zstd -lv: 1 MiB window (the kernel holds it in memory) and the exact content size."""
    need("zstd")
    spec = InitrdSpec(size=3 << 20, compression=Compression.ZSTD)
    built = build_initrd(spec, agent, tmp_path / "i.zst")
    listing = subprocess.run(
        ["zstd", "-lv", str(built.path)], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    assert "Window Size: 1.000 MiB (1048576 B)" in listing
    assert re.search(rf"Decompressed Size: .* \({len(archive(spec))} B\)", listing)
