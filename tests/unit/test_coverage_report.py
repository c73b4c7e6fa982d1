"""fuzz/coverage_log.py and fuzz/coverage_report.py: what each case reached first, kept across
a kill, and the report drawn from it; `bootfuzz coverage report`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bootfuzz.cli.main import main
from bootfuzz.errors import ConfigError
from bootfuzz.fuzz.coverage_log import COVERAGE_LOG_NAME, CoverageLog, read_coverage_log
from bootfuzz.fuzz.coverage_report import build_report, report_html
from bootfuzz.kernel.symbols import SymbolTable
from bootfuzz.run.coverage import BlockCoverage

SYMBOLS = SymbolTable((0x0, 0x100, 0x200, 0x300), ("startup_64", "e820__memory_setup",
                                                   "unpack_to_rootfs", "panic"),
                      0x1000, 0x2000, 0x3000)


def cov(*blocks: int, sha: str = "k1") -> BlockCoverage:
    return BlockCoverage(kernel_sha256=sha, blocks=frozenset(blocks), symbols=SYMBOLS)


def test_log_records_only_what_is_new_per_kernel_and_entry(tmp_path: Path) -> None:
    log = CoverageLog(tmp_path / COVERAGE_LOG_NAME)
    first = log.record(0, "kern", "64", cov(0x0, 0x104), at=100.0)
    assert first is not None
    assert first.new_blocks == (0x0, 0x104)
    assert first.new_functions == ("e820__memory_setup", "startup_64")
    assert log.record(1, "kern", "64", cov(0x0), at=101.0) is None  # nothing new
    again = log.record(2, "kern", "16", cov(0x0), at=102.0)  # another entry path
    assert again is not None and again.new_blocks == (0x0,)
    third = log.record(3, "kern", "64", cov(0x0, 0x104, 0x208), at=103.0)
    assert third is not None and third.new_functions == ("unpack_to_rootfs",)
    assert [e.case for e in read_coverage_log(log.path)] == [0, 2, 3]


def test_a_resumed_log_keeps_what_was_seen_and_drops_a_half_written_line(tmp_path: Path) -> None:
    path = tmp_path / COVERAGE_LOG_NAME
    CoverageLog(path).record(0, "kern", "64", cov(0x0), at=1.0)
    with open(path, "ab") as f:
        f.write(b'{"v": 1, "at": 2.0, "ca')  # SIGKILL in the middle of a write
    assert [e.case for e in read_coverage_log(path)] == [0]
    resumed = CoverageLog(path)
    assert resumed.seen_blocks("k1", "64") == frozenset({0x0})
    assert resumed.record(1, "kern", "64", cov(0x0), at=3.0) is None
    assert resumed.record(2, "kern", "64", cov(0x104), at=4.0) is not None
    assert [e.case for e in read_coverage_log(path)] == [0, 2]  # every line whole


def test_a_bad_line_is_one_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / COVERAGE_LOG_NAME
    path.write_text('{"v": 1}\n')
    with pytest.raises(ConfigError, match=f"{COVERAGE_LOG_NAME}:1"):
        read_coverage_log(path)


def make_campaign(out: Path) -> None:
    log = CoverageLog(out / "campaign" / COVERAGE_LOG_NAME)
    log.record(0, "debian-6.1-cloud", "64", cov(0x0, 0x100), at=1000.0)
    log.record(1, "debian-6.1-cloud", "16", cov(0x0), at=1010.0)
    log.record(4, "debian-6.1-cloud", "64", cov(0x0, 0x100, 0x200, 0x204), at=1100.0)
    log.record(5, "debian-6.12-cloud", "64", cov(0x300, sha="k2"), at=1200.0)


def test_report_says_who_reached_each_function_first_and_how_coverage_grew(
        tmp_path: Path) -> None:
    make_campaign(tmp_path)
    report = build_report(read_coverage_log(tmp_path / "campaign" / COVERAGE_LOG_NAME))
    by_path = {(p.kernel, p.entry): p for p in report.paths}
    p64 = by_path[("debian-6.1-cloud", "64")]
    assert {f.name: f.case for f in p64.functions} == {
        "startup_64": 0, "e820__memory_setup": 0, "unpack_to_rootfs": 4}
    assert p64.blocks == 4 and p64.cases == (0, 4)
    assert [(g.at, g.blocks, g.functions) for g in report.growth] == [
        (0.0, 2, 2), (10.0, 2, 2), (100.0, 4, 3), (200.0, 5, 4)]
    page = report_html(report, "test")
    assert "<table>" in page and page.count("<polyline") >= 2
    assert "unpack_to_rootfs" in page and "debian-6.12-cloud" in page


def test_cli_writes_html_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_campaign(tmp_path)
    assert main(["coverage", "report", str(tmp_path)]) == 0
    dest = tmp_path / "campaign" / "coverage-report"
    doc = json.loads((dest / "report.json").read_text())
    assert doc["growth"][-1]["functions"] == 4
    assert (dest / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "3 kernel/entry paths" in capsys.readouterr().out


def test_cli_without_a_coverage_log_says_so(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "coverage.jsonl not found" in err[0] and "--coverage" in err[0]


def test_a_corpus_without_a_log_is_reported_per_kernel(tmp_path: Path) -> None:
    from bootfuzz.case import BootCase, EntryProtocol
    from bootfuzz.fuzz.corpus import Corpus, Novelty
    from bootfuzz.fuzz.coverage_report import entries_from_corpus, load_report

    corpus = Corpus.open(tmp_path / "campaign" / "corpus")
    case = BootCase(kernel="debian-6.1-cloud", memory=256 << 20)
    corpus.add(case, 0, 5.0, Novelty(blocks=(0x0, 0x104)), blocks=2)
    corpus.add(case, 3, 9.0, Novelty(lines=("a new line",)))  # no new block
    corpus.add(BootCase(kernel="debian-6.1-cloud", memory=256 << 20,
                        entry=EntryProtocol.REAL16), 7, 20.0, Novelty(blocks=(0x108, 0x200)))
    entries = entries_from_corpus(tmp_path / "campaign" / "corpus", lambda kernel: SYMBOLS)
    assert [(e.case, e.entry, e.new_functions) for e in entries] == [
        (0, "64", ("e820__memory_setup", "startup_64")), (7, "16", ("unpack_to_rootfs",))]
    with pytest.raises(ConfigError, match="not found"):  # neither a log nor a corpus
        load_report(tmp_path / "nothing")


def test_a_corpus_report_names_one_first_case_per_kernel(tmp_path: Path) -> None:
    from bootfuzz.case import BootCase, EntryProtocol
    from bootfuzz.fuzz.corpus import Corpus, Novelty
    from bootfuzz.fuzz.coverage_report import entries_from_corpus

    corpus = Corpus.open(tmp_path / "corpus")
    corpus.add(BootCase(kernel="k", memory=256 << 20), 0, 5.0, Novelty(blocks=(0x0, 0x104)))
    corpus.add(BootCase(kernel="k", memory=256 << 20, entry=EntryProtocol.REAL16), 7, 20.0,
               Novelty(blocks=(0x208,)))
    report = build_report(entries_from_corpus(tmp_path / "corpus", lambda kernel: SYMBOLS),
                          origin=0.0)
    report = dataclasses.replace(report, source="corpus")
    page = report_html(report, "corpus")
    # A column per kernel, not per path: the corpus does not say what entry 16 reached
    # of what entry 64 had reached first, so no "not reached" is claimed for it.
    watch = page[page.index('<table class="watch">'):]
    watch = watch[:watch.index("</table>")]
    assert "entry 16" not in watch.split("</tr>")[0]
    assert "case 0 <small>(entry 64) at 5 s" in watch
    assert "case 7 <small>(entry 16) at 20 s" in watch
    assert "functions first reached<" in page
