"""The memory floor: the model (bootfuzz.judge.memory_floor) on measured points, the
judgment of a boot below it, and the bisection and cache (bootfuzz.fuzz.floors) with a
fake kernel whose floor is known."""

from __future__ import annotations

import io
import json
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.fuzz import floors
from bootfuzz.fuzz.floors import (
    FLOOR_STEP,
    FloorJob,
    FloorKernel,
    FloorRequest,
    cache_path,
    floor_sizes,
    learn_floors,
    measure_floor,
)
from bootfuzz.fuzz.generate import DEBIAN_CLOUD_LIMITS, min_memory
from bootfuzz.fuzz.triage import crash_title, signature
from bootfuzz.judge.memory_floor import (
    FLOOR_MARGIN,
    MEMMAP_PER_SECTION,
    SECTION_SIZE,
    FloorPoint,
    MemoryFloor,
    below_floor,
    memmap_size,
)
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.loader.layout import MiB
from bootfuzz.loader.platform import QEMU_RAM_ALIGN
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeResult, FakeTranscript

CRASHES = Path(__file__).resolve().parents[1] / "data" / "logs" / "crashes"
DEADLOCKED_LOG = CRASHES / "panic-deadlocked-on-memory-6.1-cloud-73m.txt"

#: debian-6.1-cloud on qemu-tcg, as bootfuzz.fuzz.floors measured it (bisection to
#: 256 KiB, gzip payloads, agent 564604230fe7): the empty and the 2 MiB payloads boot
#: at the least memory our loader accepts; 4 MiB needs 73.52 MiB (73.27 failed), 8 MiB
#: 81.27 MiB (81.02 failed).
CLOUD_61 = MemoryFloor("6aa38b0cef36a423251ee101cf94967dbd604cfd8f56f0c5f767be8d903f6d86", (
    FloorPoint(0, 71794688, None),
    FloorPoint(2 * MiB, 73924608, None),
    FloorPoint(4 * MiB, 77086720, 76832768),
    FloorPoint(8 * MiB, 85213184, 84951040),
))


# -- the model ---------------------------------------------------------------------------------


def test_floor_at_a_measured_point_is_the_point_plus_the_margin() -> None:
    point = CLOUD_61.points[3]
    assert CLOUD_61.floor(InitrdSpec(point.payload)) == point.memory + FLOOR_MARGIN


def test_floor_between_points_is_interpolated_from_above() -> None:
    """The floor is convex in the payload, so the line between two points lies above it;
    the model rounds up to QEMU's granule."""
    a, b = CLOUD_61.points[2], CLOUD_61.points[3]
    mid = (a.payload + b.payload) // 2
    floor = CLOUD_61.floor(InitrdSpec(mid))
    assert floor % QEMU_RAM_ALIGN == 0
    assert floor - FLOOR_MARGIN >= (a.memory + b.memory) // 2
    assert floor - FLOOR_MARGIN < (a.memory + b.memory) // 2 + QEMU_RAM_ALIGN
    sizes = [0, 1, 4096, 2 * MiB, 3 * MiB, 5 * MiB, 8 * MiB, 9 * MiB, 64 * MiB]
    floors = [CLOUD_61.floor(InitrdSpec(s)) for s in sizes]
    assert floors == sorted(floors)  # more payload, never less memory


def test_floor_past_the_last_point_grows_two_bytes_per_payload_byte() -> None:
    last = CLOUD_61.points[-1]
    extra = 8 * MiB
    floor = CLOUD_61.floor(InitrdSpec(last.payload + extra))
    assert floor >= last.memory + 2 * extra + FLOOR_MARGIN


def test_floor_adds_the_struct_pages_of_each_section_it_reaches() -> None:
    """A point measured in the first 128 MiB section; a floor past it pays for the second
    section's struct pages (2 MiB) too."""
    floor = MemoryFloor("x", (FloorPoint(0, 100 * MiB, 99 * MiB),))
    assert memmap_size(100 * MiB) == MEMMAP_PER_SECTION == 2 * MiB
    assert memmap_size(SECTION_SIZE + 1) == 2 * MEMMAP_PER_SECTION
    within = floor.floor(InitrdSpec(4 * MiB))
    assert within == 100 * MiB + 8 * MiB + 4 * MiB // 64 + FLOOR_MARGIN
    across = floor.floor(InitrdSpec(16 * MiB))
    assert across == 100 * MiB + 32 * MiB + 16 * MiB // 64 + FLOOR_MARGIN + MEMMAP_PER_SECTION


def test_floor_adds_other_decompressors_buffers() -> None:
    """lz4 decompresses through an 8 MiB chunk (lib/decompress_unlz4.c): its floor is
    8 MiB above gzip's; measured on debian-6.1-cloud: 89.44 MiB against 81.25 MiB."""
    gzip = CLOUD_61.floor(InitrdSpec(8 * MiB, Compression.GZIP))
    lz4 = CLOUD_61.floor(InitrdSpec(8 * MiB, Compression.LZ4))
    xz = CLOUD_61.floor(InitrdSpec(8 * MiB, Compression.XZ))
    assert lz4 - gzip >= 8 * MiB and lz4 >= int(89.4375 * MiB)
    assert gzip < xz < lz4 and xz >= int(81.5625 * MiB)


def test_floor_without_initrd_is_the_empty_payloads() -> None:
    assert CLOUD_61.floor(None) == CLOUD_61.floor(InitrdSpec(0))


def test_recorded_deadlock_at_73m_is_below_the_floor() -> None:
    """The recorded console (R11-TRIAGE's tests/data/logs/crashes): debian-6.1-cloud,
    73 MiB, a 5 MB gzip payload, the OOM killer's deadlock panic.  Its failing oracles
    are ones memory shortage causes, and 73 MiB is under the floor the measured points
    give: below-floor, never a finding.  The same boot failing e820 would be one."""
    log = DEADLOCKED_LOG.read_text()
    assert crash_title(log) == "Kernel panic - not syncing: System is deadlocked on memory"
    obs = parse_transcript(log.encode())
    assert obs.panics and not obs.agent
    spec = InitrdSpec(5 * 1000 * 1000, Compression.GZIP)
    floor = CLOUD_61.floor(spec)
    assert 73 * MiB < floor <= 80 * MiB  # bisected alone: 75.56 MiB boots, 75.31 MiB not
    assert below_floor(73 * MiB, floor, ("boot", "initrd-unpacked"))
    assert not below_floor(73 * MiB, floor, ("boot", "e820"))
    assert not below_floor(floor, floor, ("boot", "initrd-unpacked"))
    assert not below_floor(73 * MiB, floor, ())


def test_memory_floor_needs_a_point_and_sorts_them() -> None:
    with pytest.raises(ValueError, match="at least one measured point"):
        MemoryFloor("x", ())
    shuffled = MemoryFloor(CLOUD_61.kernel_sha256, tuple(reversed(CLOUD_61.points)))
    assert shuffled == CLOUD_61


# -- learning by bisection, with a fake kernel ----------------------------------------------


DEADLOCK = "[    1.1] Kernel panic - not syncing: System is deadlocked on memory\n"


def _result(failing: tuple[str, ...], text: str = "") -> FakeResult:
    oracles = tuple(OracleResult(n, Verdict.FAIL, "e", "o") for n in failing)
    return FakeResult(Verdict.FAIL if failing else Verdict.PASS, oracles,
                      parse_transcript(text.encode()), GuestExit.POWER_OFF if not failing
                      else GuestExit.RESET, FakeTranscript(text))


class ThresholdKernel:
    """Boots a payload of S bytes from 70 MiB + 1.5 S on (an exact, known floor); below
    that, the OOM panic.  ``broken_at`` payloads fail e820 instead (not memory)."""

    def __init__(self, broken_at: int | None = None) -> None:
        self.boots: list[BootCase] = []
        self.broken_at = broken_at

    @staticmethod
    def threshold(payload: int) -> int:
        return 70 * MiB + payload * 3 // 2

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: float) -> FakeResult:
        assert run_dir.is_dir()
        self.boots.append(case)
        assert case.initrd is not None and case.initrd.compression is Compression.GZIP
        if case.initrd.size == self.broken_at:
            return _result(("e820",))
        if case.memory < self.threshold(case.initrd.size):
            return _result(("boot", "initrd-unpacked"), DEADLOCK)
        return _result(())


class InlineExecutor(Executor):
    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _job(tmp_path: Path, sizes: tuple[int, ...], known: tuple[FloorPoint, ...] = ()
         ) -> FloorJob:
    return FloorJob("k", DEBIAN_CLOUD_LIMITS, sizes, known, tmp_path / "runs")


def test_floor_sizes_cover_the_largest_initrd() -> None:
    assert floor_sizes(8 * MiB) == (0, 2 * MiB, 4 * MiB, 8 * MiB)
    assert floor_sizes(5 * MiB) == (0, 2 * MiB, 4 * MiB, 8 * MiB)
    assert floor_sizes(1) == (0, 2 * MiB)


def test_bisection_finds_each_threshold_within_a_step(tmp_path: Path) -> None:
    kernel = ThresholdKernel()
    sizes = (0, 2 * MiB, 4 * MiB, 8 * MiB)
    result = measure_floor(_job(tmp_path, sizes), kernel)
    assert result.error == "" and result.boots == len(kernel.boots) <= 10 * len(sizes)
    for p in result.points:
        least = min_memory(DEBIAN_CLOUD_LIMITS, InitrdSpec(p.payload))
        true = kernel.threshold(p.payload)
        if p.failed is None:  # the loader's least already boots
            assert p.memory == least and true <= least
            continue
        assert p.failed < true <= p.memory and p.memory - p.failed <= FLOOR_STEP
    floor = MemoryFloor("sha", result.points)
    for s in (0, 1 * MiB, 3 * MiB, 5 * MiB, 8 * MiB):
        assert floor.floor(InitrdSpec(s)) >= kernel.threshold(s)  # never too low
    assert not list((tmp_path / "runs").iterdir())  # the boots' files are gone


def test_bisection_stops_at_a_failure_that_is_not_memory(tmp_path: Path) -> None:
    result = measure_floor(_job(tmp_path, (0, 2 * MiB, 4 * MiB)),
                           ThresholdKernel(broken_at=2 * MiB))
    assert "e820" in result.error and "not caused by memory" in result.error
    assert [p.payload for p in result.points] == [0]  # what was measured is kept


def _request(tmp_path: Path, kernel: ThresholdKernel, agent: bytes = b"agent v1",
             stream: io.StringIO | None = None) -> FloorRequest:
    agent_file = tmp_path / "agent"
    agent_file.write_bytes(agent)
    return FloorRequest(
        kernels=(FloorKernel("k", "ab" * 32, DEBIAN_CLOUD_LIMITS),), max_initrd=4 * MiB,
        boot=kernel, executor=InlineExecutor, jobs=2, runs=tmp_path / "runs",
        stream=stream or io.StringIO(), cache_dir=tmp_path / "cache",
        agent=lambda: agent_file)


def test_learned_floor_is_cached_per_kernel_and_agent(tmp_path: Path) -> None:
    """Measured once: the second campaign boots nothing; another agent measures again."""
    first = ThresholdKernel()
    out = io.StringIO()
    floors = learn_floors(_request(tmp_path, first, stream=out))
    assert set(floors) == {"k"} and first.boots
    assert "k: memory floor measured in" in out.getvalue()
    path = cache_path("ab" * 32, tmp_path / "cache")
    doc = json.loads(path.read_text())
    assert [p["payload"] for p in doc["points"]] == [0, 2 * MiB, 4 * MiB]
    again = ThresholdKernel()
    assert learn_floors(_request(tmp_path, again)) == floors and again.boots == []
    new_agent = ThresholdKernel()
    assert learn_floors(_request(tmp_path, new_agent, agent=b"agent v2")) == floors
    assert new_agent.boots  # measured again: the agent's memory is part of the floor


def test_a_floor_measured_with_another_harness_command_line_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the kernel does at boot is part of its floor (a skipped initcall can lower
    it): points cached for another calibration command line are not used."""
    assert learn_floors(_request(tmp_path, ThresholdKernel()))
    path = cache_path("ab" * 32, tmp_path / "cache")
    assert json.loads(path.read_text())["cmdline"] == floors.calibration_cmdline()
    again = ThresholdKernel()
    learn_floors(_request(tmp_path, again))
    assert again.boots == []
    monkeypatch.setattr(floors, "calibration_cmdline", lambda: "console=ttyS0 another")
    other = ThresholdKernel()
    learn_floors(_request(tmp_path, other))
    assert other.boots


def test_no_floor_when_the_kernel_fails_otherwise(tmp_path: Path) -> None:
    out = io.StringIO()
    floors = learn_floors(_request(tmp_path, ThresholdKernel(broken_at=0), stream=out))
    assert floors == {}
    assert "k: no memory floor" in out.getvalue() and "least memory the loader" in out.getvalue()


def test_a_signature_short_of_memory_is_what_the_recorded_log_shows() -> None:
    """The fake kernel's OOM failure has the recorded log's title."""
    sig = signature(_result(("boot", "initrd-unpacked"), DEADLOCK))
    assert sig is not None and sig.title == crash_title(DEADLOCKED_LOG.read_text())
