"""A command line with non-UTF-8 bytes and newlines, booted from argv and from a
reproducer on real kernels (QEMU-TCG), judged exactly (issue 13, rows 1 and 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootfuzz.case import HARNESS_CMDLINE
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import main
from tests.integration.conftest import PINNED

pytestmark = pytest.mark.qemu

#: Bytes that are not UTF-8, control bytes, a newline inside and two at the end.
TYPED = b"foo=\xff\xfe bar=1\nbaz=\x01\x1b[0m\tq\n\n"
ORACLES = {"cmdline", "agent-cmdline"}


@pytest.mark.parametrize("kernel", [k for k in PINNED if "cloud" in k])
def test_boot_argv_bytes_and_newlines_pass_every_oracle(
    kernel: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bootfuzz boot --cmdline $'foo=\\xff\\xfe ...\\n...'`: the bytes as typed reach the
    kernel, which prints them raw and split at the newlines; every oracle passes."""
    code = main(["boot", "--kernel", kernel, "--cmdline", os.fsdecode(TYPED), "--json",
                 "--run-dir", str(tmp_path)])
    doc = json.loads(capsys.readouterr().out)
    failed = {o["name"]: o for o in doc["oracles"] if o["verdict"] != "pass"}
    assert code == ExitStatus.PASS and not failed, failed
    assert {o["name"] for o in doc["oracles"]} >= ORACLES
    (log,) = tmp_path.glob("*/console.log")
    console = log.read_bytes()
    # What the kernel printed: the bytes raw, each line of the record with its prefix.
    assert b"Command line: " + HARNESS_CMDLINE.encode() + b" foo=\xff\xfe bar=1\r\r\n" in console
    assert b"[    0.000000] baz=\x01\x1b[0m\tq\r\r\n[    0.000000] \r\r\n[    0.000000] \r\r\n" \
        in console


def test_replay_reproducer_with_an_escaped_byte(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A reproducer's "\\udcff" is the byte 0xff on the kernel's command line."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps({
        "bootfuzz_reproducer": 1, "kernel": {"name": "debian-6.1-cloud"},
        "memory": "0x10000000", "cmdline": "console=ttyS0 \udcff\nx",
        "initrd": {"size": 4096, "compression": "gzip", "seed": 0},
        "expect": {"verdict": "pass"},
    }))
    assert "\\udcff" in path.read_text()
    code = main(["replay", str(path), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == ExitStatus.PASS, doc
    (result,) = doc["runs"]
    cmdline = {o["name"]: o for o in result["oracles"]}["cmdline"]
    assert cmdline["verdict"] == "pass" and cmdline["observed"] == "console=ttyS0 \\xff\\nx"
