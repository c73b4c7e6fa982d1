"""Guest-kernel block coverage on real boots: the plugin in this QEMU, the names from the
kernel's own kallsyms, two boots of one case agreeing, and a map that outlives a SIGKILL."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.cli.main import main
from bootfuzz.guest.coverage_tools import MAP_HEADER, MAP_HEADER_SIZE, build_coverage_tools
from bootfuzz.loader.layout import MiB
from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend
from bootfuzz.run.boot import prepare, run_case
from bootfuzz.run.coverage import read_map

pytestmark = pytest.mark.qemu
KERNEL = "debian-6.1-cloud"
#: Functions of the boot protocol's path in 6.1 that are not inlined (reserve_initrd
#: and early_reserve_memory are: kallsyms has no such symbols, setup_arch holds them).
EXPECTED = ("e820__memory_setup", "e820__memory_setup_default", "e820__update_table",
            "copy_bootdata", "setup_arch", "x86_64_start_kernel", "do_populate_rootfs",
            "unpack_to_rootfs", "do_header", "do_name", "do_copy", "__gunzip", "free_initrd_mem")


@pytest.fixture(scope="module")
def cli_boot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    runs = tmp_path_factory.mktemp("cov")
    out = runs / "stdout.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["boot", "--kernel", KERNEL, "--coverage", "--json",
                       "--run-dir", str(runs)])
    out.write_text(buf.getvalue())
    assert status == 0, buf.getvalue()[-2000:]
    doc: dict[str, Any] = json.loads(buf.getvalue())
    return doc


def test_boot_coverage_names_the_boot_protocol_functions(cli_boot: dict[str, Any]) -> None:
    summary = cli_boot["coverage"]
    coverage = json.loads(Path(summary["file"]).read_text())
    functions = coverage["functions"]
    assert summary["functions_reached"] == len(functions) > 3000
    missing = [f for f in EXPECTED if f not in functions]
    assert not missing, missing
    assert any(f.startswith("sanitize_boot_params") for f in functions)
    assert functions["setup_arch"]["init"] and functions["setup_arch"]["blocks"] > 10
    assert coverage["physical_base"] is not None and coverage["text_base"] is not None
    assert coverage["regions"]["decompressor"], "the decompressor's blocks, as offsets"


@pytest.mark.slow
def test_the_same_case_twice_agrees_on_its_functions(cli_boot: dict[str, Any],
                                                     tmp_path: Path) -> None:
    first = set(json.loads(Path(cli_boot["coverage"]["file"]).read_text())["functions"])
    again = run_case(BootCase(kernel=KERNEL, memory=256 * MiB, initrd=InitrdSpec(1 * MiB)),
                     tmp_path, coverage=True)
    assert again.coverage is not None
    second = set(again.coverage.functions())
    agreement = len(first & second) / len(first | second)
    assert agreement >= 0.95, f"{agreement:.3f}: {sorted(first ^ second)[:40]}"


def test_the_map_outlives_a_killed_qemu(tmp_path: Path) -> None:
    prepared = prepare(BootCase(kernel=KERNEL, memory=256 * MiB))
    backend = prepared.backend
    assert isinstance(backend, QemuTcgBackend)
    map_path = tmp_path / "coverage.map"
    argv = backend.prepare(prepared.plan, prepared.harness, tmp_path)
    argv += backend.coverage_argv(build_coverage_tools().plugin, map_path)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    stored = 0
    try:
        deadline = time.monotonic() + 120  # a bound on a hung QEMU, not a speed check
        while stored < 20_000 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if map_path.exists() and map_path.stat().st_size > MAP_HEADER_SIZE:
                stored = int(MAP_HEADER.parse(map_path.read_bytes())["count"])
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "QEMU ended before it was killed"
    assert stored >= 20_000
    assert len(read_map(map_path).addresses) >= stored


@pytest.mark.slow
def test_the_kallsyms_boot_lists_the_kernels_functions(tmp_path: Path) -> None:
    from bootfuzz.kernel.pinned import resolve_kernel
    from bootfuzz.run.kallsyms import kernel_symbols, symbols_path
    from bootfuzz.run.silence import file_sha256

    path = resolve_kernel(KERNEL)
    table = kernel_symbols(path, cache_dir=tmp_path)  # an empty cache: the one-off boot
    assert symbols_path(file_sha256(path), tmp_path).is_file()
    assert len(table) > 20_000
    assert {"startup_64", "setup_arch", "e820__memory_setup", "unpack_to_rootfs"} <= set(
        table.names)
    fn = table.function_at(table.starts[table.names.index("setup_arch")] + 1)
    assert fn is not None and fn.name == "setup_arch" and fn.init
