"""The initrd cache's size cap: least recently used images go after a build, an image
used within IN_USE_SECONDS never does, and a use is what orders them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bootfuzz.case import InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.guest import initrd
from bootfuzz.guest.initrd import (
    CACHE_MAX_ENV,
    DEFAULT_CACHE_MAX,
    IN_USE_SECONDS,
    BuiltInitrd,
    CacheLimitError,
    cache_limit,
    cached_initrd,
    evict,
)

#: Uncompressed, so every image has the same size.
SIZE = 64 << 10
LONG_AGO = time.time() - 2 * IN_USE_SECONDS


def spec(seed: int) -> InitrdSpec:
    return InitrdSpec(size=SIZE, compression=Compression.NONE, seed=seed)


def build(seed: int, agent: Path, cache: Path) -> BuiltInitrd:
    return cached_initrd(spec(seed), agent, cache)


def age(built: BuiltInitrd, when: float) -> None:
    """Last used at *when* (the cache keeps uses in the image's access time)."""
    os.utime(built.path, (when, built.path.stat().st_mtime))


def entry_size(built: BuiltInitrd) -> int:
    return built.size + built.path.with_name(built.path.name + ".json").stat().st_size


def cache_bytes(cache: Path) -> int:
    return sum(p.stat().st_size for p in (cache / "initrd").iterdir() if p.name != ".lock")


@pytest.fixture(autouse=True)
def _no_cap_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_MAX_ENV, raising=False)


def test_evict_removes_least_recently_used_down_to_the_cap(agent: Path,
                                                           tmp_path: Path) -> None:
    built = [build(seed, agent, tmp_path) for seed in range(5)]
    for i, b in enumerate(built):  # used in the order 3, 0, 4, 1, 2 (oldest first)
        age(b, LONG_AGO + [1, 3, 4, 0, 2][i])
    one = entry_size(built[0])
    removed = evict(tmp_path / "initrd", 3 * one)
    assert removed == [built[3].path, built[0].path]
    assert [b.path.exists() for b in built] == [False, True, True, False, True]
    assert not built[3].path.with_name(built[3].path.name + ".json").exists()
    assert cache_bytes(tmp_path) <= 3 * one


def test_a_use_moves_an_entry_to_the_back(agent: Path, tmp_path: Path) -> None:
    built = [build(seed, agent, tmp_path) for seed in range(3)]
    for i, b in enumerate(built):
        age(b, LONG_AGO + i)
    again = build(0, agent, tmp_path)  # a hit: the oldest is now the newest
    assert again == built[0]
    later = time.time() + 2 * IN_USE_SECONDS  # when no use is recent any more
    assert evict(tmp_path / "initrd", 2 * entry_size(built[0]), now=later) == [built[1].path]


def test_entries_used_recently_are_never_evicted(agent: Path, tmp_path: Path) -> None:
    """A boot may hold the path of an image its QEMU has not opened yet: over the cap,
    what was used within IN_USE_SECONDS stays."""
    built = [build(seed, agent, tmp_path) for seed in range(3)]
    age(built[0], LONG_AGO)
    age(built[1], time.time() - IN_USE_SECONDS / 2)
    assert evict(tmp_path / "initrd", 0) == [built[0].path]
    assert built[1].path.exists() and built[2].path.exists()


def test_cached_initrd_keeps_the_cache_under_its_cap_as_a_campaign_runs(
    agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One new image per case, as a campaign builds them: the cache stays at its cap
    (plus the image just built) instead of growing by an image per case."""
    first = build(1000, agent, tmp_path)
    one = entry_size(first)
    monkeypatch.setenv(CACHE_MAX_ENV, str(4 * one))
    age(first, LONG_AGO)
    for seed in range(30):
        built = build(seed, agent, tmp_path)
        age(built, LONG_AGO + seed)  # its boot is long over by the next case
        assert cache_bytes(tmp_path) <= 4 * one
    assert not first.path.exists()
    assert sorted(p.name for p in (tmp_path / "initrd").glob("*.cpio")) == sorted(
        build(seed, agent, tmp_path).path.name for seed in range(26, 30))


def test_an_evicted_entry_is_built_again(agent: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    built = build(1, agent, tmp_path)
    data = built.path.read_bytes()
    age(built, LONG_AGO)
    assert evict(tmp_path / "initrd", 0) == [built.path]
    assert build(1, agent, tmp_path) == built and built.path.read_bytes() == data

    # Evicted between the look-up and the recorded use: built again, not a vanished path.
    real_touch = initrd._touch

    def evicted_meanwhile(path: Path) -> bool:
        path.unlink()
        return real_touch(path)

    monkeypatch.setattr(initrd, "_touch", evicted_meanwhile)
    assert build(1, agent, tmp_path) == built and built.path.read_bytes() == data


def test_leftovers_of_killed_builds_go_when_old(agent: Path, tmp_path: Path) -> None:
    built = build(1, agent, tmp_path)
    directory = tmp_path / "initrd"
    stale, fresh = directory / f".{built.path.name}.abc.tmp", directory / ".x.def.tmp"
    lone_sidecar = directory / "v1-none-1-0-x.cpio.json"
    for path in (stale, fresh, lone_sidecar):
        path.write_bytes(b"x" * 100)
    for path in (stale, lone_sidecar):
        os.utime(path, (LONG_AGO, LONG_AGO))
    evict(directory, 1 << 30)
    assert not stale.exists() and not lone_sidecar.exists()
    assert fresh.exists() and built.path.exists()


def test_cache_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_limit() == DEFAULT_CACHE_MAX == 1 << 30
    monkeypatch.setenv(CACHE_MAX_ENV, "256M")
    assert cache_limit() == 256 << 20
    monkeypatch.setenv(CACHE_MAX_ENV, "0")
    assert cache_limit() is None
    monkeypatch.setenv(CACHE_MAX_ENV, "1.5G")
    with pytest.raises(CacheLimitError, match=rf"{CACHE_MAX_ENV}='1.5G': .*not a size"):
        cache_limit()


def test_builds_under_the_cap_do_not_scan_the_cache(
    agent: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scan stats every entry: after the first, a build that keeps what this process
    knows of the cache under the cap adds its bytes without one; the build that passes
    the cap scans (and evicts), and so does the first build after RESCAN_SECONDS."""
    first = build(1000, agent, tmp_path)
    one = entry_size(first)
    monkeypatch.setenv(CACHE_MAX_ENV, str(4 * one))
    scans: list[Path] = []
    real = initrd._entries

    def counted(directory: Path, now: float) -> tuple[list[initrd._Entry], int]:
        scans.append(directory)
        return real(directory, now)

    monkeypatch.setattr(initrd, "_entries", counted)
    monkeypatch.setattr(initrd, "_TALLIES", {})
    age(first, LONG_AGO)
    build(1, agent, tmp_path)  # this process has not scanned this cache yet
    assert len(scans) == 1
    build(2, agent, tmp_path)
    build(3, agent, tmp_path)  # four entries: at the cap
    assert len(scans) == 1
    build(4, agent, tmp_path)  # five: over it
    assert len(scans) == 2 and not first.path.exists()
    clock = time.monotonic() + initrd.RESCAN_SECONDS + 1
    monkeypatch.setattr(initrd.time, "monotonic", lambda: clock)
    build(5, agent, tmp_path)
    assert len(scans) == 3
