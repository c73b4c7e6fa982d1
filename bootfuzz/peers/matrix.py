"""The boot matrix: kernels x entry paths x memory sizes x initrd formats x targets.

The full cross product of the default dimensions is 3 x 2 x 4 x 5 x 3 = 360 boots,
about an hour of TCG on a 2-core machine: that is ``--nightly``.  By default the
matrix runs a *covering array*: the fewest cells (chosen greedily, deterministically)
such that every pair of values of any two dimensions appears in at least one cell
that can run (strength 2, "pairwise", about 20-25 cells, a few minutes); ``--strength
3`` covers every triple (about 80-100 cells).  A pair no runnable cell can hold (say,
a target that cannot take an entry path) is shown as a skipped cell with its reason.

The architecture is an outer axis (``--arches``): each architecture has its own
dimensions (x86_64: the entry paths, QEMU pc sizes, our loader and QEMU's; aarch64 and
riscv64: the device-tree entry, 256M and 4G as two memory nodes around a hole, our
loader on qemu-virt and QEMU's own -kernel on virt) and its own covering array; the
pinned kernels of that architecture are its kernel dimension.

Every cell ends pass, fail, skip or error, always with its reason; the results go to
the terminal and to ``matrix.md``, ``matrix.html``, ``junit.xml`` and
``results.json`` in the output directory.
"""

from __future__ import annotations

import enum
import html
import itertools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bootfuzz import junit
from bootfuzz.arch import Arch
from bootfuzz.case import (
    HARNESS_CMDLINE,
    NO_INITRD,
    BootCase,
    EntryProtocol,
    InitrdSpec,
    harness_cmdline,
)
from bootfuzz.compression import Compression
from bootfuzz.errors import BootfuzzError, ConfigError, InfrastructureError
from bootfuzz.judge.verdict import Verdict
from bootfuzz.units import parse_size

#: Every entry path our loader has; QEMU's -kernel takes 64 (through its own 16-bit
#: setup) and PVH, so the others are skipped there with that reason.
ENTRIES: tuple[str, ...] = tuple(e.value for e in EntryProtocol)
#: 256M: small; 3583M/3584M: either side of QEMU pc's 3.5 GiB split
#: (PC_SPLIT_THRESHOLD = 0xE0000000 = 3584 MiB); 5G: RAM above 4 GiB.
MEMORIES: tuple[str, ...] = ("256M", "3583M", "3584M", "5G")
INITRDS: tuple[str, ...] = ("gzip", "xz", "lz4", "zstd", NO_INITRD)
TARGETS: tuple[str, ...] = ("ours:qemu-tcg", "qemu-direct:pc:tcg", "qemu-direct:microvm:tcg")
#: The real-loader matrix (``bootfuzz matrix --loaders``): our loader beside each real
#: loader (bootfuzz.peers.loaders), on entry 64, which stands for whatever entry each
#: loader takes itself; the x86 kernels only.
LOADER_TARGETS: tuple[str, ...] = ("ours:qemu-tcg", "grub-bios", "grub-bios-linux16",
                                   "grub-efi", "syslinux", "efi-stub", "systemd-boot")
LOADER_ENTRIES: tuple[str, ...] = (EntryProtocol.BOOT64.value,)
LOADER_KERNEL_ARCH = "amd64"
INITRD_PAYLOAD = 1 << 20
#: The device-tree architectures' own dimensions: one entry (the Image with x0/a1 = the
#: DTB), 256M and 4G described as two memory nodes around a 256 MiB hole, our loader
#: on qemu-virt and QEMU's own -kernel on virt (bootfuzz.peers.dt_diff).
DT_ENTRY = "dt"
HOLE_SUFFIX = "/hole"
DT_MEMORIES: tuple[str, ...] = ("256M", "4G" + HOLE_SUFFIX)
DT_TARGETS: tuple[str, ...] = ("ours:qemu-virt", "qemu-kernel:virt", "efi-stub:virt",
                                "u-boot:virt")
DT_INITRDS: tuple[str, ...] = ("gzip", "xz", "zstd", NO_INITRD)
#: Where "/hole" puts the hole: 2 GiB into RAM, 256 MiB long.
HOLE_OFFSET, HOLE_SIZE = 2 << 30, 256 << 20
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
    #: The outer axis: not a covering-array factor (each arch has its own dimensions).
    arch: str = Arch.X86_64.value

    @property
    def id(self) -> str:
        base = f"{self.kernel} {self.entry} {self.memory} {self.initrd} {self.target}"
        return base if self.arch == Arch.X86_64.value else f"{self.arch} {base}"

    @property
    def slug(self) -> str:
        return "-".join(v.replace(":", "_").replace("/", "_") for v in asdict(self).values())

    def case(self) -> BootCase:
        initrd = None if self.initrd == NO_INITRD else InitrdSpec(
            INITRD_PAYLOAD, Compression(self.initrd))
        arch = Arch(self.arch)
        if arch.device_tree:
            from bootfuzz.loader.virt import RAM_BASE

            hole = self.memory.endswith(HOLE_SUFFIX)
            return BootCase(kernel=self.kernel,
                            memory=parse_size(self.memory.removesuffix(HOLE_SUFFIX)),
                            cmdline=harness_cmdline(arch), initrd=initrd, arch=arch,
                            backend="qemu-virt",
                            mem_holes=((RAM_BASE[arch] + HOLE_OFFSET, HOLE_SIZE),) if hole
                            else ())
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
    arch: str = Arch.X86_64.value

    def factors(self) -> tuple[tuple[str, ...], ...]:
        return (self.kernels, self.entries, self.memories, self.initrds, self.targets)


def dt_targets(arch: str) -> tuple[str, ...]:
    """The device-tree targets *arch* has (efi-stub:virt: arm64 only)."""
    from bootfuzz.peers.dt_diff import peer_unsupported

    return tuple(t for t in DT_TARGETS if peer_unsupported(t, Arch(arch)) is None)


def static_skip(cell: Cell) -> str | None:
    """Why *cell* cannot run on its target, known without booting (None: it can)."""
    if Arch(cell.arch).device_tree:
        if cell.target not in DT_TARGETS:
            return f"{cell.target} does not boot {cell.arch} kernels"
        from bootfuzz.peers.dt_diff import peer_unsupported

        return peer_unsupported(cell.target, Arch(cell.arch))
    from bootfuzz.peers.targets import parse_target

    return parse_target(cell.target).unsupported(cell.case())


# --------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------


def full_product(dims: Dimensions) -> list[Cell]:
    return [Cell(k, e, m, i, t, dims.arch)
            for k, e, m, i, t in itertools.product(*dims.factors())]


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


def select_cells(dims: Dimensions, *, nightly: bool = False, strength: int = 2) -> list[Cell]:
    """The cells to run: the full product (*nightly*) or a covering array of *strength*.

    Every memory size and target is checked first, so a typo is one ConfigError
    naming it rather than a matrix of skipped cells.
    """
    from bootfuzz.peers.targets import parse_target

    for size in dims.memories:
        parse_size(size.removesuffix(HOLE_SUFFIX))
    for t in dims.targets:
        if not Arch(dims.arch).device_tree:
            parse_target(t)
    return full_product(dims) if nightly else covering_cells(dims, strength)


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
        if Arch(cell.arch).device_tree:
            return _run_dt_cell(cell, run_dir, timeout, silence_timeout, started)
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


def _run_dt_cell(cell: Cell, run_dir: Path, timeout: float, silence_timeout: float,
                 started: float) -> CellResult:
    """A device-tree cell: ours on qemu-virt, or a peer of bootfuzz.peers.dt_diff (QEMU's
    -kernel on virt, the EFI stub under edk2, U-Boot's booti)."""
    from bootfuzz.peers.dt_diff import run_ours, run_peer

    reason = static_skip(cell)
    if reason:
        return CellResult(cell, Outcome.SKIP, reason)
    if cell.target == DT_TARGETS[0]:
        run = run_ours(cell.case(), run_dir, timeout=timeout, silence_timeout=silence_timeout)
    else:
        run = run_peer(cell.case(), run_dir, timeout=timeout, silence_timeout=silence_timeout,
                       peer=cell.target)
    outcome = Outcome.PASS if run.verdict is Verdict.PASS else Outcome.FAIL
    return CellResult(cell, outcome, _summary(run), time.monotonic() - started, str(run_dir))


def warm_up(dims: Dimensions) -> None:
    """Fetch kernels and build the harness and initrds once, before the workers start."""
    from bootfuzz.guest.harness import build_harness
    from bootfuzz.guest.initrd import cached_initrd
    from bootfuzz.kernel.pinned import resolve_kernel

    for k in dims.kernels:
        resolve_kernel(k)
    if Arch(dims.arch).device_tree:
        from bootfuzz.guest.harness import build_dt_harness

        agent = build_dt_harness(dims.arch).agent
    else:
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

COLUMNS = ("arch", "kernel", "entry", "memory", "initrd", "target", "outcome", "time",
           "reason")


def _row(r: CellResult) -> tuple[str, ...]:
    """One table row; the reason on one line (tool errors quote multi-line output)."""
    return (r.cell.arch, *astuple(r.cell), r.outcome.value, f"{r.duration:.1f}s",
            " ".join(r.reason.split()))


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


_JUNIT_OUTCOME = {Outcome.PASS: junit.Outcome.PASSED, Outcome.FAIL: junit.Outcome.FAILURE,
                  Outcome.ERROR: junit.Outcome.ERROR, Outcome.SKIP: junit.Outcome.SKIPPED}


def junit_xml(results: Sequence[CellResult], name: str = "bootfuzz-matrix") -> str:
    """One testcase per cell, classed by target."""
    cases = [junit.Case(
        classname=f"bootfuzz.matrix.{r.cell.target}", name=r.cell.id,
        outcome=_JUNIT_OUTCOME[r.outcome],
        message=r.reason if r.outcome is Outcome.SKIP else _clip(r.reason, 500),
        text=r.reason, time=r.duration,
        system_out=f"run dir: {r.run_dir}" if r.run_dir else None,
    ) for r in results]
    return junit.junit_xml(junit.Suite(name, cases, sum(r.duration for r in results)))


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
