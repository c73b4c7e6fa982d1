"""What block coverage costs a boot: the same case with and without the coverage plugin.

Both sides are one `execute()` of the same prepared case on QEMU-TCG (same kernel,
initrd, command line, memory); the coverage side loads harness/coverage's plugin
and then reads and names its map (bootfuzz.run.coverage), which is counted in its
time.  Pairs alternate their order (with first, then without first) so drift in
the machine's speed and the page cache hit both sides alike; the kernel's symbols
are read before the first pair (a one-off boot per kernel, cached), as every
campaign does once.

    .venv/bin/python bench/coverage_overhead.py --kernel debian-6.1-cloud --pairs 7

Prints each pair, the medians of the boot (execute) time and of the QEMU process
alone, the median per-pair ratios with/without of the boot's wall time, of the
QEMU process's wall time and of its CPU time (user + system, from getrusage: less
swayed by other load on a shared machine); target at most 1.15 for the boot; and
the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.boot import BootResult, execute, prepare
from bootfuzz.run.kallsyms import kernel_symbols
from bootfuzz.units import parse_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1-cloud")
    ap.add_argument("--mem", default="256M")
    ap.add_argument("--initrd-size", default="1M")
    ap.add_argument("--initrd-compression", default="gzip")
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args()

    case = BootCase(kernel=args.kernel, memory=parse_size(args.mem),
                    initrd=InitrdSpec(parse_size(args.initrd_size),
                                      Compression(args.initrd_compression)))
    prepared = prepare(case)
    assert prepared.kernel_path is not None
    kernel_symbols(prepared.kernel_path)  # the one-off symbol boot, outside the timing
    work = Path(tempfile.mkdtemp(prefix="bootfuzz-bench-coverage-"))

    cpu: dict[int, float] = {}  # id(result) -> CPU seconds of its QEMU process

    def boot(name: str, coverage: bool) -> BootResult:
        run_dir = work / name
        run_dir.mkdir()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = execute(prepared, run_dir, coverage=coverage)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu[id(result)] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if result.verdict is not Verdict.PASS:
            sys.exit(f"{name}: {result.verdict.value}; see {run_dir}")
        return result

    boot("warm-with", True)  # page cache, plugin build, learned silence
    boot("warm-without", False)
    load_before = os.getloadavg()[0]
    print(f"kernel {case.kernel}, {args.mem}, initrd {args.initrd_size} "
          f"{args.initrd_compression}, {args.pairs} alternating pairs, runs in {work}")
    pairs: list[tuple[BootResult, BootResult]] = []
    for i in range(args.pairs):
        if i % 2 == 0:
            with_cov, without = boot(f"with-{i}", True), boot(f"without-{i}", False)
        else:
            without, with_cov = boot(f"without-{i}", False), boot(f"with-{i}", True)
        pairs.append((with_cov, without))
        assert with_cov.coverage is not None
        print(f"pair {i}: with {with_cov.duration:5.2f} s (QEMU {with_cov.transcript.duration:4.2f}"
              f" s, CPU {cpu[id(with_cov)]:4.2f} s, {len(with_cov.coverage.blocks)} blocks)  "
              f"without {without.duration:5.2f} s (QEMU {without.transcript.duration:4.2f} s, "
              f"CPU {cpu[id(without)]:4.2f} s)  ratio {with_cov.duration / without.duration:5.3f}")
    med_with = statistics.median(a.duration for a, _ in pairs)
    med_without = statistics.median(b.duration for _, b in pairs)
    qemu_with = statistics.median(a.transcript.duration for a, _ in pairs)
    qemu_without = statistics.median(b.transcript.duration for _, b in pairs)
    ratio = statistics.median(a.duration / b.duration for a, b in pairs)
    qemu_ratio = statistics.median(a.transcript.duration / b.transcript.duration
                                   for a, b in pairs)
    print(f"median boot: with {med_with:.2f} s, without {med_without:.2f} s; "
          f"QEMU process alone: with {qemu_with:.2f} s, without {qemu_without:.2f} s")
    cpu_ratio = statistics.median(cpu[id(a)] / cpu[id(b)] for a, b in pairs)
    print(f"median ratio with/without: {ratio:.3f} (QEMU process alone {qemu_ratio:.3f}, "
          f"its CPU time {cpu_ratio:.3f}); target at most 1.15")
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
