"""CLI exit codes and messages for bad input (one clear line on stderr, exit 2, no
traceback), and the case flags read alike by every subcommand that takes them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bootfuzz.case import HARNESS_CMDLINE, EntryProtocol, InitrdPlacement, InitrdSpec, Overrides
from bootfuzz.cli.case_args import case_from_args
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import SUBCOMMANDS, main, parse_args
from bootfuzz.compression import Compression
from bootfuzz.judge.verdict import Verdict
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


def test_cli_error_of_no_component_names_bootfuzz_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A plain ConfigError (component "bootfuzz") is not prefixed twice; one with a
    component keeps it."""
    code, err = run(["boot", "--kernel", "debian-6.1-cloud", "--arch", "sparc"], capsys)
    assert code == ExitStatus.USAGE
    assert err.strip() == ("bootfuzz: error: unknown architecture 'sparc' (known: x86_64 "
                           "(amd64), aarch64 (arm64), riscv64 (riscv64))")
    code, err = run(["boot", "--kernel", "debian-9.9-nonsense"], capsys)
    assert err.startswith("bootfuzz: error: kernels: ")


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


@pytest.mark.parametrize("command", [s.name for s in SUBCOMMANDS])
def test_cli_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: bootfuzz {command}")


CASE_FLAGS = ["--kernel", "k", "--mem", "5G", "--initrd-size", "64M", "--initrd-compression",
              "xz", "--initrd-seed", "3", "--initrd-split", "--cmdline", 'quiet=0 foo="a b"',
              "--entry", "pvh", "--initrd-placement", "high", "--kernel-load", "0x2000000",
              "--cmdline-addr", "0x4b000"]


def test_cli_boot_and_diff_read_the_case_flags_alike() -> None:
    boot = parse_args(["boot", *CASE_FLAGS])
    diff = parse_args(["diff", *CASE_FLAGS, "--peer", "ours:kvm"])
    case = case_from_args(boot)
    assert case == case_from_args(diff)
    assert case.memory == 5 << 30 and case.cmdline == f'{HARNESS_CMDLINE} quiet=0 foo="a b"'
    assert case.initrd == InitrdSpec(64 << 20, Compression.XZ, 3, split=True)
    assert case.overrides == Overrides(kernel_load=0x2000000, cmdline_addr=0x4B000)
    assert (case.entry, case.initrd_placement) == (EntryProtocol.PVH, InitrdPlacement.HIGH)


def test_cli_no_initrd_and_raw_cmdline() -> None:
    args = parse_args(["boot", "--kernel", "k", "--initrd-compression", "none-initrd",
                       "--raw-cmdline", "console=ttyS0"])
    case = case_from_args(args)
    assert case.initrd is None and case.cmdline == "console=ttyS0"


def test_cli_no_initrd_cannot_be_split(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["boot", "--kernel", "k", "--initrd-compression", "none-initrd",
                     "--initrd-split"], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "no initrd to split")


def test_cli_diff_refuses_loader_decisions_for_a_peer(
    good_fake: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A peer would silently make its own choice; the diff would compare nothing."""
    code, err = run(["diff", "--kernel", str(good_fake), "--peer", "qemu-direct:pc",
                     "--initrd-placement", "high", "--run-dir", str(tmp_path / "runs")], capsys)
    assert code == ExitStatus.USAGE
    assert_one_clear_line(err, "qemu-direct:pc", "initrd placement high")
    assert not (tmp_path / "runs").exists()  # refused before anything booted


# --- issue 13: numbers a run cannot use are usage errors ---------------------------------


@pytest.mark.parametrize("argv", [
    ["boot", "--kernel", "k", "--timeout", "0"],
    ["boot", "--kernel", "k", "--timeout", "-1"],
    ["boot", "--kernel", "k", "--timeout", "nan"],
    ["boot", "--kernel", "k", "--silence-timeout", "inf"],
    ["boot", "--kernel", "k", "--silence-timeout", "0"],
    ["diff", "--kernel", "k", "--peer", "ours:kvm", "--timeout", "-0.5"],
    ["boot", "--kernel", "k", "--initrd-seed", "-1"],
    ["boot", "--kernel", "k", "--initrd-seed", str(1 << 64)],
    ["boot", "--kernel", "k", "--kernel-load", "-4096"],
    ["replay", "x.json", "--times", "0"],
    ["replay", "x.json", "--timeout", "0"],
    ["minimize", "x.json", "--max-boots", "0"],
    ["matrix", "--jobs", "0"],
    ["matrix", "--timeout", "-3"],
    ["fuzz", "--kernel", "k", "--max-cmdline", "0"],
    ["fuzz", "--kernel", "k", "--max-cmdline", "200"],  # shorter than the harness's line
])
def test_cli_numbers_a_run_cannot_use_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(argv, capsys)
    assert code == ExitStatus.USAGE
    assert "Traceback" not in err and "internal error" not in err
    assert err.splitlines()[-1].startswith(f"bootfuzz {argv[0]}: error: argument {argv[-2]}")


def test_cli_positive_numbers_are_taken() -> None:
    args = parse_args(["boot", "--kernel", "k", "--timeout", "0.5", "--silence-timeout", "2",
                       "--initrd-seed", "0x10"])
    assert (args.timeout, args.silence_timeout, args.initrd_seed) == (0.5, 2.0, 16)


# --- issue 13: a reader that goes away -------------------------------------------------


ENTRY = "from bootfuzz.cli.main import entry; entry()"


def _closed_pipe() -> int:
    """The write end of a pipe whose reader is already gone (as in ``| true``)."""
    r, w = os.pipe()
    os.close(r)
    return w


@pytest.mark.parametrize("argv", [["kernels", "list"], ["--help"], ["boot", "--help"]])
def test_cli_output_into_a_closed_pipe_is_a_quiet_exit(argv: list[str]) -> None:
    w = _closed_pipe()
    try:
        proc = subprocess.run([sys.executable, "-c", ENTRY, *argv], stdout=w,
                              stderr=subprocess.PIPE, check=False, timeout=60)
    finally:
        os.close(w)
    assert proc.stderr == b""  # no traceback, no "Exception ignored" at exit
    # kernels list sees the pipe close: 141, as a shell reports a tool SIGPIPE ended;
    # argparse's help swallows the failed write itself and exits 0.
    assert proc.returncode == (ExitStatus.BROKEN_PIPE if argv[0] == "kernels" else 0)


class _GoneReader(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_cli_boot_json_into_a_closed_pipe_keeps_the_verdict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The verdict is on disk before the report is printed; a gone reader loses nothing."""
    import bootfuzz.cli.boot as boot_cli

    monkeypatch.setattr(boot_cli, "prepare", lambda case: case)
    monkeypatch.setattr(boot_cli, "execute",
                        lambda prepared, run_dir, **kw: SimpleNamespace(verdict=Verdict.PASS,
                                                                         coverage=None))
    monkeypatch.setattr(boot_cli, "result_json", lambda result: {"verdict": "pass"})
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    code = main(["boot", "--kernel", "k", "--json", "--run-dir", str(tmp_path)])
    assert code == ExitStatus.BROKEN_PIPE
    assert capsys.readouterr().err == ""
    (verdict,) = tmp_path.glob("*/verdict.json")
    assert json.loads(verdict.read_text()) == {"verdict": "pass"}


def test_cli_cpu_template_flag_reaches_the_case_and_its_json() -> None:
    from bootfuzz.case import CpuTemplate
    from bootfuzz.cli.report import case_json

    default = case_from_args(parse_args(["boot", "--kernel", "k"]))
    host = case_from_args(parse_args(["boot", "--kernel", "k", "--cpu-template", "host"]))
    assert (default.cpu_template, host.cpu_template) == (CpuTemplate.BASELINE, CpuTemplate.HOST)
    assert case_json(host)["cpu_template"] == "host"


def test_cli_unknown_cpu_template_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["boot", "--kernel", "k", "--cpu-template", "t2"], capsys)
    assert code == 2
    assert "--cpu-template: invalid choice: 't2'" in err


@pytest.mark.parametrize(("hardware", "until", "warned"), [
    (False, [], True), (False, ["--until", "ramdisk"], False), (True, [], False)])
def test_cli_boot_on_kvm_that_only_emulates_warns_first(
        good_fake: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        hardware: bool, until: list[str], warned: bool) -> None:
    """A full boot asked of an emulating /dev/kvm (measured) is warned of before it runs:
    it would end in a hang at --timeout.  Not for --until ramdisk, nor on hardware KVM."""
    from bootfuzz.cli import boot
    from bootfuzz.errors import BackendError
    from bootfuzz.run import doctor

    status = doctor.BackendStatus("kvm", True, "/dev/kvm runs guests at 1.7 M instructions/s",
                                  3e9 if hardware else 1.7e6, hardware)
    monkeypatch.setattr(doctor, "kvm_status", lambda: status)

    def no_boot(*args: object, **kwargs: object) -> None:
        raise BackendError("this test boots nothing")

    monkeypatch.setattr(boot, "execute", no_boot)
    code, err = run(["boot", "--kernel", str(good_fake), "--backend", "kvm", *until], capsys)
    assert code == ExitStatus.INFRASTRUCTURE and "boots nothing" in err
    assert ("warning: a full boot needs hardware KVM: /dev/kvm runs guests at 1.7 M" in err
            ) is warned


def test_cli_a_negative_minimization_budget_is_a_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["fuzz", "--kernel", "debian-6.1-cloud", "--minimize-boots", "-1"], capsys)
    assert code == ExitStatus.USAGE and "--minimize-boots: '-1': give 0 (none) or more" in err
