"""debian-6.1-cloud's memory floor on qemu-tcg, checked with real boots.

The floor is learned as a campaign learns it (bootfuzz.fuzz.floors: bisection over
real boots, cached per kernel; measured once, then read from the cache).  Then the
campaign's own boot_one judges real boots: just below a measured point the kernel
runs short of memory and the boot is below-floor, never a finding; at the floor it
boots (the floor is the measured threshold plus FLOOR_MARGIN).  The recorded
deadlock (tests/data/logs/crashes, 73 MiB with a 5 MB payload) is below-floor too,
and at the floor the model gives for that payload (between two measured points) the
kernel boots.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.fuzz.campaign import BootSettings, boot_one, read_kernels
from bootfuzz.fuzz.floors import FloorKernel, FloorRequest, learn_floors
from bootfuzz.fuzz.workers import worker_pool
from bootfuzz.judge.memory_floor import FLOOR_MARGIN, MemoryFloor
from bootfuzz.loader.layout import MiB
from bootfuzz.run.boot import run_case

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

KERNEL = "debian-6.1-cloud"
RECORDED = InitrdSpec(5 * 1000 * 1000, Compression.GZIP)  # the recorded log's initrd


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> MemoryFloor:
    facts = read_kernels((KERNEL,))[KERNEL]
    out = io.StringIO()
    floors = learn_floors(FloorRequest(
        kernels=(FloorKernel(KERNEL, facts.sha256, facts.limits),), max_initrd=8 * MiB,
        boot=run_case, executor=worker_pool, jobs=2,
        runs=tmp_path_factory.mktemp("floor-runs"), stream=out))
    sys.stderr.write(out.getvalue())
    assert KERNEL in floors, out.getvalue()
    return floors[KERNEL]


def _boot(tmp_path: Path, floor: MemoryFloor, memory: int, initrd: InitrdSpec) -> tuple[str, str]:
    settings = BootSettings(tmp_path, timeout=240.0, silence_timeout=60.0, boot=run_case)
    out = boot_one(0, BootCase(kernel=KERNEL, memory=memory, initrd=initrd), settings, floor)
    return out.status, f"{out.signature} {out.message} {out.run_dir}"


def test_just_below_a_measured_point_is_below_floor_and_at_the_floor_it_boots(
    tmp_path: Path, floor: MemoryFloor,
) -> None:
    """A MiB under the measured threshold (below the band in which boots near it vary
    with the host's load, FLOOR_MARGIN) the kernel runs short of memory: below-floor,
    with the floor in the detail; at the floor (threshold + margin) it boots."""
    point = floor.points[-1]  # the largest payload measured (8 MiB): the kernel's floor
    assert point.failed is not None and point.payload == 8 * MiB
    spec = InitrdSpec(point.payload, Compression.GZIP)
    status, detail = _boot(tmp_path, floor, point.memory - 1 * MiB, spec)
    assert status == "below-floor", detail
    assert "System is deadlocked on memory" in detail and floor.describe(spec) in detail
    assert floor.floor(spec) == point.memory + FLOOR_MARGIN
    status, detail = _boot(tmp_path, floor, floor.floor(spec), spec)
    assert status == "pass", detail


def test_recorded_deadlock_is_below_floor_and_the_models_floor_boots(
    tmp_path: Path, floor: MemoryFloor,
) -> None:
    """5 MB lies between two measured points: the floor there is the model's."""
    assert RECORDED.size not in {p.payload for p in floor.points}
    assert floor.floor(RECORDED) > 73 * MiB
    status, detail = _boot(tmp_path, floor, 73 * MiB, RECORDED)
    assert status == "below-floor", detail
    status, detail = _boot(tmp_path, floor, floor.floor(RECORDED), RECORDED)
    assert status == "pass", detail
