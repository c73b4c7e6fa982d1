"""Rendering a boot result for people (a table) and for programs (JSON)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from bootfuzz.case import BootCase
from bootfuzz.cmdline import cmdline_shown
from bootfuzz.judge.verdict import Verdict, oracle_json
from bootfuzz.run.boot import BootResult
from bootfuzz.units import format_size

JSON_FORMAT_VERSION = 1


def case_json(case: BootCase) -> dict[str, Any]:
    return {
        "kernel": case.kernel,
        "memory": case.memory,
        "cmdline": case.cmdline,
        "entry": case.entry.value,
        "backend": case.backend,
        "cpu_template": case.cpu_template.value,
        "initrd": None if case.initrd is None else {
            "size": case.initrd.size,
            "compression": case.initrd.compression.value,
            "seed": case.initrd.seed,
        },
    }


def interrupted_json(case: BootCase, run_dir: Path, signal_name: str) -> dict[str, Any]:
    """The verdict.json of a boot stopped by a signal: no verdict, and why not."""
    return {
        "format": JSON_FORMAT_VERSION,
        "verdict": None,
        "interrupted": signal_name,
        "case": case_json(case),
        "run_dir": str(run_dir),
    }


def result_json(result: BootResult) -> dict[str, Any]:
    case, plan = result.case, result.plan
    return {
        "format": JSON_FORMAT_VERSION,
        "verdict": result.verdict.value,
        "oracles": [oracle_json(r) for r in result.oracles],
        "case": case_json(case),
        "plan": {
            "kernel_load": plan.kernel_load,
            "kernel_window": list(plan.kernel_window),
            "initrd": None if plan.initrd is None else {
                "addr": plan.initrd.addr, "size": plan.initrd.size,
                "payload_sha256": plan.initrd.payload_sha256,
            },
            "e820": [{"addr": e.addr, "size": e.size, "type": e.type} for e in plan.e820],
            "blobs": [{"name": b.name, "addr": b.addr, "size": b.size} for b in plan.blobs],
        },
        "guest_exit": result.guest_exit.value,
        "session_end": result.transcript.end.value,
        "session_detail": result.transcript.end_detail,
        "duration": round(result.duration, 3),
        "run_dir": str(result.run_dir),
    }


_MARK = {Verdict.PASS: "pass", Verdict.FAIL: "FAIL", Verdict.UNKNOWN: "unknown"}


def _indent(label: str, text: str) -> str:
    lines = text.splitlines() or [""]
    head = f"      {label:<9}{lines[0]}"
    rest = [" " * 15 + ln for ln in lines[1:]]
    return "\n".join([head, *rest])


def result_table(result: BootResult, verbose: bool = False) -> str:
    case = result.case
    initrd = (
        f"initrd {format_size(case.initrd.size)} {case.initrd.compression.value}"
        if case.initrd else "no initrd"
    )
    out = [
        f"kernel {case.kernel}, {format_size(case.memory)} RAM, {initrd}, "
        f"entry {case.entry.value}, backend {case.backend}",
        f"command line: {cmdline_shown(case.cmdline)}",
        "",
    ]
    width = max(len(r.name) for r in result.oracles)
    for r in result.oracles:
        out.append(f"  {r.name:<{width}}  {_MARK[r.verdict]}")
        if not r.asked:
            out.append(_indent("", r.detail))
        elif r.verdict is not Verdict.PASS or verbose:
            out.append(_indent("expected", r.expected))
            out.append(_indent("observed", r.observed))
            if r.detail:
                out.append(_indent("detail", textwrap.shorten(r.detail, 200)))
    out += [
        "",
        f"verdict: {_MARK[result.verdict].upper()}  ({result.duration:.1f} s, guest "
        f"{result.guest_exit.value}; log {result.run_dir / 'console.log'})",
    ]
    return "\n".join(out)

def coverage_line(c: dict[str, Any]) -> str:
    """What a boot's coverage summary (run.coverage.write_coverage) says, in one line."""
    return (f"coverage: {c['functions_reached']} boot-path functions reached "
            f"({c['init_functions_reached']} in .init.text), {c['blocks']} kernel "
            f"blocks; {c['file']}")
