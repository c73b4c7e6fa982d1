"""Running a probe guest: plan it with our loader, boot it on a backend, check its report.

The probe images come from bootfuzz.guest.probes and the report is read and judged by
bootfuzz.judge.probe; this module holds the side effects in between (building, the
backend process, reading the initrd's edges back from its file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError
from bootfuzz.guest.harness import build_harness
from bootfuzz.guest.initrd import cached_initrd
from bootfuzz.guest.probes import PROBE_ENTRIES, PROBE_RAMDISK_EDGE, build_probes
from bootfuzz.judge.probe import (
    ProbeReport,
    ProbeReportError,
    check_probe,
    check_probe_exit,
    parse_probe_report,
)
from bootfuzz.judge.verdict import OracleResult, Verdict, overall
from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.run.backends import get_backend
from bootfuzz.run.boot import new_run_dir, run_backend
from bootfuzz.transcript import GuestExit, Transcript

#: The probe's command line: short enough to be read whole, NUL included.
PROBE_CMDLINE = 'bootfuzz.probe=1 quoted="a b c"'
#: A small initrd, so the ramdisk fields and the module are exercised; gzip ends in
#: its CRC and size, so the tail the probe reads is distinctive (not cpio padding).
PROBE_INITRD = InitrdSpec(size=4096, compression=Compression.GZIP, seed=7)
PROBE_TIMEOUT = 120.0  # nested KVM is slow; a probe takes well under a second on TCG
PROBE_SILENCE_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProbeResult:
    """One probe boot: the plan, what the probe reported, and each check's answer."""

    plan: BootPlan
    transcript: Transcript
    guest_exit: GuestExit
    report: ProbeReport | ProbeReportError | None
    oracles: tuple[OracleResult, ...]
    verdict: Verdict
    run_dir: Path


def run_probe(
    entry: EntryProtocol | str,
    backend: str,
    memory: int,
    run_dir: Path | None = None,
    *,
    cmdline: str = PROBE_CMDLINE,
    initrd: InitrdSpec | None = PROBE_INITRD,
    timeout: float = PROBE_TIMEOUT,
    silence_timeout: float = PROBE_SILENCE_TIMEOUT,
) -> ProbeResult:
    """Plan a probe boot with our loader, run it on *backend*, check the report."""
    chosen = next((e for e in PROBE_ENTRIES if e.value == str(entry)), None)
    if chosen is None:
        known = ", ".join(e.value for e in PROBE_ENTRIES)
        raise ConfigError(f"no probe answers the entry {str(entry)!r} (probes exist for: {known})")
    entry = chosen
    be = get_backend(backend)
    platform = be.platform(memory)
    be.check_available()
    images = build_probes()
    harness = build_harness()
    image = load_kernel_image(images.bzimage)
    built = cached_initrd(initrd, harness.agent) if initrd is not None else None
    case = BootCase(kernel=str(images.bzimage), memory=memory, cmdline=cmdline, initrd=initrd,
                    entry=entry, backend=backend)
    plan = plan_boot(case, image, platform, built)
    run_dir = run_dir or new_run_dir(case)
    transcript, guest_exit = run_backend(be, plan, harness, run_dir, timeout=timeout,
                                         silence_timeout=silence_timeout)
    report = parse_probe_report(transcript.text)
    results = [check_probe_exit(report, guest_exit, transcript.end_detail)]
    if isinstance(report, ProbeReport):
        results += check_probe(plan, report, edges=initrd_edges(plan))
    return ProbeResult(plan, transcript, guest_exit, report, tuple(results), overall(results),
                       run_dir)


def initrd_edges(plan: BootPlan) -> tuple[bytes, bytes]:
    """The first and last PROBE_RAMDISK_EDGE bytes of the planned initrd (empty without one)."""
    if plan.initrd is None:
        return b"", b""
    blob = plan.blob("initrd")
    n = min(blob.size, PROBE_RAMDISK_EDGE)
    if blob.data is not None:
        return blob.data[:n], blob.data[blob.size - n : blob.size]
    if blob.path is None:
        raise HarnessBug("initrd blob has neither data nor path")
    try:
        with blob.path.open("rb") as f:
            head = f.read(n)
            f.seek(blob.size - n)
            tail = f.read(n)
    except OSError as e:
        raise InfrastructureError(f"cannot read the initrd {blob.path}: {e.strerror}") from None
    return head, tail
