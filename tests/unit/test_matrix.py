"""Matrix selection (covering arrays) and the report writers."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bootfuzz.cli.main import parse_args
from bootfuzz.errors import ConfigError
from bootfuzz.peers import matrix
from bootfuzz.peers.matrix import (
    Cell,
    CellResult,
    Dimensions,
    Outcome,
    covering_cells,
    full_product,
)

KERNELS = ("debian-6.1-amd64", "debian-6.1-cloud", "debian-6.12-cloud")
DIMS = Dimensions(KERNELS)


def never(_: Cell) -> str | None:
    return None


def pvh_not_on_microvm(c: Cell) -> str | None:
    return "no pvh here" if c.entry == "pvh" and "microvm" in c.target else None


def pairs(cells: list[Cell]) -> set[tuple[tuple[int, str], tuple[int, str]]]:
    out = set()
    for c in cells:
        v = matrix.astuple(c)
        out |= {((i, v[i]), (j, v[j])) for i, j in itertools.combinations(range(5), 2)}
    return out


def test_matrix_full_product_is_900_cells() -> None:
    assert len(full_product(DIMS)) == 3 * 5 * 4 * 5 * 3  # kernels entries mem initrds targets


def test_matrix_pairwise_covers_every_pair_in_few_cells() -> None:
    cells = covering_cells(DIMS, 2, never)
    assert pairs(cells) == pairs(full_product(DIMS))
    assert 20 <= len(cells) <= 30  # at least 5 initrds x 4 memories
    assert covering_cells(DIMS, 2, never) == cells  # deterministic


def test_matrix_strength3_covers_every_triple() -> None:
    cells = covering_cells(DIMS, 3, never)
    def triples(cs: list[Cell]) -> set[tuple[object, ...]]:
        return {tuple((i, matrix.astuple(c)[i]) for i in ax)
                for c in cs for ax in itertools.combinations(range(5), 3)}
    assert triples(cells) == triples(full_product(DIMS))
    assert len(cells) < 900 // 4  # 110 here: far below the full product


def test_matrix_uncoverable_pair_shows_as_skip_cell() -> None:
    cells = covering_cells(DIMS, 2, pvh_not_on_microvm)
    skipped = [c for c in cells if pvh_not_on_microvm(c)]
    assert len(skipped) == 1 and skipped[0].entry == "pvh"
    runnable = [c for c in cells if not pvh_not_on_microvm(c)]
    want = {p for p in pairs(full_product(DIMS))
            if p != ((1, "pvh"), (4, "qemu-direct:microvm:tcg"))}
    assert pairs(runnable) == want


def test_matrix_bad_strength_config_error() -> None:
    with pytest.raises(ConfigError, match="strength 6"):
        covering_cells(DIMS, 6, never)


RESULTS = [
    CellResult(Cell("k1", "64", "256M", "gzip", "ours:qemu-tcg"), Outcome.PASS,
               "all 10 oracles pass", 3.2, "/r/1"),
    CellResult(Cell("k1", "pvh", "5G", "xz", "qemu-direct:pc:tcg"), Outcome.FAIL,
               "ramdisk fail: expected a | b, observed <c>", 7.5, "/r/2"),
    CellResult(Cell("k2", "pvh", "5G", "none-initrd", "command:x"), Outcome.SKIP,
               "entry pvh: a command template boots the bzImage as given"),
    CellResult(Cell("k2", "64", "3583M", "lz4", "qemu-direct:microvm:kvm"), Outcome.ERROR,
               "backend: qemu missing", 0.1),
]


def test_matrix_junit_parses_with_counts_and_elements() -> None:
    root = ET.fromstring(matrix.junit_xml(RESULTS))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("4", "1", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.cell.id for r in RESULTS]
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == RESULTS[1].reason
    skipped = cases[2].find("skipped")
    assert skipped is not None and skipped.get("message") == RESULTS[2].reason
    assert cases[3].find("error") is not None


def test_matrix_markdown_table_shape() -> None:
    lines = matrix.markdown(RESULTS).splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + len(RESULTS)
    assert table[0] == "| " + " | ".join(matrix.COLUMNS) + " |"
    assert table[1] == "|" + "---|" * len(matrix.COLUMNS)
    # escaped pipes keep every row at the header's column count
    assert all(ln.replace("\\|", "").count("|") == len(matrix.COLUMNS) + 1 for ln in table)
    assert "4 cells: 1 pass, 1 fail, 1 skip, 1 error" in lines


def test_matrix_html_escapes_and_classes() -> None:
    text = matrix.html_report(RESULTS)
    assert '<tr class="fail">' in text and '<tr class="skip">' in text
    assert "&lt;c&gt;" in text and "<c>" not in text


def test_matrix_terminal_table_has_every_cell() -> None:
    lines = matrix.terminal_table(RESULTS).splitlines()
    assert lines[0].split() == list(matrix.COLUMNS)
    assert len(lines) == 2 + len(RESULTS) + 2


def test_matrix_write_reports_files(tmp_path: Path) -> None:
    files = matrix.write_reports(RESULTS, tmp_path)
    assert sorted(p.name for p in files.values()) == ["junit.xml", "matrix.html", "matrix.md",
                                                      "results.json"]


def test_matrix_cli_list_prints_cells(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["matrix", "--list", "--kernels", *KERNELS])
    assert args.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(out) - 1} cells"
    assert len(out) - 1 == len(covering_cells(DIMS))


def test_matrix_cli_nightly_list_is_full_product(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(["matrix", "--list", "--nightly", "--kernels", *KERNELS])
    assert args.run(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "900 cells"


def test_matrix_cli_bad_target_config_error() -> None:
    args = parse_args(["matrix", "--list", "--kernels", "k", "--targets", "bochs"])
    with pytest.raises(ConfigError, match="unknown target 'bochs'"):
        args.run(args)


def test_initrd_none_is_an_uncompressed_archive_and_none_initrd_no_initrd() -> None:
    # The same words as `bootfuzz boot --initrd-compression`.
    plain = matrix.Cell("debian-6.1-cloud", "64", "256M", "none", "ours:qemu-tcg").case()
    assert plain.initrd is not None and plain.initrd.compression.value == "none"
    bare = matrix.Cell("debian-6.1-cloud", "64", "256M", "none-initrd", "ours:qemu-tcg").case()
    assert bare.initrd is None
    args = parse_args(["matrix", "--initrds", "none", "none-initrd"])
    assert args.initrds == ["none", "none-initrd"]
