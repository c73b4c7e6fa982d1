"""Fixtures for tests that boot real kernels on a real backend."""

from __future__ import annotations

import shutil

import pytest

from bootfuzz.guest.harness import HarnessArtifacts, build_harness
from bootfuzz.run.backends.qemu_tcg import QEMU_BINARY

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


@pytest.fixture(params=["qemu-tcg", "kvm"])
def full_boot_backend(request: pytest.FixtureRequest) -> str:
    """A backend that can boot a kernel to /init here: kvm only on hardware KVM.

    The emulating KVM of some CI machines runs guests ~1000x slower than hardware;
    `bootfuzz doctor` measures which one this is, and the skip says what it measured.
    """
    name: str = request.param
    if name == "kvm":
        from bootfuzz.run.doctor import kvm_status

        status = kvm_status()
        if not status.usable:
            pytest.skip(reason=f"kvm backend not usable here: {status.detail}")
        if not status.fast:
            pytest.skip(reason=f"a full boot needs hardware KVM: {status.detail}")
    elif shutil.which(QEMU_BINARY) is None:
        pytest.skip(f"{QEMU_BINARY} is not installed")
    return name


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> HarnessArtifacts:
    """Agent and firmware built from harness/ into an empty cache, as a first run builds them."""
    return build_harness(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def any_kvm() -> None:
    """/dev/kvm usable at all (emulated is fine: tiny guests and early-boot runs)."""
    from bootfuzz.run.doctor import kvm_status

    status = kvm_status()
    if not status.usable:
        pytest.skip(reason=f"kvm backend not usable here: {status.detail}")
