"""Split initrds: an uncompressed early archive with /init, then the compressed payload."""

from __future__ import annotations

import hashlib
from pathlib import Path

from bootfuzz.case import InitrdSpec
from bootfuzz.compression import Compression, decompress
from bootfuzz.guest.cpio import parse_newc
from bootfuzz.guest.initrd import build_initrd, early_archive, payload_bytes


def test_split_initrd_is_two_archives(tmp_path: Path) -> None:
    agent = tmp_path / "init"
    agent.write_bytes(b"\x7fELF-fake-agent")
    spec = InitrdSpec(5000, Compression.GZIP, seed=3, split=True)
    built = build_initrd(spec, agent, tmp_path / "initrd")
    data = built.path.read_bytes()
    early = early_archive(agent.read_bytes())
    assert len(early) % 512 == 0 and data.startswith(early)
    names = [e.name for e in parse_newc(early)]
    assert "init" in names and "dev/console" in names and "payload" not in names
    second = decompress(data[len(early):], Compression.GZIP)
    entries = {e.name: e for e in parse_newc(second)}
    payload = entries["payload"].data(second)
    assert payload == b"".join(payload_bytes(3, 5000))
    assert hashlib.sha256(payload).hexdigest() == built.payload_sha256


def test_split_and_single_cache_separately(tmp_path: Path) -> None:
    from bootfuzz.guest.initrd import cache_name

    assert cache_name(InitrdSpec(1, split=True), "0" * 64) != cache_name(InitrdSpec(1), "0" * 64)


def test_raw_initrd_is_the_payload_alone(tmp_path: Path) -> None:
    agent = tmp_path / "init"
    agent.write_bytes(b"\x7fELF-fake-agent")
    built = build_initrd(InitrdSpec(7000, Compression.GZIP, seed=5, raw=True), agent,
                         tmp_path / "initrd")
    payload = decompress(built.path.read_bytes(), Compression.GZIP)
    assert payload == b"".join(payload_bytes(5, 7000))
    assert hashlib.sha256(payload).hexdigest() == built.payload_sha256


def test_raw_and_split_together_are_refused() -> None:
    import pytest

    from bootfuzz.errors import InitramfsError

    with pytest.raises(InitramfsError, match="either split cpio archives or raw"):
        InitrdSpec(1, split=True, raw=True)
