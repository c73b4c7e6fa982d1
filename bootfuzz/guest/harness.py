"""Builds the guest-side harness from source: the /init agent and the firmware stub.

Both are built on the machine that runs bootfuzz, by its own gcc and binutils,
rather than shipped as binaries: the sources under harness/ are the reviewable
artefact.  Constants both sides must agree on (the exit port, the console
markers, the hand-off layout) are declared in bootfuzz.guest.protocol and
bootfuzz.abi.handoff and handed to the compiler with ``-D`` or to the assembler
through a generated include, so each exists once.

Builds are cached under ``<cache root>/harness/<key>/`` (bootfuzz.cache), keyed by
a hash of the sources, the flags, the generated include and the tools, and
published with one atomic rename so concurrent runs never see half a build.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi import handoff as ho
from bootfuzz.abi.bootparam import E820_ENTRY_SIZE
from bootfuzz.abi.handoff import HANDOFF, HANDOFF_MAGIC, HandoffMode
from bootfuzz.cache import cache_root
from bootfuzz.errors import HarnessBug, HarnessBuildError
from bootfuzz.guest.protocol import (
    AGENT_EXIT_PORT,
    AGENT_EXIT_VALUE,
    AGENT_FORMAT_VERSION,
    AGENT_LINE_PREFIX,
    CMOS_DATA,
    CMOS_INDEX,
    COM1_BASE,
    FIRMWARE_BAD_MAGIC_MESSAGE,
    FIRMWARE_BAD_MODE_MESSAGE,
    FIRMWARE_DEBUG_ENV,
    FIRMWARE_ENTERING_MESSAGE,
    FIRMWARE_UNSERVED_MESSAGE,
    KALLSYMS_BEGIN,
    KALLSYMS_END,
    PIC_MASTER_IMR,
    PIC_SLAVE_IMR,
    PORT_SYS_CTRL_A,
    RTC_HOURS,
    RTC_MINUTES,
    RTC_SECONDS,
    UART_LSR,
    UART_LSR_THRE,
    firmware_debug,
)
from bootfuzz.loader import layout
from bootfuzz.loader.platform import FIRMWARE_SIZE, FIRMWARE_TOP_BASE
from bootfuzz.loader.x86 import MSR_EFER, Cr0

#: Where the sources live: harness/ next to the package in the source tree.
HARNESS_SOURCE_DIR = Path(__file__).resolve().parents[2] / "harness"

#: A -bios image must be a multiple of 64 KiB; ours is exactly one such block
#: (loader.platform.FIRMWARE_SIZE), which QEMU maps at the top of 4 GiB and again
#: at BIOS_AREA_START.
#: source: Intel SDM vol. 3A, 9.1.4: the first instruction is fetched at 0xFFFFFFF0.
RESET_VECTOR = 0xFFFF_FFF0
RESET_VECTOR_OFFSET = RESET_VECTOR - FIRMWARE_TOP_BASE

#: Flags for the agent.  Freestanding and static: /init runs before anything else
#: exists.  -fno-tree-loop-distribute-patterns stops gcc turning our memset loop
#: into a call to memset; --build-id=none keeps the output byte-for-byte stable.
AGENT_CFLAGS: tuple[str, ...] = (
    "-O2",
    "-std=gnu11",
    "-Wall",
    "-Wextra",
    "-nostdlib",
    "-static",
    "-ffreestanding",
    "-fno-stack-protector",
    "-fno-pie",
    "-no-pie",
    "-fno-tree-loop-distribute-patterns",
    "-fno-asynchronous-unwind-tables",
    "-fcf-protection=none",
    "-Wl,--build-id=none",
)
ASFLAGS: tuple[str, ...] = ("--64", "--fatal-warnings")
LDFLAGS: tuple[str, ...] = (
    "-m",
    "elf_x86_64",
    "-nostdlib",
    f"-Ttext={layout.BIOS_AREA_START:#x}",
    "--oformat",
    "binary",
)

#: Debian package that provides each tool, for the error message.
_TOOL_PACKAGES = {"gcc": "gcc", "as": "binutils", "ld": "binutils"}
#: Bump when the build recipe changes in a way the key would not see.
_RECIPE_VERSION = 1
_STDERR_TAIL = 3000

AGENT_NAME = "init"
AGENT_SELFTEST_NAME = "agent-selftest"
FIRMWARE_NAME = "stub.bin"
INCLUDE_NAME = "handoff.inc"


@dataclass(frozen=True)
class HarnessArtifacts:
    """Paths of one cached build.

    ``agent_selftest`` is the agent's code built to run on the host (reads a fake
    root given as argv[1], prints the report, exits): for tests, never for guests.
    """

    agent: Path
    firmware: Path
    agent_selftest: Path
    directory: Path


def agent_defines() -> tuple[str, ...]:
    """The -D flags that give the agent its shared constants."""
    return (
        f"-DAGENT_EXIT_PORT={AGENT_EXIT_PORT:#x}",
        f"-DAGENT_EXIT_VALUE={AGENT_EXIT_VALUE:#x}",
        f'-DAGENT_LINE_PREFIX="{AGENT_LINE_PREFIX}"',
        f"-DAGENT_FORMAT_VERSION={AGENT_FORMAT_VERSION}",
    )


def kallsyms_dumper_defines() -> tuple[str, ...]:
    """What makes the device-tree agent's source its kallsyms dumper (a binary of its
    own: the agent of every other boot stays as it was), and the dump's markers."""
    return ("-DAGENT_KALLSYMS_DUMP", f'-DAGENT_KALLSYMS_BEGIN="{KALLSYMS_BEGIN}"',
            f'-DAGENT_KALLSYMS_END="{KALLSYMS_END}"')


def as_string(text: str) -> str:
    """A GNU as string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def handoff_include() -> str:
    """The assembler include (``.equ`` lines) the firmware stub reads."""
    equ: list[tuple[str, int, str]] = [
        ("HANDOFF_ADDR", layout.HANDOFF_ADDR, "layout.HANDOFF_ADDR"),
        ("HANDOFF_SIZE", HANDOFF.size, "HANDOFF.size"),
        ("HANDOFF_MAGIC", HANDOFF_MAGIC, "handoff.HANDOFF_MAGIC"),
    ]
    equ += [(f"HANDOFF_MODE_{m.name}", int(m), "HandoffMode") for m in HandoffMode]
    equ += [(f"HO_{f.name.upper()}", f.offset, f"{f.size} bytes") for f in HANDOFF]
    equ += [
        ("FW_BASE", layout.BIOS_AREA_START, "layout.BIOS_AREA_START"),
        ("FW_SIZE", FIRMWARE_SIZE, "FIRMWARE_SIZE"),
        ("RESET_VECTOR_OFFSET", RESET_VECTOR_OFFSET, "image offset of 0xFFFFFFF0"),
        ("FW_STACK_TOP", layout.BOOT_STACK_TOP, "layout.BOOT_STACK_TOP"),
        ("COM1_BASE", COM1_BASE, "serial port"),
        ("UART_LSR", UART_LSR, "line status register offset"),
        ("UART_LSR_THRE", UART_LSR_THRE, "transmit holding register empty"),
        ("PORT_SYS_CTRL_A", PORT_SYS_CTRL_A, "fast A20"),
        ("X86_CR0_PE", int(Cr0.PE), "protection enable"),
        ("MSR_EFER", MSR_EFER, "extended feature enable register"),
        ("FW_DEBUG", int(firmware_debug()), f"${FIRMWARE_DEBUG_ENV}"),
    ]
    equ += _bios_equates()
    lines = [
        "# Generated by bootfuzz/guest/harness.py from bootfuzz/abi/handoff.py,",
        "# bootfuzz/guest/protocol.py and bootfuzz/loader/layout.py.  Do not edit.",
    ]
    lines += [f".equ {name}, {value:#x}  # {why}" for name, value, why in equ]
    messages = (
        ("FW_MSG_ENTERING", FIRMWARE_ENTERING_MESSAGE),
        ("FW_MSG_BAD_MAGIC", FIRMWARE_BAD_MAGIC_MESSAGE),
        ("FW_MSG_BAD_MODE", FIRMWARE_BAD_MODE_MESSAGE),
        ("FW_MSG_UNSERVED", FIRMWARE_UNSERVED_MESSAGE),
    )
    for name, text in messages:
        lines += [f".macro {name}", f"\t.asciz {as_string(text)}", ".endm"]
    return "\n".join(lines) + "\n"


def _bios_equates() -> list[tuple[str, int, str]]:
    """The 16-bit entry's BIOS: its data block, the BDA and the ports it drives."""
    equ: list[tuple[str, int, str]] = [
        ("BIOS_DATA_ADDR", layout.BIOS_DATA_ADDR, "layout.BIOS_DATA_ADDR"),
        ("BIOS_DATA_MAGIC", ho.BIOS_DATA_MAGIC, "handoff.BIOS_DATA_MAGIC"),
        ("BIOS_E820_TABLE", ho.BIOS_E820_TABLE_OFFSET, "entries after the header"),
        ("E820_ENTRY_SIZE", E820_ENTRY_SIZE, "struct boot_e820_entry"),
        ("E820_SMAP", ho.E820_SMAP, "SMAP signature"),
        ("BDA_ADDR", ho.BDA_ADDR, "BIOS data area"),
        ("BDA_SIZE", ho.BDA.size, "BIOS data area"),
        ("VIDEO_MODE_TEXT_80X25", ho.VIDEO_MODE_TEXT_80X25, "INT 10h mode"),
        ("VIDEO_COLS", ho.VIDEO_COLS, "text columns"),
        ("VIDEO_ROWS", ho.VIDEO_ROWS, "text rows"),
        ("VIDEO_CHAR_HEIGHT", ho.VIDEO_CHAR_HEIGHT, "font height"),
        ("VIDEO_CURSOR_SHAPE", ho.VIDEO_CURSOR_SHAPE, "cursor start/end lines"),
        ("INT15_UNSUPPORTED", ho.INT15_UNSUPPORTED, "AH: function not supported"),
        ("INT13_INVALID_FUNCTION", ho.INT13_INVALID_FUNCTION, "AH: invalid function"),
        ("PIC_MASTER_IMR", PIC_MASTER_IMR, "8259 master mask"),
        ("PIC_SLAVE_IMR", PIC_SLAVE_IMR, "8259 slave mask"),
        ("CMOS_INDEX", CMOS_INDEX, "RTC index port"),
        ("CMOS_DATA", CMOS_DATA, "RTC data port"),
        ("RTC_SECONDS", RTC_SECONDS, "RTC register"),
        ("RTC_MINUTES", RTC_MINUTES, "RTC register"),
        ("RTC_HOURS", RTC_HOURS, "RTC register"),
    ]
    equ += [(f"BD_{f.name.upper()}", f.offset, f"{f.size} bytes") for f in ho.BIOS_DATA]
    equ += [(f"BDA_{f.name.upper()}", f.offset, f"{f.size} bytes") for f in ho.BDA]
    return equ


#: Subdirectories of harness/ that other builders own (bootfuzz.guest.probes,
#: bootfuzz.guest.coverage_tools): a change
#: there must not invalidate the agent and firmware build.
_OTHER_BUILDS = ("probes", "coverage", "dtentry")


def _source_files() -> list[Path]:
    files = sorted(
        p for p in HARNESS_SOURCE_DIR.rglob("*")
        if p.is_file() and p.relative_to(HARNESS_SOURCE_DIR).parts[0] not in _OTHER_BUILDS
    )
    if not any(p.name == "init.c" for p in files) or not any(p.name == "stub.S" for p in files):
        raise HarnessBuildError(
            f"harness sources not found under {HARNESS_SOURCE_DIR} "
            "(bootfuzz must run from its source tree)"
        )
    return files


def _tools() -> dict[str, Path]:
    tools: dict[str, Path] = {}
    for tool, package in _TOOL_PACKAGES.items():
        found = shutil.which(tool)
        if found is None:
            raise HarnessBuildError(
                f"{tool} not found on PATH; install the Debian package {package}"
            )
        tools[tool] = Path(found)
    return tools


def build_tools() -> dict[str, Path]:
    """gcc, as and ld from PATH; a missing one is a HarnessBuildError naming its package."""
    return _tools()


def build_key(inputs: Iterable[tuple[str, bytes]], tools: Mapping[str, Path]) -> str:
    """Hash of everything that decides the bytes a build produces: its labelled
    inputs (sources, flags, generated files) and the identity of each tool."""
    h = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    for label, data in inputs:
        feed(label, data)
    for name, path in sorted(tools.items()):
        st = path.resolve().stat()
        feed(f"tool:{name}", f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _cache_key(tools: dict[str, Path], include: str) -> str:
    """Hash of everything that decides the bytes we build."""
    inputs = [("recipe", str(_RECIPE_VERSION).encode())]
    inputs += [
        (path.relative_to(HARNESS_SOURCE_DIR).as_posix(), path.read_bytes())
        for path in _source_files()
    ]
    inputs += [
        ("cflags", "\0".join(AGENT_CFLAGS + agent_defines()).encode()),
        ("asflags", "\0".join(ASFLAGS).encode()),
        ("ldflags", "\0".join(LDFLAGS).encode()),
        ("include", include.encode()),
    ]
    return build_key(inputs, tools)


def run_build_step(argv: Sequence[str | os.PathLike[str]], what: str) -> None:
    """One build step (see _run); for other builders of guest code (bootfuzz.guest.probes)."""
    _run(argv, what)


def _run(argv: Sequence[str | os.PathLike[str]], what: str) -> None:
    """Runs one build step; a failure becomes a HarnessBuildError with stderr's tail."""
    try:
        proc = subprocess.run(
            [os.fspath(a) for a in argv], capture_output=True, text=True, check=False
        )
    except OSError as e:
        raise HarnessBuildError(f"{what}: cannot run {os.fspath(argv[0])}: {e}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-_STDERR_TAIL:]
        raise HarnessBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def _build_into(out: Path, tools: dict[str, Path], include: str) -> None:
    init_c = HARNESS_SOURCE_DIR / "agent" / "init.c"
    stub_s = HARNESS_SOURCE_DIR / "firmware" / "stub.S"
    cflags = (*AGENT_CFLAGS, *agent_defines())
    _run([tools["gcc"], *cflags, "-o", out / AGENT_NAME, init_c], "compiling the agent")
    _run(
        [tools["gcc"], *cflags, "-DAGENT_SELFTEST", "-o", out / AGENT_SELFTEST_NAME, init_c],
        "compiling the agent self-test",
    )
    (out / INCLUDE_NAME).write_text(include)
    _run(
        [tools["as"], *ASFLAGS, "-I", out, "-I", stub_s.parent, "-o", out / "stub.o", stub_s],
        "assembling the firmware stub",
    )
    _run(
        [tools["ld"], *LDFLAGS, "-o", out / FIRMWARE_NAME, out / "stub.o"],
        "linking the firmware stub",
    )
    size = (out / FIRMWARE_NAME).stat().st_size
    if size != FIRMWARE_SIZE:
        raise HarnessBug(f"firmware stub is {size} bytes, not {FIRMWARE_SIZE}")


def _artifacts(directory: Path) -> HarnessArtifacts:
    return HarnessArtifacts(
        agent=directory / AGENT_NAME,
        firmware=directory / FIRMWARE_NAME,
        agent_selftest=directory / AGENT_SELFTEST_NAME,
        directory=directory,
    )


def build_harness(cache_dir: Path | None = None) -> HarnessArtifacts:
    """Builds the agent and the firmware stub, or returns the cached build."""
    tools = _tools()
    include = handoff_include()
    root = cache_root(cache_dir) / "harness"
    final = cached_build(root, _cache_key(tools, include),
                         lambda out: _build_into(out, tools, include))
    return _artifacts(final)


def cached_build(root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """``root/key``, made by *build* (which fills the directory it is given) if missing.

    The build runs in a temporary directory under *root* that is renamed into
    place in one step, so concurrent runs never see half a build; a failed
    build leaves nothing behind.
    """
    final = root / key
    if final.is_dir():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as e:
        raise HarnessBuildError(f"cannot create the build cache {root}: {e}") from e
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared read-only
        try:
            tmp.rename(final)
        except OSError:
            # Another process published the same key first; its build is identical.
            if not final.is_dir():
                raise
    except OSError as e:
        raise HarnessBuildError(f"cannot write the build cache {root}: {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# --- the device-tree machines: the agent and the entry stub, cross-built ---------------

#: Cross toolchains (Debian gcc-aarch64-linux-gnu, gcc-riscv64-linux-gnu, and the
#: binutils they pull in), by the arch's QEMU name.
DT_TOOL_PREFIX = {"aarch64": "aarch64-linux-gnu-", "riscv64": "riscv64-linux-gnu-"}
DT_TOOL_PACKAGES = {"aarch64": "gcc-aarch64-linux-gnu", "riscv64": "gcc-riscv64-linux-gnu"}
#: The stub is position-independent code assembled for the base ISA (riscv: no
#: compressed instructions needed, Zicsr for csrr).
DT_STUB_ASFLAGS = {"aarch64": (), "riscv64": ("-march=rv64imac_zicsr",)}
#: The agent's flags minus x86's -fcf-protection, plus the device-tree report.
DT_AGENT_CFLAGS: tuple[str, ...] = (
    *(f for f in AGENT_CFLAGS if f != "-fcf-protection=none"), "-DAGENT_DEVICETREE")
DT_STUB_NAME = "entry.bin"
DT_DUMPER_NAME = "kallsyms-init"
#: 2: the kallsyms dumper is built beside the agent.
_DT_RECIPE_VERSION = 2


@dataclass(frozen=True)
class DtHarness:
    """One cached cross-build: the /init agent and the entry stub for an architecture."""

    arch: str
    agent: Path
    entry_stub: Path
    directory: Path
    #: The agent built as the kallsyms dumper (the /init of a coverage symbol boot).
    kallsyms_dumper: Path


def _dt_tools(arch: str) -> dict[str, Path]:
    prefix = DT_TOOL_PREFIX[arch]
    tools: dict[str, Path] = {}
    for tool in ("gcc", "as", "ld", "objcopy"):
        found = shutil.which(prefix + tool)
        if found is None:
            raise HarnessBuildError(
                f"{prefix}{tool} not found on PATH; install the Debian package "
                f"{DT_TOOL_PACKAGES[arch]}"
            )
        tools[tool] = Path(found)
    return tools


def _dt_sources(arch: str) -> list[Path]:
    agent = HARNESS_SOURCE_DIR / "agent"
    stub = HARNESS_SOURCE_DIR / "dtentry" / f"entry-{arch}.S"
    return [agent / "init.c", agent / "sha256.h", stub]


def build_dt_harness(arch: str, cache_dir: Path | None = None) -> DtHarness:
    """Cross-builds the agent and the entry stub for *arch* ("aarch64" or "riscv64"),
    or returns the cached build."""
    if arch not in DT_TOOL_PREFIX:
        raise HarnessBug(f"no device-tree harness for {arch}")
    tools = _dt_tools(arch)
    sources = _dt_sources(arch)
    inputs = [("recipe", str(_DT_RECIPE_VERSION).encode()), ("arch", arch.encode())]
    inputs += [(p.relative_to(HARNESS_SOURCE_DIR).as_posix(), p.read_bytes()) for p in sources]
    inputs += [("cflags", "\0".join(DT_AGENT_CFLAGS + agent_defines()).encode()),
               ("asflags", "\0".join(DT_STUB_ASFLAGS[arch]).encode())]

    def build(out: Path) -> None:
        _run([tools["gcc"], *DT_AGENT_CFLAGS, *agent_defines(), "-o", out / AGENT_NAME,
              sources[0]], f"cross-compiling the agent for {arch}")
        _run([tools["gcc"], *DT_AGENT_CFLAGS, *agent_defines(), *kallsyms_dumper_defines(),
              "-o", out / DT_DUMPER_NAME, sources[0]],
             f"cross-compiling the kallsyms dumper for {arch}")
        _run([tools["as"], *DT_STUB_ASFLAGS[arch], "-o", out / "entry.o", sources[2]],
             f"assembling the {arch} entry stub")
        _run([tools["ld"], "-Ttext=0", "-o", out / "entry.elf", out / "entry.o"],
             f"linking the {arch} entry stub")
        _run([tools["objcopy"], "-O", "binary", out / "entry.elf", out / DT_STUB_NAME],
             f"extracting the {arch} entry stub")

    root = cache_root(cache_dir) / "harness"
    final = cached_build(root, "dt-" + build_key(inputs, tools), build)
    return DtHarness(arch, final / AGENT_NAME, final / DT_STUB_NAME, final,
                     final / DT_DUMPER_NAME)
