"""Time to the kernel's RAMDISK line through PVH on /dev/kvm: our VMM versus QEMU.

Both sides boot the same vmlinux (extracted from the same bzImage), the same
initrd and command line, with the same memory, on /dev/kvm, and stop at the
first line that proves the RAMDISK line was printed.  Ours runs our loader's PVH
plan in our Python VMM; QEMU runs `qemu-system-x86_64 -accel kvm -kernel
vmlinux` (QEMU's own PVH loader).  Runs alternate; the median of the per-pair
ratios ours/QEMU is printed.

    .venv/bin/python bench/pvh_kvm_vs_qemu.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bootfuzz.case import HARNESS_CMDLINE, BootCase, EntryProtocol, InitrdSpec
from bootfuzz.run.boot import prepare
from bootfuzz.run.console import run_console
from bootfuzz.units import parse_size

RAMDISK = r"RAMDISK: \[mem "


def timed(argv: list[str], log: Path) -> float:
    start = time.monotonic()
    t = run_console(argv, timeout=600, silence_timeout=300, log_path=log,
                    stop_patterns=[RAMDISK])
    elapsed = time.monotonic() - start
    if "RAMDISK: [mem" not in t.text:
        sys.exit(f"run did not reach RAMDISK ({t.end_detail}); see {log}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1-amd64")
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    case = BootCase(kernel=args.kernel, memory=parse_size(args.mem), cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(1 << 20), entry=EntryProtocol.PVH, backend="kvm")
    prepared = prepare(case)
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-pvh-"))
    vmlinux = work / "vmlinux"
    vmlinux.write_bytes(prepared.image.vmlinux)
    initrd = prepared.plan.blob("initrd").path
    assert initrd is not None
    qemu = [
        "qemu-system-x86_64", "-machine", "pc,accel=kvm", "-cpu", "host",
        "-m", f"{case.memory // 1024}K", "-smp", "1", "-nodefaults", "-no-user-config",
        "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", case.cmdline,
    ]

    def ours(i: int) -> float:
        start = time.monotonic()
        argv = prepared.backend.prepare(prepared.plan, prepared.harness, work / f"ours-{i}")
        return (time.monotonic() - start) + timed(argv, work / f"ours-{i}.log")

    pairs = []
    print(f"kernel {args.kernel} (PVH), {args.mem}, {args.runs} pairs, logs in {work}")
    for i in range(args.runs):
        a, b = ours(i), timed(qemu, work / f"qemu-{i}.log")
        pairs.append((a, b))
        print(f"run {i}: ours {a:7.2f} s   qemu -accel kvm {b:7.2f} s   ratio {a / b:6.2f}")
    print(f"median: ours {statistics.median(a for a, _ in pairs):.2f} s, "
          f"qemu {statistics.median(b for _, b in pairs):.2f} s")
    print(f"median ratio ours/qemu: {statistics.median(a / b for a, b in pairs):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
