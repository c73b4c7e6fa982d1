"""The snapshot-archive fallback against a local HTTP server (http.server in a thread).

The server speaks the two requests bootfuzz.kernel.snapshot makes, serving a .deb of
ours (fake_deb.py) by its sha1 the way the archive does; apt is faked (fake_apt.py).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_apt import DEB, PINNED, PKG, VERSION, VMLINUZ, FakeApt, fake_deb, sha

from bootfuzz.cli.main import main as bootfuzz_main
from bootfuzz.errors import KernelError, KernelFetchError
from bootfuzz.kernel import snapshot
from bootfuzz.kernel.pinned import fetch, kernel_cache_dir, render_manifest
from tests import snapshot_server
from tests.snapshot_server import listing_path, serving

SHA1 = hashlib.sha1(DEB).hexdigest()
LISTING = listing_path(PKG, VERSION)


class Archive(snapshot_server.Archive):
    """The stand-in archive, for the fake package by default."""

    def offer(self, deb: bytes, package: str = PKG, version: str = VERSION, *,
              arch: str = "amd64", digest: str | None = None) -> str:
        return super().offer(deb, package, version, arch=arch, digest=digest)


def listing(*entries: dict[str, str]) -> bytes:
    return snapshot_server.listing(PKG, VERSION, *entries)


@pytest.fixture
def archive(monkeypatch: pytest.MonkeyPatch) -> Iterator[Archive]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with serving(Archive) as server:
        monkeypatch.setenv("BOOTFUZZ_SNAPSHOT_URL", server.url)
        yield server


@pytest.fixture
def gone() -> FakeApt:
    """apt knows the package but no longer the pinned version."""
    apt = FakeApt()
    apt.offer(PKG, "9.9.2-1", fake_deb())
    return apt


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(render_manifest({PINNED.name: PINNED}))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def leftovers(cache: Path) -> list[Path]:
    tmp = cache / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


def refused(apt: FakeApt, manifest: Path, cache: Path) -> str:
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert not kernel_cache_dir(PINNED, cache).exists()
    assert leftovers(cache) == []
    return str(exc.value)


APT_GONE = (f"the pinned version {VERSION} of {PKG} has left the archive "
            f"(apt-get: E: Version '{VERSION}' for '{PKG}' was not found)")


# ------------------------------------------------------------------ the fallback


def test_fetch_version_gone_from_apt_taken_from_snapshot(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    archive.offer(DEB)
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=gone)
    assert got.downloaded
    assert got.vmlinuz == kernel_cache_dir(PINNED, cache) / "vmlinuz"
    assert got.vmlinuz.read_bytes() == VMLINUZ
    assert archive.requests == [LISTING, f"/file/{SHA1}"]
    assert [c[-1] for c in gone.downloads] == [f"{PKG}={VERSION}"]  # apt was asked first
    assert leftovers(cache) == []


def test_fetch_apt_has_it_snapshot_not_asked(archive: Archive, manifest: Path, cache: Path) -> None:
    apt = FakeApt()
    apt.offer(PKG, VERSION, DEB)
    archive.offer(DEB)
    assert fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt).downloaded
    assert archive.requests == []


def test_fetch_without_apt_get_taken_from_snapshot(
    archive: Archive, manifest: Path, cache: Path
) -> None:
    """A host without apt fetches pinned kernels from the snapshot archive alone."""
    apt = FakeApt()
    apt.missing = True
    archive.offer(DEB)
    assert fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt).downloaded
    assert archive.requests == [LISTING, f"/file/{SHA1}"]


def test_fetch_snapshot_url_argument_wins_over_env(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOOTFUZZ_SNAPSHOT_URL", "http://127.0.0.1:1/nothing-here")
    archive.offer(DEB)
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=gone,
                snapshot_url=archive.url + "/")
    assert got.vmlinuz.read_bytes() == VMLINUZ


def test_fetch_second_listed_file_is_the_pinned_one(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    other = fake_deb(config=b"CONFIG_OTHER=y\n")
    other_sha1 = hashlib.sha1(other).hexdigest()
    archive.routes[LISTING] = (200, listing(
        {"architecture": "i386", "hash": "0" * 40},
        {"architecture": "amd64", "hash": other_sha1},
        {"architecture": "amd64", "hash": SHA1.upper()},
    ))
    archive.routes[f"/file/{other_sha1}"] = (200, other)
    archive.routes[f"/file/{SHA1}"] = (200, DEB)
    assert fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=gone).downloaded
    assert archive.requests == [LISTING, f"/file/{other_sha1}", f"/file/{SHA1}"]


# ------------------------------------------------------------------ refusals


def test_fetch_snapshot_wrong_sha256_refused(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    """The archive serves other bytes under the listed hash: nothing is kept."""
    impostor = fake_deb(vmlinuz=VMLINUZ + b"\0")
    archive.offer(impostor, digest=SHA1)
    assert refused(gone, manifest, cache) == (
        f"kernels: fake-9.9: neither apt-get nor the snapshot archive gave {PKG}={VERSION}\n"
        f"  apt-get: {APT_GONE}\n"
        f"  snapshot archive: {PKG}={VERSION} from {archive.url}/file/{SHA1} has sha256 "
        f"{sha(impostor)}, expected {PINNED.deb_sha256}; not kept"
    )


def test_fetch_snapshot_server_down_says_cannot_reach(
    gone: FakeApt, manifest: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BOOTFUZZ_SNAPSHOT_URL", f"http://127.0.0.1:{port}")
    msg = refused(gone, manifest, cache)
    assert msg.endswith(
        f"  snapshot archive: cannot reach http://127.0.0.1:{port}{LISTING} (Connection refused)"
    )
    assert f"  apt-get: {APT_GONE}\n" in msg


def test_fetch_snapshot_has_no_such_version(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    assert refused(gone, manifest, cache).endswith(
        f"  snapshot archive: {archive.url}{LISTING}: HTTP 404 Not Found"
    )


def test_fetch_snapshot_lists_no_amd64_file(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    archive.offer(DEB, arch="arm64")
    assert refused(gone, manifest, cache).endswith(
        f"  snapshot archive: {archive.url}{LISTING} lists no amd64 file of {PKG}={VERSION}"
    )
    assert archive.requests == [LISTING]


def test_fetch_snapshot_listing_not_json(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    archive.routes[LISTING] = (200, b"<html>maintenance</html>")
    msg = refused(gone, manifest, cache)
    assert f"  snapshot archive: {archive.url}{LISTING} is not a JSON listing (" in msg


def test_fetch_snapshot_transfer_cut_short(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path
) -> None:
    archive.offer(DEB)
    archive.cut.add(f"/file/{SHA1}")
    assert refused(gone, manifest, cache).endswith(
        f"  snapshot archive: {archive.url}/file/{SHA1}: transfer broke off after {len(DEB)} "
        f"of {len(DEB) + 1000} bytes"
    )


def test_fetch_snapshot_file_over_the_size_cap(
    archive: Archive, gone: FakeApt, manifest: Path, cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(snapshot, "MAX_DEB_BYTES", len(DEB) - 1)
    archive.offer(DEB)
    assert refused(gone, manifest, cache).endswith(
        f"{archive.url}/file/{SHA1}: larger than {len(DEB) - 1} bytes, not a kernel package"
    )


def test_fetch_apt_fails_and_no_snapshot_url_says_how_to_set_it(
    gone: FakeApt, manifest: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOOTFUZZ_SNAPSHOT_URL", raising=False)
    assert refused(gone, manifest, cache).endswith(
        f"\n  or take {PKG}={VERSION} from Debian's snapshot archive: set "
        "BOOTFUZZ_SNAPSHOT_URL (or pass --snapshot-url) to the base URL of Debian's "
        "snapshot archive or of a mirror of it"
    )


@pytest.mark.parametrize("url", ["ftp://mirror.example/snapshot", "snapshot", "http://"])
def test_snapshot_url_not_http_refused(
    url: str, gone: FakeApt, manifest: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTFUZZ_SNAPSHOT_URL", url)
    with pytest.raises(KernelError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=gone)
    assert str(exc.value).startswith(
        f"kernels: snapshot archive URL {url!r} is not an http(s) URL; set BOOTFUZZ_SNAPSHOT_URL"
    )


def test_main_fetch_snapshot_url_flag(
    archive: Archive, manifest: Path, cache: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """`bootfuzz kernels fetch --snapshot-url` on a host without apt-get."""
    monkeypatch.delenv("BOOTFUZZ_SNAPSHOT_URL")
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    archive.offer(DEB)
    assert bootfuzz_main(["kernels", "fetch", "--snapshot-url", archive.url, "fake-9.9"]) == 0
    path = kernel_cache_dir(PINNED, cache) / "vmlinuz"
    assert capsys.readouterr().out == f"fake-9.9: {path} (downloaded, sha256 verified)\n"
    assert archive.requests == [LISTING, f"/file/{SHA1}"]


# ------------------------------------------------------------------ the client alone


def test_parse_binfiles_keeps_this_arch_and_unlabelled_entries() -> None:
    data = listing(
        {"architecture": "amd64", "hash": "A" * 40},
        {"architecture": "arm64", "hash": "b" * 40},
        {"hash": "c" * 40},
        {"architecture": "amd64", "hash": "../../etc/passwd"},
        {"architecture": "amd64"},
    )
    assert snapshot.parse_binfiles(data, "amd64", where="L") == ["a" * 40, "c" * 40]


@pytest.mark.parametrize(("data", "problem"), [
    (b'{"result": {}}', "L has no 'result' list of files"),
    (b"[]", "L has no 'result' list of files"),
    (b"\xff", "L is not a JSON listing ("),
])
def test_parse_binfiles_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(snapshot.SnapshotError) as exc:
        snapshot.parse_binfiles(data, "amd64", where="L")
    assert str(exc.value).startswith(f"kernels: {problem}")


def test_binfiles_url_quotes_epoch_and_plus() -> None:
    url = snapshot.binfiles_url("http://m/", "linux-image-6.12.1+deb12-amd64", "1:6.12.1-1~b1")
    assert url == (
        "http://m/mr/binary/linux-image-6.12.1%2Bdeb12-amd64/1%3A6.12.1-1~b1/binfiles"
    )

