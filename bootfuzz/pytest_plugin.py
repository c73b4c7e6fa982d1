"""pytest plugin: boot real kernels from your own tests.

Registered as the ``pytest11`` entry point ``bootfuzz``, so installing bootfuzz
makes the ``boot`` fixture available everywhere::

    def test_big_initrd(boot, bootfuzz_verdict):
        result = boot(kernel="debian-6.1-cloud", mem="5G", initrd_size="64M",
                      compression="xz")
        bootfuzz_verdict(result)

Options: ``--bootfuzz-backend NAME`` (default qemu-tcg) and
``--bootfuzz-timeout SECONDS``.  Each boot's files (console.log, command.json)
go under the test's ``tmp_path``.  See docs/pytest-plugin.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

from bootfuzz.case import HARNESS_CMDLINE, BootCase, EntryProtocol, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.boot import DEFAULT_TIMEOUT, BootResult, run_case
from bootfuzz.units import parse_size

DEFAULT_BACKEND = "qemu-tcg"


class BootFunction(Protocol):
    def __call__(self, kernel: str = ..., mem: str | int = ..., initrd_size: str | int = ...,
                 compression: str | None = ..., cmdline: str = ..., entry: str = ...,
                 ) -> BootResult: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bootfuzz", "boot real kernels with bootfuzz")
    group.addoption("--bootfuzz-backend", default=DEFAULT_BACKEND, metavar="NAME",
                    help=f"backend the boot fixture runs on; default {DEFAULT_BACKEND}")
    group.addoption("--bootfuzz-timeout", type=float, default=DEFAULT_TIMEOUT,
                    metavar="SECONDS",
                    help=f"give up on a guest after this long; default {DEFAULT_TIMEOUT:.0f}")


def _size(value: str | int) -> int:
    return value if isinstance(value, int) else parse_size(value)


def failing_oracles(result: BootResult) -> str:
    """The oracles that did not pass, with expected and observed, for a failure message."""
    lines = [f"boot verdict {result.verdict.value} ({result.case.kernel}, "
             f"{result.case.memory >> 20} MiB; log {result.run_dir / 'console.log'})"]
    for r in result.oracles:
        if r.verdict is Verdict.PASS:
            continue
        lines.append(f"  {r.name}: {r.verdict.value}")
        lines.append(f"    expected: {r.expected}")
        lines.append(f"    observed: {r.observed}")
        if r.detail:
            lines.append(f"    detail:   {r.detail}")
    return "\n".join(lines)


def bootfuzz_verdict(result: BootResult, expected: Verdict = Verdict.PASS) -> None:
    """Assert the boot's overall verdict; on failure, print every oracle that did not pass."""
    __tracebackhide__ = True
    if result.verdict is not expected:
        pytest.fail(failing_oracles(result), pytrace=False)


@pytest.fixture(name="bootfuzz_verdict")
def _bootfuzz_verdict_fixture() -> Callable[..., None]:
    """The :func:`bootfuzz_verdict` assertion, as a fixture for plugin users."""
    return bootfuzz_verdict


@pytest.fixture
def boot(request: pytest.FixtureRequest, tmp_path: Path) -> BootFunction:
    """A callable that boots one case and returns its BootResult (run dirs in tmp_path)."""
    backend = str(request.config.getoption("--bootfuzz-backend"))
    timeout = float(request.config.getoption("--bootfuzz-timeout"))
    counter = iter(range(1 << 30))

    def _boot(kernel: str = "debian-6.1-cloud", mem: str | int = "256M",
              initrd_size: str | int = "1M", compression: str | None = "gzip",
              cmdline: str = "", entry: str = "64") -> BootResult:
        initrd = None if compression in (None, "none") else InitrdSpec(
            _size(initrd_size), Compression(compression))
        case = BootCase(kernel=kernel, memory=_size(mem),
                        cmdline=f"{HARNESS_CMDLINE} {cmdline}".strip(), initrd=initrd,
                        entry=EntryProtocol(entry), backend=backend)
        run_dir = tmp_path / f"boot-{next(counter)}"
        run_dir.mkdir()
        return run_case(case, run_dir, timeout=timeout)

    return _boot
