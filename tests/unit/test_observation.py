"""parse_transcript against recorded console logs (tests/data/logs) and one-line variants."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from bootfuzz.abi.e820 import BOOT_E820_ENTRY, E820Type
from bootfuzz.judge.observation import (
    AgentSetupData,
    E820Line,
    MapKind,
    MemmapEntry,
    MemRange,
    Observation,
    RamdiskMove,
    parse_transcript,
)
from bootfuzz.judge.patterns import AGENT_PREFIX
from bootfuzz.kernel.capabilities import UnpackStart

LOGS = Path(__file__).resolve().parent.parent / "data" / "logs"
BANNER = (
    "Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
    "12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP "
    "PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)"
)
GOOD_CMDLINE = "console=ttyS0 panic=-1 bootfuzz=good  "
GOOD_BIOS = (
    E820Line(0x0, 0x9FBFF, "usable"),
    E820Line(0x9FC00, 0x9FFFF, "reserved"),
    E820Line(0xF0000, 0xFFFFF, "reserved"),
    E820Line(0x100000, 0xFFFFFFF, "usable"),
    E820Line(0xFFFC0000, 0xFFFFFFFF, "reserved"),
)


def log_text(name: str) -> str:
    """A recorded log as the console would decode it (line ends left as recorded)."""
    return (LOGS / name).read_bytes().decode("utf-8", "replace")


def observe(name: str) -> Observation:
    return parse_transcript(log_text(name))


def good_agent_doc() -> dict[str, Any]:
    line = next(
        ln
        for ln in log_text("boot-6.1-good-agent-report.txt").splitlines()
        if ln.startswith(AGENT_PREFIX)
    )
    doc: dict[str, Any] = json.loads(line[len(AGENT_PREFIX) :])
    return doc


def observe_agent(doc: object) -> Observation:
    return parse_transcript(AGENT_PREFIX + json.dumps(doc) + "\n")


# ---- the good 6.1 boot -------------------------------------------------------------------


def test_parse_good_boot_bios_e820_lines_are_exact() -> None:
    obs = observe("boot-6.1-good-agent-report.txt")
    assert obs.bios_e820 == GOOD_BIOS
    assert obs.bios_map_prefix == "BIOS-e820"


def test_parse_good_boot_setup_data_table_is_kept_apart() -> None:
    obs = observe("boot-6.1-good-agent-report.txt")
    assert set(obs.e820_tables) == {MapKind.BIOS, MapKind.SETUP_DATA}
    assert obs.e820_tables[MapKind.SETUP_DATA] == (
        E820Line(0x0, 0x1CFFF, "usable"),
        E820Line(0x1D000, 0x1D02F, "usable"),
        E820Line(0x1D030, 0x9FBFF, "usable"),
        *GOOD_BIOS[1:],
    )


def test_parse_good_boot_command_lines_keep_trailing_spaces() -> None:
    obs = observe("boot-6.1-good-agent-report.txt")
    assert obs.command_line == GOOD_CMDLINE
    assert obs.kernel_command_line == GOOD_CMDLINE


def test_parse_good_boot_initrd_was_used_in_place_and_freed() -> None:
    obs = observe("boot-6.1-good-agent-report.txt")
    assert obs.ramdisk == MemRange(0x0F000000, 0x0F09FFFF)
    assert obs.ramdisk_allocated is None
    assert obs.ramdisk_move is None
    assert obs.ramdisk_no_room_size is None
    assert obs.unpack_start is UnpackStart.TRYING
    assert obs.unpack_failure is None
    assert obs.not_initramfs is None
    assert obs.initrd_freed_kib == 640


def test_parse_good_boot_banner_pfn_init_and_firmware_marker() -> None:
    obs = observe("boot-6.1-good-agent-report.txt")
    assert obs.linux_version_count == 1
    assert obs.linux_version == BANNER
    assert obs.last_pfn == 0x10000
    assert obs.max_arch_pfn == 0x400000000
    assert obs.init_process == "/init"
    assert obs.panics == ()
    assert obs.kernel_not_ram is False
    assert obs.firmware_entered is True


def test_parse_good_boot_agent_report_fields() -> None:
    obs = observe("boot-6.1-good-agent-report.txt")
    assert obs.agent_error is None
    agent = obs.agent
    assert agent is not None
    assert agent.version == 1
    assert agent.cmdline == GOOD_CMDLINE.encode()
    digest = hashlib.sha256(b"\xa5" * 0x9F000).digest()
    assert agent.payload is not None
    assert (agent.payload.size, agent.payload.sha256, agent.payload.expected) == (
        0x9F000,
        digest,
        digest,
    )
    assert agent.memmap == (
        MemmapEntry(0x0, 0x9FBFF, "System RAM"),
        MemmapEntry(0x9FC00, 0x9FFFF, "Reserved"),
        MemmapEntry(0xF0000, 0xFFFFF, "Reserved"),
        MemmapEntry(0x100000, 0xFFFFFFF, "System RAM"),
        MemmapEntry(0xFFFC0000, 0xFFFFFFFF, "Reserved"),
    )
    assert len(agent.boot_params) == 4096
    assert agent.boot_params[0x202:0x206] == b"HdrS"
    assert agent.boot_params[0x1E8] == 5  # e820_entries
    assert BOOT_E820_ENTRY.parse(agent.boot_params, 0x2D0 + 3 * 20) == {
        "addr": 0x100000,
        "size": 0xFF00000,
        "type": E820Type.RAM,
    }
    assert agent.errors == ()
    assert agent.setup_data == ()  # recorded before the agent reported setup_data


# ---- initrd variants ---------------------------------------------------------------------


def test_parse_moved_ramdisk_above_4g_records_all_three_lines() -> None:
    obs = observe("boot-6.1-ramdisk-moved-above-4g.txt")
    assert obs.ramdisk == MemRange(0x13F000000, 0x13F0A0FFF)
    assert obs.ramdisk_allocated == MemRange(0x13EF2E000, 0x13EFCEABF)
    assert obs.ramdisk_move == RamdiskMove(
        MemRange(0x13F000000, 0x13F0A0ABF), MemRange(0x13EF2E000, 0x13EFCEABF)
    )
    assert obs.initrd_freed_kib == 644
    assert obs.bios_e820[-2:] == (
        E820Line(0x100000000, 0x13EFFFFFF, "usable"),
        E820Line(0x13F000000, 0x13FFFFFFF, "reserved"),
    )


def test_parse_second_last_pfn_line_is_ignored() -> None:
    obs = observe("boot-6.1-ramdisk-moved-above-4g.txt")  # 0x13f000, then 0xc0000 below 4G
    assert (obs.last_pfn, obs.max_arch_pfn) == (0x13F000, 0x400000000)


def test_parse_unpack_failure_reason_and_root_panic() -> None:
    obs = observe("boot-6.1-initramfs-unpack-failed.txt")
    assert obs.unpack_start is UnpackStart.TRYING
    assert obs.unpack_failure == "invalid magic at start of compressed archive"
    assert obs.not_initramfs is None
    assert obs.initrd_freed_kib == 1024
    assert obs.init_process is None
    assert obs.panics == ("VFS: Unable to mount root fs on unknown-block(0,0)",)


def test_parse_not_initramfs_reason_and_old_ramdisk_message_ignored() -> None:
    obs = observe("boot-initrd-not-initramfs-blk-dev-ram-y.txt")
    assert obs.not_initramfs == "no cpio magic"
    assert obs.unpack_failure is None
    assert obs.ramdisk == MemRange(0x0F000000, 0x0F3FFFFF)  # not "RAMDISK: Couldn't find ..."
    assert obs.initrd_freed_kib == 4096
    assert obs.kernel_command_line is None


def test_parse_ramdisk_no_room_panic_gives_size() -> None:
    obs = observe("panic-ramdisk-no-room.txt")
    assert obs.ramdisk == MemRange(0x06000000, 0x15FFFFFF)
    assert obs.ramdisk_no_room_size == 268435456
    assert obs.panics == ("Cannot find place for new RAMDISK of size 268435456",)
    assert obs.unpack_start is None


def test_parse_unpacking_initramfs_spelling() -> None:
    obs = parse_transcript("[    1.000000] Unpacking initramfs...\n")
    assert obs.unpack_start is UnpackStart.UNPACKING


# ---- maps --------------------------------------------------------------------------------


def test_parse_bios88_fallback_without_timestamps() -> None:
    obs = observe("bios-88-fallback-no-timestamps.txt")
    assert obs.bios_map_prefix == "BIOS-88"
    assert obs.bios_e820 == (
        E820Line(0x0, 0x9EFFF, "usable"),
        E820Line(0x100000, 0xFFFFFF, "usable"),
    )
    assert obs.kernel_not_ram is True
    assert obs.command_line == "console=ttyS0 printk.time=0"
    assert obs.linux_version == BANNER
    assert obs.last_pfn == 0x3A68


def test_parse_reprinted_extended_map_keeps_last_print() -> None:
    text = (
        "[    0.000000] extended physical RAM map:\n"
        "[    0.000000] extended: [mem 0x0000000000000000-0x0000000000000fff] usable\n"
        "[    0.000000] extended physical RAM map:\n"
        "[    0.000000] extended: [mem 0x0000000000000000-0x0000000000001fff] usable\n"
        "[    0.000000] extended: [mem 0x0000000100000000-0x00000001ffffffff] "
        "persistent (type 12)\n"
    )
    lines = parse_transcript(text).e820_tables[MapKind.EXTENDED]
    assert lines == (
        E820Line(0x0, 0x1FFF, "usable"),
        E820Line(0x100000000, 0x1FFFFFFFF, "persistent (type 12)"),
    )
    assert [ln.type for ln in lines] == [E820Type.RAM, E820Type.PRAM]


def test_parse_user_map_after_bios_map() -> None:
    text = (
        "[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\n"
        "[    0.000000] user-defined physical RAM map:\n"
        "[    0.000000] user: [mem 0x0000000000000000-0x000000000009fbff] type 19\n"
    )
    obs = parse_transcript(text)
    assert obs.bios_e820 == (E820Line(0x0, 0x9FBFF, "usable"),)
    assert obs.e820_tables[MapKind.USER] == (E820Line(0x0, 0x9FBFF, "type 19"),)


# ---- prefixes, noise, reboots ------------------------------------------------------------


def test_parse_real_capture_strips_bios_noise_before_banner() -> None:
    obs = observe("panic-no-root-6.1-qemu-kernel-real.txt")
    assert obs.linux_version is not None
    assert obs.linux_version.startswith("Linux version 6.1.0-56-cloud-amd64 (")
    assert obs.command_line == "console=ttyS0"
    assert len(obs.bios_e820) == 7
    assert obs.bios_e820[-1] == E820Line(0xFD00000000, 0xFFFFFFFFFF, "reserved")
    assert obs.panics == ("VFS: Unable to mount root fs on unknown-block(0,0)",)
    assert obs.firmware_entered is False  # SeaBIOS and QEMU -kernel, not our stub
    assert obs.agent is None and obs.agent_error is None


def test_parse_printk_caller_prefix_is_stripped() -> None:
    obs = parse_transcript("[    0.000000][    T0] Command line: quiet\n")
    assert obs.command_line == "quiet"


def test_parse_end_of_panic_marker_is_not_a_second_panic() -> None:
    obs = parse_transcript(
        "[    1.0] Kernel panic - not syncing: x\n"
        "[    1.1] ---[ end Kernel panic - not syncing: x ]---\n"
    )
    assert obs.panics == ("x",)


def test_parse_reboot_describes_first_boot_and_counts_banners() -> None:
    obs = observe("reboot-second-banner.txt")
    assert obs.linux_version_count == 2
    assert obs.command_line == "console=ttyS0 reboot=t"
    assert obs.bios_e820 == GOOD_BIOS
    assert obs.panics == ()  # the second boot's panic is not this boot's


def test_parse_firmware_only_log_is_empty_observation() -> None:
    obs = observe("firmware-bad-handoff-magic.txt")
    assert obs == parse_transcript("")
    assert obs.firmware_entered is False
    assert obs.linux_version_count == 0
    assert obs.e820_tables == {}


# ---- the agent line: good, truncated, one field changed ----------------------------------


def test_parse_truncated_agent_line_is_an_agent_error() -> None:
    obs = observe("agent-line-truncated.txt")
    assert obs.agent is None
    assert obs.agent_error == (
        "agent report is not JSON: Unterminated string starting at: line 1 column 476 (char 475)"
    )
    assert obs.command_line == GOOD_CMDLINE  # the rest of the log still counts


def test_parse_interleaved_kernel_message_is_an_agent_error() -> None:
    line = AGENT_PREFIX + json.dumps(good_agent_doc())
    cut = line.index('"boot_params": "') + 1000
    broken = line[:cut] + "[    3.512345] random: crng init done\n" + line[cut:] + "\n"
    obs = parse_transcript(broken)
    assert obs.agent is None
    assert obs.agent_error is not None
    assert obs.agent_error.startswith("agent report is not JSON: Unterminated string")


def test_parse_agent_line_not_at_line_start_is_ignored() -> None:
    obs = parse_transcript("x" + AGENT_PREFIX + json.dumps(good_agent_doc()) + "\n")
    assert obs.agent is None and obs.agent_error is None


def test_parse_first_agent_line_wins() -> None:
    doc = good_agent_doc()
    second = dict(doc, cmdline=b"other".hex())
    obs = parse_transcript(f"{AGENT_PREFIX}{json.dumps(doc)}\n{AGENT_PREFIX}{json.dumps(second)}\n")
    assert obs.agent is not None
    assert obs.agent.cmdline == GOOD_CMDLINE.encode()


def test_parse_agent_with_crlf_line_end_parses() -> None:
    obs = parse_transcript(AGENT_PREFIX + json.dumps(good_agent_doc()) + "\r\n")
    assert obs.agent is not None


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"v": 2}, "agent report: v: version 2, this parser reads 1"),
        ({"v": True}, "agent report: v: expected an integer, got a boolean"),
        ({"cmdline": "6g"}, "agent report: cmdline: not a string of hex digit pairs"),
        ({"cmdline": "616"}, "agent report: cmdline: not a string of hex digit pairs"),
        ({"cmdline": "61 62"}, "agent report: cmdline: not a string of hex digit pairs"),
        ({"boot_params": 7}, "agent report: boot_params: expected a string, got int"),
        (
            {"memmap": [["0x0", "0x9fbff"]]},
            "agent report: memmap[0]: expected [start, end, type], got ['0x0', '0x9fbff']",
        ),
        (
            {"memmap": [["0", "0x9fbff", "System RAM"]]},
            "agent report: memmap[0][0]: '0' is not 0x-prefixed hex",
        ),
        ({"errors": ["ok", 3]}, "agent report: errors[1]: expected a string, got int"),
        (
            {"payload": {"size": 1, "sha256": "00" * 31, "expected": ""}},
            "agent report: payload.sha256: expected 32 bytes, got 31",
        ),
        (
            {"payload": {"size": 1, "sha256": "00" * 32, "expected": "00" * 33}},
            "agent report: payload.expected: expected 32 bytes, got 33",
        ),
        (
            {"payload": {"size": -1, "sha256": "00" * 32, "expected": ""}},
            "agent report: payload.size: -1 is negative",
        ),
        (
            {"payload": {"sha256": "00" * 32, "expected": ""}},
            "agent report: payload.size: missing",
        ),
        ({"payload": []}, "agent report: payload: expected an object, got list"),
        (
            {"boot_params": None, "errors": ["read /sys/kernel/boot_params/data: errno 2"]},
            "agent report: boot_params: the agent could not read it: "
            "read /sys/kernel/boot_params/data: errno 2",
        ),
        (
            {"cmdline": None, "errors": ["read /proc/cmdline: errno 5"]},
            "agent report: cmdline: the agent could not read it: read /proc/cmdline: errno 5",
        ),
    ],
)
def test_parse_agent_one_bad_field_is_an_agent_error(change: dict[str, Any], error: str) -> None:
    obs = observe_agent({**good_agent_doc(), **change})
    assert obs.agent is None
    assert obs.agent_error == error


def test_parse_agent_missing_key_is_an_agent_error() -> None:
    doc = good_agent_doc()
    del doc["memmap"]
    assert observe_agent(doc).agent_error == "agent report: memmap: missing"


def test_parse_agent_not_an_object_is_an_agent_error() -> None:
    assert observe_agent([1]).agent_error == (
        "agent report: (top level): expected an object, got list"
    )


def test_parse_agent_deep_nesting_is_an_agent_error_not_a_crash() -> None:
    obs = parse_transcript(AGENT_PREFIX + "[" * 100_000 + "\n")
    assert obs.agent_error is not None
    assert obs.agent_error.startswith("agent report is not JSON: ")


def test_parse_agent_sha256_of_32_bytes_and_empty_expected_parse() -> None:
    doc = {**good_agent_doc(), "payload": {"size": 0, "sha256": "ab" * 32, "expected": ""}}
    agent = observe_agent(doc).agent
    assert agent is not None and agent.payload is not None
    assert agent.payload.sha256 == b"\xab" * 32
    assert agent.payload.expected is None


def test_parse_agent_null_payload_is_none() -> None:
    doc = {**good_agent_doc(), "payload": None, "errors": ["open /payload: errno 2"]}
    agent = observe_agent(doc).agent
    assert agent is not None
    assert agent.payload is None
    assert agent.errors == ("open /payload: errno 2",)


def test_parse_agent_short_boot_params_is_kept_for_the_oracle() -> None:
    """The agent reports a short read itself; the boot-params oracle judges the length."""
    doc = {**good_agent_doc(), "boot_params": "00" * 4095, "errors": ["read x: not 4096 bytes"]}
    agent = observe_agent(doc).agent
    assert agent is not None
    assert agent.boot_params == bytes(4095)


def test_parse_agent_setup_data_nodes_in_order() -> None:
    nodes = [
        {"type": "0x9", "data": ""},
        {"type": "0x80000006", "data": "00ff", "truncated": False},
        {"type": "0xFFFFFFFF", "data": "ab" * 3, "truncated": True},
    ]
    agent = observe_agent({**good_agent_doc(), "setup_data": nodes}).agent
    assert agent is not None
    assert agent.setup_data == (
        AgentSetupData(9, b""),
        AgentSetupData(0x80000006, b"\x00\xff"),
        AgentSetupData(0xFFFFFFFF, b"\xab" * 3, truncated=True),
    )


def test_parse_agent_setup_data_empty_list_is_no_nodes() -> None:
    agent = observe_agent({**good_agent_doc(), "setup_data": []}).agent
    assert agent is not None and agent.setup_data == ()


@pytest.mark.parametrize(
    ("setup_data", "error"),
    [
        ({}, "agent report: setup_data: expected a list, got dict"),
        (None, "agent report: setup_data: expected a list, got NoneType"),
        (["0x9"], "agent report: setup_data[0]: expected an object, got str"),
        ([{"data": ""}], "agent report: setup_data[0].type: missing"),
        ([{"type": 9, "data": ""}], "agent report: setup_data[0].type: expected a string, got int"),
        (
            [{"type": "9", "data": ""}],
            "agent report: setup_data[0].type: '9' is not a 0x-prefixed 32-bit hex number",
        ),
        (
            [{"type": "", "data": ""}],  # the agent could not read the type file
            "agent report: setup_data[0].type: '' is not a 0x-prefixed 32-bit hex number",
        ),
        (
            [{"type": "0x123456789", "data": ""}],  # 9 digits: wider than the u32 field
            "agent report: setup_data[0].type: '0x123456789' is not a 0x-prefixed 32-bit "
            "hex number",
        ),
        ([{"type": "0x9"}], "agent report: setup_data[0].data: missing"),
        (
            [{"type": "0x9", "data": "abc"}],
            "agent report: setup_data[0].data: not a string of hex digit pairs",
        ),
        (
            [{"type": "0x9", "data": "", "truncated": 1}],
            "agent report: setup_data[0].truncated: expected true or false, got int",
        ),
        (
            [{"type": "0x9", "data": ""}, {"type": "0x1", "data": None}],
            "agent report: setup_data[1].data: expected a string, got NoneType",
        ),
    ],
)
def test_parse_agent_bad_setup_data_is_an_agent_error(setup_data: object, error: str) -> None:
    obs = observe_agent({**good_agent_doc(), "setup_data": setup_data})
    assert obs.agent is None
    assert obs.agent_error == error


def test_parse_agent_setup_data_type_of_8_digits_boundary() -> None:
    agent = observe_agent(
        {**good_agent_doc(), "setup_data": [{"type": "0x12345678", "data": ""}]}
    ).agent
    assert agent is not None and agent.setup_data == (AgentSetupData(0x12345678, b""),)


# ---- real captures through our firmware and agent ----------------------------------------

REAL_BIOS = (
    E820Line(0x0, 0x9FFFF, "usable"),
    E820Line(0xF0000, 0xFFFFF, "reserved"),
    E820Line(0x100000, 0xFFFFFFF, "usable"),
    E820Line(0xFFFF0000, 0xFFFFFFFF, "reserved"),
)


def test_parse_real_good_boot_through_our_firmware() -> None:
    obs = observe("boot-6.1-cloud-real-agent-report.txt")  # raw console.log: "\r\r\n" ends
    assert obs.firmware_entered is True
    assert obs.command_line == "console=ttyS0 panic=-1"
    assert obs.bios_e820 == REAL_BIOS
    assert obs.ramdisk == MemRange(0x0FEFE000, 0x0FFFFFFF)
    assert (obs.unpack_start, obs.initrd_freed_kib) == (UnpackStart.TRYING, 1032)
    assert obs.init_process == "/init"
    assert obs.agent_error is None
    agent = obs.agent
    assert agent is not None
    assert agent.cmdline == b"console=ttyS0 panic=-1"
    assert agent.payload is not None
    assert agent.payload.size == 1 << 20
    assert agent.payload.sha256 == agent.payload.expected
    assert [(m.start, m.end) for m in agent.memmap] == [(x.start, x.end) for x in REAL_BIOS]
    assert len(agent.boot_params) == 4096
    assert agent.errors == ()


def test_parse_real_panic_through_our_firmware() -> None:
    obs = observe("panic-no-root-6.1-cloud-real.txt")
    assert obs.firmware_entered is True
    assert obs.command_line == "console=ttyS0 rdinit=/nope"
    assert obs.panics == ("VFS: Unable to mount root fs on unknown-block(0,0)",)
    assert obs.init_process is None
    assert obs.agent is None and obs.agent_error is None
