"""A fake apt and a fake pinned kernel for the kernels tests (no network, no root).

FakeApt answers ``apt-get download`` and ``apt-cache policy`` the way apt 2.6 does,
from .debs built by fake_deb.py around kernel images from tests/fakes.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from fake_deb import build_deb

from bootfuzz.kernel.pinned import CommandResult, PinnedKernel
from tests.fakes import fake_bzimage

PKG = "linux-image-9.9.0-1-fake-amd64-unsigned"
VERSION = "9.9.1-1"
VMLINUZ_MEMBER = "boot/vmlinuz-9.9.0-1-fake-amd64"
CONFIG_MEMBER = "boot/config-9.9.0-1-fake-amd64"
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"  # the payload format the manifest below names
VMLINUZ = fake_bzimage(payload=LZ4_LEGACY_MAGIC)
OTHER_VMLINUZ = fake_bzimage(payload=LZ4_LEGACY_MAGIC + b"\x01")  # another sha256
CONFIG = b"CONFIG_FAKE=y\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_deb(vmlinuz: bytes = VMLINUZ, config: bytes = CONFIG, abi: str = "9.9.0-1") -> bytes:
    files = {
        f"boot/vmlinuz-{abi}-fake-amd64": vmlinuz,
        f"boot/config-{abi}-fake-amd64": config,
        f"lib/modules/{abi}-fake-amd64/modules.dep": b"",
    }
    deb: bytes = build_deb(files)
    return deb


DEB = fake_deb()

PINNED = PinnedKernel(
    name="fake-9.9",
    package=PKG,
    version=VERSION,
    arch="amd64",
    vmlinuz_member=VMLINUZ_MEMBER,
    config_member=CONFIG_MEMBER,
    vmlinuz_sha256=sha(VMLINUZ),
    config_sha256=sha(CONFIG),
    deb_sha256=sha(DEB),
    compression="lz4",
    description="a fake kernel for the unit tests",
)
OTHER = dataclasses.replace(
    PINNED, name="other-1.0", package="linux-image-other", version="1.0-1",
    vmlinuz_sha256=sha(OTHER_VMLINUZ),
)
def policy_text(package: str, candidate: str | None, versions: Sequence[str]) -> str:
    """apt-cache policy output in the shape apt 2.6 prints."""
    lines = [
        f"{package}:",
        "  Installed: (none)",
        f"  Candidate: {candidate or '(none)'}",
        "  Version table:",
    ]
    for v in versions:
        lines += [f"     {v} 500", "        500 file:/srv/archive stable/main amd64 Packages"]
    return "\n".join(lines) + "\n"


class FakeApt:
    """Stands in for apt-get download and apt-cache policy."""

    def __init__(self) -> None:
        #: "package=version" -> the .deb apt-get download leaves in cwd.
        self.debs: dict[str, bytes] = {}
        #: package -> apt-cache policy stdout; absent packages print nothing.
        self.policy: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []
        self.missing = False
        self.download_failure: tuple[int, str] | None = None

    def offer(self, package: str, version: str, deb: bytes, *, candidate: bool = True) -> None:
        self.debs[f"{package}={version}"] = deb
        versions = [v.split("=", 1)[1] for v in self.debs if v.startswith(package + "=")]
        self.policy[package] = policy_text(package, version if candidate else None, versions)

    def __call__(self, argv: Sequence[str], *, cwd: Path | None = None) -> CommandResult:
        argv = tuple(argv)
        self.calls.append(argv)
        if self.missing:
            raise FileNotFoundError(argv[0])
        if argv[:2] == ("apt-cache", "policy"):
            return CommandResult(argv, 0, self.policy.get(argv[2], ""), "")
        assert argv[0] == "apt-get" and argv[-2] == "download", argv
        assert cwd is not None
        if self.download_failure:
            code, stderr = self.download_failure
            return CommandResult(argv, code, "", stderr)
        spec = argv[-1]
        package, version = spec.split("=", 1)
        if spec in self.debs:
            (cwd / f"{package}_{version}_amd64.deb").write_bytes(self.debs[spec])
            return CommandResult(argv, 0, "Get:1 fake\n", "")
        if package in self.policy:
            err = f"E: Version '{version}' for '{package}' was not found\n"
        else:
            err = f"E: Unable to locate package {package}\n"
        return CommandResult(argv, 100, "", err)

    @property
    def downloads(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == "apt-get"]
