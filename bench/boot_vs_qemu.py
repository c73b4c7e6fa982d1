"""Wall time to our agent's report: our loader on QEMU-TCG versus QEMU's own -kernel.

Both sides boot the same bzImage, the same initrd file, the same command line and
the same memory on the same QEMU binary and machine type; both end when the guest
agent has printed its line and powered the machine off through isa-debug-exit.
Runs alternate (ours, QEMU, ours, ...) so drift in the machine's speed hits both.
Our side counts the loader's work per boot too (planning and writing the blobs).

    .venv/bin/python bench/boot_vs_qemu.py --kernel debian-6.1-cloud --runs 7

Prints each run, the medians and the median of the per-pair ratios ours/QEMU
(below 1.0: our path is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bootfuzz.case import HARNESS_CMDLINE, BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, QEMU_AGENT_EXIT_STATUS
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.loader.planner import plan_boot
from bootfuzz.run.boot import prepare
from bootfuzz.run.console import run_console
from bootfuzz.units import parse_size


def qemu_direct_argv(binary: str, kernel: Path, initrd: Path, cmdline: str, memory: int
                     ) -> list[str]:
    """QEMU's own loader with the same machine, console and exit device as our backend."""
    return [
        binary, "-machine", "pc,accel=tcg", "-m", f"{memory // 1024}K", "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-serial", "stdio", "-no-reboot",
        "-device", f"isa-debug-exit,iobase={AGENT_EXIT_PORT:#x},iosize=0x04",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
    ]


def timed(argv: list[str], log: Path) -> float:
    start = time.monotonic()
    t = run_console(argv, timeout=300, silence_timeout=90, log_path=log)
    elapsed = time.monotonic() - start
    if t.exit_status != QEMU_AGENT_EXIT_STATUS or "BOOTFUZZ-AGENT " not in t.text:
        sys.exit(f"run did not reach the agent ({t.end_detail}); see {log}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1-cloud")
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--initrd-size", default="1M")
    ap.add_argument("--initrd-compression", default="gzip")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()

    case = BootCase(kernel=args.kernel, memory=parse_size(args.mem), cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(parse_size(args.initrd_size),
                                      Compression(args.initrd_compression)))
    prepared = prepare(case)
    initrd_blob = prepared.plan.blob("initrd")
    assert initrd_blob.path is not None
    kernel_path = resolve_kernel(case.kernel)
    backend = prepared.backend
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-"))

    def ours(i: int) -> float:
        start = time.monotonic()
        from bootfuzz.guest.initrd import cached_initrd

        plan = plan_boot(case, prepared.image, prepared.plan.platform,
                         cached_initrd(case.initrd, prepared.harness.agent)
                         if case.initrd else None)
        argv = backend.prepare(plan, prepared.harness, work / f"ours-{i}")
        return (time.monotonic() - start) + timed(argv, work / f"ours-{i}.log")

    def theirs(i: int) -> float:
        argv = qemu_direct_argv(backend.binary, kernel_path, initrd_blob.path, case.cmdline,
                                case.memory)
        return timed(argv, work / f"qemu-{i}.log")

    ours(-1)  # warm-up: page cache, harness build
    theirs(-1)
    pairs = []
    print(f"kernel {case.kernel}, {args.mem}, initrd {args.initrd_size} "
          f"{args.initrd_compression}, {args.runs} pairs, logs in {work}")
    for i in range(args.runs):
        a, b = ours(i), theirs(i)
        pairs.append((a, b))
        print(f"run {i}: ours {a:6.2f} s   qemu -kernel {b:6.2f} s   ratio {a / b:5.3f}")
    med_a = statistics.median(a for a, _ in pairs)
    med_b = statistics.median(b for _, b in pairs)
    ratio = statistics.median(a / b for a, b in pairs)
    print(f"median: ours {med_a:.2f} s, qemu -kernel {med_b:.2f} s")
    print(f"median ratio ours/qemu: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
