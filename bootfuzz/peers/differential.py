"""Differential runs: one case through two loaders, and where the kernel's views differ.

Both targets boot the same kernel file, initrd file and command line on the same
memory size.  A difference is not a bug by itself (SeaBIOS keeps an EBDA, QEMU puts
the initrd elsewhere): each target is judged on its own by the validity oracles,
and the report lists every difference with the console lines it comes from, so a
person can tell a permitted choice from a broken one.

    bootfuzz diff --kernel debian-6.1-cloud --mem 5G --peer qemu-direct:pc
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from bootfuzz.abi.bootparam import BOOT_PARAMS, BOOT_PARAMS_SIZE
from bootfuzz.case import BootCase, InitrdPlacement, Overrides
from bootfuzz.errors import ConfigError
from bootfuzz.judge.patterns import AGENT_PREFIX, line_body
from bootfuzz.judge.verdict import Verdict, oracle_json
from bootfuzz.peers.targets import OursTarget, Target, TargetRun
from bootfuzz.units import format_size

JSON_FORMAT_VERSION = 1
#: boot_params fields compared between the two kernels' /sys/kernel/boot_params.
BOOT_PARAMS_COMPARED: tuple[str, ...] = (
    "type_of_loader", "loadflags", "ramdisk_image", "ramdisk_size", "ext_ramdisk_image",
    "ext_ramdisk_size", "cmd_line_ptr", "ext_cmd_line_ptr", "e820_entries",
)
_EVIDENCE_WIDTH = 160
#: The agent's report is one long JSON line; quote its start only.
_AGENT_WIDTH = 40


@dataclass(frozen=True)
class QuotedLine:
    """A console line quoted as evidence: where it is and what it says."""

    log: str
    line: int  # 1-based
    text: str

    def __str__(self) -> str:
        return f"{self.log}:{self.line}: {self.text}"


@dataclass(frozen=True)
class DiffRow:
    field: str
    left: str
    right: str
    left_evidence: tuple[QuotedLine, ...]
    right_evidence: tuple[QuotedLine, ...]

    @property
    def differs(self) -> bool:
        return self.left != self.right


@dataclass(frozen=True)
class DiffReport:
    case: BootCase
    left: TargetRun
    right: TargetRun
    rows: tuple[DiffRow, ...]

    @property
    def differences(self) -> tuple[DiffRow, ...]:
        return tuple(r for r in self.rows if r.differs)


class _Log:
    """A run's console lines, for quoting evidence."""

    def __init__(self, run: TargetRun) -> None:
        self.name = str(run.run_dir / "console.log")
        self.lines = run.transcript.text.split("\n")

    def find(self, pred: Callable[[str], bool], limit: int | None = None) -> list[QuotedLine]:
        out = []
        for i, line in enumerate(self.lines, 1):
            if pred(line):
                width = _AGENT_WIDTH if line.startswith(AGENT_PREFIX) else _EVIDENCE_WIDTH
                text = line if len(line) <= width else line[:width] + "..."
                out.append(QuotedLine(self.name, i, text))
                if limit is not None and len(out) >= limit:
                    break
        return out


_BIOS_MAP = re.compile(r"^(BIOS-e820|BIOS-88|BIOS-e801): \[mem ")


def aligned(left: Sequence[str], right: Sequence[str]
            ) -> list[tuple[int | None, int | None]]:
    """Pairs of indexes of two tables, equal lines side by side (difflib), the rest
    paired in order within each changed block."""
    pairs: list[tuple[int | None, int | None]] = []
    matcher = difflib.SequenceMatcher(a=list(left), b=list(right), autojunk=False)
    for _tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs += list(zip_longest(range(i1, i2), range(j1, j2)))
    return pairs


def _table_rows(name: str, lt: Sequence[str], rt: Sequence[str],
                lev: Sequence[QuotedLine], rev: Sequence[QuotedLine]) -> list[DiffRow]:
    rows = []
    for i, j in aligned(lt, rt):
        label = f"{name}[{'-' if i is None else i}|{'-' if j is None else j}]"
        rows.append(DiffRow(
            label, "(none)" if i is None else lt[i], "(none)" if j is None else rt[j],
            (lev[i],) if i is not None and i < len(lev) else (),
            (rev[j],) if j is not None and j < len(rev) else (),
        ))
    return rows


def _e820_rows(left: TargetRun, right: TargetRun, llog: _Log, rlog: _Log) -> list[DiffRow]:
    lev = llog.find(lambda s: bool(_BIOS_MAP.match(line_body(s))))
    rev = rlog.find(lambda s: bool(_BIOS_MAP.match(line_body(s))))
    lt, rt = left.observation.bios_e820, right.observation.bios_e820
    # The parser keeps the last print of the table; quote the last len(table) lines.
    lev, rev = lev[len(lev) - len(lt):], rev[len(rev) - len(rt):]
    return _table_rows(
        "e820",
        [f"[mem {a.start:#018x}-{a.end:#018x}] {a.type_text}" for a in lt],
        [f"[mem {b.start:#018x}-{b.end:#018x}] {b.type_text}" for b in rt], lev, rev)


def _ramdisk(run: TargetRun) -> str:
    obs = run.observation
    if obs.ramdisk is None:
        return "(no RAMDISK line)"
    text = f"[mem {obs.ramdisk.start:#010x}-{obs.ramdisk.end:#010x}]"
    if obs.ramdisk_move is not None:
        d = obs.ramdisk_move.dest
        text += f" moved to [mem {d.start:#010x}-{d.end:#010x}]"
    return text


def _ramdisk_line(s: str) -> bool:
    b = line_body(s)
    return b.startswith(("RAMDISK: [mem", "Move RAMDISK", "Allocated new RAMDISK"))


def _agent_line(s: str) -> bool:
    return s.startswith(AGENT_PREFIX)


def _memmap_rows(left: TargetRun, right: TargetRun, llog: _Log, rlog: _Log) -> list[DiffRow]:
    def table(run: TargetRun) -> list[str]:
        agent = run.observation.agent
        entries = sorted((m.start, m.end, m.type) for m in agent.memmap) if agent else []
        return [f"{s:#x}-{e:#x} {t}" for s, e, t in entries]

    lt, rt = table(left), table(right)
    lev, rev = llog.find(_agent_line, 1), rlog.find(_agent_line, 1)
    return _table_rows("memmap", lt, rt, lev * len(lt), rev * len(rt))


def _boot_param(run: TargetRun, name: str) -> str:
    agent = run.observation.agent
    if agent is None or len(agent.boot_params) != BOOT_PARAMS_SIZE:
        return "(no boot_params)"
    value = BOOT_PARAMS[name].decode(agent.boot_params)
    return value.hex() if isinstance(value, bytes) else f"{value:#x}"


def _boot_param_evidence(log: _Log, name: str) -> tuple[QuotedLine, ...]:
    field = BOOT_PARAMS[name]
    return tuple(
        QuotedLine(e.log, e.line, f"boot_params.{name} (offset {field.offset:#x}, "
                   f"{field.size} bytes) in: {e.text}")
        for e in log.find(_agent_line, 1)
    )


def compare(left: TargetRun, right: TargetRun) -> DiffReport:
    """Every compared item of the two kernels' views; pure."""
    llog, rlog = _Log(left), _Log(right)
    rows = _e820_rows(left, right, llog, rlog)

    def line_row(name: str, lv: str, rv: str, pred: Callable[[str], bool]) -> DiffRow:
        return DiffRow(name, lv, rv, tuple(llog.find(pred)), tuple(rlog.find(pred)))

    rows.append(line_row("RAMDISK", _ramdisk(left), _ramdisk(right), _ramdisk_line))
    rows.append(line_row(
        "Command line",
        str(left.observation.command_line), str(right.observation.command_line),
        lambda s: line_body(s).startswith("Command line: "),
    ))
    rows.append(line_row(
        "Freeing initrd memory",
        str(left.observation.initrd_freed_kib), str(right.observation.initrd_freed_kib),
        lambda s: line_body(s).startswith("Freeing initrd memory"),
    ))
    rows += _memmap_rows(left, right, llog, rlog)
    for name in BOOT_PARAMS_COMPARED:
        rows.append(DiffRow(f"boot_params.{name}", _boot_param(left, name),
                            _boot_param(right, name), _boot_param_evidence(llog, name),
                            _boot_param_evidence(rlog, name)))
    return DiffReport(left.case, left, right, tuple(rows))


def loader_decisions(case: BootCase) -> list[str]:
    """What *case* takes out of the loader's hands (a peer would silently ignore it)."""
    taken = [] if case.overrides == Overrides() else ["overrides"]
    if case.initrd_placement is not InitrdPlacement.TOP:
        taken.append(f"initrd placement {case.initrd_placement.value}")
    return taken


def run_diff(case: BootCase, left: Target, right: Target, parent: Path, *,
             timeout: float, silence_timeout: float, parallel: bool = True) -> DiffReport:
    """Boot *case* on both targets (at the same time unless told otherwise) and compare."""
    taken = loader_decisions(case)
    for t in (left, right):
        reason = t.unsupported(case)
        if reason:
            raise ConfigError(f"{t.name} cannot run this case: {reason}")
        if taken and not isinstance(t, OursTarget):
            raise ConfigError(f"{t.name} makes its own loader decisions; only ours:BACKEND "
                              f"takes {', '.join(taken)}")
    parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-diff-", dir=parent))

    def one(t: Target) -> TargetRun:
        return t.run(case, base / t.name.replace(":", "_").replace("/", "_"), timeout=timeout,
                     silence_timeout=silence_timeout)

    if parallel:
        with ThreadPoolExecutor(max_workers=2) as pool:
            lf, rf = pool.submit(one, left), pool.submit(one, right)
            lr, rr = lf.result(), rf.result()
    else:
        lr, rr = one(left), one(right)
    report = compare(lr, rr)
    (base / "diff.json").write_text(json.dumps(report_json(report), indent=2) + "\n")
    return report


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _run_json(run: TargetRun) -> dict[str, Any]:
    return {
        "target": run.target,
        "verdict": run.verdict.value,
        "validity": [oracle_json(r) for r in run.validity],
        "exact": [oracle_json(r) for r in run.exact],
        "guest_exit": run.guest_exit.value,
        "session_end": run.transcript.end.value,
        "duration": round(run.duration, 3),
        "run_dir": str(run.run_dir),
        "argv": list(run.argv),
    }


def report_json(report: DiffReport) -> dict[str, Any]:
    case = report.case
    return {
        "format": JSON_FORMAT_VERSION,
        "case": {
            "kernel": case.kernel, "memory": case.memory, "cmdline": case.cmdline,
            "entry": case.entry.value,
            "initrd": None if case.initrd is None else {
                "size": case.initrd.size, "compression": case.initrd.compression.value,
                "seed": case.initrd.seed},
        },
        "left": _run_json(report.left),
        "right": _run_json(report.right),
        "differences": len(report.differences),
        "rows": [
            {"field": r.field, "differs": r.differs, "left": r.left, "right": r.right,
             "left_evidence": [str(e) for e in r.left_evidence],
             "right_evidence": [str(e) for e in r.right_evidence]}
            for r in report.rows
        ],
    }


def _verdict_line(run: TargetRun) -> str:
    bad = [r for r in run.oracles if r.verdict is not Verdict.PASS]
    text = f"{run.target}: {run.verdict.value.upper()} ({run.duration:.1f} s)"
    if bad:
        text += "; " + ", ".join(f"{r.name} {r.verdict.value}" for r in bad)
    return text


def report_table(report: DiffReport, show_all: bool = False) -> str:
    case, left, right = report.case, report.left, report.right
    initrd = (f"initrd {format_size(case.initrd.size)} {case.initrd.compression.value}"
              if case.initrd else "no initrd")
    out = [f"kernel {case.kernel}, {format_size(case.memory)} RAM, {initrd}, entry "
           f"{case.entry.value}", f"left:  {_verdict_line(left)}",
           f"right: {_verdict_line(right)}", ""]
    rows = report.rows if show_all else report.differences
    w_field = max([len(r.field) for r in rows] + [5])
    w_left = max([len(r.left) for r in rows] + [len(left.target)])
    out.append(f"  {'':1} {'field':<{w_field}}  {left.target:<{w_left}}  {right.target}")
    for r in rows:
        mark = "!" if r.differs else "="
        out.append(f"  {mark} {r.field:<{w_field}}  {r.left:<{w_left}}  {r.right}")
        if r.differs:
            for e in r.left_evidence:
                out.append(f"      < {e}")
            for e in r.right_evidence:
                out.append(f"      > {e}")
    same = len(report.rows) - len(report.differences)
    out += ["", f"{len(report.differences)} differences, {same} items equal"
            + ("" if show_all else " (--all shows them)")]
    return "\n".join(out)


__all__: Sequence[str] = ("DiffReport", "DiffRow", "QuotedLine", "compare", "report_json",
                          "report_table", "run_diff")
