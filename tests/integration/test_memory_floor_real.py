"""debian-6.1-cloud's memory floor on qemu-tcg, checked with real boots.

The floor is learned as a campaign learns it (bootfuzz.fuzz.floors: bisection over
real boots, cached per kernel and harness command line; measured once, then read from
the cache).  Then the campaign's own boot_one judges real boots: just below a
measured point the kernel runs short of memory and the boot is below-floor, never a
finding; at the floor it boots (the floor is the measured threshold plus
FLOOR_MARGIN).  Between two measured points the floor is the model's: at the loader's
least memory for such a payload the kernel runs short (below-floor), at the model's
floor it boots.

With today's harness command line (bootfuzz.case.SKIPPED_INITCALLS) this kernel boots
every payload up to 8 MiB at the least memory our loader accepts (the recorded
"System is deadlocked on memory" at 73 MiB with a 5 MB initrd was an older line's);
its floor rises above the loader's from 16 MiB, so the points go up to 32 MiB.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.fuzz.campaign import BootSettings, boot_one, read_kernels
from bootfuzz.fuzz.draws import min_memory
from bootfuzz.fuzz.floors import FloorKernel, FloorRequest, learn_floors
from bootfuzz.fuzz.workers import worker_pool
from bootfuzz.judge.memory_floor import FLOOR_MARGIN, MemoryFloor
from bootfuzz.loader.layout import MiB
from bootfuzz.run.boot import run_case

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

KERNEL = "debian-6.1-cloud"
#: Between the 16 and 32 MiB points measured.
BETWEEN = InitrdSpec(24 * MiB, Compression.GZIP)


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> MemoryFloor:
    facts = read_kernels((KERNEL,))[KERNEL]
    out = io.StringIO()
    floors = learn_floors(FloorRequest(
        kernels=(FloorKernel(KERNEL, facts.sha256, facts.limits),), max_initrd=32 * MiB,
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
    point = floor.points[-1]  # the largest payload measured (32 MiB): above the loader's
    assert point.failed is not None and point.payload == 32 * MiB
    spec = InitrdSpec(point.payload, Compression.GZIP)
    status, detail = _boot(tmp_path, floor, point.memory - 1 * MiB, spec)
    assert status == "below-floor", detail
    # How the kernel runs short varies (a deadlock, a cut unpack): the floor is named.
    assert "below the kernel's memory floor" in detail and floor.describe(spec) in detail
    assert floor.floor(spec) == point.memory + FLOOR_MARGIN
    status, detail = _boot(tmp_path, floor, floor.floor(spec), spec)
    assert status == "pass", detail


def test_between_points_the_loaders_least_is_below_floor_and_the_models_floor_boots(
    tmp_path: Path, floor: MemoryFloor,
) -> None:
    """24 MiB lies between two measured points: the floor there is the model's."""
    assert BETWEEN.size not in {p.payload for p in floor.points}
    least = min_memory(read_kernels((KERNEL,))[KERNEL].limits, BETWEEN)
    assert floor.floor(BETWEEN) > least + 8 * MiB
    status, detail = _boot(tmp_path, floor, least, BETWEEN)
    assert status == "below-floor", detail
    assert "below the kernel's memory floor" in detail, detail
    status, detail = _boot(tmp_path, floor, floor.floor(BETWEEN), BETWEEN)
    assert status == "pass", detail
