"""A command line is bytes: every byte but NUL reaches the plan as given, from argv, a
reproducer or a case (issue 13: ``--cmdline $'foo=\\xff\\xfe'`` was a traceback)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bootfuzz.case import HARNESS_CMDLINE, BootCase, EntryProtocol
from bootfuzz.cli.case_args import case_from_args
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import main, parse_args
from bootfuzz.cmdline import cmdline_bytes, cmdline_shown, cmdline_text, from_argv
from bootfuzz.errors import CmdlineError
from bootfuzz.fuzz.reproducer import (
    Reproducer,
    ReproducerError,
    load_reproducer,
    parse_reproducer,
    reproducer_json,
    write_reproducer,
)
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.placement import encode_cmdline
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from tests.fakes import fake_bzimage

IMAGE = parse_kernel_image(fake_bzimage())
EVERY_BYTE = bytes(range(1, 256))  # all but NUL, which ends a command line


def test_every_byte_round_trips_through_the_text_form() -> None:
    text = cmdline_text(EVERY_BYTE)
    assert cmdline_bytes(text) == EVERY_BYTE
    assert cmdline_text(b"foo=\xff\xfe") == "foo=\udcff\udcfe"
    assert cmdline_bytes("caf\u00e9") == b"caf\xc3\xa9"  # text is UTF-8


@pytest.mark.parametrize("text", ["a \ud800", "\udc7f", "\udfff x"])
def test_a_lone_surrogate_that_is_no_byte_is_refused(text: str) -> None:
    with pytest.raises(CmdlineError, match=r"U\+D[8-F][0-9A-F]{2} at offset \d+ is a lone"):
        cmdline_bytes(text)


def test_argv_bytes_are_the_bytes_typed() -> None:
    typed = b"foo=\xff\xfe bar=\xc3\xa9"
    assert cmdline_bytes(from_argv(os.fsdecode(typed))) == typed


def test_cli_cmdline_bytes_reach_the_case_exactly() -> None:
    args = parse_args(["boot", "--kernel", "k", "--cmdline", os.fsdecode(b"foo=\xff\xfe\n")])
    case = case_from_args(args)
    assert cmdline_bytes(case.cmdline) == HARNESS_CMDLINE.encode() + b" foo=\xff\xfe\n"
    raw = case_from_args(parse_args(["boot", "--kernel", "k", "--raw-cmdline",
                                     os.fsdecode(b"\x80 x\n")]))
    assert cmdline_bytes(raw.cmdline) == b"\x80 x\n"


def test_the_plan_writes_the_bytes_as_given() -> None:
    case = BootCase("k", 256 << 20, cmdline_text(b"console=ttyS0 " + EVERY_BYTE[:200]))
    for entry in (EntryProtocol.BOOT64, EntryProtocol.REAL16):
        plan = plan_boot(BootCase(case.kernel, case.memory, case.cmdline, entry=entry), IMAGE,
                         qemu_pc(case.memory))
        assert plan.cmdline == b"console=ttyS0 " + EVERY_BYTE[:200]
        (blob,) = [b for b in plan.blobs if b.name == "cmdline"]
        assert blob.data == plan.cmdline + b"\0"
    assert encode_cmdline(case.cmdline, IMAGE) == plan.cmdline


def test_cli_non_utf8_cmdline_passes_the_input_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the command-line check to the backend's (missing here): exit 3, not a traceback."""
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage(init_size=0x3378000))
    monkeypatch.setenv("BOOTFUZZ_QEMU", "no-such-qemu")
    code = main(["boot", "--kernel", str(kernel), "--cmdline", os.fsdecode(b"foo=\xff\xfe")])
    err = capsys.readouterr().err
    assert code == ExitStatus.INFRASTRUCTURE and "no-such-qemu not found" in err, err


def test_cmdline_shown_tells_every_byte_apart() -> None:
    assert cmdline_shown(cmdline_text(b"a=\xff\n\\b\t")) == "a=\\xff\\n\\\\b\\t"
    shown = {cmdline_shown(cmdline_text(bytes([b]))) for b in EVERY_BYTE}
    assert len(shown) == len(EVERY_BYTE)
    assert all(s.isprintable() for s in shown)


def _reproducer(cmdline: str) -> dict[str, object]:
    return {"bootfuzz_reproducer": 1, "kernel": {"name": "debian-6.1-cloud"},
            "memory": "0x10000000", "cmdline": cmdline}


def test_reproducer_escaped_byte_is_that_byte(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"bootfuzz_reproducer": 1, "kernel": {"name": "debian-6.1-cloud"}, '
                    '"memory": "0x10000000", "cmdline": "console=ttyS0 \\udcff"}\n')
    rep = load_reproducer(path)
    assert cmdline_bytes(rep.case.cmdline) == b"console=ttyS0 \xff"
    write_reproducer(rep, tmp_path / "again.json")
    assert "\\udcff" in (tmp_path / "again.json").read_text()  # JSON text stays ASCII
    assert load_reproducer(tmp_path / "again.json") == rep


def test_reproducer_every_byte_round_trips() -> None:
    rep = Reproducer(BootCase("debian-6.1-cloud", 256 << 20, cmdline_text(EVERY_BYTE)))
    doc = json.loads(json.dumps(reproducer_json(rep)))
    assert cmdline_bytes(parse_reproducer(doc).case.cmdline) == EVERY_BYTE


def test_reproducer_lone_surrogate_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ReproducerError, match=r"cmdline: U\+D800 at offset 14 is a lone"):
        parse_reproducer(_reproducer("console=ttyS0 \ud800"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_reproducer("console=ttyS0 \ud800")))
    code = main(["replay", str(path)])
    err = capsys.readouterr().err
    assert code == ExitStatus.USAGE
    assert err.count("\n") == 1 and "cmdline: U+D800" in err and "Traceback" not in err
