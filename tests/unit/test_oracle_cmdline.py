"""The cmdline oracle, including printk's cut of a line longer than one record."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.judge.observation import Observation, parse_transcript
from bootfuzz.judge.oracles import judge_cmdline
from bootfuzz.judge.printk_model import Shown, console_buffers, record_lines, shown_record
from bootfuzz.judge.verdict import Verdict

LONG = ("console=ttyS0 " + "x" * 1500).encode()


def seen(text: str) -> str:
    return f"[    0.000000] Command line: {text}\n"


def test_cmdline_exact_match_passes_and_one_byte_differs_fails() -> None:
    assert judge_cmdline(parse_transcript(seen("a b")), b"a b").verdict is Verdict.PASS
    assert judge_cmdline(parse_transcript(seen("a c")), b"a b").verdict is Verdict.FAIL


def test_cmdline_cut_by_printk_is_judged_by_prefix() -> None:
    for kept in (975, 977, 1007):  # measured: 6.1 with and without earlyprintk, 6.12
        shown = LONG[:kept].decode()
        r = judge_cmdline(parse_transcript(seen(shown)), LONG)
        assert r.verdict is Verdict.PASS and "printk shows the first" in r.detail


def test_cmdline_cut_with_wrong_bytes_fails() -> None:
    shown = LONG[:974].decode() + "Y"
    assert judge_cmdline(parse_transcript(seen(shown)), LONG).verdict is Verdict.FAIL


def test_cmdline_short_prefix_is_not_excused_as_a_printk_cut() -> None:
    shown = LONG[:500].decode()
    assert judge_cmdline(parse_transcript(seen(shown)), LONG).verdict is Verdict.FAIL


def test_cmdline_missing_line_is_unknown() -> None:
    assert judge_cmdline(parse_transcript("no kernel here\n"), b"x").verdict is Verdict.UNKNOWN


# --- a command line with newlines and any bytes, as 6.1 and 6.12 print it (issue 13) ---

H = b"console=ttyS0 earlyprintk=serial panic=-1"
NEWLINE = H + b" foo=1\nbar=2"
BYTES = H + b" foo=\xff\xfe bar=1\nbaz=\x01\x1b[0m\tq\n\n"
CUT_A = H + b"".join(b"\nx%03d" % i + b"y" * 94 for i in range(15))
CUT_B = H + b"".join(b"\nz%03d" % i + b"w" * 5 for i in range(150))
RECORDED = Path(__file__).resolve().parents[1] / "data" / "logs" / "printk"
#: (log, the command line booted, how printk showed it)
LOGS = [
    ("6.1-cloud-cmdline-newline.txt", NEWLINE, Shown.WHOLE),
    ("6.12-cloud-cmdline-newline.txt", NEWLINE, Shown.WHOLE),
    ("6.1-cloud-cmdline-bytes.txt", BYTES, Shown.WHOLE),
    ("6.12-cloud-cmdline-bytes.txt", BYTES, Shown.WHOLE),
    ("6.1-cloud-cmdline-cut-A.txt", CUT_A, Shown.CONSOLE_CUT),
    ("6.12-cloud-cmdline-cut-A.txt", CUT_A, Shown.RECORD_CUT),
    ("6.1-cloud-cmdline-cut-B.txt", CUT_B, Shown.CONSOLE_CUT),
    ("6.12-cloud-cmdline-cut-B.txt", CUT_B, Shown.CONSOLE_CUT),
]


def recorded(name: str) -> Observation:
    return parse_transcript((RECORDED / name).read_bytes())


def how(obs: Observation, cmdline: bytes) -> Shown:
    record = obs.command_line_record
    assert record is not None
    prefix = b"Command line: "
    return shown_record(record_lines(prefix + cmdline), prefix + record.first, record.prefix,
                        record.following, console_buffers(obs.linux_version)).how


@pytest.mark.parametrize(("name", "cmdline", "shown"), LOGS)
def test_cmdline_as_the_kernel_printed_it_passes(name: str, cmdline: bytes, shown: Shown) -> None:
    obs = recorded(name)
    assert how(obs, cmdline) is shown
    result = judge_cmdline(obs, cmdline)
    assert result.verdict is Verdict.PASS, result
    assert (shown is Shown.WHOLE) == (result.detail == "")


@pytest.mark.parametrize(("name", "cmdline", "shown"), LOGS)
def test_cmdline_one_byte_off_fails(name: str, cmdline: bytes, shown: Shown) -> None:
    """Any byte of ours the console showed, changed, is a failure: the judge is exact."""
    obs = recorded(name)
    record = obs.command_line_record
    assert record is not None
    prefix = b"Command line: "
    lines = shown_record(record_lines(prefix + cmdline), prefix + record.first, record.prefix,
                         record.following, console_buffers(obs.linux_version)).lines
    visible = len(b"\n".join(lines)) - len(prefix)  # the bytes of ours printk showed
    assert (visible == len(cmdline)) == (shown is Shown.WHOLE)
    for at in range(visible):
        wrong = cmdline[:at] + bytes([cmdline[at] ^ 0x01]) + cmdline[at + 1:]
        if b"\0" not in wrong:  # a NUL would end the command line: not ours to write
            assert judge_cmdline(obs, wrong).verdict is Verdict.FAIL, (at, wrong[at:at + 8])


def test_cmdline_newline_is_not_a_space() -> None:
    obs = recorded("6.1-cloud-cmdline-newline.txt")
    assert judge_cmdline(obs, NEWLINE.replace(b"\n", b" ")).verdict is Verdict.FAIL
    assert judge_cmdline(obs, NEWLINE + b"\n").verdict is Verdict.FAIL  # an empty line too many


def test_cmdline_bytes_need_the_raw_console() -> None:
    """Decoded text cannot tell 0xff from 0xfe: the observation of text is not exact, so
    a non-UTF-8 command line judged from text fails rather than passing by luck."""
    text = (RECORDED / "6.12-cloud-cmdline-bytes.txt").read_bytes().decode("utf-8", "replace")
    assert judge_cmdline(parse_transcript(text), BYTES).verdict is Verdict.FAIL
    assert judge_cmdline(parse_transcript(text), NEWLINE).verdict is Verdict.FAIL


def test_cmdline_cut_lines_must_match_the_kernel_version() -> None:
    """6.1's 1024-byte console buffer does not excuse the same cut on 6.12 (2048)."""
    log = (RECORDED / "6.1-cloud-cmdline-cut-B.txt").read_bytes()
    as_6_12 = log.replace(b"Linux version 6.1.0", b"Linux version 6.12.0", 1)
    assert judge_cmdline(parse_transcript(log), CUT_B).verdict is Verdict.PASS
    assert judge_cmdline(parse_transcript(as_6_12), CUT_B).verdict is Verdict.FAIL


def test_cmdline_a_line_dropped_early_fails() -> None:
    """One whole line fewer than the buffer holds is no printk cut."""
    log = (RECORDED / "6.1-cloud-cmdline-cut-B.txt").read_bytes()
    dropped = log.replace(b"[    0.000000] z037wwwww\r\r\n", b"", 1)  # the last shown
    assert dropped != log
    assert judge_cmdline(parse_transcript(dropped), CUT_B).verdict is Verdict.FAIL


def test_cmdline_further_lines_carry_the_first_ones_prefix() -> None:
    text = b"[    0.000000] Command line: a\r\r\n[    0.000001] b\r\r\n"
    assert judge_cmdline(parse_transcript(text), b"a\nb").verdict is Verdict.FAIL
    good = b"[    0.000000] Command line: a\r\r\n[    0.000000] b\r\r\n"
    assert judge_cmdline(parse_transcript(good), b"a\nb").verdict is Verdict.PASS
    bare = b"Command line: a\r\r\nb\r\r\n"  # printk.time=0: no prefix at all
    assert judge_cmdline(parse_transcript(bare), b"a\nb").verdict is Verdict.PASS


def test_cmdline_report_shows_bytes_and_newlines() -> None:
    obs = recorded("6.1-cloud-cmdline-bytes.txt")
    result = judge_cmdline(obs, BYTES)
    assert result.expected == result.observed
    assert "foo=\\xff\\xfe bar=1\\nbaz=\\x01\\x1b[0m\\tq\\n\\n" in result.observed


def test_console_buffer_follows_the_kernel_version() -> None:
    assert console_buffers("Linux version 6.1.0-56-cloud-amd64 (x)") == (1024,)
    assert console_buffers("Linux version 6.12.117+deb12-cloud-amd64 (x)") == (2048,)
    assert console_buffers("Linux version 5.10.0 (x)") == (1024,)
    assert console_buffers("Linux version 6.3.0 (x)") == (1024, 2048)  # not read: either
    assert console_buffers(None) == (1024, 2048)
