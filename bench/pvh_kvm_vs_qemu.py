"""Time to the kernel's RAMDISK line through PVH on /dev/kvm: our VMM versus QEMU.

Both sides boot the same vmlinux (extracted from the same bzImage), the same
initrd and command line, with the same memory, on /dev/kvm, and stop at the
first line that proves the RAMDISK line was printed.  Ours runs our loader's PVH
plan in our Python VMM with the case's CPU template; QEMU runs `qemu-system-x86_64
-accel kvm -kernel vmlinux` (QEMU's own PVH loader).  Runs alternate; the median of
the per-pair ratios ours/QEMU is printed.

QEMU's CPU model is the first of QEMU_CPU_MODELS that starts on this host: `-cpu
host` passes the host's MSRs through, and a KVM that refuses one (an emulating
KVM rejects ARCH_CAPABILITIES: "failed to set MSR 0x10a") kills QEMU before the
guest runs.  The bench then retries with the next model and says which it used.

    .venv/bin/python bench/pvh_kvm_vs_qemu.py --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bootfuzz.case import HARNESS_CMDLINE, BootCase, CpuTemplate, EntryProtocol, InitrdSpec
from bootfuzz.run.boot import prepare
from bootfuzz.run.console import run_console
from bootfuzz.transcript import SessionEnd, Transcript
from bootfuzz.units import parse_size

RAMDISK = r"RAMDISK: \[mem "
#: QEMU CPU models in the order tried: the host's own CPU; the same without the
#: IA32_ARCH_CAPABILITIES MSR (what an emulating KVM refuses); QEMU's generic
#: x86-64, which asks nothing of the host beyond KVM itself.
QEMU_CPU_MODELS = ("host", "host,-arch-capabilities", "qemu64")


def reached(t: Transcript) -> bool:
    return "RAMDISK: [mem" in t.text


def could_not_start(t: Transcript) -> str | None:
    """Why QEMU died before the guest got anywhere (its error line), or None.

    A QEMU that ended on its own, failing (a status or a signal), without the
    RAMDISK line is a peer that cannot run here with this CPU model.
    """
    if reached(t) or t.end is not SessionEnd.EXITED:
        return None
    if t.exit_status == 0 and t.signal is None:
        return None
    lines = t.text.strip().splitlines()
    errors = [ln for ln in lines if "error" in ln]
    return (errors or lines or [f"exit status {t.exit_status}, signal {t.signal}"])[0]


def console(argv: list[str], log: Path) -> tuple[Transcript, float]:
    start = time.monotonic()
    t = run_console(argv, timeout=600, silence_timeout=300, log_path=log,
                    stop_patterns=[RAMDISK])
    return t, time.monotonic() - start


def timed(argv: list[str], log: Path) -> float:
    t, elapsed = console(argv, log)
    if not reached(t):
        sys.exit(f"run did not reach RAMDISK ({t.end_detail}); see {log}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1-amd64")
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu-template", default=CpuTemplate.BASELINE.value,
                    choices=[t.value for t in CpuTemplate],
                    help="the CPU our VMM shows the guest (default baseline)")
    args = ap.parse_args()
    case = BootCase(kernel=args.kernel, memory=parse_size(args.mem), cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(1 << 20), entry=EntryProtocol.PVH, backend="kvm",
                    cpu_template=CpuTemplate(args.cpu_template))
    prepared = prepare(case)
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-pvh-"))
    vmlinux = work / "vmlinux"
    vmlinux.write_bytes(prepared.image.vmlinux)
    initrd = prepared.plan.blob("initrd").path
    assert initrd is not None

    def qemu_argv(cpu: str) -> list[str]:
        return [
            "qemu-system-x86_64", "-machine", "pc,accel=kvm", "-cpu", cpu,
            "-m", f"{case.memory // 1024}K", "-smp", "1", "-nodefaults", "-no-user-config",
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
            "-kernel", str(vmlinux), "-initrd", str(initrd), "-append", case.cmdline,
        ]  # fmt: skip

    models = list(QEMU_CPU_MODELS)

    def qemu(i: int) -> float:
        """One QEMU run; until one has started, a model that cannot start gives way."""
        while True:
            log = work / f"qemu-{i}-{models[0].replace(',', '_')}.log"
            t, elapsed = console(qemu_argv(models[0]), log)
            why = could_not_start(t)
            if why is None:
                if not reached(t):
                    sys.exit(f"qemu did not reach RAMDISK ({t.end_detail}); see {log}")
                return elapsed
            if i > 0 or len(models) == 1:
                sys.exit(f"qemu -cpu {models[0]} failed ({why}); see {log}")
            print(f"qemu -cpu {models[0]} cannot start here ({why}); "
                  f"retrying with -cpu {models[1]}")
            models.pop(0)

    def ours(i: int) -> float:
        start = time.monotonic()
        argv = prepared.backend.prepare(prepared.plan, prepared.harness, work / f"ours-{i}")
        return (time.monotonic() - start) + timed(argv, work / f"ours-{i}.log")

    pairs = []
    print(f"kernel {args.kernel} (PVH), {args.mem}, {args.runs} pairs, our CPU template "
          f"{case.cpu_template.value}, logs in {work}")
    for i in range(args.runs):
        a, b = ours(i), qemu(i)
        pairs.append((a, b))
        print(f"run {i}: ours {a:7.2f} s   qemu -accel kvm -cpu {models[0]} {b:7.2f} s   "
              f"ratio {a / b:6.2f}")
    print(f"qemu peer CPU model: {models[0]}"
          + ("" if models[0] == QEMU_CPU_MODELS[0] else
             f" (tried first: {', '.join(QEMU_CPU_MODELS[:QEMU_CPU_MODELS.index(models[0])])})"))
    print(f"median: ours {statistics.median(a for a, _ in pairs):.2f} s, "
          f"qemu {statistics.median(b for _, b in pairs):.2f} s")
    print(f"median ratio ours/qemu: {statistics.median(a / b for a, b in pairs):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
