"""``bootfuzz matrix``: kernels x entries x memory x initrds x targets, in parallel."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bootfuzz.arch import Arch
from bootfuzz.case import NO_INITRD
from bootfuzz.cli.case_args import COMPRESSIONS, ENTRIES, KERNEL_HELP, count, seconds
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.errors import ConfigError
from bootfuzz.kernel.pinned import load_manifest
from bootfuzz.peers import matrix
from bootfuzz.peers.matrix import CellResult, Dimensions, Outcome

EPILOG = """\
By default a pairwise covering array of the dimensions runs (every pair of values of
any two dimensions in some cell); --nightly runs the full cross product.
exit status: 0 no cell failed, 1 a cell failed or errored, 2 bad input or usage,
3 infrastructure trouble before any cell ran (a kernel that cannot be fetched)."""
DEFAULT_OUT = "matrix-out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Run a matrix of boots on several targets in parallel and write a "
                     "table, matrix.md, matrix.html, junit.xml and results.json.")
    p.epilog = EPILOG
    s = p.add_argument_group("selection")
    s.add_argument("--nightly", action="store_true",
                   help="the full cross product (hours on TCG) instead of a covering array")
    s.add_argument("--strength", type=count, default=2, metavar="N",
                   help="cover every N-tuple of dimension values; default 2 (pairwise)")
    s.add_argument("--kernels", nargs="+", default=None, metavar="NAME",
                   help=f"each {KERNEL_HELP}; default: every pinned one")
    s.add_argument("--entries", nargs="+", default=list(matrix.ENTRIES), metavar="ENTRY",
                   choices=ENTRIES, help=f"entry protocols; default: {' '.join(matrix.ENTRIES)}")
    s.add_argument("--mem", nargs="+", default=list(matrix.MEMORIES), metavar="SIZE",
                   help=f"memory sizes; default: {' '.join(matrix.MEMORIES)}")
    s.add_argument("--initrds", nargs="+", default=list(matrix.INITRDS), metavar="FORMAT",
                   choices=[*COMPRESSIONS, NO_INITRD],
                   help=f"initrd compressions (none: an uncompressed cpio), or {NO_INITRD} for no "
                   f"initrd; default: "
                   f"{' '.join(matrix.INITRDS)}")
    s.add_argument("--targets", nargs="+", default=list(matrix.TARGETS), metavar="TARGET",
                   help=f"default: {' '.join(matrix.TARGETS)}")
    s.add_argument("--loaders", action="store_true",
                   help="the real-loader matrix: targets "
                   f"{' '.join(matrix.LOADER_TARGETS)}, entry "
                   f"{' '.join(matrix.LOADER_ENTRIES)} (each loader boots its own way), the "
                   f"{matrix.LOADER_KERNEL_ARCH} kernels; --targets, --entries and --kernels "
                   "still choose")
    s.add_argument("--arches", nargs="+", default=[Arch.X86_64.value], metavar="ARCH",
                   choices=[a.value for a in Arch],
                   help="the architecture axis: x86_64, aarch64, riscv64; each takes its own "
                   f"dimensions (aarch64/riscv64: entry {matrix.DT_ENTRY}, memory "
                   f"{' '.join(matrix.DT_MEMORIES)}, initrds {' '.join(matrix.DT_INITRDS)}, "
                   f"targets {' '.join(matrix.DT_TARGETS)}, efi-stub:virt on aarch64 "
                   "only) and the pinned kernels of that "
                   "architecture; default x86_64")
    s.add_argument("--list", action="store_true", help="print the selected cells and stop")
    r = p.add_argument_group("run")
    r.add_argument("--jobs", "-j", type=count, default=os.cpu_count() or 1, metavar="N",
                   help="boots at once; default os.cpu_count()")
    r.add_argument("--timeout", type=seconds, default=matrix.CELL_TIMEOUT, metavar="SECONDS",
                   help=f"per boot; default {matrix.CELL_TIMEOUT:.0f}")
    r.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output directory for reports and runs; default {DEFAULT_OUT}")


def dimensions(args: argparse.Namespace) -> Dimensions:
    kernels, entries, targets = args.kernels, args.entries, args.targets
    if getattr(args, "loaders", False):
        kernels = kernels or [name for name, k in load_manifest().items()
                              if k.arch == matrix.LOADER_KERNEL_ARCH]
        if entries == list(matrix.ENTRIES):
            entries = list(matrix.LOADER_ENTRIES)
        if targets == list(matrix.TARGETS):
            targets = list(matrix.LOADER_TARGETS)
    x86 = [name for name, k in load_manifest().items() if k.arch == Arch.X86_64.debian]
    return Dimensions(tuple(kernels or x86), tuple(entries),
                      tuple(args.mem), tuple(args.initrds), tuple(targets))


def arch_dimensions(args: argparse.Namespace) -> list[Dimensions]:
    """One Dimensions per architecture of --arches (x86_64 from the other options)."""
    out = []
    for name in getattr(args, "arches", [Arch.X86_64.value]):
        arch = Arch(name)
        if not arch.device_tree:
            out.append(dimensions(args))
            continue
        pinned = [n for n, k in load_manifest().items() if k.arch == arch.debian]
        kernels = [k for k in (args.kernels or pinned) if k in pinned]
        if not kernels:
            raise ConfigError(f"no pinned {arch.value} kernel among the selected kernels")
        out.append(Dimensions(tuple(kernels), (matrix.DT_ENTRY,), matrix.DT_MEMORIES,
                              matrix.DT_INITRDS, matrix.dt_targets(arch.value), arch.value))
    return out


def _progress(done: int, total: int, r: CellResult) -> None:
    print(f"[{done}/{total}] {r.outcome.value:<5} {r.cell.id} ({r.duration:.1f} s)", flush=True)


def run(args: argparse.Namespace) -> int:
    cells = [c for dims in arch_dimensions(args)
             for c in matrix.select_cells(dims, nightly=args.nightly, strength=args.strength)]
    if args.list:
        for c in cells:
            print(c.id)
        print(f"{len(cells)} cells")
        return ExitStatus.PASS
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be at least 1")
    for arch in sorted({c.arch for c in cells}):
        mine = [c for c in cells if c.arch == arch]
        matrix.warm_up(Dimensions(tuple(sorted({c.kernel for c in mine})),
                                  initrds=tuple(sorted({c.initrd for c in mine})), arch=arch))
    out = Path(args.out)
    print(f"{len(cells)} cells, {args.jobs} at a time; runs and reports in {out}")
    results = matrix.run_matrix(cells, out, args.jobs, _progress, timeout=args.timeout)
    files = matrix.write_reports(results, out)
    print()
    print(matrix.terminal_table(results))
    print("reports: " + ", ".join(str(p) for p in files.values()))
    tally = matrix.counts(results)
    failed = tally[Outcome.FAIL] or tally[Outcome.ERROR]
    return ExitStatus.FINDING if failed else ExitStatus.PASS
