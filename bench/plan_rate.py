"""Plans per second: the planner with the kernel's protected-mode code sliced once per
image (what every boot and campaign worker does now) against slicing it for every
plan (what it did before: a copy of the whole kernel per plan), in the same run.

    .venv/bin/python bench/plan_rate.py --kernel debian-6.1-cloud --seconds 3

The uncached side plans with a fresh KernelImage each time (the same bytes and
header, no slice kept), so the only difference is the cache.  Rounds alternate
(cached, uncached, ...) so drift in the machine's speed hits both; the median rate
of each side and their ratio are printed, with the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.kernel.image import KernelImage
from bootfuzz.kernel.pinned import resolve_kernel
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.boot import UnbuiltInitrd, kernel_image


def rate(plan: Callable[[], object], seconds: float) -> float:
    """Plans per second over about *seconds*."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            plan()
        count += 20
    return count / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="debian-6.1-cloud")
    ap.add_argument("--seconds", type=float, default=3.0, help="per round and side")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    image = kernel_image(resolve_kernel(args.kernel))
    case = BootCase(kernel=args.kernel, memory=256 << 20, initrd=InitrdSpec(1 << 20))
    platform = qemu_pc(case.memory)
    initrd = UnbuiltInitrd(1 << 20)

    def cached() -> object:
        return plan_boot(case, image, platform, initrd)

    def uncached() -> object:
        fresh: KernelImage = dataclasses.replace(image)  # no slice kept
        return plan_boot(case, fresh, platform, initrd)

    assert cached() == uncached()  # the same plan either way
    print(f"kernel {args.kernel} ({len(image.data)} bytes), 64-bit entry, 256 MiB, "
          f"{args.rounds} rounds of {args.seconds:g} s per side; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    pairs = []
    for i in range(args.rounds):
        a, b = rate(cached, args.seconds), rate(uncached, args.seconds)
        pairs.append((a, b))
        print(f"round {i}: cached {a:8.0f} plans/s   uncached {b:8.0f} plans/s   "
              f"ratio {a / b:5.1f}")
    med_a = statistics.median(a for a, _ in pairs)
    med_b = statistics.median(b for _, b in pairs)
    print(f"median: cached {med_a:.0f} plans/s, uncached {med_b:.0f} plans/s, "
          f"ratio {statistics.median(a / b for a, b in pairs):.1f}; "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
