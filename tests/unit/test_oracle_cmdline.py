"""The cmdline oracle, including printk's cut of a line longer than one record."""

from __future__ import annotations

from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.oracles import judge_cmdline
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
