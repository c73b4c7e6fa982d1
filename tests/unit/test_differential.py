"""Differential comparison of two recorded runs, and the diff command's parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bootfuzz.case import HARNESS_CMDLINE, BootCase
from bootfuzz.cli.case_args import case_from_args
from bootfuzz.cli.main import parse_args
from bootfuzz.errors import ConfigError
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.promises import TargetPromises
from bootfuzz.judge.validity import LoadRequest
from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers import differential
from bootfuzz.peers.promises import OURS_QEMU_TCG, QEMU_PC
from bootfuzz.peers.targets import TargetRun
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript

DATA = Path(__file__).resolve().parent.parent / "data"
CASE = BootCase(kernel="debian-6.1-cloud", memory=256 << 20)
REQUEST = LoadRequest(256 << 20, HARNESS_CMDLINE.encode(), 1055736, 1 << 20, "x", 0x7FFFFFFF,
                      True)


def recorded(path: Path, target: str, promises: TargetPromises) -> TargetRun:
    text = re.sub(r"\r+\n", "\n", path.read_bytes().decode())
    t = Transcript(text=text, raw=b"", end=SessionEnd.AGENT_REPORT, exit_status=99, signal=None,
                   duration=1.0, first_output_after=0.1, firmware_entered=True,
                   end_detail="", killed=False)
    return TargetRun(target, CASE, (), t, parse_transcript(text), GuestExit.POWER_OFF, REQUEST,
                     promises, (), (), Verdict.PASS, Path("/runs") / target, 1.0)


OURS = recorded(DATA / "logs" / "boot-6.1-cloud-real-agent-report.txt", "ours", OURS_QEMU_TCG)
PEER = recorded(DATA / "targets" / "qemu-direct-pc-256M-6.1-cloud.txt", "qemu", QEMU_PC)


def rows() -> dict[str, differential.DiffRow]:
    return {r.field: r for r in differential.compare(OURS, PEER).rows}


def test_diff_ebda_row_only_on_peer_with_evidence() -> None:
    r = rows()
    ebda = [row for row in r.values() if "0x000000000009fc00" in row.right]
    assert len(ebda) == 1 and ebda[0].differs
    (ev,) = ebda[0].right_evidence
    assert ev.log == "/runs/qemu/console.log" and ev.line == 6
    assert "BIOS-e820: [mem 0x000000000009fc00-0x000000000009ffff] reserved" in ev.text


def test_diff_equal_e820_lines_align() -> None:
    same = [row for f, row in rows().items() if f.startswith("e820") and not row.differs]
    assert any("[mem 0x0000000000100000-" not in row.left for row in same)  # e.g. 0xf0000
    assert all(row.left == row.right for row in same)


def test_diff_ramdisk_and_loader_fields_differ_with_evidence() -> None:
    r = rows()
    assert r["RAMDISK"].right == "[mem 0x0fede000-0x0ffdffff]"
    assert r["RAMDISK"].differs
    assert r["RAMDISK"].right_evidence[0].line == 20
    assert r["boot_params.type_of_loader"].right == "0xb0"
    assert r["boot_params.type_of_loader"].left == "0xff"
    assert "offset 0x210" in r["boot_params.type_of_loader"].right_evidence[0].text
    assert r["Command line"].left == "console=ttyS0 panic=-1"  # recorded before earlyprintk


def test_diff_json_and_table_render() -> None:
    report = differential.compare(OURS, PEER)
    doc = differential.report_json(report)
    assert doc["differences"] == len(report.differences) > 0
    table = differential.report_table(report)
    assert table.splitlines()[-1].startswith(f"{len(report.differences)} differences")
    assert "> /runs/qemu/console.log:20:" in table


def test_diff_aligned_pairs_equal_lines() -> None:
    assert differential.aligned(["a", "b", "c"], ["a", "x", "b", "c"]) == [
        (0, 0), (None, 1), (1, 2), (2, 3)]


def test_diff_cli_bad_peer_config_error_before_boot() -> None:
    args = parse_args(["diff", "--kernel", "debian-6.1-cloud", "--peer", "vbox"])
    with pytest.raises(ConfigError, match="unknown target 'vbox'"):
        args.run(args)


def test_diff_cli_defaults() -> None:
    args = parse_args(["diff", "--kernel", "k", "--peer", "qemu-direct:pc",
                                 "--mem", "5G"])
    case = case_from_args(args)
    assert (case.memory, case.cmdline, args.target) == (5 << 30, HARNESS_CMDLINE,
                                                        "ours:qemu-tcg")
