"""Learning each kernel's memory floor by bisection over real boots, cached per kernel.

bootfuzz.judge.memory_floor says what a floor is and turns measured points into the
floor of any initrd; this module measures the points.  For each payload size of
:func:`floor_sizes` (0, then 2, 4, 8 MiB ... up to the campaign's largest initrd), a
gzip initrd of that size is booted at the least memory our loader accepts: if that
boots, the point is the loader's (the kernel needs less).  Otherwise a booting
memory is found above it (first guess: the previous point plus two bytes per payload
byte) and the gap bisected down to :data:`FLOOR_STEP`, in QEMU's granule.  About six
boots per size, so about twenty per kernel, once.

The points are kept in ``$BOOTFUZZ_CACHE/floors/<kernel sha256>.json`` with the
sha256 of the agent they were measured with, the command line of the calibration
boots and the method's version: a new agent (its memory use is part of the floor), a
new harness command line (what the kernel does at boot is too: skipping the BPF kfunc
sets' BTF parse lowered debian-6.1-cloud's) or method measures again.  Each kernel is
measured in one worker (its boots one after another), the kernels in parallel.

A kernel that fails at some memory for another reason than memory (an oracle outside
SHORT_OF_MEMORY_ORACLES), or that boots at no memory up to :data:`FLOOR_CEILING`,
gets no floor: the campaign says so and generates from the loader's least.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from bootfuzz.cache import cache_root
from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.generate import MEMORY_GRANULE, KernelLimits, min_memory
from bootfuzz.fuzz.triage import BootOutcome, signature
from bootfuzz.judge.memory_floor import (
    CALIBRATION_COMPRESSION,
    SHORT_OF_MEMORY_ORACLES,
    FloorPoint,
    MemoryFloor,
)
from bootfuzz.loader.layout import GiB, KiB, MiB, align_up
from bootfuzz.units import format_size

#: Bisection stops when the booting and the failing memory are this close.
FLOOR_STEP = 256 * KiB
#: The first bracket around a guess, each way; doubled while it does not bracket.
FIRST_BRACKET = 2 * MiB
#: No floor is looked for above this much RAM.
FLOOR_CEILING = 4 * GiB
#: Payload sizes measured: 0, then powers of two from this one.
FIRST_SIZE = 2 * MiB
#: Bump when the method changes: cached points of another version are measured again.
METHOD_VERSION = 1
FLOORS_DIR = "floors"
#: Boots of the floor search are short; these bound a stuck one.
FLOOR_BOOT_TIMEOUT = 180.0
FLOOR_SILENCE_TIMEOUT = 60.0


class FloorBoot(Protocol):
    """Boot and judge one case (bootfuzz.run.boot.run_case; the campaign's boot)."""

    def __call__(self, case: BootCase, run_dir: Path, *, timeout: float,
                 silence_timeout: float) -> BootOutcome: ...


class FloorError(Exception):
    """The floor of one kernel cannot be measured (said in the campaign's output)."""


def floor_sizes(max_initrd: int) -> tuple[int, ...]:
    """The payload sizes measured for initrds of up to *max_initrd* bytes."""
    sizes = [0]
    size = FIRST_SIZE
    while True:
        sizes.append(size)
        if size >= max_initrd:
            return tuple(sizes)
        size *= 2


def calibration_case(kernel: str, payload: int, memory: int) -> BootCase:
    return BootCase(kernel=kernel, memory=memory,
                    initrd=InitrdSpec(payload, CALIBRATION_COMPRESSION))


@dataclass(frozen=True)
class FloorJob:
    """One kernel's points to measure (picklable: it goes to a worker)."""

    kernel: str
    limits: KernelLimits
    sizes: tuple[int, ...]
    known: tuple[FloorPoint, ...]
    runs: Path
    timeout: float = FLOOR_BOOT_TIMEOUT
    silence_timeout: float = FLOOR_SILENCE_TIMEOUT


@dataclass(frozen=True)
class FloorResult:
    kernel: str
    points: tuple[FloorPoint, ...]  # what is known, measured now or before
    boots: int
    error: str = ""  # why the floor could not be measured (points stay as far as they got)


class _Search:
    def __init__(self, job: FloorJob, boot: FloorBoot) -> None:
        self.job, self.boot, self.boots = job, boot, 0

    def boots_at(self, payload: int, memory: int) -> bool:
        """Whether the kernel boots a *payload*-byte gzip initrd in *memory*; a failure
        other than running short of memory ends the search."""
        case = calibration_case(self.job.kernel, payload, memory)
        run_dir = self.job.runs / f"floor-{payload}-{memory}-{time.monotonic_ns()}"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.boots += 1
        try:
            result = self.boot(case, run_dir, timeout=self.job.timeout,
                               silence_timeout=self.job.silence_timeout)
        except ConfigError:
            return False  # the loader cannot lay it out there: not enough RAM either
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)  # the cache keeps the answer
        sig = signature(result)
        if sig is None:
            return True
        if not set(sig.failing) <= SHORT_OF_MEMORY_ORACLES:
            raise FloorError(
                f"{format_size(payload)} payload at {format_size(memory)}: {sig.key} (a "
                "failure not caused by memory; replay the case to see it)")
        return False

    def point(self, payload: int, guess: int | None) -> FloorPoint:
        least = min_memory(self.job.limits, InitrdSpec(payload, CALIBRATION_COMPRESSION))
        if guess is None or guess <= least:
            if self.boots_at(payload, least):
                return FloorPoint(payload, least, None)
            failed, booted = least, None
        else:
            guess = align_up(guess, MEMORY_GRANULE)
            if self.boots_at(payload, guess):
                failed, booted = None, guess
            else:
                failed, booted = guess, None
        span = FIRST_BRACKET
        while booted is None:  # upwards from a failing memory
            assert failed is not None
            trial = align_up(failed + span, MEMORY_GRANULE)
            if trial > FLOOR_CEILING:
                raise FloorError(f"{format_size(payload)} payload: fails at every memory "
                                 f"up to {format_size(FLOOR_CEILING)}")
            if self.boots_at(payload, trial):
                booted = trial
            else:
                failed, span = trial, span * 2
        while failed is None:  # downwards from a booting memory
            trial = max(least, align_up(booted - span, MEMORY_GRANULE))
            if self.boots_at(payload, trial):
                if trial == least:
                    return FloorPoint(payload, least, None)
                booted, span = trial, span * 2
            else:
                failed = trial
        while booted - failed > FLOOR_STEP:
            mid = align_up((failed + booted) // 2, MEMORY_GRANULE)
            if mid >= booted:
                break
            if self.boots_at(payload, mid):
                booted = mid
            else:
                failed = mid
        return FloorPoint(payload, booted, failed)


def measure_floor(job: FloorJob, boot: FloorBoot) -> FloorResult:
    """Measure the points of *job* not yet known (each size in turn, guessing from the
    last point); never raises for what a boot shows."""
    search = _Search(job, boot)
    known = {p.payload: p for p in job.known}
    try:
        for size in job.sizes:
            if size in known:
                continue
            below = [p for s, p in sorted(known.items()) if s < size]
            guess = below[-1].memory + 2 * (size - below[-1].payload) if below else None
            known[size] = search.point(size, guess)
    except (FloorError, InfrastructureError, HarnessBug) as exc:
        return FloorResult(job.kernel, tuple(known.values()), search.boots, str(exc))
    return FloorResult(job.kernel, tuple(known.values()), search.boots)


# --------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------


def agent_sha256(agent: Path) -> str:
    return hashlib.sha256(agent.read_bytes()).hexdigest()


def cache_path(kernel_sha256: str, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / FLOORS_DIR / f"{kernel_sha256}.json"


def calibration_cmdline() -> str:
    """The command line the calibration boots run with (the harness's)."""
    return calibration_case("", 0, 0).cmdline


def read_cached(path: Path, agent: str) -> tuple[FloorPoint, ...]:
    """The points cached at *path* for this agent, command line and method; a missing,
    stale or unreadable file is nothing cached (the points are measured again)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if (doc.get("version") != METHOD_VERSION or doc.get("agent_sha256") != agent
                or doc.get("cmdline") != calibration_cmdline()):
            return ()
        return tuple(FloorPoint(int(p["payload"]), int(p["memory"]),
                                None if p["failed"] is None else int(p["failed"]))
                     for p in doc["points"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ()


def write_cached(path: Path, kernel_sha256: str, agent: str,
                 points: Iterable[FloorPoint]) -> None:
    doc: dict[str, Any] = {
        "version": METHOD_VERSION, "kernel_sha256": kernel_sha256, "agent_sha256": agent,
        "cmdline": calibration_cmdline(), "step": FLOOR_STEP,
        "compression": CALIBRATION_COMPRESSION.value,
        "points": [{"payload": p.payload, "memory": p.memory, "failed": p.failed}
                   for p in sorted(points, key=lambda p: p.payload)],
    }
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")


# --------------------------------------------------------------------------------------
# Learning the floors of a campaign's kernels
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloorKernel:
    name: str
    sha256: str
    limits: KernelLimits


@dataclass(frozen=True)
class FloorRequest:
    """What the campaign asks: the floors of *kernels* for initrds up to *max_initrd*."""

    kernels: tuple[FloorKernel, ...]
    max_initrd: int
    boot: FloorBoot
    executor: Callable[[int], Executor]
    jobs: int
    runs: Path
    stream: TextIO
    stopped: Callable[[], bool] = lambda: False
    cache_dir: Path | None = None
    agent: Callable[[], Path] | None = None  # the agent's file (None: build the harness)


def _agent_path() -> Path:
    from bootfuzz.guest.harness import build_harness

    return build_harness().agent


class FloorsStopped(Exception):
    """A stop signal arrived while floors were measured (measured points are kept)."""


def learn_floors(request: FloorRequest) -> dict[str, MemoryFloor]:
    """The floor of each kernel of *request* (those that have one): cached points,
    and the missing ones measured, kernels in parallel; every new point is cached."""
    agent = agent_sha256((request.agent or _agent_path)())
    sizes = floor_sizes(request.max_initrd)
    floors: dict[str, MemoryFloor] = {}
    jobs: dict[str, FloorJob] = {}
    for k in request.kernels:
        known = read_cached(cache_path(k.sha256, request.cache_dir), agent)
        if {p.payload for p in known} >= set(sizes):
            floors[k.name] = MemoryFloor(k.sha256, known)
        else:
            jobs[k.name] = FloorJob(k.name, k.limits, sizes, known, request.runs / "floors")
    if not jobs:
        return floors
    request.stream.write(
        f"measuring the memory floor of {', '.join(jobs)} (payloads up to "
        f"{format_size(sizes[-1])}; about {6 * len(sizes)} boots each, cached afterwards)\n")
    request.stream.flush()
    by_name = {k.name: k for k in request.kernels}
    pool = request.executor(max(1, min(request.jobs, len(jobs))))
    pending: set[Future[FloorResult]] = {pool.submit(measure_floor, job, request.boot)
                                         for job in jobs.values()}
    try:
        while pending:
            if request.stopped():
                raise FloorsStopped
            done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for fut in done:
                result = fut.result()
                k = by_name[result.kernel]
                write_cached(cache_path(k.sha256, request.cache_dir), k.sha256, agent,
                             result.points)
                if result.error:
                    request.stream.write(f"{k.name}: no memory floor ({result.error}); its "
                                         "cases start at the least memory the loader "
                                         "accepts\n")
                    continue
                floors[k.name] = MemoryFloor(k.sha256, result.points)
                request.stream.write(f"{k.name}: memory floor measured in {result.boots} "
                                     f"boots: {describe_points(floors[k.name].points)}\n")
    finally:
        if pending:
            from bootfuzz.fuzz.workers import stop_workers

            stop_workers(pool)
        else:
            pool.shutdown(wait=True)
    return floors


def describe_points(points: Iterable[FloorPoint]) -> str:
    return ", ".join(f"{format_size(p.payload)} payload: "
                     f"{p.memory / MiB:.2f} MiB{'' if p.kernel_bound else ' (the loader least)'}"
                     for p in points)


def no_floors(request: FloorRequest) -> dict[str, MemoryFloor]:
    """Learn nothing: cases start at the loader's least memory (tests, --below-floor)."""
    return {}


def fixed_floors(floors: Mapping[str, MemoryFloor]) -> Callable[[FloorRequest],
                                                                  dict[str, MemoryFloor]]:
    """A floor source that gives *floors* as they are (tests)."""
    def source(request: FloorRequest) -> dict[str, MemoryFloor]:
        return {k.name: floors[k.name] for k in request.kernels if k.name in floors}
    return source


__all__ = ["FLOOR_STEP", "METHOD_VERSION", "FloorBoot", "FloorError", "FloorJob",
           "FloorKernel", "FloorRequest", "FloorResult", "FloorsStopped", "agent_sha256",
           "cache_path", "calibration_cmdline", "describe_points", "fixed_floors",
           "floor_sizes", "learn_floors", "measure_floor", "no_floors", "read_cached",
           "write_cached"]
