"""More guest RAM than this machine can back is refused in one line, exit 3, before a
backend starts (issue 13: ``--mem 1T`` ended in QEMU's own message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import main
from bootfuzz.run.host import HostMemory, HostMemoryError, check_guest_memory, read_host_memory
from tests.fakes import fake_bzimage

GIB = 1 << 30
MEMINFO = """\
MemTotal:       24683568 kB
MemFree:        23596164 kB
SwapTotal:       2097148 kB
CommitLimit:    14439932 kB
Committed_AS:     972496 kB
HugePages_Total:       0
"""


def host(tmp_path: Path, mode: int) -> HostMemory:
    (tmp_path / "meminfo").write_text(MEMINFO)
    (tmp_path / "overcommit").write_text(f"{mode}\n")
    got = read_host_memory(tmp_path / "meminfo", tmp_path / "overcommit")
    assert got is not None
    return got


def test_read_host_memory_from_proc_files(tmp_path: Path) -> None:
    got = host(tmp_path, 0)
    assert got == HostMemory(ram=24683568 * 1024, swap=2097148 * 1024, overcommit=0,
                             commit_left=(14439932 - 972496) * 1024)


def test_limit_follows_the_overcommit_mode(tmp_path: Path) -> None:
    """The kernel's own rule for one allocation (mm/util.c, __vm_enough_memory)."""
    assert host(tmp_path, 0).limit() == (24683568 + 2097148) * 1024  # RAM + swap
    assert host(tmp_path, 1).limit() is None  # always overcommit: nothing refused
    assert host(tmp_path, 2).limit() == (14439932 - 972496) * 1024  # what is left


def test_unreadable_proc_refuses_nothing(tmp_path: Path) -> None:
    assert read_host_memory(tmp_path / "missing", tmp_path / "missing") is None
    (tmp_path / "meminfo").write_text("garbage\n")
    (tmp_path / "overcommit").write_text("0\n")
    assert read_host_memory(tmp_path / "meminfo", tmp_path / "overcommit") is None


def test_check_guest_memory_at_and_over_the_limit(tmp_path: Path) -> None:
    h = host(tmp_path, 0)
    limit = h.limit()
    assert limit is not None
    check_guest_memory(limit, h)  # exactly what the kernel grants: fine
    with pytest.raises(HostMemoryError, match=r"host: cannot back 1024 GiB of guest RAM: "
                       r"this machine has 23\.5 GiB of RAM and 2\.0 GiB of swap"):
        check_guest_memory(1024 * GIB, h)
    check_guest_memory(1024 * GIB, host(tmp_path, 1))


def test_cli_mem_beyond_this_host_is_exit_3_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    here = read_host_memory()
    limit = None if here is None else here.limit()
    if limit is None:
        pytest.skip("this host refuses no allocation (vm.overcommit_memory=1 or no /proc)")
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage(init_size=0x3378000))
    over = (limit // GIB + 1) * GIB
    code = main(["boot", "--kernel", str(kernel), "--mem", str(over),
                 "--run-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == ExitStatus.INFRASTRUCTURE
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"bootfuzz: infrastructure: host: cannot back {over // GIB} GiB")
    assert not (tmp_path / "runs").exists()  # refused before anything ran
