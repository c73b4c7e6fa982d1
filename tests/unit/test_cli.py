"""CLI exit codes and messages for bad input: one clear line on stderr, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import main
from tests.fakes import fake_bzimage


@pytest.fixture
def good_fake(tmp_path: Path) -> Path:
    path = tmp_path / "bzImage"
    path.write_bytes(fake_bzimage(init_size=0x3378000))
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def assert_one_clear_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_truncated_bzimage_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "half"
    path.write_bytes(fake_bzimage()[:3000])
    code, err = run(["boot", "--kernel", str(path)], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "kernel image", "truncated")


def test_cli_text_file_as_kernel_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "README.txt"
    path.write_text("just some text\n" * 100)
    code, err = run(["boot", "--kernel", str(path)], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "not a bzImage")


def test_cli_mem_1m_exit_2(good_fake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["boot", "--kernel", str(good_fake), "--mem", "1M"], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "memory size 1024 KiB is impossible")


def test_cli_mem_too_small_for_the_kernel_exit_2(
    good_fake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["boot", "--kernel", str(good_fake), "--mem", "64M"], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "64 MiB of RAM is too small", "init_size 0x3378000")


def test_cli_cmdline_over_cmdline_size_exit_2(
    good_fake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["boot", "--kernel", str(good_fake), "--raw-cmdline", "x" * 2048], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "command line", "2048 bytes", "cmdline_size of 2047")


def test_cli_cmdline_at_cmdline_size_is_accepted_as_input(
    good_fake: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stop right after the input checks: a missing backend binary is exit 3, not 2.
    monkeypatch.setenv("BOOTFUZZ_QEMU", "no-such-qemu")
    code, err = run(["boot", "--kernel", str(good_fake), "--raw-cmdline", "x" * 2047], capsys)
    assert code == 3
    assert_one_clear_line(err, "no-such-qemu not found", "qemu-system-x86")


def test_cli_unknown_kernel_name_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["boot", "--kernel", "debian-9.9-nonsense"], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "unknown kernel 'debian-9.9-nonsense'", "debian-6.1-cloud")


def test_cli_bad_size_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["boot", "--kernel", "x", "--mem", "lots"], capsys)
    assert code == ExitStatus.USAGE
    assert "'lots' is not a size" in err and "Traceback" not in err


def test_cli_unknown_backend_exit_2(good_fake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["boot", "--kernel", str(good_fake), "--backend", "bochs"], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "unknown backend 'bochs'", "qemu-tcg")


def test_cli_missing_subcommand_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == ExitStatus.USAGE
