"""Real apt-get: fetch a pinned Debian kernel and check what the manifest says about it;
the snapshot-archive fallback with a real pinned package."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.kernel.payload import detect_compression
from bootfuzz.kernel.pinned import (
    CommandResult,
    apt_download_argv,
    fetch,
    list_kernels,
    load_manifest,
    parse_apt_policy,
    run_command,
)
from tests.snapshot_server import Archive, listing_path, serving

pytestmark = pytest.mark.slow

NAME = "debian-6.1-cloud"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_fetch_debian_6_1_cloud_through_apt_sha_verifies(tmp_path: Path) -> None:
    """apt-get download fetches debian-6.1-cloud into an empty cache; both sha256 match."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed: pinned kernels are fetched with apt")
    pinned = load_manifest()[NAME]
    policy = parse_apt_policy(run_command(["apt-cache", "policy", pinned.package]).stdout)
    if policy.candidate is None:
        why = (f"apt has no candidate for {pinned.package}: the package lists are empty "
               "or stale (run apt-get update)")
        pytest.skip(reason=why)
    got = fetch(NAME, cache_dir=tmp_path / "cache")
    assert got.downloaded
    assert sha256(got.vmlinuz) == pinned.vmlinuz_sha256
    assert sha256(got.config) == pinned.config_sha256
    assert detect_compression(load_kernel_image(got.vmlinuz).payload).value == pinned.compression
    assert not list((tmp_path / "cache" / "tmp").iterdir())


@pytest.mark.parametrize("name", sorted(load_manifest()))
def test_manifest_compression_matches_cached_payload(name: str) -> None:
    """The manifest's compression field names the payload format of the cached kernel."""
    status = next(s for s in list_kernels() if s.pinned.name == name)
    if not status.cached:
        pytest.skip(f"{name} is not in the default cache (bootfuzz kernels fetch)")
    assert sha256(status.vmlinuz) == status.pinned.vmlinuz_sha256
    if status.pinned.arch != "amd64":  # an arm64/riscv64 Image: no payload, "none"
        from bootfuzz.kernel.dt_image import load_dt_image

        assert load_dt_image(status.vmlinuz).arch.debian == status.pinned.arch
        assert status.pinned.compression == "none"
        return
    image = load_kernel_image(status.vmlinuz)
    assert detect_compression(image.payload).value == status.pinned.compression


def _apt_index_sha256(package: str, version: str) -> str | None:
    """The SHA256 field apt's package index gives package=version, or None."""
    res = run_command(["apt-cache", "show", f"{package}={version}"])
    m = re.search(r"^SHA256: ([0-9a-f]{64})$", res.stdout, re.MULTILINE)
    return m.group(1) if res.returncode == 0 and m else None


@pytest.mark.parametrize("name", sorted(load_manifest()))
def test_manifest_deb_sha256_is_the_archive_index_one(name: str) -> None:
    """deb_sha256 (how a package from the snapshot archive is checked) is the .deb's hash
    as Debian's own index records it."""
    if shutil.which("apt-cache") is None:
        pytest.skip("apt-cache is not installed")
    pin = load_manifest()[name]
    indexed = _apt_index_sha256(pin.package, pin.version)
    if indexed is None:
        pytest.skip(f"apt's lists do not have {pin.package}={pin.version} (left the archive, "
                    "or stale lists)")
    assert pin.deb_sha256 == indexed


def test_pinned_deb_from_a_local_snapshot_archive_when_apt_has_lost_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real debian-6.1-cloud .deb, served by a stand-in snapshot archive on 127.0.0.1
    to a fetch whose apt-get says the version has gone: fetched, verified, cached."""
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed: it gets the .deb the stand-in archive serves")
    pin = load_manifest()[NAME]
    argv = apt_download_argv(pin.package, pin.version, as_root=os.geteuid() == 0)
    if run_command(argv, cwd=tmp_path).returncode != 0:
        pytest.skip(f"apt-get cannot download {pin.package}={pin.version} here")
    [deb] = tmp_path.glob("*.deb")

    def gone(argv: Sequence[str], *, cwd: Path | None = None) -> CommandResult:
        if argv[0] == "apt-get":
            return CommandResult(tuple(argv), 100, "",
                                 f"E: Version '{pin.version}' for '{pin.package}' was not found\n")
        return CommandResult(tuple(argv), 0, "", "")

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with serving(Archive) as archive:
        digest = archive.offer(deb.read_bytes(), pin.package, pin.version)
        got = fetch(NAME, cache_dir=tmp_path / "cache", runner=gone, snapshot_url=archive.url)
        assert archive.requests == [listing_path(pin.package, pin.version), f"/file/{digest}"]
    assert got.downloaded
    assert sha256(got.vmlinuz) == pin.vmlinuz_sha256
    assert sha256(got.config) == pin.config_sha256
    assert not list((tmp_path / "cache" / "tmp").iterdir())
