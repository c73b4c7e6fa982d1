"""run/coverage.py: the plugin's map file read back, and a boot's blocks split and normalized;
guest/coverage_tools.py: the plugin builds and declares the API version QEMU 7.2 loads."""

from __future__ import annotations

import ctypes
import os
import random
import shutil
from array import array
from pathlib import Path

import pytest

from bootfuzz.errors import ConfigError
from bootfuzz.guest.coverage_tools import (
    MAP_HEADER,
    MAP_LOG2_SLOTS,
    MAP_MAGIC,
    MAP_VERSION,
    QEMU_PLUGIN_API_VERSION,
    build_coverage_tools,
)
from bootfuzz.kernel.symbols import KASLR_ALIGN, SymbolTable
from bootfuzz.run.coverage import Region, normalize, read_map

TEXT = 0xFFFF_FFFF_8100_0000


def write_map(path: Path, addresses: list[int], dropped: int = 0) -> None:
    """A map as blockcov.c lays it out (header, then 2^log2 slots; slot order is the
    plugin's hash, which the reader must not depend on: here, in order)."""
    slots = array("Q", [0]) * (1 << MAP_LOG2_SLOTS)
    zero = 0 in addresses
    for i, a in enumerate(a for a in addresses if a):
        slots[i] = a
    header = MAP_HEADER.build({"magic": MAP_MAGIC, "version": MAP_VERSION,
                               "log2_slots": MAP_LOG2_SLOTS, "count": len(addresses),
                               "dropped": dropped, "zero_seen": int(zero)})
    path.write_bytes(header + slots.tobytes())


def test_read_map_returns_every_address_and_the_drop_count(tmp_path: Path) -> None:
    addresses = [0, 0x1000, TEXT + 5, 0xFFFF_FFFF_FFFF_FFF0]
    write_map(tmp_path / "m", addresses, dropped=3)
    raw = read_map(tmp_path / "m")
    assert raw.addresses == frozenset(addresses)
    assert raw.dropped == 3


def test_read_map_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"x" * 10)
    with pytest.raises(ConfigError, match="shorter than its header"):
        read_map(tmp_path / "short")
    (tmp_path / "other").write_bytes(b"\0" * 4096)
    with pytest.raises(ConfigError, match="not a version 1 bootfuzz coverage map"):
        read_map(tmp_path / "other")


def table() -> SymbolTable:
    rng = random.Random(5)
    starts = sorted(rng.sample(range(0, 0x100_0000, 16), 3000))
    return SymbolTable(tuple(starts), tuple(f"f{i}" for i in range(3000)), 0x100_0000,
                       0x110_0000, 0x111_0000)


def test_normalize_removes_the_slide_and_splits_early_code() -> None:
    symbols = table()
    rng = random.Random(6)
    called = rng.sample(symbols.starts, 500)
    kernel = {s for s in called} | {s + 4 for s in called}
    phys_base = 0x800_0000  # the kernel proper, before its switch to virtual addresses
    head = {0, symbols.starts[1], symbols.starts[2], *symbols.starts[3:20]}

    def boot(slot: int) -> set[int]:
        virt = TEXT + slot * KASLR_ALIGN
        return ({virt + k for k in kernel} | {phys_base + h for h in head}
                | {0x100_0000 + 0x10, 0x100_0000 + 0x2345}  # the decompressor
                | {0x9_0000 + 0x20}  # real-mode setup code
                | {0x40_1000, virt + 0x200_0000})  # the agent; kernel space past the code

    regions = [Region("decompressor", 0x100_0000, 0x400_0000), Region("setup", 0x9_0000, 0x9_8000)]
    a = normalize(boot(3), symbols, "sha", regions)
    b = normalize(boot(250), symbols, "sha", regions)
    assert a.blocks == b.blocks == kernel | head  # comparable across slides
    assert a.text_base == TEXT + 3 * KASLR_ALIGN and b.text_base == TEXT + 250 * KASLR_ALIGN
    assert a.physical_base == phys_base
    assert a.regions == {"decompressor": frozenset({0x10, 0x2345}), "setup": frozenset({0x20})}
    assert a.other == 2
    reached = {symbols.function_at(k) for k in kernel | head}
    assert a.functions() == {f.name for f in reached if f is not None}
    name = a.name(called[0] + 4)
    assert name.endswith("+0x4") and name.startswith("f")


def test_normalize_without_a_decidable_slide_counts_everything_as_other() -> None:
    a = normalize([TEXT + 1, TEXT + 2], table(), "sha")
    assert a.blocks == frozenset() and a.text_base is None and a.other == 2


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing: the plugin is built here")
def test_plugin_builds_and_declares_the_api_version() -> None:
    tools = build_coverage_tools()
    # Its QEMU entry points stay undefined until QEMU loads it: resolve lazily.
    lib = ctypes.CDLL(os.fspath(tools.plugin), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    assert ctypes.c_int.in_dll(lib, "qemu_plugin_version").value == QEMU_PLUGIN_API_VERSION
    assert hasattr(lib, "qemu_plugin_install")
    assert os.access(tools.dumper, os.X_OK)


def test_coverage_is_refused_on_a_backend_without_plugins() -> None:
    from bootfuzz.run.backends.kvm import KvmBackend
    from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend
    from bootfuzz.run.boot import check_coverage_backend

    check_coverage_backend(QemuTcgBackend())
    with pytest.raises(ConfigError, match="needs the qemu-tcg backend"):
        check_coverage_backend(KvmBackend())


def test_the_live_map_is_on_a_tmpfs_and_moves_into_the_run_dir(tmp_path: Path) -> None:
    from bootfuzz.run.coverage import LIVE_MAP_DIR, MAP_NAME, keep_map, live_map_path

    live = live_map_path(tmp_path)
    if LIVE_MAP_DIR.is_dir() and os.access(LIVE_MAP_DIR, os.W_OK):
        assert live.parent == LIVE_MAP_DIR
        assert live_map_path(tmp_path / "other") != live  # one per run directory
    write_map(live, [0x1000])
    keep_map(live, tmp_path)
    assert not live.exists() or live == tmp_path / MAP_NAME
    assert read_map(tmp_path / MAP_NAME).addresses == {0x1000}
    keep_map(live, tmp_path)  # nothing left to move: no error
