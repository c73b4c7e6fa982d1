"""bootfuzz.guest.harness: the build and its cache, the firmware image's shape, the
generated include, and the agent's report (run on the host through its self-test
build, which reads a fake root instead of /)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from bootfuzz.abi.handoff import HANDOFF, HANDOFF_MAGIC, HandoffMode
from bootfuzz.cli import harness as cli_harness
from bootfuzz.errors import HarnessBuildError
from bootfuzz.guest import harness, protocol
from bootfuzz.guest.harness import HarnessArtifacts, build_harness, handoff_include
from bootfuzz.guest.protocol import (
    AGENT_FORMAT_VERSION,
    AGENT_LINE_PREFIX,
    FIRMWARE_ENTERING_MESSAGE,
)
from bootfuzz.loader import layout
from bootfuzz.loader.platform import FIRMWARE_SIZE

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("gcc", "as", "ld")),
    reason="gcc/binutils not installed",
)

BOOT_PARAMS_PATH = "sys/kernel/boot_params/data"
MEMMAP_DIR = "sys/firmware/memmap"
SETUP_DATA_DIR = "sys/kernel/boot_params/setup_data"
#: The agent's cap on one node's "data" (init.c SETUP_DATA_CAP).
SETUP_DATA_CAP = 64 * 1024


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def built(cache: Path) -> HarnessArtifacts:
    return build_harness(cache)


def copy_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of harness/ that a test may break."""
    src = tmp_path / "harness"
    shutil.copytree(harness.HARNESS_SOURCE_DIR, src)
    monkeypatch.setattr(harness, "HARNESS_SOURCE_DIR", src)
    return src


# ---- build and cache ----


def test_build_harness_second_call_uses_cache(
    built: HarnessArtifacts, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = {p: p.stat().st_mtime_ns for p in (built.agent, built.firmware)}

    def no_build(*args: object) -> None:
        raise AssertionError("rebuilt although the cache was valid")

    monkeypatch.setattr(harness, "_run", no_build)
    again = build_harness(cache)
    assert again == built
    assert {p: p.stat().st_mtime_ns for p in (again.agent, again.firmware)} == before


def test_build_harness_layout_is_cache_harness_key(built: HarnessArtifacts, cache: Path) -> None:
    assert built.directory.parent == cache / "harness"
    assert re.fullmatch(r"[0-9a-f]{20}", built.directory.name)
    # No half-built temporary directories left behind.
    assert [p.name for p in (cache / "harness").iterdir()] == [built.directory.name]


def test_build_harness_default_cache_follows_env(
    built: HarnessArtifacts, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*args: object) -> None:
        raise AssertionError("rebuilt: $BOOTFUZZ_CACHE was not the cache root")

    monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))
    monkeypatch.setattr(harness, "_run", no_build)
    assert build_harness() == built


def test_build_harness_source_change_gets_new_key(
    built: HarnessArtifacts, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = copy_sources(tmp_path, monkeypatch)
    with (src / "agent" / "init.c").open("a") as f:
        f.write("/* changed */\n")
    rebuilt = build_harness(cache)
    assert rebuilt.directory != built.directory
    assert rebuilt.agent.is_file()


@pytest.mark.parametrize(
    ("tool", "package"), [("gcc", "gcc"), ("as", "binutils"), ("ld", "binutils")]
)
def test_build_harness_missing_tool_names_package(
    tool: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == tool else real_which(name))
    with pytest.raises(HarnessBuildError) as info:
        build_harness(tmp_path)
    assert str(info.value) == (
        f"harness build: {tool} not found on PATH; install the Debian package {package}"
    )


def test_build_harness_compile_error_carries_compiler_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = copy_sources(tmp_path, monkeypatch)
    init_c = src / "agent" / "init.c"
    init_c.write_text(init_c.read_text() + "\nthis is not C;\n")
    cache = tmp_path / "cache"
    with pytest.raises(HarnessBuildError) as info:
        build_harness(cache)
    message = str(info.value)
    assert message.startswith("harness build: compiling the agent failed (exit 1):")
    assert "init.c" in message and "error:" in message
    assert list((cache / "harness").iterdir()) == []  # the temporary build dir is gone


def test_build_harness_assembler_error_carries_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = copy_sources(tmp_path, monkeypatch)
    stub = src / "firmware" / "stub.S"
    stub.write_text(stub.read_text().replace("cli\n", "notaninstruction\n", 1))
    with pytest.raises(HarnessBuildError) as info:
        build_harness(tmp_path / "cache")
    assert str(info.value).startswith("harness build: assembling the firmware stub failed")
    assert "notaninstruction" in str(info.value)


def test_main_prints_paths(
    built: HarnessArtifacts, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_harness.main(["--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"agent={built.agent}",
        f"firmware={built.firmware}",
        f"agent_selftest={built.agent_selftest}",
    ]


def test_qemu_exit_status_is_debug_exit_formula() -> None:
    assert protocol.QEMU_AGENT_EXIT_STATUS == 99


# ---- firmware image ----


def test_firmware_is_exactly_64_kib(built: HarnessArtifacts) -> None:
    assert built.firmware.stat().st_size == FIRMWARE_SIZE == 65536


def test_firmware_reset_vector_far_jumps_to_start_in_f000_segment(
    built: HarnessArtifacts,
) -> None:
    image = built.firmware.read_bytes()
    vector = image[0xFFF0:0xFFF5]
    assert vector[0] == 0xEA  # jmp ptr16:16
    offset = int.from_bytes(vector[1:3], "little")
    assert int.from_bytes(vector[3:5], "little") == 0xF000
    assert offset < 0xFFF0
    assert image[offset : offset + 2] == b"\xfa\xfc"  # cli; cld: the 16-bit entry


def test_firmware_contains_generated_messages(built: HarnessArtifacts) -> None:
    assert FIRMWARE_ENTERING_MESSAGE.encode() + b"\0" in built.firmware.read_bytes()


# ---- generated include ----


def parse_equ(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\.equ (\w+), (0x[0-9a-f]+)\s+#.*", line)
        if m:
            assert m.group(1) not in found, f"{m.group(1)} defined twice"
            found[m.group(1)] = int(m.group(2), 16)
    return found


def test_handoff_include_has_one_equ_per_field_at_its_offset() -> None:
    equ = parse_equ(handoff_include())
    fields = {name: value for name, value in equ.items() if name.startswith("HO_")}
    assert fields == {f"HO_{f.name.upper()}": f.offset for f in HANDOFF}


def test_handoff_include_constants_match_python() -> None:
    equ = parse_equ(handoff_include())
    assert equ["HANDOFF_ADDR"] == layout.HANDOFF_ADDR
    assert equ["HANDOFF_SIZE"] == HANDOFF.size
    assert equ["HANDOFF_MAGIC"] == HANDOFF_MAGIC
    assert {k: v for k, v in equ.items() if k.startswith("HANDOFF_MODE_")} == {
        f"HANDOFF_MODE_{m.name}": int(m) for m in HandoffMode
    }
    assert equ["FW_BASE"] == layout.BIOS_AREA_START == 0xF0000
    assert equ["RESET_VECTOR_OFFSET"] == 0xFFF0
    assert equ["COM1_BASE"] == 0x3F8


def test_handoff_include_is_what_was_built(built: HarnessArtifacts) -> None:
    assert (built.directory / harness.INCLUDE_NAME).read_text() == handoff_include()


# ---- agent binary ----


def test_agent_is_static_elf64_exec_without_interpreter(built: HarnessArtifacts) -> None:
    with built.agent.open("rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64
        assert elf.little_endian
        assert elf.header["e_machine"] == "EM_X86_64"
        assert elf.header["e_type"] == "ET_EXEC"
        kinds = {seg["p_type"] for seg in elf.iter_segments()}
        assert "PT_INTERP" not in kinds
        assert "PT_DYNAMIC" not in kinds
        entry = elf.header["e_entry"]
        assert any(
            seg["p_type"] == "PT_LOAD"
            and seg["p_flags"] & 1  # PF_X
            and seg["p_vaddr"] <= entry < seg["p_vaddr"] + seg["p_memsz"]
            for seg in elf.iter_segments()
        )


def test_agent_carries_exit_port_and_prefix(built: HarnessArtifacts) -> None:
    with built.agent.open("rb") as f:
        elf = ELFFile(f)
        text_section = elf.get_section_by_name(".text")
        rodata_section = elf.get_section_by_name(".rodata")
        assert text_section is not None and rodata_section is not None
        text, rodata = text_section.data(), rodata_section.data()
    assert b"\xe6\xf4" in text  # out %al, $0xf4 (AGENT_EXIT_PORT)
    assert f'{AGENT_LINE_PREFIX} {{"v":'.encode() in rodata


# ---- agent report, through the self-test build ----


def make_root(
    root: Path,
    *,
    cmdline: bytes | None = b"console=ttyS0\n",
    payload: bytes | None = b"abc",
    expected: bytes | None = None,
    memmap: list[tuple[bytes, bytes, bytes]] | None = None,
    boot_params: bytes | None = bytes(range(256)) * 16,
    setup_data: list[tuple[bytes | None, bytes | None]] | None = None,
) -> Path:
    """A fake guest root: the files the agent reads, None meaning absent.

    *setup_data* holds (type, data) per node directory; None: no setup_data
    directory at all, as when the kernel got no nodes.
    """
    files: dict[str, bytes | None] = {
        "proc/cmdline": cmdline,
        "payload": payload,
        "payload.sha256": expected,
        BOOT_PARAMS_PATH: boot_params,
    }
    if setup_data is not None:
        (root / SETUP_DATA_DIR).mkdir(parents=True)
        for i, (kind, data) in enumerate(setup_data):
            (root / SETUP_DATA_DIR / str(i)).mkdir()
            files |= {f"{SETUP_DATA_DIR}/{i}/type": kind, f"{SETUP_DATA_DIR}/{i}/data": data}
    if memmap is None:
        memmap = [(b"0x0\n", b"0x9fbff\n", b"System RAM\n")]
    for i, (start, end, kind) in enumerate(memmap):
        files |= {
            f"{MEMMAP_DIR}/{i}/start": start,
            f"{MEMMAP_DIR}/{i}/end": end,
            f"{MEMMAP_DIR}/{i}/type": kind,
        }
    (root / MEMMAP_DIR).mkdir(parents=True)
    for rel, data in files.items():
        if data is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
    return root


def run_agent(built: HarnessArtifacts, root: Path) -> dict[str, Any]:
    proc = subprocess.run([built.agent_selftest, root], capture_output=True, check=True, timeout=60)
    out = proc.stdout
    assert out.isascii()
    assert out.count(b"\n") == 1 and out.endswith(b"\n")
    prefix = f"{AGENT_LINE_PREFIX} ".encode()
    assert out.startswith(prefix)
    report: dict[str, Any] = json.loads(out[len(prefix) :])
    assert list(report) == [
        "v", "cmdline", "payload", "memmap", "boot_params", "setup_data", "errors"
    ]
    assert report["v"] == AGENT_FORMAT_VERSION
    return report


def report_for(built: HarnessArtifacts, tmp_path: Path, **files: Any) -> dict[str, Any]:
    return run_agent(built, make_root(tmp_path / "root", **files))


def test_agent_good_root_reports_everything_without_errors(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path)
    assert report["errors"] == []
    assert bytes.fromhex(report["cmdline"]) == b"console=ttyS0"
    assert report["payload"] == {
        "size": 3,
        "sha256": hashlib.sha256(b"abc").hexdigest(),
        "expected": "",
    }
    assert report["memmap"] == [["0x0", "0x9fbff", "System RAM"]]
    assert report["boot_params"] == (bytes(range(256)) * 16).hex()
    assert report["setup_data"] == []  # no setup_data directory: no nodes, no error


PATTERN_MIB = bytes(i * 7 % 251 for i in range(1 << 20))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"abc",
        b"a" * 55,  # last length whose padding fits one block
        b"a" * 56,  # first that needs a second padding block
        b"a" * 63,
        b"a" * 64,
        b"a" * 65,
        PATTERN_MIB,  # exactly one 1 MiB read chunk
        PATTERN_MIB * 3 + b"tail",  # several chunks, then a partial one
    ],
    ids=lambda p: f"{len(p)}B",
)
def test_agent_payload_sha256_matches_hashlib(
    payload: bytes, built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, payload=payload)
    assert report["payload"]["size"] == len(payload)
    assert report["payload"]["sha256"] == hashlib.sha256(payload).hexdigest()


def test_agent_sha256_known_vectors(built: HarnessArtifacts, tmp_path: Path) -> None:
    """FIPS 180-4 examples, independent of hashlib."""
    vectors = {
        b"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq": (
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
    }
    for i, (message, digest) in enumerate(vectors.items()):
        report = run_agent(built, make_root(tmp_path / str(i), payload=message))
        assert report["payload"]["sha256"] == digest


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"AB" * 32, "ab" * 32),  # upper case is folded
        (b"ab" * 32 + b"\n", "ab" * 32),
        (b"ab" * 32 + b"  payload\n", "ab" * 32),  # sha256sum's output
    ],
)
def test_agent_expected_digest_accepted(
    content: bytes, expected: str, built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, expected=content)
    assert report["payload"]["expected"] == expected
    assert report["errors"] == []


@pytest.mark.parametrize(
    "content",
    [b"ab" * 31 + b"a", b"ab" * 31 + b"ag", b"ab" * 32 + b"a"],
    ids=["63-digits", "non-hex", "65-digits"],
)
def test_agent_expected_digest_malformed_is_an_error(
    content: bytes, built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, expected=content)
    assert report["payload"]["expected"] == ""
    assert report["errors"] == ["parse /payload.sha256: not 64 hex digits"]


def test_agent_missing_payload_is_null_with_error(built: HarnessArtifacts, tmp_path: Path) -> None:
    report = report_for(built, tmp_path, payload=None)
    assert report["payload"] is None
    assert report["errors"] == ["open /payload: errno 2"]


@pytest.mark.parametrize(
    ("content", "reported"),
    [
        (b"a b\n", b"a b"),
        (b"a b", b"a b"),
        (b"a b\n\n", b"a b\n"),  # only one newline is the kernel's
        (b"", b""),
        (b'q="x \\ y"\x01\xff', b'q="x \\ y"\x01\xff'),
    ],
)
def test_agent_cmdline_hex_strips_one_newline(
    content: bytes, reported: bytes, built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, cmdline=content)
    assert bytes.fromhex(report["cmdline"]) == reported
    assert report["cmdline"] == report["cmdline"].lower()


def test_agent_missing_cmdline_is_null_with_error(built: HarnessArtifacts, tmp_path: Path) -> None:
    report = report_for(built, tmp_path, cmdline=None)
    assert report["cmdline"] is None
    assert report["errors"] == ["read /proc/cmdline: errno 2"]


def test_agent_memmap_type_strings_are_json_escaped(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    nasty = b'a"b\\c\x01\x1f\x7f\xff\td'
    report = report_for(built, tmp_path, memmap=[(b"0x0\n", b"0x9fbff\n", nasty + b"\n\n")])
    assert report["memmap"] == [["0x0", "0x9fbff", nasty.decode("latin-1")]]


def test_agent_memmap_stops_at_first_missing_index(built: HarnessArtifacts, tmp_path: Path) -> None:
    root = make_root(
        tmp_path / "root",
        memmap=[(b"0x0", b"0x9fbff", b"System RAM"), (b"0x100000", b"0x7ffffff", b"System RAM")],
    )
    later = root / MEMMAP_DIR / "3"  # index 2 is missing, so 3 is never read
    later.mkdir()
    (later / "type").write_bytes(b"Reserved")
    report = run_agent(built, root)
    assert report["memmap"] == [
        ["0x0", "0x9fbff", "System RAM"],
        ["0x100000", "0x7ffffff", "System RAM"],
    ]
    assert report["errors"] == []


def test_agent_memmap_missing_attribute_is_empty_with_error(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    root = make_root(tmp_path / "root")
    (root / MEMMAP_DIR / "0" / "end").unlink()
    report = run_agent(built, root)
    assert report["memmap"] == [["0x0", "", "System RAM"]]
    assert report["errors"] == ["read /sys/firmware/memmap/0/end: errno 2"]


def test_agent_memmap_dir_missing_is_empty_with_error(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    root = make_root(tmp_path / "root")
    shutil.rmtree(root / "sys" / "firmware")
    report = run_agent(built, root)
    assert report["memmap"] == []
    assert report["errors"] == ["open /sys/firmware/memmap: errno 2"]


def test_agent_line_longer_than_its_buffer_streams_intact(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    """Over 256 KiB of memmap text: the line is flushed in pieces, still one line."""
    kind = bytes(range(1, 32)) * 8  # 248 bytes, 6x after escaping
    entries = [(f"{i:#x}".encode(), f"{i + 1:#x}".encode(), kind) for i in range(200)]
    report = report_for(built, tmp_path, memmap=entries)
    assert len(report["memmap"]) == 200
    assert report["memmap"][199] == ["0xc7", "0xc8", kind.decode()]


def test_agent_too_many_errors_are_replaced_by_one(built: HarnessArtifacts, tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", memmap=[])
    for i in range(400):  # 1200 missing attributes, far more than 16 KiB of messages
        (root / MEMMAP_DIR / str(i)).mkdir()
    report = run_agent(built, root)
    assert len(report["memmap"]) == 400
    assert report["errors"] == ["report errors: too many errors, list dropped"]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (bytes(4096), None),
        (bytes(4095), "read /sys/kernel/boot_params/data: not 4096 bytes"),
        (bytes(4097), "read /sys/kernel/boot_params/data: not 4096 bytes"),
    ],
    ids=["4096", "4095", "4097"],
)
def test_agent_boot_params_size_boundary(
    data: bytes, error: str | None, built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, boot_params=data)
    assert report["boot_params"] == data[:4096].hex()
    assert report["errors"] == ([error] if error else [])


def test_agent_missing_boot_params_is_null_with_error(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, boot_params=None)
    assert report["boot_params"] is None
    assert report["errors"] == ["read /sys/kernel/boot_params/data: errno 2"]


def test_agent_selftest_without_root_is_usage_error(built: HarnessArtifacts) -> None:
    proc = subprocess.run([built.agent_selftest], capture_output=True, timeout=10)
    assert proc.returncode == 2
    assert proc.stderr == b"usage: agent-selftest ROOT\n"


# ---- setup_data nodes ----


def test_agent_setup_data_nodes_in_index_order_type_stripped_data_hex(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    nodes: list[tuple[bytes | None, bytes | None]] = [
        (b"0x9\n", b""),  # an RNG seed after the kernel zeroed it
        (b"0x80000006\n", bytes(range(12))),
        (b"0x0\n", b"\x00\xff"),
    ]
    report = report_for(built, tmp_path, setup_data=nodes)
    assert report["setup_data"] == [
        {"type": "0x9", "data": ""},
        {"type": "0x80000006", "data": bytes(range(12)).hex()},
        {"type": "0x0", "data": "00ff"},
    ]
    assert report["errors"] == []


def test_agent_setup_data_empty_directory_is_no_nodes(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, setup_data=[])
    assert report["setup_data"] == []
    assert report["errors"] == []


def test_agent_setup_data_stops_at_first_missing_index(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    root = make_root(tmp_path / "root", setup_data=[(b"0x1\n", b"ab"), (b"0x2\n", b"cd")])
    later = root / SETUP_DATA_DIR / "3"  # index 2 is missing, so 3 is never read
    later.mkdir()
    (later / "type").write_bytes(b"0x3\n")
    (later / "data").write_bytes(b"ef")
    report = run_agent(built, root)
    assert report["setup_data"] == [
        {"type": "0x1", "data": "6162"},
        {"type": "0x2", "data": "6364"},
    ]


@pytest.mark.parametrize(
    ("size", "truncated"), [(SETUP_DATA_CAP, False), (SETUP_DATA_CAP + 1, True)],
    ids=["64KiB", "64KiB+1"],
)
def test_agent_setup_data_cap_boundary(
    size: int, truncated: bool, built: HarnessArtifacts, tmp_path: Path
) -> None:
    data = bytes(i * 13 % 256 for i in range(size))
    report = report_for(built, tmp_path, setup_data=[(b"0x1\n", data)])
    node = report["setup_data"][0]
    assert bytes.fromhex(node["data"]) == data[:SETUP_DATA_CAP]
    assert node.get("truncated", False) is truncated
    assert ("truncated" in node) is truncated  # the key appears only when set
    assert report["errors"] == []


def test_agent_setup_data_missing_data_is_empty_with_error(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, setup_data=[(b"0x9\n", None)])
    assert report["setup_data"] == [{"type": "0x9", "data": ""}]
    assert report["errors"] == ["read /sys/kernel/boot_params/setup_data/0/data: errno 2"]


def test_agent_setup_data_missing_type_is_empty_with_error(
    built: HarnessArtifacts, tmp_path: Path
) -> None:
    report = report_for(built, tmp_path, setup_data=[(None, b"x")])
    assert report["setup_data"] == [{"type": "", "data": "78"}]
    assert report["errors"] == ["read /sys/kernel/boot_params/setup_data/0/type: errno 2"]
