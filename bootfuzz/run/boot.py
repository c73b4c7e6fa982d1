"""One boot, end to end: case -> plan -> backend -> transcript -> observation -> verdict.

This is the only module that strings the side effects together (kernel fetch,
harness build, initrd build, the backend process); everything it calls on either
side is pure.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.errors import BackendError, ConfigError, LayoutError, StorageError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.guest.harness import HarnessArtifacts, build_harness
from bootfuzz.guest.initrd import cached_initrd
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.observation import Observation, parse_transcript
from bootfuzz.judge.oracles import STOP_POINTS, ExactEvidence, StopPoint, judge
from bootfuzz.judge.verdict import OracleResult, Verdict, overall
from bootfuzz.kernel.capabilities import UnpackStart, config_unpack_message, find_config
from bootfuzz.kernel.image import KernelImage, load_kernel_image
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.loader.placement import encode_cmdline
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import Platform
from bootfuzz.run import silence
from bootfuzz.run.backends import get_backend
from bootfuzz.run.backends.base import Backend, HaltProbing
from bootfuzz.run.console import run_console
from bootfuzz.run.coverage import (
    MAP_NAME,
    BlockCoverage,
    CoverageBackend,
    collect,
    keep_map,
    live_map_path,
)
from bootfuzz.run.exits import classify_exit
from bootfuzz.run.host import check_guest_memory
from bootfuzz.run.kallsyms import kernel_symbols
from bootfuzz.run.phases import BLOBS, INITRD, JUDGE, KERNEL, PLAN, Stopwatch, guest_phases
from bootfuzz.run.silence import LearnedSilence, Silence
from bootfuzz.transcript import GuestExit, Transcript
from bootfuzz.units import format_size

#: Seconds spent reading and naming the coverage map (a phase of its own).
COVERAGE = "coverage"
#: Generous for TCG: the xz kernel decompresses for ~3 s and a 64 MiB xz initrd
#: unpacks for several more; a healthy boot on this machine takes 2-15 s.
DEFAULT_TIMEOUT = 300.0
#: The silence timeout for a kernel with too few passing boots to learn one from
#: (bootfuzz.run.silence); a guest halted with interrupts off is not waited for.
DEFAULT_SILENCE_TIMEOUT = 90.0
#: A boot's default: learned for its kernel, DEFAULT_SILENCE_TIMEOUT for one never seen.
LEARNED_SILENCE = LearnedSilence(DEFAULT_SILENCE_TIMEOUT)
#: Blob files the backend needs only while it runs (the console log stays).
_BULKY_SUFFIX = ".bin"


@dataclass(frozen=True)
class PreparedBoot:
    case: BootCase
    image: KernelImage
    backend: Backend
    harness: HarnessArtifacts
    plan: BootPlan
    #: From the kernel's build configuration, when known (pinned kernels always).
    unpack_message: UnpackStart | None = None
    #: Seconds spent on each host phase so far (bootfuzz.run.phases).
    phases: Mapping[str, float] = field(default_factory=dict)
    #: The kernel file booted (its sha256 keys what its boots teach: run.silence).
    kernel_path: Path | None = None


@dataclass(frozen=True)
class BootResult:
    case: BootCase
    plan: BootPlan
    transcript: Transcript
    observation: Observation
    guest_exit: GuestExit
    oracles: tuple[OracleResult, ...]
    verdict: Verdict
    run_dir: Path
    duration: float
    #: Seconds per phase, host and guest, in the order they ran (bootfuzz.run.phases).
    phases: Mapping[str, float] = field(default_factory=dict)
    #: Where the run was stopped early (None: it ran to its end): the oracles not of
    #: that stop point are unknown.
    until: StopPoint | None = None
    #: The guest kernel's block coverage, when the boot was run with coverage
    #: (bootfuzz.run.coverage): KASLR-normalized, comparable across boots.
    coverage: BlockCoverage | None = None


@functools.lru_cache(maxsize=4)
def _read_image(path: str, size: int, mtime_ns: int) -> KernelImage:
    return load_kernel_image(Path(path))


def kernel_image(path: Path) -> KernelImage:
    """The parsed kernel at *path*, read once per process while the file is unchanged: a
    campaign worker boots the same few kernels case after case, and the image keeps
    what each plan needs (its protected-mode code, a PVH entry's vmlinux) once sliced
    or decompressed."""
    try:
        st = path.stat()
    except OSError:
        return load_kernel_image(path)  # its error names the problem
    return _read_image(os.fspath(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _unpack_message(kernel: str, path: str, size: int, mtime_ns: int) -> UnpackStart | None:
    config = find_config(kernel, Path(path))
    return None if config is None else config_unpack_message(config)


def unpack_message(kernel: str, path: Path) -> UnpackStart | None:
    """The unpack line *kernel*'s build configuration dictates, read once per process
    for an unchanged kernel file (parsing a distribution .config costs tens of ms)."""
    st = path.stat()
    return _unpack_message(kernel, os.fspath(path.resolve()), st.st_size, st.st_mtime_ns)


def prepare(case: BootCase) -> PreparedBoot:
    """Everything up to the plan.

    The user's input is checked first (kernel, memory, command line, whether the
    initrd can fit), so a bad case is reported as such even on a machine that lacks
    the backend, and before an initrd is built for it.
    """
    if case.arch.device_tree:
        raise ConfigError(f"an {case.arch.value} case boots through bootfuzz.run.dt_boot "
                          "(our device-tree loader on qemu-virt), not this x86 pipeline")
    clock = Stopwatch()
    backend = get_backend(case.backend)
    with clock.time(KERNEL):
        kernel_path = resolve_kernel(case.kernel)
        image = kernel_image(kernel_path)
    platform = backend.platform(case.memory)
    with clock.time(PLAN):
        encode_cmdline(case.cmdline, image)
        check_initrd_fits(case, image, platform)
    check_guest_memory(case.memory)  # this machine's limit: after the input's own checks
    backend.check_available()
    harness = build_harness()
    with clock.time(INITRD):
        initrd = cached_initrd(case.initrd, harness.agent) if case.initrd is not None else None
    with clock.time(PLAN):
        plan = plan_boot(case, image, platform, initrd)
    with clock.time(KERNEL):
        unpack = unpack_message(case.kernel, kernel_path)
    return PreparedBoot(case, image, backend, harness, plan, unpack, clock.phases, kernel_path)


@dataclass(frozen=True)
class UnbuiltInitrd:
    """An initrd planned by its smallest possible size, before it is built."""

    size: int
    path: Path = Path("(not built)")
    payload_sha256: str = ""


def initrd_size_floor(spec: InitrdSpec) -> int:
    """The fewest bytes the initrd for *spec* can have (fuzz.generate bounds it above).

    Every form holds the whole payload (guest.initrd), and the payload is SHAKE256
    output, which no compressor shrinks: compressed, it stays about its size (a
    1/64 margin all the same); uncompressed, it is the payload and more.  Only an
    uncompressed raw initrd of an empty payload is empty: a cpio archive always holds
    /init and its trailer, and a compressed stream always has framing.
    """
    floor = spec.size if spec.compression is Compression.NONE else spec.size - spec.size // 64
    if spec.raw and spec.compression is Compression.NONE:
        return floor
    return max(floor, 1)


def check_initrd_fits(case: BootCase, image: KernelImage, platform: Platform) -> None:
    """Plan *case* with its initrd's smallest possible size before building it: a
    case whose initrd cannot fit is refused without minutes of compressing (and
    without leaving gigabytes in the cache)."""
    if case.initrd is None:
        return
    plan_boot(dataclasses.replace(case, initrd=None), image, platform)  # its own faults first
    bound = initrd_size_floor(case.initrd)
    try:
        plan_boot(case, image, platform, UnbuiltInitrd(bound))
    except LayoutError as exc:
        raise LayoutError(
            f"{exc.args[0]} (refused before building it: the initrd holds a "
            f"{format_size(case.initrd.size)} payload of random bytes, so it is at least "
            f"{bound} bytes)"
        ) from None


def default_runs_dir() -> Path:
    env = os.environ.get("BOOTFUZZ_RUNS")
    return Path(env) if env else Path(tempfile.gettempdir()) / "bootfuzz-runs"


def new_run_dir(case: BootCase, parent: Path | None = None) -> Path:
    """A new directory for one run's files under *parent* (made if missing)."""
    parent = parent or default_runs_dir()
    stem = Path(case.kernel).name.replace(os.sep, "_")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-",
                                     dir=parent))
    except OSError as exc:
        raise StorageError.writing(exc.filename or parent, exc) from None


def check_coverage_backend(backend: Backend) -> None:
    """Refuse coverage on a backend that cannot record it (only TCG runs QEMU plugins)."""
    if not isinstance(backend, CoverageBackend):
        raise ConfigError(f"--coverage needs the qemu-tcg backend (QEMU plugins run under "
                          f"TCG), not {backend.name}")


def run_backend(
    backend: Backend,
    plan: BootPlan,
    harness: HarnessArtifacts,
    run_dir: Path,
    *,
    timeout: float,
    silence_timeout: float,
    keep_blobs: bool = False,
    stop_patterns: Sequence[str] = (),
    clock: Stopwatch | None = None,
    coverage: bool = False,
) -> tuple[Transcript, GuestExit]:
    """Run *plan* on *backend* and say how the guest ended.

    Leaves command.json and console.log in *run_dir*; the blob files the backend
    wrote there go afterwards unless *keep_blobs*, whatever ends the run (a signal,
    a full disk while the backend writes them).  With *coverage* the backend
    records guest blocks into a map on a tmpfs, moved to coverage.map there when
    the run ends, however it ends (bootfuzz.run.coverage).
    """
    clock = clock or Stopwatch()
    live_map = None
    if coverage:
        check_coverage_backend(backend)
        live_map = live_map_path(run_dir)
    try:
        try:
            with clock.time(BLOBS):
                argv = backend.prepare(plan, harness, run_dir)
                if isinstance(backend, CoverageBackend) and live_map is not None:
                    from bootfuzz.guest.coverage_tools import build_coverage_tools

                    argv += backend.coverage_argv(build_coverage_tools().plugin, live_map)
            atomic_write_text(run_dir / "command.json", json.dumps(argv, indent=1) + "\n")
        except OSError as exc:  # the blobs it wrote so far go in the clean-up below
            raise StorageError.writing(exc.filename or run_dir, exc) from None
        probe = backend.halt_probe(run_dir) if isinstance(backend, HaltProbing) else None
        transcript = run_console(argv, timeout=timeout, silence_timeout=silence_timeout,
                                 log_path=run_dir / "console.log", stop_patterns=stop_patterns,
                                 probe=probe)
    finally:
        if not keep_blobs:
            for path in run_dir.glob(f"*{_BULKY_SUFFIX}"):
                path.unlink(missing_ok=True)
        if live_map is not None:
            keep_map(live_map, run_dir)
    return transcript, classify_exit(transcript, backend.exit_statuses)


def execute(
    prepared: PreparedBoot,
    run_dir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    silence_timeout: Silence = LEARNED_SILENCE,
    keep_blobs: bool = False,
    until: StopPoint | None = None,
    coverage: bool = False,
) -> BootResult:
    """Run a prepared boot and judge it.  The console log is kept in *run_dir*.

    With *until*, the guest is stopped as soon as the oracles of that stop point
    can answer; the others are reported unknown.  *silence_timeout* is seconds, or
    learned from the kernel's passing boots (bootfuzz.run.silence), which every
    passing full boot adds to.  With *coverage* (qemu-tcg only) the result
    carries the guest kernel's block coverage (a kernel booted for coverage the
    first time is booted once more before, to read its symbols: run.kallsyms).
    """
    symbols = None
    if coverage:  # before the clock starts: the first time, it is a boot of its own
        check_coverage_backend(prepared.backend)
        if prepared.kernel_path is None:
            raise ConfigError("coverage needs the kernel file, to read its symbols")
        symbols = kernel_symbols(prepared.kernel_path)
    started = time.monotonic()
    clock = Stopwatch()
    kernel_sha256 = (None if prepared.kernel_path is None
                     else silence.file_sha256(prepared.kernel_path))
    quiet = silence.timeout_for(silence_timeout, kernel_sha256, prepared.case.initrd)
    transcript, guest_exit = run_backend(
        prepared.backend, prepared.plan, prepared.harness, run_dir, timeout=timeout,
        silence_timeout=quiet, keep_blobs=keep_blobs,
        stop_patterns=[STOP_POINTS[until][0]] if until else [], clock=clock,
        coverage=coverage,
    )
    judging = time.monotonic()
    observation = parse_transcript(transcript.raw)  # bytes: the command line is judged exactly
    if not observation.firmware_entered and guest_exit in (
        GuestExit.BACKEND_ERROR, GuestExit.KILLED, GuestExit.UNKNOWN
    ):
        tail = transcript.text.strip().splitlines()[-5:]
        raise BackendError(
            f"{prepared.backend.name} never started the guest ({transcript.end_detail}); "
            f"last output: {' | '.join(tail) or '(none)'}; log: {run_dir / 'console.log'}"
        )
    results = check_layout(prepared.plan) + judge(
        ExactEvidence(prepared.plan, observation, guest_exit, transcript.end_detail,
                      prepared.unpack_message), until
    )
    verdict = overall(results)
    phases = {**prepared.phases, **clock.phases, **guest_phases(transcript),
              JUDGE: time.monotonic() - judging}
    if (kernel_sha256 is not None and until is None and verdict is Verdict.PASS
            and guest_exit is GuestExit.POWER_OFF):
        silence.learn(kernel_sha256, transcript, prepared.case.initrd)
    covered = None
    if symbols is not None and kernel_sha256 is not None:
        with clock.time(COVERAGE):
            covered = collect(run_dir / MAP_NAME, symbols, kernel_sha256, prepared.plan,
                              prepared.image)
        phases = {**phases, COVERAGE: clock.phases[COVERAGE]}
    return BootResult(
        case=prepared.case,
        plan=prepared.plan,
        transcript=transcript,
        observation=observation,
        guest_exit=guest_exit,
        oracles=tuple(results),
        verdict=verdict,
        run_dir=run_dir,
        duration=time.monotonic() - started,
        phases=phases,
        until=until,
        coverage=covered,
    )


def run_case(
    case: BootCase,
    run_dir: Path | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    silence_timeout: Silence = LEARNED_SILENCE,
    until: StopPoint | None = None,
    coverage: bool = False,
) -> BootResult:
    """Prepare and execute *case*."""
    prepared = prepare(case)
    return execute(prepared, run_dir or new_run_dir(case), timeout=timeout,
                   silence_timeout=silence_timeout, until=until, coverage=coverage)
