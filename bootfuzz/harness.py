"""Builds the guest-side harness from source: the /init agent and the firmware stub.

Both are built on the machine that runs bootfuzz, by its own gcc and binutils,
rather than shipped as binaries: the sources under harness/ are the reviewable
artefact.  Constants both sides must agree on (the hand-off layout, the exit
port) are declared here or in bootfuzz/abi/handoff.py and handed to the
compiler with ``-D`` or to the assembler through a generated include, so each
exists once.

Builds are cached under ``$BOOTFUZZ_CACHE/harness/<key>/`` (default
``~/.cache/bootfuzz``), keyed by a hash of the sources, the flags, the generated
include and the tools, and published with one atomic rename so concurrent
runs never see half a build.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz import layout
from bootfuzz.abi.handoff import HANDOFF, HANDOFF_MAGIC, HandoffMode
from bootfuzz.errors import HarnessBug, HarnessBuildError
from bootfuzz.x86 import MSR_EFER, Cr0

#: Where the sources live: harness/ next to the package in the source tree.
HARNESS_SOURCE_DIR = Path(__file__).resolve().parent.parent / "harness"

#: The agent ends the guest by writing AGENT_EXIT_VALUE to this I/O port.
#: QEMU's ``-device isa-debug-exit,iobase=0xf4,iosize=0x04`` traps it; our KVM VMM
#: traps the same port.  0xf4 is the address QEMU's own tests use for the device.
AGENT_EXIT_PORT = 0xF4
AGENT_EXIT_VALUE = 0x31
#: source: QEMU hw/misc/debugexit.c, debug_exit_write(): exit((val << 1) | 1).
QEMU_AGENT_EXIT_STATUS = (AGENT_EXIT_VALUE << 1) | 1  # = 99
#: The agent's report line starts with this word, a space, then one JSON object.
AGENT_LINE_PREFIX = "BOOTFUZZ-AGENT"
#: The JSON object's "v": bump when the report's shape changes.
AGENT_FORMAT_VERSION = 1

#: A -bios image must be a multiple of 64 KiB; ours is exactly one such block,
#: which QEMU maps at the top of 4 GiB and again at BIOS_AREA_START.
FIRMWARE_SIZE = 64 * layout.KiB
#: source: Intel SDM vol. 3A, 9.1.4: the first instruction is fetched at 0xFFFFFFF0.
RESET_VECTOR = 0xFFFF_FFF0
RESET_VECTOR_OFFSET = RESET_VECTOR - (layout.FOUR_GIB - FIRMWARE_SIZE)
#: What the stub prints on COM1; the backend may wait for FIRMWARE_ENTERING_MESSAGE.
FIRMWARE_ENTERING_MESSAGE = "bootfuzz-fw: entering kernel\n"
FIRMWARE_BAD_MAGIC_MESSAGE = "bootfuzz-fw: bad handoff magic\n"
FIRMWARE_BAD_MODE_MESSAGE = "bootfuzz-fw: bad handoff mode\n"

#: source: include/uapi/linux/serial_reg.h (UART_LSR, UART_LSR_THRE); COM1 is the
#: PC/AT standard base the kernel's early serial console also assumes for ttyS0.
COM1_BASE = 0x3F8
UART_LSR = 5
UART_LSR_THRE = 0x20
#: System control port A; bit 1 gates A20 (source: QEMU hw/i386/pc.c, port92).
PORT_SYS_CTRL_A = 0x92

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


def _as_string(text: str) -> str:
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
    ]
    lines = [
        "# Generated by bootfuzz/harness.py from bootfuzz/abi/handoff.py and",
        "# bootfuzz/layout.py.  Do not edit.",
    ]
    lines += [f".equ {name}, {value:#x}  # {why}" for name, value, why in equ]
    messages = (
        ("FW_MSG_ENTERING", FIRMWARE_ENTERING_MESSAGE),
        ("FW_MSG_BAD_MAGIC", FIRMWARE_BAD_MAGIC_MESSAGE),
        ("FW_MSG_BAD_MODE", FIRMWARE_BAD_MODE_MESSAGE),
    )
    for name, text in messages:
        lines += [f".macro {name}", f"\t.asciz {_as_string(text)}", ".endm"]
    return "\n".join(lines) + "\n"


def default_cache_dir() -> Path:
    """``$BOOTFUZZ_CACHE``, else ``~/.cache/bootfuzz``."""
    env = os.environ.get("BOOTFUZZ_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bootfuzz"


def _source_files() -> list[Path]:
    files = sorted(p for p in HARNESS_SOURCE_DIR.rglob("*") if p.is_file())
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


def _cache_key(tools: dict[str, Path], include: str) -> str:
    """Hash of everything that decides the bytes we build."""
    h = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)

    feed("recipe", str(_RECIPE_VERSION).encode())
    for path in _source_files():
        feed(path.relative_to(HARNESS_SOURCE_DIR).as_posix(), path.read_bytes())
    feed("cflags", "\0".join(AGENT_CFLAGS + agent_defines()).encode())
    feed("asflags", "\0".join(ASFLAGS).encode())
    feed("ldflags", "\0".join(LDFLAGS).encode())
    feed("include", include.encode())
    for name, path in sorted(tools.items()):
        st = path.resolve().stat()
        feed(f"tool:{name}", f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


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
        [tools["as"], *ASFLAGS, "-I", out, "-o", out / "stub.o", stub_s],
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
    root = (cache_dir if cache_dir is not None else default_cache_dir()) / "harness"
    final = root / _cache_key(tools, include)
    if final.is_dir():
        return _artifacts(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    except OSError as e:
        raise HarnessBuildError(f"cannot create the build cache {root}: {e}") from e
    try:
        _build_into(tmp, tools, include)
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
    return _artifacts(final)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bootfuzz.harness``: build (or find) the harness, print its paths."""
    parser = argparse.ArgumentParser(prog="python -m bootfuzz.harness", description=__doc__)
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache root")
    args = parser.parse_args(argv)
    try:
        built = build_harness(args.cache_dir)
    except HarnessBuildError as e:
        print(e, file=sys.stderr)
        return 3
    print(f"agent={built.agent}")
    print(f"firmware={built.firmware}")
    print(f"agent_selftest={built.agent_selftest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
