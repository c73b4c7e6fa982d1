"""apt-get for another architecture's kernel packages, without touching the host's apt.

arm64 and riscv64 kernels are Debian packages of architectures the host's dpkg does
not know (and riscv64 is not even in the host's release).  Adding a foreign
architecture to dpkg would change the user's machine, so apt runs here with a
private configuration instead: its own one-line sources list naming the suite and
the architecture, its own lists and cache directories (``-o Dir::...``), no dpkg
status, ``APT::Architectures`` set for this run only.  The host's signing keyring
still verifies the archive's Release file.

The archive base is configuration, never a name in this tree:
``$BOOTFUZZ_DEBIAN_ARCHIVE`` if set, else the URI of the Debian archive the host's
own apt is configured for (``apt-get indextargets``: the first repository whose
Release says Origin and Label "Debian").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.errors import KernelFetchError

__all__ = [
    "ARCHIVE_ENV",
    "ForeignApt",
    "archive_base",
    "foreign_suite",
]

ARCHIVE_ENV = "BOOTFUZZ_DEBIAN_ARCHIVE"
#: The keyring Debian's archive is signed with (package debian-archive-keyring).
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: The suite a foreign kernel comes from, by the version's Debian suffix: riscv64 is a
#: release architecture from trixie (13) on; "+deb13" in a kernel ABI name is trixie.
_SUITE_BY_SUFFIX = (("+deb13", "trixie"), ("+deb12", "bookworm"))


def foreign_suite(package: str) -> str:
    """The suite whose lists hold *package* (by its ABI name's ``+debNN``), else bookworm."""
    for suffix, suite in _SUITE_BY_SUFFIX:
        if suffix in package:
            return suite
    return "bookworm"


def parse_indextargets(text: str) -> str | None:
    """The Debian archive's URI in the output of ``apt-get indextargets --format
    '$(REPO_URI)|$(ORIGIN)|$(LABEL)'``."""
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1] == "Debian" and parts[2] == "Debian":
            return parts[0]
    return None


def archive_base(indextargets: str | None) -> str:
    """$BOOTFUZZ_DEBIAN_ARCHIVE, else the host apt's Debian archive; one clear error else."""
    env = os.environ.get(ARCHIVE_ENV)
    if env:
        return env
    found = parse_indextargets(indextargets or "")
    if found is None:
        raise KernelFetchError(
            "fetching a foreign-architecture kernel needs a Debian archive: the host's apt "
            f"names none; set {ARCHIVE_ENV} to the base URL of a Debian archive or mirror"
        )
    return found


@dataclass(frozen=True)
class ForeignApt:
    """A private apt configuration under *root* for one architecture and suite."""

    root: Path
    arch: str
    suite: str
    base_url: str

    @property
    def sources(self) -> Path:
        return self.root / "sources.list"

    def sources_text(self) -> str:
        opts = f"arch={self.arch}"
        if KEYRING.exists():
            opts += f" signed-by={KEYRING}"
        return f"deb [{opts}] {self.base_url} {self.suite} main\n"

    def options(self) -> list[str]:
        """The -o options that keep apt off the host's own configuration and state."""
        return [
            "-o", f"Dir::Etc::SourceList={self.sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.root / 'lists'}",
            "-o", f"Dir::Cache={self.root / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", f"APT::Architecture={self.arch}",
            "-o", f"APT::Architectures={self.arch}",
            "-o", "Debug::NoLocking=1",
        ]

    def prepare(self) -> None:
        """Make the directories and write the sources list."""
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.sources.write_text(self.sources_text())

    def update_argv(self) -> list[str]:
        return ["apt-get", *self.options(), "update"]

    def download_argv(self, package: str, version: str, *, as_root: bool) -> list[str]:
        # As root apt drops to _apt for downloads, which cannot write our work dir.
        sandbox: Sequence[str] = ("-o", "APT::Sandbox::User=root") if as_root else ()
        return ["apt-get", *self.options(), *sandbox, "download",
                f"{package}:{self.arch}={version}"]

    def policy_argv(self, package: str) -> list[str]:
        return ["apt-cache", *self.options(), "policy", f"{package}:{self.arch}"]
