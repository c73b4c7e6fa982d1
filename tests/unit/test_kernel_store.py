"""The kernel cache keyed by sha256: shared entries, the verification stamp, old layouts,
lookups by sha256, and `kernels export`/`import` (fake apt, no network)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_apt import CONFIG, DEB, OTHER_VMLINUZ, PINNED, PKG, VERSION, VMLINUZ, FakeApt, sha

from bootfuzz.case import BootCase
from bootfuzz.cli.main import main as bootfuzz_main
from bootfuzz.errors import KernelError, KernelFetchError
from bootfuzz.fuzz import replay as replay_module
from bootfuzz.fuzz.reproducer import Reproducer
from bootfuzz.kernel import pinned
from bootfuzz.kernel.pinned import (
    export_kernels,
    fetch,
    find_cached,
    import_kernels,
    kernel_cache_dir,
    load_manifest,
    render_manifest,
    resolve_kernel,
    store_dir,
)

ALIAS = dataclasses.replace(PINNED, name="alias-9.9", description="the same bytes, another name")
VSHA = PINNED.vmlinuz_sha256


@pytest.fixture(autouse=True)
def no_snapshot_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BOOTFUZZ_SNAPSHOT_URL", raising=False)


@pytest.fixture
def apt() -> FakeApt:
    fake = FakeApt()
    fake.offer(PKG, VERSION, DEB)
    return fake


@pytest.fixture
def offline() -> FakeApt:
    """A host without apt-get (and, with no snapshot URL, without any way to download)."""
    fake = FakeApt()
    fake.missing = True
    return fake


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(render_manifest({PINNED.name: PINNED, ALIAS.name: ALIAS}))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the cached files pinned hashes from now on."""
    seen: list[str] = []
    real = pinned._sha256_file

    def counting(path: Path) -> str | None:
        seen.append(path.name)
        return real(path)

    monkeypatch.setattr(pinned, "_sha256_file", counting)
    yield seen


def leftovers(cache: Path) -> list[Path]:
    tmp = cache / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


# ----------------------------------------------------------------------------- one entry per sha


def test_two_pins_of_the_same_bytes_share_one_entry(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    first = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    apt.calls.clear()
    second = fetch("alias-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert (second.downloaded, apt.calls) == (False, [])
    assert second.vmlinuz == first.vmlinuz == store_dir(VSHA, cache) / "vmlinuz"
    assert [p.name for p in (cache / "kernels" / "by-sha256").iterdir()] == [VSHA]


def test_entry_records_what_it_holds(apt: FakeApt, manifest: Path, cache: Path) -> None:
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    record = json.loads((store_dir(VSHA, cache) / "kernel.json").read_text())
    assert record == {
        "vmlinuz_sha256": VSHA, "config_sha256": sha(CONFIG), "package": PKG,
        "version": VERSION, "deb_sha256": sha(DEB),
    }


def test_manifest_same_vmlinuz_other_config_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    odd = dataclasses.replace(ALIAS, config_sha256="0" * 64)
    path.write_text(render_manifest({PINNED.name: PINNED, odd.name: odd}))
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == (
        f"kernels: {path}: [alias-9.9] and [fake-9.9] pin the same vmlinuz_sha256 with "
        "different config_sha256 (one build has one config)"
    )


# ----------------------------------------------------------------------------- the stamp


def test_resolve_kernel_does_not_rehash_an_untouched_kernel(
    apt: FakeApt, manifest: Path, cache: Path, hashed: list[str]
) -> None:
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    hashed.clear()
    for _ in range(3):
        path = resolve_kernel("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
        assert path == store_dir(VSHA, cache) / "vmlinuz"
    assert hashed == []


def test_edit_that_keeps_size_and_mtime_is_still_caught(
    apt: FakeApt, manifest: Path, cache: Path, hashed: list[str]
) -> None:
    """Same length, mtime set back: the ctime moved, so the file is hashed and re-fetched."""
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    before = got.config.stat()
    with open(got.config, "r+b") as f:  # in place: same inode
        f.write(b"X")
    os.utime(got.config, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert got.config.stat().st_size == before.st_size
    hashed.clear()
    again = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert "config" in hashed
    assert again.downloaded
    assert again.config.read_bytes() == CONFIG


def test_touched_but_unchanged_file_hashed_once_then_trusted_again(
    apt: FakeApt, manifest: Path, cache: Path, hashed: list[str]
) -> None:
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    os.utime(got.vmlinuz)
    hashed.clear()
    assert not fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt).downloaded
    assert hashed == ["vmlinuz"]
    hashed.clear()
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert hashed == []


def test_replaced_file_of_another_sha_refetched(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    got.vmlinuz.unlink()
    got.vmlinuz.write_bytes(OTHER_VMLINUZ)
    again = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert again.downloaded
    assert again.vmlinuz.read_bytes() == VMLINUZ


def test_stamp_that_cannot_be_written_only_costs_a_hash(
    apt: FakeApt, manifest: Path, cache: Path, hashed: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read-only cache: the kernel is hashed on each use, and still served."""
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    (got.vmlinuz.parent / ".verified.json").unlink()

    def read_only(path: Path, text: str) -> None:
        raise OSError(30, "Read-only file system", str(path))

    monkeypatch.setattr(pinned, "atomic_write_text", read_only)
    hashed.clear()
    for _ in range(2):
        assert resolve_kernel("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt) == (
            got.vmlinuz
        )
    assert sorted(hashed) == ["config", "config", "vmlinuz", "vmlinuz"]


# ----------------------------------------------------------------------------- the old layout


def test_kernel_in_the_old_layout_moved_without_downloading(
    offline: FakeApt, manifest: Path, cache: Path
) -> None:
    old = cache / "kernels" / "fake-9.9" / VSHA[:16]
    old.mkdir(parents=True)
    (old / "vmlinuz").write_bytes(VMLINUZ)
    (old / "config").write_bytes(CONFIG)
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=offline)
    assert (got.downloaded, offline.calls) == (False, [])
    assert got.vmlinuz == store_dir(VSHA, cache) / "vmlinuz"
    assert got.vmlinuz.read_bytes() == VMLINUZ
    assert not (cache / "kernels" / "fake-9.9").exists()
    assert find_cached(VSHA, cache) is not None


def test_damaged_kernel_in_the_old_layout_not_adopted(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    old = cache / "kernels" / "fake-9.9" / VSHA[:16]
    old.mkdir(parents=True)
    (old / "vmlinuz").write_bytes(OTHER_VMLINUZ)
    (old / "config").write_bytes(CONFIG)
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert got.downloaded
    assert got.vmlinuz.read_bytes() == VMLINUZ


# ----------------------------------------------------------------------------- by sha256


def repin_elsewhere(manifest: Path) -> None:
    """The manifest moves fake-9.9 on to other bytes, as a repin would."""
    moved = dataclasses.replace(PINNED, version="9.9.2-1", vmlinuz_sha256=sha(OTHER_VMLINUZ))
    manifest.write_text(render_manifest({moved.name: moved}))


def test_resolve_by_sha256_finds_a_kernel_no_longer_pinned(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    """A reproducer recorded on last month's pin still finds its kernel."""
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    repin_elsewhere(manifest)
    apt.calls.clear()
    path = resolve_kernel("fake-9.9", sha256=VSHA, cache_dir=cache, manifest=manifest, runner=apt)
    assert path.read_bytes() == VMLINUZ
    assert apt.calls == []
    assert path.with_name("config").read_bytes() == CONFIG  # beside it, for capabilities


def test_resolve_by_sha256_not_cached_says_how_to_get_it(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    repin_elsewhere(manifest)
    with pytest.raises(KernelError) as exc:
        resolve_kernel("fake-9.9", sha256=VSHA, cache_dir=cache, manifest=manifest, runner=apt)
    assert str(exc.value) == (
        f"kernels: kernel 'fake-9.9' was recorded with sha256 {VSHA}, but it is pinned to "
        f"{sha(OTHER_VMLINUZ)} now and the cache has no kernel of that sha256: bring it with "
        "`bootfuzz kernels import DIR` from a machine that has it, or fetch it with the "
        "kernels/manifest.toml that pinned it"
    )
    assert apt.calls == []


def test_resolve_by_sha256_of_the_current_pin_fetches_it(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    path = resolve_kernel("fake-9.9", sha256=VSHA, cache_dir=cache, manifest=manifest, runner=apt)
    assert path.read_bytes() == VMLINUZ


def test_find_cached_damaged_entry_is_none(apt: FakeApt, manifest: Path, cache: Path) -> None:
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert find_cached(VSHA, cache) is not None
    got.config.write_bytes(b"CONFIG_FAKE=n\n")
    assert find_cached(VSHA, cache) is None
    assert find_cached("not-a-sha", cache) is None


# ----------------------------------------------------------------------------- export / import


@pytest.fixture
def exported(apt: FakeApt, manifest: Path, tmp_path: Path) -> Path:
    """DIR after `export` from a cache that fetched fake-9.9."""
    source = tmp_path / "source-cache"
    fetch("fake-9.9", cache_dir=source, manifest=manifest, runner=apt)
    out = tmp_path / "export"
    got = export_kernels(out, cache_dir=source, manifest=manifest)
    assert [e.directory for e in got] == [out / "by-sha256" / VSHA]
    return out


def test_export_import_round_trip_fetch_needs_no_network(
    exported: Path, offline: FakeApt, manifest: Path, cache: Path
) -> None:
    [(entry, new)] = import_kernels(exported, cache_dir=cache, manifest=manifest)
    assert (entry.directory, new) == (store_dir(VSHA, cache), True)
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=offline)
    assert (got.downloaded, offline.calls) == (False, [])
    assert got.vmlinuz.read_bytes() == VMLINUZ
    assert got.config.read_bytes() == CONFIG
    assert leftovers(cache) == []
    assert not (exported / "by-sha256" / VSHA / ".verified.json").exists()


def test_import_twice_second_time_already_cached(
    exported: Path, manifest: Path, cache: Path
) -> None:
    import_kernels(exported, cache_dir=cache, manifest=manifest)
    [(_, new)] = import_kernels(exported, cache_dir=cache, manifest=manifest)
    assert new is False


@pytest.mark.parametrize("name", ["vmlinuz", "config"])
def test_import_tampered_file_refused_nothing_kept(
    exported: Path, manifest: Path, cache: Path, name: str
) -> None:
    path = exported / "by-sha256" / VSHA / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    expected = {"vmlinuz": VSHA, "config": sha(CONFIG)}[name]
    with pytest.raises(KernelError) as exc:
        import_kernels(exported, cache_dir=cache, manifest=manifest)
    assert str(exc.value) == (
        f"kernels: {path} has sha256 {sha(bytes(data))}, expected {expected}: refused"
    )
    assert not store_dir(VSHA, cache).exists()
    assert leftovers(cache) == []


def test_import_config_rerecorded_against_the_manifest_refused(
    exported: Path, manifest: Path, cache: Path
) -> None:
    """A swapped config with a kernel.json rewritten to match: the manifest's pin decides."""
    entry = exported / "by-sha256" / VSHA
    evil = b"CONFIG_EVIL=y\n"
    (entry / "config").write_bytes(evil)
    record = json.loads((entry / "kernel.json").read_text())
    record["config_sha256"] = sha(evil)
    (entry / "kernel.json").write_text(json.dumps(record))
    with pytest.raises(KernelError) as exc:
        import_kernels(exported, cache_dir=cache, manifest=manifest)
    assert str(exc.value) == (
        f"kernels: {entry / 'kernel.json'}: config_sha256 {sha(evil)} is not the "
        f"one pinned for fake-9.9 ({sha(CONFIG)}): refused"
    )
    assert not store_dir(VSHA, cache).exists()


def test_import_entry_not_named_by_sha_refused(
    exported: Path, manifest: Path, cache: Path
) -> None:
    entry = exported / "by-sha256" / VSHA
    entry.rename(entry.with_name("latest"))
    with pytest.raises(KernelError) as exc:
        import_kernels(exported, cache_dir=cache, manifest=manifest)
    assert str(exc.value) == (
        f"kernels: {entry.with_name('latest')}: not an exported kernel (its name must be a sha256)"
    )


def test_import_record_of_another_kernel_refused(
    exported: Path, manifest: Path, cache: Path
) -> None:
    entry = exported / "by-sha256" / VSHA
    record = json.loads((entry / "kernel.json").read_text())
    record["vmlinuz_sha256"] = "f" * 64
    (entry / "kernel.json").write_text(json.dumps(record))
    with pytest.raises(KernelError) as exc:
        import_kernels(exported, cache_dir=cache, manifest=manifest)
    assert str(exc.value) == (
        f"kernels: {entry / 'kernel.json'}: vmlinuz_sha256: is not the entry's name '{VSHA}'"
    )


def test_import_empty_dir_refused(tmp_path: Path, manifest: Path, cache: Path) -> None:
    with pytest.raises(KernelError) as exc:
        import_kernels(tmp_path, cache_dir=cache, manifest=manifest)
    assert str(exc.value) == (
        f"kernels: {tmp_path} holds no exported kernels (expected {tmp_path / 'by-sha256'}"
        "/SHA256/ from `bootfuzz kernels export`)"
    )


def test_export_carries_kernels_no_longer_pinned(
    exported: Path, apt: FakeApt, manifest: Path, cache: Path, offline: FakeApt
) -> None:
    """Every cache entry goes along, so old reproducers replay on the other machine."""
    repin_elsewhere(manifest)
    import_kernels(exported, cache_dir=cache, manifest=manifest)
    path = resolve_kernel("fake-9.9", sha256=VSHA, cache_dir=cache, manifest=manifest,
                          runner=offline)
    assert path.read_bytes() == VMLINUZ


def test_export_names_fetches_then_copies(
    apt: FakeApt, manifest: Path, cache: Path, tmp_path: Path
) -> None:
    got = export_kernels(tmp_path / "out", ["alias-9.9"], cache_dir=cache, manifest=manifest,
                         runner=apt)
    assert [e.vmlinuz.read_bytes() for e in got] == [VMLINUZ]
    assert len(apt.downloads) == 1


def test_export_damaged_cache_entry_refused(
    apt: FakeApt, manifest: Path, cache: Path, tmp_path: Path
) -> None:
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    got.vmlinuz.write_bytes(OTHER_VMLINUZ)
    with pytest.raises(KernelFetchError) as exc:
        export_kernels(tmp_path / "out", cache_dir=cache, manifest=manifest)
    assert str(exc.value) == (
        f"kernels: cache entry {store_dir(VSHA, cache)} is damaged: its files do not match "
        "their sha256; remove it (`bootfuzz kernels fetch` brings a pinned kernel back)"
    )
    assert not (tmp_path / "out").exists()


def test_main_export_then_import_into_an_empty_cache(
    apt: FakeApt, manifest: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`bootfuzz kernels export DIR`, then `import DIR` and `fetch` on a host without apt."""
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    fetch("fake-9.9", cache_dir=tmp_path / "a", manifest=manifest, runner=apt)
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(tmp_path / "a"))
    assert bootfuzz_main(["kernels", "export", str(tmp_path / "dir")]) == 0
    out = tmp_path / "dir" / "by-sha256" / VSHA
    assert capsys.readouterr().out == f"{VSHA[:16]} {PKG}={VERSION}: exported to {out}\n"
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(tmp_path / "b"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    assert bootfuzz_main(["kernels", "import", str(tmp_path / "dir")]) == 0
    assert capsys.readouterr().out == (
        f"{VSHA[:16]} {PKG}={VERSION}: imported (sha256 verified)\n"
    )
    assert bootfuzz_main(["kernels", "fetch", "fake-9.9"]) == 0
    path = kernel_cache_dir(PINNED, tmp_path / "b") / "vmlinuz"
    assert capsys.readouterr().out == f"fake-9.9: {path} (cached, sha256 verified)\n"


def test_main_import_tampered_exits_2_with_one_line(
    exported: Path, manifest: Path, cache: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))
    (exported / "by-sha256" / VSHA / "vmlinuz").write_bytes(OTHER_VMLINUZ)
    assert bootfuzz_main(["kernels", "import", str(exported)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("bootfuzz: error: kernels: ")
    assert err.endswith(f"expected {VSHA}: refused\n")


class _Prepared(Exception):
    """Raised by a stand-in for run.boot.prepare: the case replay would boot."""

    def __init__(self, case: BootCase) -> None:
        self.case = case


@pytest.mark.parametrize("moved", [False, True])
def test_replay_boots_the_recorded_kernel_after_a_repin(
    apt: FakeApt, manifest: Path, cache: Path, moved: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reproducer names fake-9.9 and its sha256; after a repin it boots the cached
    kernel of that sha256 (by path, its config beside it), else the pinned name."""
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    if moved:
        repin_elsewhere(manifest)
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))

    def prepare(case: BootCase) -> None:
        raise _Prepared(case)

    monkeypatch.setattr(replay_module, "prepare", prepare)
    rep = Reproducer(BootCase(kernel="fake-9.9", memory=256 << 20), kernel_sha256=VSHA)
    with pytest.raises(_Prepared) as booted:
        replay_module.replay(rep)
    expected = str(store_dir(VSHA, cache) / "vmlinuz") if moved else "fake-9.9"
    assert booted.value.case.kernel == expected
