"""Real apt-get: fetch a pinned Debian kernel and check what the manifest says about it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.kernel.payload import detect_compression
from bootfuzz.kernel.pinned import fetch, list_kernels, load_manifest, parse_apt_policy, run_command

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
    image = load_kernel_image(status.vmlinuz)
    assert detect_compression(image.payload).value == status.pinned.compression
