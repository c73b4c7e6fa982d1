"""One device-tree boot end to end: case -> DtBootPlan -> qemu-virt -> transcript -> verdict.

The arm64/riscv64 counterpart of bootfuzz.run.boot (whose prepare refuses a
device-tree case, naming this module): the kernel is fetched and parsed as an Image,
the agent is the cross-built one, the plan is bootfuzz.loader.dt_plan's, the backend
QemuVirtBackend, and the judge the dt_rules and dt_oracles.  With coverage the
plugin records the guest's blocks as on x86 (bootfuzz.run.coverage), named by the
kernel's own symbols, dumped once per kernel by the agent built as a kallsyms dumper.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, InitrdSpec, harness_cmdline
from bootfuzz.errors import BackendError, ConfigError, StorageError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.guest.coverage_tools import build_coverage_tools
from bootfuzz.guest.harness import DtHarness, build_dt_harness
from bootfuzz.guest.initrd import cached_initrd
from bootfuzz.guest.protocol import KALLSYMS_END
from bootfuzz.judge.dt_observation import DtObservation, parse_dt_transcript
from bootfuzz.judge.dt_oracles import DtEvidence, judge_dt
from bootfuzz.judge.dt_rules import check_dt_layout
from bootfuzz.judge.verdict import OracleResult, Verdict, overall
from bootfuzz.kernel.dt_image import DtKernelImage, load_dt_image
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.loader.dt_plan import DtBootPlan, plan_dt_boot
from bootfuzz.run import silence
from bootfuzz.run.backends.qemu_virt import QemuVirtBackend, classify_virt_exit
from bootfuzz.run.console import run_console
from bootfuzz.run.coverage import (
    MAP_NAME,
    BlockCoverage,
    keep_map,
    live_map_path,
    normalize,
    read_map,
)
from bootfuzz.run.host import check_guest_memory
from bootfuzz.run.kallsyms import (
    DUMP_SILENCE,
    DUMP_TIMEOUT,
    kernel_symbols,
    listing_from_console,
)
from bootfuzz.run.phases import INITRD, JUDGE, KERNEL, PLAN, Stopwatch, guest_phases
from bootfuzz.run.silence import Silence
from bootfuzz.transcript import GuestExit, Transcript

#: A healthy TCG boot to the agent takes 2-5 s here; an 8 MiB xz initrd a few more.
DT_DEFAULT_TIMEOUT = 300.0
_BULKY_SUFFIX = ".bin"


@dataclass(frozen=True)
class DtPreparedBoot:
    case: BootCase
    image: DtKernelImage
    backend: QemuVirtBackend
    harness: DtHarness
    plan: DtBootPlan
    phases: Mapping[str, float] = field(default_factory=dict)
    kernel_path: Path | None = None


@dataclass(frozen=True)
class DtBootResult:
    case: BootCase
    plan: DtBootPlan
    transcript: Transcript
    observation: DtObservation
    guest_exit: GuestExit
    oracles: tuple[OracleResult, ...]
    verdict: Verdict
    run_dir: Path
    duration: float
    phases: Mapping[str, float] = field(default_factory=dict)
    #: The guest kernel's block coverage, when the boot recorded it.
    coverage: BlockCoverage | None = None


#: The kallsyms boot's RAM: the listing is read in the guest, a few MiB.
DUMP_MEMORY = 512 << 20


def dump_dt_kallsyms(kernel_path: Path, arch: Arch) -> str:
    """Boot the device-tree kernel at *kernel_path* once with the agent built as the
    kallsyms dumper as its /init (the x86 dumper's listing: bootfuzz.run.kallsyms) and
    return the listing."""
    case = BootCase(kernel=str(kernel_path), memory=DUMP_MEMORY, arch=arch,
                    backend=QemuVirtBackend.name, initrd=InitrdSpec(0),
                    cmdline=harness_cmdline(arch))
    prepared = prepare_dt(case, kallsyms_dumper=True)
    with tempfile.TemporaryDirectory(prefix="bootfuzz-kallsyms-") as tmp:
        argv = prepared.backend.prepare(prepared.plan, prepared.harness, Path(tmp))
        transcript = run_console(argv, timeout=DUMP_TIMEOUT, silence_timeout=DUMP_SILENCE,
                                 stop_patterns=[KALLSYMS_END])
    return listing_from_console(transcript.text)


def prepare_dt(case: BootCase, kallsyms_dumper: bool = False) -> DtPreparedBoot:
    """Everything up to the plan; the case's own faults are reported before any build.
    With *kallsyms_dumper* the initrd's /init is the agent built as the kallsyms dumper."""
    if not case.arch.device_tree:
        raise ConfigError(f"{case.arch.value} is not a device-tree architecture")
    if case.backend not in ("qemu-tcg", QemuVirtBackend.name):
        raise ConfigError(f"backend {case.backend!r} does not run {case.arch.value}; "
                          "device-tree cases run on qemu-virt (QEMU-TCG virt)")
    clock = Stopwatch()
    with clock.time(KERNEL):
        kernel_path = resolve_kernel(case.kernel)
        image = load_dt_image(kernel_path)
    with clock.time(PLAN):
        plan_dt_boot(case, image)  # the case's own faults first, before building anything
    check_guest_memory(case.memory)
    backend = QemuVirtBackend(case.arch)
    backend.check_available()
    harness = build_dt_harness(case.arch.value)
    with clock.time(INITRD):
        init = harness.kallsyms_dumper if kallsyms_dumper else harness.agent
        initrd = cached_initrd(case.initrd, init) if case.initrd is not None else None
    with clock.time(PLAN):
        plan = plan_dt_boot(case, image, initrd)
    return DtPreparedBoot(case, image, backend, harness, plan, clock.phases, kernel_path)


def execute_dt(prepared: DtPreparedBoot, run_dir: Path, *,
               timeout: float = DT_DEFAULT_TIMEOUT, silence_timeout: Silence = 90.0,
               keep_blobs: bool = False, coverage: bool = False) -> DtBootResult:
    """Run a prepared device-tree boot and judge it; console.log stays in *run_dir*.
    With *coverage* the result carries the kernel's block coverage (coverage.map in
    *run_dir*; a kernel's first coverage boot is preceded by its kallsyms boot)."""
    kernel_path, arch = prepared.kernel_path, prepared.case.arch
    symbols = None
    if coverage:  # before the clock starts: the first time, it is a boot of its own
        if kernel_path is None:
            raise ConfigError("coverage needs the kernel file, to read its symbols")
        symbols = kernel_symbols(kernel_path, dump=lambda p: dump_dt_kallsyms(p, arch))
    live_map = live_map_path(run_dir) if coverage else None
    started = time.monotonic()
    clock = Stopwatch()
    kernel_sha = (None if prepared.kernel_path is None
                  else silence.file_sha256(prepared.kernel_path))
    quiet = silence.timeout_for(silence_timeout, kernel_sha, prepared.case.initrd)
    try:
        try:
            argv = prepared.backend.prepare(prepared.plan, prepared.harness, run_dir)
            if live_map is not None:
                argv += prepared.backend.coverage_argv(build_coverage_tools().plugin, live_map)
            (run_dir / "plan.dtb").write_bytes(prepared.plan.dtb)
            atomic_write_text(run_dir / "command.json", json.dumps(argv, indent=1) + "\n")
        except OSError as exc:
            raise StorageError.writing(exc.filename or run_dir, exc) from None
        transcript = run_console(argv, timeout=timeout, silence_timeout=quiet,
                                 log_path=run_dir / "console.log")
    finally:
        if not keep_blobs:
            for path in run_dir.glob(f"*{_BULKY_SUFFIX}"):
                path.unlink(missing_ok=True)
        if live_map is not None:
            keep_map(live_map, run_dir)
    guest_exit = classify_virt_exit(transcript)
    judging = time.monotonic()
    observation = parse_dt_transcript(transcript.raw)
    if observation.base.linux_version_count == 0 and guest_exit in (
            GuestExit.BACKEND_ERROR, GuestExit.UNKNOWN):
        tail = transcript.text.strip().splitlines()[-5:]
        raise BackendError(
            f"{prepared.backend.binary} never started the guest ({transcript.end_detail}); "
            f"last output: {' | '.join(tail) or '(none)'}; log: {run_dir / 'console.log'}")
    results = check_dt_layout(prepared.plan) + judge_dt(
        DtEvidence(prepared.plan, observation, guest_exit, transcript.end_detail))
    verdict = overall(results)
    phases = {**prepared.phases, **clock.phases, **guest_phases(transcript),
              JUDGE: time.monotonic() - judging}
    if (kernel_sha is not None and verdict is Verdict.PASS
            and guest_exit is GuestExit.POWER_OFF):
        silence.learn(kernel_sha, transcript, prepared.case.initrd)
    covered = None
    if symbols is not None and kernel_sha is not None:
        raw = read_map(run_dir / MAP_NAME)
        covered = normalize(raw.addresses, symbols, kernel_sha, (), raw.dropped)
    return DtBootResult(prepared.case, prepared.plan, transcript, observation, guest_exit,
                        tuple(results), verdict, run_dir, time.monotonic() - started, phases,
                        covered)


def run_dt_case(case: BootCase, run_dir: Path, *, timeout: float = DT_DEFAULT_TIMEOUT,
                silence_timeout: Silence = 90.0, coverage: bool = False) -> DtBootResult:
    return execute_dt(prepare_dt(case), run_dir, timeout=timeout,
                      silence_timeout=silence_timeout, coverage=coverage)
