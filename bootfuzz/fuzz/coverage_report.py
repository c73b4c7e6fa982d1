"""The coverage report of a guided campaign: what it reached, by which case first, and when.

Reads ``OUT/campaign/coverage.jsonl`` (bootfuzz.fuzz.coverage_log) where the
campaign wrote one, else the campaign's corpus (``OUT/campaign/corpus/``,
bootfuzz.fuzz.corpus: each entry's new blocks, named here with the kernel's
symbols), and writes ``report.json`` and ``report.html``: one self-contained
page (inline CSS and SVG, no script) that opens anywhere and archives as one
file.  The page shows, per kernel and entry path, the boot-path functions
reached (every kernel function the boots ran, from the entry to our agent's
power-off) and which case first reached each; a watch list of the boot-protocol
functions across all paths; and the growth of distinct functions and blocks
over the campaign's time.

The plots are drawn here as SVG step lines: a few hundred points need no plotting
library, and the page then needs nothing beside it.  The model (build_report) is
pure; load_report and write_report touch files.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootfuzz.errors import StorageError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.coverage_log import COVERAGE_LOG_NAME, CoverageEntry, read_coverage_log
from bootfuzz.kernel.symbols import SymbolTable

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
#: Names of the functions that read what a boot loader hands over (the watch list).
WATCHED = re.compile(
    r"e820|initrd|initramfs|rootfs|setup_data|boot_params|bootdata|cmdline|kaslr|"
    r"x86_64_start|setup_arch|early_reserve|reserve_(?:initrd|brk|bios|ebda)|"
    r"populate_rootfs|unpack|decompress_method|gunzip|unlz4|unxz|unzstd|bunzip|unlzma|unlzo|"
    r"memblock_x86|parse_setup|pvh|hvm_start|xen_start"
)


@dataclass(frozen=True)
class FirstReach:
    """A function and the case that reached it first on one path."""

    name: str
    case: int
    #: Seconds into the campaign (from its first coverage line).
    at: float


@dataclass(frozen=True)
class PathReport:
    """One kernel and entry path: what its cases reached, and who reached it first."""

    kernel: str
    kernel_sha256: str
    entry: str
    blocks: int
    #: Cases that reached something new on this path, in time order.
    cases: tuple[int, ...]
    functions: tuple[FirstReach, ...]  # in the order they were first reached

    @property
    def label(self) -> str:
        return f"{self.kernel} / entry {self.entry}"


@dataclass(frozen=True)
class GrowthPoint:
    """The campaign's distinct coverage after one more line of the log."""

    at: float
    case: int
    #: Distinct (kernel, block) and (kernel, function) pairs over all paths so far.
    blocks: int
    functions: int
    #: The same, per kernel name.
    per_kernel: tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class CoverageReport:
    paths: tuple[PathReport, ...]
    growth: tuple[GrowthPoint, ...]
    started: float  # when campaign time 0 was (Unix time, or 0 for a corpus)
    lines: int
    #: Where the data came from: per path (the coverage log) or per kernel (a corpus,
    #: whose entries hold what was new for their kernel, whatever their entry path).
    source: str = "log"


def build_report(entries: Iterable[CoverageEntry], origin: float | None = None
                 ) -> CoverageReport:
    """The report of a log's entries (any order: shards' lines are sorted by time);
    times count from *origin* (default: the first entry)."""
    ordered = sorted(entries, key=lambda e: (e.at, e.case))
    started = origin if origin is not None else ordered[0].at if ordered else 0.0
    path_blocks: dict[tuple[str, str], set[int]] = {}
    path_funcs: dict[tuple[str, str], dict[str, FirstReach]] = {}
    path_cases: dict[tuple[str, str], list[int]] = {}
    names: dict[str, str] = {}  # kernel sha256 -> the name the campaign used
    all_blocks: dict[str, set[int]] = {}
    all_funcs: dict[str, set[str]] = {}
    growth = []
    for e in ordered:
        key = (e.kernel_sha256, e.entry)
        names.setdefault(e.kernel_sha256, e.kernel)
        path_blocks.setdefault(key, set()).update(e.new_blocks)
        firsts = path_funcs.setdefault(key, {})
        for name in e.new_functions:
            firsts.setdefault(name, FirstReach(name, e.case, e.at - started))
        cases = path_cases.setdefault(key, [])
        if e.case not in cases:
            cases.append(e.case)
        all_blocks.setdefault(e.kernel_sha256, set()).update(e.new_blocks)
        all_funcs.setdefault(e.kernel_sha256, set()).update(e.new_functions)
        growth.append(GrowthPoint(
            at=e.at - started, case=e.case,
            blocks=sum(len(b) for b in all_blocks.values()),
            functions=sum(len(f) for f in all_funcs.values()),
            per_kernel=tuple((names[sha], len(all_blocks[sha]), len(all_funcs[sha]))
                             for sha in sorted(all_blocks, key=lambda s: names[s])),
        ))
    paths = tuple(
        PathReport(names[sha], sha, entry, len(path_blocks[(sha, entry)]),
                   tuple(path_cases[(sha, entry)]),
                   tuple(sorted(path_funcs[(sha, entry)].values(), key=lambda f: (f.at, f.name))))
        for sha, entry in sorted(path_blocks, key=lambda k: (names[k[0]], k[1]))
    )
    return CoverageReport(paths, tuple(growth), started, len(ordered))


def report_json(report: CoverageReport) -> dict[str, Any]:
    return {
        "source": report.source,
        "started": report.started,
        "lines": report.lines,
        "paths": [{
            "kernel": p.kernel, "kernel_sha256": p.kernel_sha256, "entry": p.entry,
            "blocks": p.blocks, "functions_reached": len(p.functions), "cases": list(p.cases),
            "functions": {f.name: {"first_case": f.case, "at": round(f.at, 3)}
                          for f in p.functions},
        } for p in report.paths],
        "growth": [{
            "at": round(g.at, 3), "case": g.case, "blocks": g.blocks, "functions": g.functions,
            "per_kernel": {k: {"blocks": b, "functions": f} for k, b, f in g.per_kernel},
        } for g in report.growth],
    }


# ---- HTML ----

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6em 0}
th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f3f3f3;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.none{color:#bbb}code{font-size:.95em}
.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}
.card b{display:block;font-size:1.6em}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
.late{background:#fff6d6}table.watch{font-size:12px}table.watch td,table.watch th{padding:.2em .4em}
svg text{font:12px system-ui,sans-serif;fill:#333}
"""
#: Time axis steps, seconds: the first that gives at most six ticks is used.
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _e(text: object) -> str:
    return html.escape(str(text))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min" if sec == 0 else f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above *value*."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def growth_svg(title: str, series: Sequence[tuple[str, Sequence[tuple[float, int]]]],
               width: int = 860, height: int = 260) -> str:
    """A step plot of cumulative counts over campaign time, one line per series."""
    left, right, top, bottom = 64, 260, 28, 36
    pw, ph = width - left - right, height - top - bottom
    t_max = max((t for _, pts in series for t, _ in pts), default=0.0) or 1.0
    y_max = _nice_max(max((v for _, pts in series for _, v in pts), default=1) or 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="{_e(title)}">',
           f'<text x="{left}" y="16" style="font-weight:600">{_e(title)}</text>']
    for i in range(5):
        v = y_max * i // 4
        y = top + ph - ph * i / 4
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:,}</text>')
    step = next((s for s in _TIME_STEPS if t_max / s <= 6), t_max / 4)
    t = 0.0
    while t <= t_max + 1e-9:
        x = left + pw * t / t_max
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">'
                   f'{_e(_duration(t))}</text>')
        t += step
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#999"/>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" '
               'stroke="#999"/>')
    for n, (name, pts) in enumerate(series):
        colour = _COLOURS[n % len(_COLOURS)]
        coords: list[str] = []
        last_y = None
        for t, v in pts:
            x = left + pw * t / t_max
            y = top + ph - ph * v / y_max
            if last_y is not None:
                coords.append(f"{x:.1f},{last_y:.1f}")
            coords.append(f"{x:.1f},{y:.1f}")
            last_y = y
        if pts and last_y is not None:
            coords.append(f"{left + pw:.1f},{last_y:.1f}")
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{" ".join(coords)}"/>')
        ly = top + 14 + 18 * n
        out.append(f'<line x1="{left + pw + 12}" x2="{left + pw + 30}" y1="{ly - 4}" '
                   f'y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>')
        final = pts[-1][1] if pts else 0
        out.append(f'<text x="{left + pw + 36}" y="{ly}">{_e(name)} ({final:,})</text>')
    out.append("</svg>")
    return "\n".join(out)


def _series(report: CoverageReport, functions: bool, since_first: bool = False
            ) -> list[tuple[str, list[tuple[float, int]]]]:
    """Cumulative counts over time: all kernels, then each kernel (when several).
    With *since_first*, what each kernel gained after its first case (the first case
    of a boot reaches nearly everything; what fuzzing adds is the rest)."""
    first: dict[str, int] = {}
    total: list[tuple[float, int]] = []
    per_kernel: dict[str, list[tuple[float, int]]] = {}
    for g in report.growth:
        now = 0
        for k, b, f in g.per_kernel:
            value = f if functions else b
            base = first.setdefault(k, value) if since_first else 0
            per_kernel.setdefault(k, []).append((g.at, value - base))
            now += value - base
        total.append((g.at, now))
    series = [("all kernels", total)]
    if len(per_kernel) > 1:
        series += sorted(per_kernel.items())
    return series


def _watch_table(report: CoverageReport) -> str:
    watched = sorted({f.name for p in report.paths for f in p.functions if WATCHED.search(f.name)})
    if not watched:
        return "<p>No boot-protocol function was reached.</p>"
    if report.source == "corpus":
        return _watch_table_per_kernel(report, watched)
    firsts = {p.label: {f.name: f for f in p.functions} for p in report.paths}
    head = "".join(f"<th>{_e(p.kernel)}<br>entry {_e(p.entry)}</th>" for p in report.paths)
    rows = []
    for name in watched:
        cells = []
        for p in report.paths:
            f = firsts[p.label].get(name)
            if f is None:
                cells.append('<td class="none">not reached</td>')
            else:
                late = ' class="late"' if f.case != p.cases[0] else ""
                cells.append(f"<td{late}>case {f.case} <small>at {_e(_duration(f.at))}</small>"
                             "</td>")
        rows.append(f"<tr><td><code>{_e(name)}</code></td>{''.join(cells)}</tr>")
    return (f'<table class="watch"><tr><th>function</th>{head}</tr>\n' + "\n".join(rows)
            + "</table>")


def _watch_table_per_kernel(report: CoverageReport, watched: Sequence[str]) -> str:
    """From a corpus only the first case per kernel is known: one column per kernel,
    naming that case's entry path (another path's reaching it later is not recorded)."""
    kernels = sorted({p.kernel for p in report.paths})
    first: dict[tuple[str, str], tuple[FirstReach, PathReport]] = {}
    for p in report.paths:
        for f in p.functions:
            key = (p.kernel, f.name)
            if key not in first or f.at < first[key][0].at:
                first[key] = (f, p)
    opening: dict[str, FirstReach] = {}  # each kernel's earliest case
    for (kernel, _), (f, _) in first.items():
        if kernel not in opening or f.at < opening[kernel].at:
            opening[kernel] = f
    head = "".join(f"<th>{_e(k)}</th>" for k in kernels)
    rows = []
    for name in watched:
        cells = []
        for k in kernels:
            hit = first.get((k, name))
            if hit is None:
                cells.append('<td class="none">not reached</td>')
                continue
            f, p = hit
            late = ' class="late"' if f.case != opening[k].case else ""
            cells.append(f"<td{late}>case {f.case} <small>(entry {_e(p.entry)}) at "
                         f"{_e(_duration(f.at))}</small></td>")
        rows.append(f"<tr><td><code>{_e(name)}</code></td>{''.join(cells)}</tr>")
    return (f'<table class="watch"><tr><th>function</th>{head}</tr>\n' + "\n".join(rows)
            + "</table>")


def _path_section(p: PathReport) -> str:
    first = p.cases[0]
    late = [f for f in p.functions if f.case != first]
    rows_late = "\n".join(
        f'<tr class="late"><td><code>{_e(f.name)}</code></td><td class="n">{f.case}</td>'
        f"<td>{_e(_duration(f.at))}</td></tr>" for f in late)
    rows_all = "\n".join(
        f"<tr><td><code>{_e(f.name)}</code></td><td class=\"n\">{f.case}</td>"
        f"<td>{_e(_duration(f.at))}</td></tr>" for f in sorted(p.functions, key=lambda f: f.name))
    head = "<tr><th>function</th><th>first case</th><th>reached at</th></tr>"
    return (
        f"<h3>{_e(p.label)}</h3>"
        f"<p>{len(p.functions):,} functions, {p.blocks:,} blocks, {len(p.cases)} case(s) "
        f"added coverage; case {first} reached {len(p.functions) - len(late):,} of the "
        f"functions first.</p>"
        f"<details open><summary>{len(late):,} functions first reached by a later case"
        f"</summary><table>{head}\n{rows_late}</table></details>"
        f"<details><summary>all {len(p.functions):,} functions, by name</summary>"
        f"<table>{head}\n{rows_all}</table></details>"
    )


def _source_note(report: CoverageReport) -> str:
    if report.source != "corpus":
        return ""
    return ("<p>From the campaign's corpus: each entry holds the blocks new for its kernel, "
            "so a path lists the functions that cases of that entry path reached first for "
            "the kernel.</p>")


def report_html(report: CoverageReport, source: str) -> str:
    total_functions = report.growth[-1].functions if report.growth else 0
    total_blocks = report.growth[-1].blocks if report.growth else 0
    span = report.growth[-1].at if report.growth else 0.0
    functions_header = ("functions first reached" if report.source == "corpus"
                        else "functions")
    summary_rows = "\n".join(
        f"<tr><td>{_e(p.kernel)}</td><td>{_e(p.entry)}</td>"
        f'<td class="n">{len(p.functions):,}</td><td class="n">{p.blocks:,}</td>'
        f'<td class="n">{len(p.cases)}</td><td class="n">{p.cases[0]}</td>'
        f'<td class="n">{sum(1 for f in p.functions if f.case != p.cases[0]):,}</td></tr>'
        for p in report.paths)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>bootfuzz coverage report</title><style>{_CSS}</style></head><body>
<h1>bootfuzz coverage report</h1>
<p class="sub">{_e(source)}: {report.lines} coverage lines over {_e(_duration(span))}.
Boot-path functions are the kernel functions a boot ran, from its entry to our agent's
power-off; blocks are KASLR-normalized kernel block offsets (QEMU-TCG plugin).</p>
<div class="cards">
<div class="card"><b>{total_functions:,}</b>kernel functions</div>
<div class="card"><b>{total_blocks:,}</b>kernel blocks</div>
<div class="card"><b>{len(report.paths)}</b>kernel-and-entry paths</div>
</div>
<h2>Boot-path functions per kernel and entry path</h2>
{_source_note(report)}
<table><tr><th>kernel</th><th>entry</th><th>{functions_header}</th><th>blocks</th>
<th>cases adding coverage</th><th>first case</th><th>functions found later</th></tr>
{summary_rows}</table>
<h2>Growth over the campaign</h2>
{growth_svg("distinct kernel functions reached", _series(report, functions=True))}
<p>What the campaign added after each kernel's first case (that one boot reaches most of
the boot path; the rest is what other cases found):</p>
{growth_svg("functions gained after each kernel's first case",
            _series(report, functions=True, since_first=True))}
{growth_svg("blocks gained after each kernel's first case",
            _series(report, functions=False, since_first=True))}
<h2>Boot-protocol functions: which case reached each first</h2>
<p>Functions that read what the loader hands over (E820, initrd, initramfs, setup_data,
boot_params, command line, KASLR, PVH); highlighted where a later case than the path's
first reached it.  Replay a case with <code>bootfuzz replay OUT/campaign/cases.jsonl:N</code>.</p>
{_watch_table(report)}
<h2>Functions per path</h2>
{"".join(_path_section(p) for p in report.paths)}
</body></html>
"""


def kernel_symbols_by_name(kernel: str) -> SymbolTable:
    """The symbols of a kernel named as in a case: cached, else read in a one-off boot
    (bootfuzz.run.kallsyms)."""
    from bootfuzz.kernel.pinned import resolve_kernel
    from bootfuzz.run.kallsyms import kernel_symbols

    return kernel_symbols(resolve_kernel(kernel))


def entries_from_corpus(directory: Path,
                        symbols_for: Callable[[str], SymbolTable] = kernel_symbols_by_name
                        ) -> list[CoverageEntry]:
    """A corpus's entries as coverage lines: each entry's new blocks, and the functions
    they reached first for its kernel (named with *symbols_for* the kernel)."""
    from bootfuzz.fuzz.corpus import read_entries

    tables: dict[str, SymbolTable] = {}
    seen: dict[str, set[str]] = {}
    out = []
    for e in read_entries(directory):
        if not e.new.blocks:
            continue  # kept for a new verdict vector or console line only
        kernel = e.case.kernel
        if kernel not in tables:
            tables[kernel] = symbols_for(kernel)
        reached = {f.name for b in e.new.blocks
                   if (f := tables[kernel].function_at(b)) is not None}
        known = seen.setdefault(kernel, set())
        out.append(CoverageEntry(
            at=e.elapsed, case=e.index, kernel=kernel, kernel_sha256=kernel,
            entry=e.case.entry.value, blocks=e.blocks or 0, functions=0,
            new_blocks=e.new.blocks, new_functions=tuple(sorted(reached - known))))
        known |= reached
    return out


def load_report(out: Path) -> tuple[CoverageReport, str]:
    """The report of campaign output *out*, and the path it was read from."""
    log = out / "campaign" / COVERAGE_LOG_NAME
    corpus = out / "campaign" / "corpus"
    if log.exists() or not corpus.is_dir():
        return build_report(read_coverage_log(log)), str(log)
    report = build_report(entries_from_corpus(corpus), origin=0.0)
    return dataclasses.replace(report, source="corpus"), str(corpus)


def write_report(out: Path, dest: Path | None = None) -> tuple[Path, Path, CoverageReport]:
    """Read *out*'s coverage (load_report) and write report.json and report.html into
    *dest* (default ``OUT/campaign/coverage-report``)."""
    report, source = load_report(out)
    dest = dest or out / "campaign" / "coverage-report"
    json_path, html_path = dest / REPORT_JSON, dest / REPORT_HTML
    try:
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_path, json.dumps(report_json(report), indent=1) + "\n")
        atomic_write_text(html_path, report_html(report, source))
    except OSError as exc:
        raise StorageError.writing(exc.filename or dest, exc) from None
    return json_path, html_path, report
