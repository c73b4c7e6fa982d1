"""A kernel's code symbols, read from the kernel itself in a one-off boot, cached per sha256.

The pinned kernels carry no symbol table and Debian's debug packages are
hundreds of MiB; the running kernel lists every built-in function in
``/proc/kallsyms``.  So the first time coverage of a kernel is named, that
kernel is booted once on QEMU-TCG with the kallsyms dumper
(harness/coverage/kallsyms.c) as its /init, and its listing, made relative to
``_text`` (bootfuzz.kernel.symbols), is kept in ``<cache>/symbols/<sha256>``:
later boots, with any KASLR slide, reuse it.  Costs one boot of a few seconds
per kernel; concurrent callers wait on a lock instead of booting twice.  The
device-tree kernels are dumped by their agent's kallsyms mode instead
(bootfuzz.run.dt_boot.dump_dt_kallsyms, handed in as *dump*).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.cache import cache_root
from bootfuzz.case import BootCase
from bootfuzz.errors import BackendError, ConfigError
from bootfuzz.fileio import atomic_write_text, locked
from bootfuzz.guest.coverage_tools import build_coverage_tools
from bootfuzz.guest.harness import build_harness
from bootfuzz.guest.initrd import early_archive
from bootfuzz.guest.protocol import KALLSYMS_BEGIN, KALLSYMS_END
from bootfuzz.kernel.image import load_kernel_image
from bootfuzz.kernel.symbols import SymbolTable, parse_kallsyms
from bootfuzz.loader.planner import plan_boot
from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend
from bootfuzz.run.console import run_console
from bootfuzz.run.silence import file_sha256

_DIR = "symbols"
#: Enough for the dumper's boot: /proc/kallsyms of a distribution kernel is a few MiB.
DUMP_MEMORY = 256 << 20
DUMP_TIMEOUT = 240.0
DUMP_SILENCE = 60.0


@dataclass(frozen=True)
class _DumperInitrd:
    """The dumper's archive as the loader sees an initrd (loader.plan.InitrdImage)."""

    path: Path
    size: int
    payload_sha256: str = ""


def symbols_path(kernel_sha256: str, cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / _DIR / kernel_sha256



def listing_from_console(text: str) -> str:
    """The kallsyms lines the dumper printed between its markers."""
    begin = text.find(KALLSYMS_BEGIN + "\n")
    end = text.find(KALLSYMS_END, begin)
    if begin < 0 or end < 0:
        raise BackendError("the kallsyms dump boot printed no complete listing")
    return text[begin + len(KALLSYMS_BEGIN) + 1:end]


def dump_kallsyms(kernel_path: Path) -> str:
    """Boot *kernel_path* once with the dumper as /init and return its listing."""
    tools = build_coverage_tools()
    harness = build_harness()
    backend = QemuTcgBackend()
    image = load_kernel_image(kernel_path)
    case = BootCase(kernel=str(kernel_path), memory=DUMP_MEMORY)
    with tempfile.TemporaryDirectory(prefix="bootfuzz-kallsyms-") as tmp:
        run_dir = Path(tmp)
        archive = run_dir / "dumper.cpio.bin"
        data = early_archive(tools.dumper.read_bytes())
        archive.write_bytes(data)
        plan = plan_boot(case, image, backend.platform(DUMP_MEMORY),
                         _DumperInitrd(archive, len(data)))
        argv = backend.prepare(plan, harness, run_dir)
        transcript = run_console(argv, timeout=DUMP_TIMEOUT, silence_timeout=DUMP_SILENCE,
                                 stop_patterns=[KALLSYMS_END],
                                 probe=backend.halt_probe(run_dir))
    return listing_from_console(transcript.text)


_TABLES: dict[Path, SymbolTable] = {}


def kernel_symbols(kernel_path: Path, cache_dir: Path | None = None,
                   dump: Callable[[Path], str] = dump_kallsyms) -> SymbolTable:
    """The code symbols of the kernel at *kernel_path*: read once per process from the
    cache, else from a one-off boot (*dump*: the x86 dumper's, unless told)."""
    sha = file_sha256(kernel_path)
    path = symbols_path(sha, cache_dir)
    if path not in _TABLES:
        _TABLES[path] = _cached_or_dumped(kernel_path, path, dump)
    return _TABLES[path]


def _cached_or_dumped(kernel_path: Path, path: Path, dump: Callable[[Path], str]
                      ) -> SymbolTable:
    with locked(path):
        try:
            return SymbolTable.loads(path.read_text())
        except (OSError, ConfigError):
            pass
        table = parse_kallsyms(listing_from_console(
            f"{KALLSYMS_BEGIN}\n{dump(kernel_path)}{KALLSYMS_END}"))
        atomic_write_text(path, table.dumps())
        return table
