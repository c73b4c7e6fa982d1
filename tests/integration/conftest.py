"""Fixtures for tests that boot real kernels on a real backend."""

from __future__ import annotations

import shutil

import pytest

from bootfuzz.backends.qemu_tcg import QEMU_BINARY

#: The pinned kernels every real-boot test runs against.
PINNED = ("debian-6.1-amd64", "debian-6.1-cloud", "debian-6.12-cloud")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(
        reason=f"{QEMU_BINARY} is not installed (Debian package qemu-system-x86; ./bootstrap "
        "installs it): the QEMU-TCG backend cannot run"
    )
    if shutil.which(QEMU_BINARY) is None:
        for item in items:
            if "qemu" in item.keywords:
                item.add_marker(skip)
