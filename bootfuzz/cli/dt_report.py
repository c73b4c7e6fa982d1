"""``bootfuzz boot`` for a device-tree case: run it, and render the result (table, JSON)."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path
from typing import Any

from bootfuzz.case import BootCase
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.report import JSON_FORMAT_VERSION, case_json, coverage_line
from bootfuzz.cmdline import cmdline_shown
from bootfuzz.judge.verdict import Verdict, oracle_json
from bootfuzz.run.dt_boot import DtBootResult
from bootfuzz.units import format_size

_MARK = {Verdict.PASS: "pass", Verdict.FAIL: "FAIL", Verdict.UNKNOWN: "unknown"}


def dt_case_json(case: BootCase) -> dict[str, Any]:
    doc = case_json(case)
    doc["arch"] = case.arch.value
    doc["mem_holes"] = [list(h) for h in case.mem_holes]
    return doc


def dt_result_json(result: DtBootResult) -> dict[str, Any]:
    plan = result.plan
    return {
        "format": JSON_FORMAT_VERSION,
        "verdict": result.verdict.value,
        "oracles": [oracle_json(r) for r in result.oracles],
        "case": dt_case_json(result.case),
        "plan": {
            "arch": plan.arch.value,
            "kernel_load": plan.kernel_load,
            "kernel_window": list(plan.kernel_window),
            "dtb_addr": plan.dtb_addr,
            "dtb_size": len(plan.dtb),
            "memory": [list(m) for m in plan.memory],
            "initrd": None if plan.initrd is None else {
                "addr": plan.initrd.addr, "size": plan.initrd.size,
                "payload_sha256": plan.initrd.payload_sha256,
            },
            "chosen_initrd": None if plan.chosen_initrd is None else list(plan.chosen_initrd),
            "blobs": [{"name": b.name, "addr": b.addr, "size": b.size} for b in plan.blobs],
        },
        "guest_exit": result.guest_exit.value,
        "session_end": result.transcript.end.value,
        "session_detail": result.transcript.end_detail,
        "duration": round(result.duration, 3),
        "run_dir": str(result.run_dir),
    }


def _indent(label: str, text: str) -> str:
    lines = text.splitlines() or [""]
    return "\n".join([f"      {label:<9}{lines[0]}", *(" " * 15 + ln for ln in lines[1:])])


def dt_result_table(result: DtBootResult, verbose: bool = False) -> str:
    case, plan = result.case, result.plan
    initrd = (f"initrd {format_size(case.initrd.size)} {case.initrd.compression.value}"
              if case.initrd else "no initrd")
    nodes = ", ".join(f"[{a:#x}, {a + s:#x})" for a, s in plan.memory)
    out = [f"kernel {case.kernel} ({plan.arch.value}), {format_size(case.memory)} RAM, "
           f"{initrd}, QEMU virt", f"memory nodes: {nodes}",
           f"command line: {cmdline_shown(case.cmdline)}", ""]
    width = max(len(r.name) for r in result.oracles)
    for r in result.oracles:
        out.append(f"  {r.name:<{width}}  {_MARK[r.verdict]}")
        if r.verdict is not Verdict.PASS or verbose:
            out.append(_indent("expected", r.expected))
            out.append(_indent("observed", r.observed))
            if r.detail:
                out.append(_indent("detail", textwrap.shorten(r.detail, 200)))
    out += ["", f"verdict: {_MARK[result.verdict].upper()}  ({result.duration:.1f} s, guest "
            f"{result.guest_exit.value}; log {result.run_dir / 'console.log'})"]
    return "\n".join(out)


def run_dt_boot(args: argparse.Namespace, case: BootCase, run_dir: Path
                ) -> tuple[dict[str, Any], str, int]:
    """Boot a device-tree case: its verdict.json document, what to print, the exit status."""
    from bootfuzz.run.coverage import write_coverage
    from bootfuzz.run.dt_boot import execute_dt, prepare_dt

    prepared = prepare_dt(case)
    quiet = 90.0 if args.silence_timeout is None else args.silence_timeout
    result = execute_dt(prepared, run_dir, timeout=args.timeout, silence_timeout=quiet,
                        keep_blobs=args.keep_blobs, coverage=args.coverage)
    doc = dt_result_json(result)
    if result.coverage is not None:
        doc["coverage"] = write_coverage(run_dir, result.coverage)
    text = json.dumps(doc, indent=2) if args.json else dt_result_table(result, args.verbose)
    if "coverage" in doc and not args.json:
        text += "\n" + coverage_line(doc["coverage"])
    return doc, text, ExitStatus.PASS if result.verdict is Verdict.PASS else ExitStatus.FINDING
