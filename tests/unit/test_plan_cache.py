"""The kernel image a boot plans with is read once per process and sliced once per
image (bootfuzz.run.boot.kernel_image, KernelImage.protected_mode_code): the plans
are the same as with a fresh image, and a changed file is read again."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from bootfuzz.case import BootCase
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.boot import kernel_image
from tests.fakes import fake_bzimage


def test_the_image_is_read_once_while_the_file_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "bzImage"
    path.write_bytes(fake_bzimage())
    first = kernel_image(path)
    assert kernel_image(path) is first
    assert first.protected_mode_code is first.protected_mode_code  # sliced once


def test_a_changed_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "bzImage"
    path.write_bytes(fake_bzimage(0x4000))
    first = kernel_image(path)
    path.write_bytes(fake_bzimage(0x5000))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = kernel_image(path)
    assert second is not first and len(second.data) == len(first.data) + 0x1000


def test_plans_from_the_cached_image_equal_plans_from_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "bzImage"
    path.write_bytes(fake_bzimage())
    cached = kernel_image(path)
    fresh = parse_kernel_image(path.read_bytes(), source=str(path))
    for memory in (64 << 20, 256 << 20, 3 << 30):
        case = BootCase(kernel=str(path), memory=memory)
        platform = qemu_pc(memory)
        assert plan_boot(case, cached, platform) == plan_boot(case, fresh, platform)
        assert plan_boot(case, cached, platform) == plan_boot(
            case, dataclasses.replace(fresh), platform)
