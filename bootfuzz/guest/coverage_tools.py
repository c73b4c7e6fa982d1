"""Builds the coverage tools from harness/coverage: the QEMU plugin and the kallsyms dumper.

``blockcov.so`` is a QEMU TCG plugin (loaded with ``-plugin``) that records the
start address of every guest block into a file-backed hash set; ``kallsyms`` is
the static /init of a one-off boot that prints the kernel's code symbols.  The
map file's header and the dumper's markers are declared here, once, and handed
to the compiler with ``-D``; bootfuzz.run.coverage and bootfuzz.run.kallsyms
read them from here.  Builds are cached like the harness's
(bootfuzz.guest.harness.cached_build), keyed by sources, flags and tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi.structs import Field, Struct
from bootfuzz.cache import cache_root
from bootfuzz.errors import InfrastructureError
from bootfuzz.guest.harness import (
    HARNESS_SOURCE_DIR,
    build_key,
    build_tools,
    cached_build,
    run_build_step,
)
from bootfuzz.guest.protocol import (
    AGENT_EXIT_PORT,
    AGENT_EXIT_VALUE,
    KALLSYMS_BEGIN,
    KALLSYMS_END,
)

COVERAGE_SOURCE_DIR = HARNESS_SOURCE_DIR / "coverage"
PLUGIN_NAME = "blockcov.so"
DUMPER_NAME = "kallsyms"

#: The QEMU plugin API version the plugin is built for: QEMU 7.2 (Debian 12)
#: accepts 0 to 1 (include/qemu/qemu-plugin.h: QEMU_PLUGIN_VERSION 1); the
#: version-2 API of QEMU 8.2 dropped calls we do not use, so 1 loads there too.
QEMU_PLUGIN_API_VERSION = 1
#: The map file header (bootfuzz.run.coverage reads what blockcov.c writes; the
#: plugin gets each field's offset and size as -D MAP_OFF_<name> / MAP_SIZE_<name>).
MAP_MAGIC = 0x564F_4346_5A46_5442  # "BTFZFCOV" as little-endian bytes
MAP_VERSION = 1
MAP_HEADER_SIZE = 64
MAP_HEADER = Struct("coverage map header", MAP_HEADER_SIZE, (
    Field("magic", 0x00, 8, doc="MAP_MAGIC, written last: the header is whole"),
    Field("version", 0x08, 4),
    Field("log2_slots", 0x0C, 4, doc="2^log2_slots 8-byte slots follow the header"),
    Field("count", 0x10, 8, doc="blocks stored"),
    Field("dropped", 0x18, 8, doc="blocks not stored: the set was 3/4 full"),
    Field("zero_seen", 0x20, 8, doc="a block at address 0 (0 marks an empty slot)"),
))
#: 2^18 slots of 8 bytes: a 2 MiB file; a 6.1 cloud boot stores ~50,000 blocks, the
#: plugin stops storing (and counts what it drops) at 3/4 full, 196,608.  Every
#: slot is read back after each boot, so the set is no bigger than that needs.
MAP_LOG2_SLOTS = 18

PLUGIN_CFLAGS: tuple[str, ...] = (
    "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
    "-fvisibility=hidden", "-Wl,--build-id=none",
)
DUMPER_CFLAGS: tuple[str, ...] = (
    "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-static", "-Wl,--build-id=none",
)
_RECIPE_VERSION = 1


@dataclass(frozen=True)
class CoverageTools:
    plugin: Path
    dumper: Path
    directory: Path


def plugin_defines() -> tuple[str, ...]:
    fields = [f"-DMAP_OFF_{f.name}={f.offset:#x}" for f in MAP_HEADER]
    fields += [f"-DMAP_SIZE_{f.name}={f.size}" for f in MAP_HEADER]
    return (
        f"-DQEMU_PLUGIN_API_VERSION={QEMU_PLUGIN_API_VERSION}",
        f"-DMAP_MAGIC={MAP_MAGIC:#x}ULL",
        f"-DMAP_VERSION={MAP_VERSION}",
        f"-DMAP_HEADER_SIZE={MAP_HEADER_SIZE}",
        f"-DMAP_LOG2_SLOTS={MAP_LOG2_SLOTS}",
        *fields,
    )


def dumper_defines() -> tuple[str, ...]:
    return (
        f'-DKALLSYMS_BEGIN="{KALLSYMS_BEGIN}"',
        f'-DKALLSYMS_END="{KALLSYMS_END}"',
        f"-DEXIT_PORT={AGENT_EXIT_PORT:#x}",
        f"-DEXIT_VALUE={AGENT_EXIT_VALUE:#x}",
    )


def _sources() -> dict[str, Path]:
    sources = {name: COVERAGE_SOURCE_DIR / name for name in ("blockcov.c", "kallsyms.c")}
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise InfrastructureError(
            f"coverage sources not found: {', '.join(missing)} "
            "(bootfuzz must run from its source tree)"
        )
    return sources


def build_coverage_tools(cache_dir: Path | None = None) -> CoverageTools:
    """Builds the plugin and the dumper with gcc, or returns the cached build."""
    tools = {k: v for k, v in build_tools().items() if k == "gcc"}
    sources = _sources()
    plugin_flags = (*PLUGIN_CFLAGS, *plugin_defines())
    dumper_flags = (*DUMPER_CFLAGS, *dumper_defines())
    inputs = [("recipe", str(_RECIPE_VERSION).encode())]
    inputs += [(name, path.read_bytes()) for name, path in sorted(sources.items())]
    inputs += [("plugin", "\0".join(plugin_flags).encode()),
               ("dumper", "\0".join(dumper_flags).encode())]

    def build(out: Path) -> None:
        run_build_step([tools["gcc"], *plugin_flags, "-o", out / PLUGIN_NAME,
                        sources["blockcov.c"]], "compiling the coverage plugin")
        run_build_step([tools["gcc"], *dumper_flags, "-o", out / DUMPER_NAME,
                        sources["kallsyms.c"]], "compiling the kallsyms dumper")

    final = cached_build(cache_root(cache_dir) / "coverage", build_key(inputs, tools), build)
    return CoverageTools(final / PLUGIN_NAME, final / DUMPER_NAME, final)
