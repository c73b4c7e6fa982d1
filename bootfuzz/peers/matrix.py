"""The boot matrix: kernels x entry paths x memory sizes x initrd formats x targets.

The full cross product of the default dimensions is 3 x 2 x 4 x 5 x 3 = 360 boots,
about an hour of TCG on a 2-core machine: that is ``--nightly``.  By default the
matrix runs a *covering array*: the fewest cells (chosen greedily, deterministically)
such that every pair of values of any two dimensions appears in at least one cell
that can run (strength 2, "pairwise", about 20-25 cells, a few minutes); ``--strength
3`` covers every triple (about 80-100 cells).  A pair no runnable cell can hold (say,
a target that cannot take an entry path) is shown as a skipped cell with its reason.

Every cell ends pass, fail, skip or error, always with its reason; the results go to
the terminal and to ``matrix.md``, ``matrix.html``, ``junit.xml`` and
``results.json`` in the output directory.
"""

from __future__ import annotations

import argparse
import enum
import html
import itertools
import json
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bootfuzz.case import HARNESS_CMDLINE, BootCase, EntryProtocol
from bootfuzz.errors import BootfuzzError, ConfigError, InfrastructureError
from bootfuzz.guest.initramfs import Compression, InitrdSpec
from bootfuzz.judge.oracles import Verdict
from bootfuzz.units import parse_size

EXIT_PASS, EXIT_FINDING, EXIT_USAGE, EXIT_INFRASTRUCTURE = 0, 1, 2, 3

#: Every entry path our loader has; QEMU's -kernel takes 64 (through its own 16-bit
#: setup) and PVH, so the others are skipped there with that reason.
ENTRIES: tuple[str, ...] = tuple(e.value for e in EntryProtocol)
#: 256M: small; 3583M/3584M: either side of QEMU pc's 3.5 GiB split
#: (PC_SPLIT_THRESHOLD = 0xE0000000 = 3584 MiB); 5G: RAM above 4 GiB.
MEMORIES: tuple[str, ...] = ("256M", "3583M", "3584M", "5G")
NO_INITRD = "none"
INITRDS: tuple[str, ...] = ("gzip", "xz", "lz4", "zstd", NO_INITRD)
TARGETS: tuple[str, ...] = ("ours:qemu-tcg", "qemu-direct:pc:tcg", "qemu-direct:microvm:tcg")
INITRD_PAYLOAD = 1 << 20
#: Per boot.  TCG boots take 2-15 s here; the 5G xz-kernel ones the longest.
CELL_TIMEOUT = 180.0
CELL_SILENCE_TIMEOUT = 60.0


class Outcome(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"  # the machine, not the kernel: QEMU missing, a fetch failed


@dataclass(frozen=True, order=True)
class Cell:
    kernel: str
    entry: str
    memory: str
    initrd: str
    target: str

    @property
    def id(self) -> str:
        return f"{self.kernel} {self.entry} {self.memory} {self.initrd} {self.target}"

    @property
    def slug(self) -> str:
        return "-".join(v.replace(":", "_").replace("/", "_") for v in asdict(self).values())

    def case(self) -> BootCase:
        initrd = None if self.initrd == NO_INITRD else InitrdSpec(
            INITRD_PAYLOAD, Compression(self.initrd))
        return BootCase(kernel=self.kernel, memory=parse_size(self.memory),
                        cmdline=HARNESS_CMDLINE, initrd=initrd,
                        entry=EntryProtocol(self.entry))


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    outcome: Outcome
    reason: str
    duration: float = 0.0
    run_dir: str | None = None


@dataclass(frozen=True)
class Dimensions:
    kernels: tuple[str, ...]
    entries: tuple[str, ...] = ENTRIES
    memories: tuple[str, ...] = MEMORIES
    initrds: tuple[str, ...] = INITRDS
    targets: tuple[str, ...] = TARGETS

    def factors(self) -> tuple[tuple[str, ...], ...]:
        return (self.kernels, self.entries, self.memories, self.initrds, self.targets)


def static_skip(cell: Cell) -> str | None:
    """Why *cell* cannot run on its target, known without booting (None: it can)."""
    from bootfuzz.peers.targets import parse_target

    return parse_target(cell.target).unsupported(cell.case())


# --------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------


def full_product(dims: Dimensions) -> list[Cell]:
    return [Cell(*combo) for combo in itertools.product(*dims.factors())]


def covering_cells(dims: Dimensions, strength: int = 2,
                   skip: Callable[[Cell], str | None] = static_skip) -> list[Cell]:
    """A small set of cells covering every *strength*-tuple of values that some
    runnable cell holds, plus one skipped cell per tuple no runnable cell holds.

    Greedy: repeatedly take the runnable cell (in product order) that covers the
    most uncovered tuples.  Deterministic, so a matrix is reproducible.
    """
    n = len(dims.factors())
    if not 1 <= strength <= n:
        raise ConfigError(f"strength {strength} is not between 1 and {n}")
    cells = full_product(dims)
    reasons = {c: skip(c) for c in cells}
    runnable = [c for c in cells if reasons[c] is None]
    axes = list(itertools.combinations(range(n), strength))

    def tuples(c: Cell) -> set[tuple[tuple[int, str], ...]]:
        values = astuple(c)
        return {tuple((i, values[i]) for i in ax) for ax in axes}

    covers = {c: tuples(c) for c in cells}
    coverable = set().union(*(covers[c] for c in runnable)) if runnable else set()
    uncovered = set(coverable)
    chosen: list[Cell] = []
    while uncovered:
        best = max(runnable, key=lambda c: len(covers[c] & uncovered))
        chosen.append(best)
        uncovered -= covers[best]
    impossible = set().union(*covers.values()) - coverable
    for c in cells:  # one skipped cell (with its reason) per tuple nothing can run
        if reasons[c] is not None and covers[c] & impossible:
            chosen.append(c)
            impossible -= covers[c]
    return sorted(chosen)


def astuple(c: Cell) -> tuple[str, ...]:
    return (c.kernel, c.entry, c.memory, c.initrd, c.target)


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def _summary(run: Any) -> str:
    bad = [r for r in run.oracles if r.verdict is not Verdict.PASS]
    if not bad:
        return f"all {len(run.oracles)} oracles pass"
    return "; ".join(
        f"{r.name} {r.verdict.value}: expected {r.expected.splitlines()[0] if r.expected else ''}"
        f", observed {r.observed.splitlines()[0] if r.observed else ''}"
        + (f" ({r.detail})" if r.detail else "")
        for r in bad
    )


def run_cell(cell: Cell, out_dir: Path, timeout: float = CELL_TIMEOUT,
             silence_timeout: float = CELL_SILENCE_TIMEOUT) -> CellResult:
    """Boot one cell; never raises (a broken cell must not stop the matrix)."""
    from bootfuzz.peers.targets import parse_target

    started = time.monotonic()
    run_dir = out_dir / "runs" / cell.slug
    try:
        target = parse_target(cell.target)
        case = cell.case()
        reason = target.unsupported(case)
        if reason:
            return CellResult(cell, Outcome.SKIP, reason)
        run = target.run(case, run_dir, timeout=timeout, silence_timeout=silence_timeout)
    except ConfigError as e:
        return CellResult(cell, Outcome.SKIP, f"cannot run: {e}", time.monotonic() - started)
    except InfrastructureError as e:
        return CellResult(cell, Outcome.ERROR, str(e), time.monotonic() - started, str(run_dir))
    except (BootfuzzError, Exception) as e:  # a bootfuzz bug: report it, keep going
        return CellResult(cell, Outcome.ERROR, f"internal error: {e!r}",
                          time.monotonic() - started, str(run_dir))
    outcome = Outcome.PASS if run.verdict is Verdict.PASS else Outcome.FAIL
    return CellResult(cell, outcome, _summary(run), run.duration, str(run_dir))


def warm_up(dims: Dimensions) -> None:
    """Fetch kernels and build the harness and initrds once, before the workers start."""
    from bootfuzz.guest.harness import build_harness
    from bootfuzz.guest.initramfs import cached_initrd
    from bootfuzz.kernel.pinned import resolve_kernel

    for k in dims.kernels:
        resolve_kernel(k)
    agent = build_harness().agent
    for c in dims.initrds:
        if c != NO_INITRD:
            cached_initrd(InitrdSpec(INITRD_PAYLOAD, Compression(c)), agent)


def run_matrix(cells: Sequence[Cell], out_dir: Path, jobs: int,
               progress: Callable[[int, int, CellResult], None] | None = None,
               timeout: float = CELL_TIMEOUT) -> list[CellResult]:
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[CellResult] = []
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_cell, c, out_dir, timeout) for c in cells]
        for fut in as_completed(futures):
            result = fut.result()
            results.append(result)
            if progress:
                progress(len(results), len(cells), result)
    return sorted(results, key=lambda r: r.cell)


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------

COLUMNS = ("kernel", "entry", "memory", "initrd", "target", "outcome", "time", "reason")


def _row(r: CellResult) -> tuple[str, ...]:
    """One table row; the reason on one line (tool errors quote multi-line output)."""
    return (*astuple(r.cell), r.outcome.value, f"{r.duration:.1f}s", " ".join(r.reason.split()))


def counts(results: Iterable[CellResult]) -> dict[Outcome, int]:
    out = dict.fromkeys(Outcome, 0)
    for r in results:
        out[r.outcome] += 1
    return out


def _count_line(results: Sequence[CellResult]) -> str:
    c = counts(results)
    return f"{len(results)} cells: " + ", ".join(f"{c[o]} {o.value}" for o in Outcome)


def terminal_table(results: Sequence[CellResult], reason_width: int = 70) -> str:
    rows = [(*r[:-1], _clip(r[-1], reason_width)) for r in map(_row, results)]
    widths = [max(len(x) for x in col) for col in zip(COLUMNS, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*COLUMNS), line.format(*("-" * w for w in widths))]
    out += [line.format(*r) for r in rows]
    return "\n".join([*out, "", _count_line(results)])


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def markdown(results: Sequence[CellResult], title: str = "bootfuzz boot matrix") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [f"# {title}", "", _count_line(results), "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(cell(x) for x in _row(r)) + " |" for r in results]
    return "\n".join(out) + "\n"


_CSS = ("body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:2px 6px;vertical-align:top}"
        ".pass{background:#cfc}.fail{background:#fcc}.skip{background:#eee}"
        ".error{background:#fc9}")


def html_report(results: Sequence[CellResult], title: str = "bootfuzz boot matrix") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = []
    for r in results:
        tds = "".join(f"<td>{html.escape(x)}</td>" for x in _row(r))
        body.append(f'<tr class="{r.outcome.value}">{tds}</tr>')
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(_count_line(results))}</p><table><tr>{head}</tr>\n"
            + "\n".join(body) + "\n</table></body></html>\n")


def junit_xml(results: Sequence[CellResult], name: str = "bootfuzz-matrix") -> str:
    c = counts(results)
    suite = ET.Element("testsuite", {
        "name": name, "tests": str(len(results)), "failures": str(c[Outcome.FAIL]),
        "errors": str(c[Outcome.ERROR]), "skipped": str(c[Outcome.SKIP]),
        "time": f"{sum(r.duration for r in results):.3f}",
    })
    for r in results:
        tc = ET.SubElement(suite, "testcase", {
            "classname": f"bootfuzz.matrix.{r.cell.target}", "name": r.cell.id,
            "time": f"{r.duration:.3f}",
        })
        if r.outcome is Outcome.FAIL:
            ET.SubElement(tc, "failure", {"message": _clip(r.reason, 500)}).text = r.reason
        elif r.outcome is Outcome.ERROR:
            ET.SubElement(tc, "error", {"message": _clip(r.reason, 500)}).text = r.reason
        elif r.outcome is Outcome.SKIP:
            ET.SubElement(tc, "skipped", {"message": r.reason})
        if r.run_dir:
            ET.SubElement(tc, "system-out").text = f"run dir: {r.run_dir}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def results_json(results: Sequence[CellResult]) -> list[dict[str, Any]]:
    return [{**asdict(r.cell), "outcome": r.outcome.value, "reason": r.reason,
             "duration": round(r.duration, 3), "run_dir": r.run_dir} for r in results]


def write_reports(results: Sequence[CellResult], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": (out_dir / "matrix.md", markdown(results)),
        "html": (out_dir / "matrix.html", html_report(results)),
        "junit": (out_dir / "junit.xml", junit_xml(results)),
        "json": (out_dir / "results.json", json.dumps(results_json(results), indent=1) + "\n"),
    }
    for path, text in files.values():
        path.write_text(text)
    return {k: p for k, (p, _) in files.items()}


# --------------------------------------------------------------------------------------
# Command line (wired into bootfuzz.cli.main by the lead)
# --------------------------------------------------------------------------------------

_EPILOG = """\
By default a pairwise covering array of the dimensions runs (every pair of values of
any two dimensions in some cell); --nightly runs the full cross product.
exit status: 0 no cell failed, 1 a cell failed or errored, 2 bad input or usage,
3 infrastructure trouble before any cell ran (a kernel that cannot be fetched)."""


def _pinned() -> tuple[str, ...]:
    from bootfuzz.kernel.pinned import load_manifest

    return tuple(load_manifest())


def add_parser(subparsers: Any) -> None:
    """Register ``bootfuzz matrix`` on *subparsers* (cli.py's add_subparsers action)."""
    p = subparsers.add_parser(
        "matrix", help="boot kernels x entries x memory x initrds x targets in parallel",
        description="Run a matrix of boots on several targets in parallel and write a "
        "table, matrix.md, matrix.html, junit.xml and results.json.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_argument_group("selection")
    s.add_argument("--nightly", action="store_true",
                   help="the full cross product (hours on TCG) instead of a covering array")
    s.add_argument("--strength", type=int, default=2, metavar="N",
                   help="cover every N-tuple of dimension values; default 2 (pairwise)")
    s.add_argument("--kernels", nargs="+", default=None, metavar="NAME",
                   help="kernels (pinned names or bzImage paths); default: every pinned one")
    s.add_argument("--entries", nargs="+", default=list(ENTRIES), metavar="ENTRY",
                   choices=[e.value for e in EntryProtocol],
                   help=f"entry protocols; default: {' '.join(ENTRIES)}")
    s.add_argument("--mem", nargs="+", default=list(MEMORIES), metavar="SIZE",
                   help=f"memory sizes; default: {' '.join(MEMORIES)}")
    s.add_argument("--initrds", nargs="+", default=list(INITRDS), metavar="FORMAT",
                   choices=[*(c.value for c in Compression), NO_INITRD],
                   help=f"initrd compressions or none; default: {' '.join(INITRDS)}")
    s.add_argument("--targets", nargs="+", default=list(TARGETS), metavar="TARGET",
                   help=f"default: {' '.join(TARGETS)}")
    s.add_argument("--list", action="store_true", help="print the selected cells and stop")
    r = p.add_argument_group("run")
    r.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="boots at once; default os.cpu_count()")
    r.add_argument("--timeout", type=float, default=CELL_TIMEOUT, metavar="SECONDS",
                   help=f"per boot; default {CELL_TIMEOUT:.0f}")
    r.add_argument("--out", default="matrix-out", metavar="DIR",
                   help="output directory for reports and runs; default matrix-out")


def select(args: argparse.Namespace) -> list[Cell]:
    from bootfuzz.peers.targets import parse_target

    for size in args.mem:
        parse_size(size)  # a bad size is a ConfigError naming it
    for t in args.targets:
        parse_target(t)
    dims = Dimensions(tuple(args.kernels or _pinned()), tuple(args.entries), tuple(args.mem),
                      tuple(args.initrds), tuple(args.targets))
    if args.nightly:
        return full_product(dims)
    return covering_cells(dims, args.strength)


def run(args: argparse.Namespace) -> int:
    cells = select(args)
    if args.list:
        for c in cells:
            print(c.id)
        print(f"{len(cells)} cells")
        return EXIT_PASS
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be at least 1")
    dims = Dimensions(tuple(sorted({c.kernel for c in cells})),
                      initrds=tuple(sorted({c.initrd for c in cells})))
    warm_up(dims)
    out = Path(args.out)
    print(f"{len(cells)} cells, {args.jobs} at a time; runs and reports in {out}")

    def progress(done: int, total: int, r: CellResult) -> None:
        print(f"[{done}/{total}] {r.outcome.value:<5} {r.cell.id} ({r.duration:.1f} s)",
              flush=True)

    results = run_matrix(cells, out, args.jobs, progress, timeout=args.timeout)
    files = write_reports(results, out)
    print()
    print(terminal_table(results))
    print("reports: " + ", ".join(str(p) for p in files.values()))
    tally = counts(results)
    return EXIT_FINDING if tally[Outcome.FAIL] or tally[Outcome.ERROR] else EXIT_PASS
