"""A place bootfuzz cannot write is one line naming the path, exit 3, with what was
half written removed (issue 13: OSError tracebacks, partial 14 MB blobs left).

The full-disk cases use a real 5 MB tmpfs, which needs root (and a kernel that lets
us mount); without it they skip and say why.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import main
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.state import load_state
from tests.fakes import fake_bzimage

STANDIN_QEMU = "#!/bin/sh\nexec sleep 120\n"


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@contextlib.contextmanager
def mounted_tmpfs(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                           str(where)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill *disk* until only *leave* bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as fh:
        fh.write(bytes(max(free - leave, 0)))


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small fake kernel and a stand-in QEMU: a boot gets as far as writing its files."""
    qemu = tmp_path / "qemu"
    qemu.write_text(STANDIN_QEMU)
    qemu.chmod(0o755)
    monkeypatch.setenv("BOOTFUZZ_QEMU", str(qemu))
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage(pm_size=1 << 20, init_size=0x3378000))
    return kernel


def boot(kernel: Path, run_dir: Path) -> list[str]:
    return ["boot", "--kernel", str(kernel), "--initrd-compression", "none-initrd",
            "--run-dir", str(run_dir), "--timeout", "1"]


def test_run_dir_under_a_file(fake_run: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("x")
    code = main(boot(fake_run, tmp_path / "a-file" / "runs"))
    line = one_line(capsys.readouterr().err)
    assert code == ExitStatus.INFRASTRUCTURE
    assert line == (f"bootfuzz: infrastructure: storage: cannot write "
                    f"{tmp_path / 'a-file' / 'runs'}: Not a directory")


def test_run_dir_read_only(fake_run: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro", "size=1m") as ro:
        code = main(boot(fake_run, ro))
    line = one_line(capsys.readouterr().err)
    assert code == ExitStatus.INFRASTRUCTURE
    assert line.startswith(f"bootfuzz: infrastructure: storage: cannot write {ro}/")
    assert line.endswith(": Read-only file system")


def test_cache_read_only(fake_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """An empty read-only cache: the harness cannot be built into it."""
    with mounted_tmpfs(tmp_path / "cache", "ro", "size=1m") as cache:
        monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))
        code = main(boot(fake_run, tmp_path / "runs"))
    line = one_line(capsys.readouterr().err)
    assert code == ExitStatus.INFRASTRUCTURE
    assert f"{cache}/harness" in line and "Read-only file system" in line


def test_full_disk_boot_removes_its_partial_blobs(fake_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The 1 MiB kernel blob does not fit in what is left: nothing half written stays."""
    with mounted_tmpfs(tmp_path / "disk", "size=5m") as disk:
        fill(disk, 256 << 10)
        code = main(boot(fake_run, disk / "runs"))
        line = one_line(capsys.readouterr().err)
        assert code == ExitStatus.INFRASTRUCTURE
        assert line.startswith(f"bootfuzz: infrastructure: storage: cannot write {disk}/runs/")
        assert line.endswith(": No space left on device")
        assert list((disk / "runs").iterdir()) == []  # the blobs so far, and their run, gone


def test_full_disk_atomic_write_names_the_file(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "disk", "size=5m") as disk:
        fill(disk, 0)
        target = disk / "state.json"
        with pytest.raises(OSError) as exc:
            atomic_write_text(target, "x" * 100_000)
        assert exc.value.filename == str(target)
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no temp file left


def test_full_disk_campaign_stops_with_its_state(
    fake_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bootfuzz fuzz` on a disk with no room for a boot's files: every case fails for
    infrastructure, the campaign stops, exit 3, and its state is on disk for --resume."""
    with mounted_tmpfs(tmp_path / "disk", "size=5m") as disk:
        fill(disk, 512 << 10)
        code = main(["fuzz", "--kernel", str(fake_run), "--time", "60s", "--max-cases", "20",
                     "--jobs", "1", "--out", str(disk / "out")])
        captured = capsys.readouterr()
        assert code == ExitStatus.INFRASTRUCTURE, captured.err
        assert "Traceback" not in captured.err
        assert "No space left on device" in captured.out + captured.err
        state = load_state(disk / "out" / "campaign" / "state.json")
        assert state.counts.get("infra", 0) >= 1, state.counts
        summary = json.loads((disk / "out" / "campaign" / "summary.json").read_text())
        assert "infrastructure" in summary["aborted"], summary


@pytest.mark.parametrize(("error", "said"), [
    (OSError(28, "No space left on device", "/var/x"),
     "bootfuzz: infrastructure: /var/x: No space left on device"),
    (OSError(30, "Read-only file system"), "bootfuzz: infrastructure: Read-only file system"),
])
def test_any_os_error_left_unsaid_is_one_line_exit_3(
    error: OSError, said: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """The last resort for a file error no module turned into its own message."""
    import bootfuzz.cli.kernels as kernels_cli

    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(kernels_cli, "run", fail)
    assert main(["kernels", "list"]) == ExitStatus.INFRASTRUCTURE
    assert one_line(capsys.readouterr().err) == said
