"""The device-tree parser on real consoles of the pinned arm64 and riscv64 kernels
(tests/data/logs/dt, recorded by bootfuzz boot; see the README there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.judge.dt_observation import parse_dt_transcript
from bootfuzz.judge.oracles import judge_kernel_clean
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.backends.qemu_virt import POWER_DOWN_LINE

LOGS = Path(__file__).resolve().parents[1] / "data" / "logs" / "dt"


@pytest.mark.parametrize(("name", "model", "ranges", "console"), [
    ("arm64-6.12-cloud-4g-two-nodes.txt", "linux,dummy-virt",
     [(0x4000_0000, 0xBFFF_FFFF), (0xD000_0000, 0x13FFF_FFFF)], b"console=ttyAMA0"),
    ("riscv64-6.12-4g-two-nodes.txt", "riscv-virtio,qemu",
     [(0x8000_0000, 0xFFFF_FFFF), (0x1_1000_0000, 0x1_7FFF_FFFF)], b"console=ttyS0"),
])
def test_real_console_is_parsed(name: str, model: str, ranges: list[tuple[int, int]],
                                console: bytes) -> None:
    raw = (LOGS / name).read_bytes()
    obs = parse_dt_transcript(raw)
    assert obs.machine_model == model
    assert [(a, b) for _, a, b in obs.memory_node_ranges] == ranges
    assert obs.kernel_command_line is not None
    assert obs.kernel_command_line.startswith(console + b" earlycon panic=-1")
    assert obs.dt_agent_error is None and obs.dt_agent is not None
    assert obs.dt_agent.system_ram() == ranges
    assert sorted(obs.dt_agent.memory) == sorted(f"memory@{a:x}" for a, _ in ranges)
    assert "rng-seed" not in obs.dt_agent.chosen
    assert obs.base.agent is not None and obs.base.agent.payload is not None
    assert obs.base.initrd_freed_kib is not None and obs.base.unpack_start is not None
    assert POWER_DOWN_LINE.encode() in raw
    if "riscv" in name:
        assert "mmode_resv0@80000000" in obs.dt_agent.reserved
        assert any("mmode_resv0@80000000" in r for r in obs.reserved_mem)


@pytest.mark.parametrize(("name", "oops"), [
    ("arm64-6.12-cloud-4g-two-nodes.txt",
     b"[    1.250100] Internal error: Oops: 0000000096000004 [#1] SMP"),
    ("arm64-6.12-cloud-4g-two-nodes.txt",
     b"[    1.250000] Unable to handle kernel paging request at virtual address "
     b"ffff8000800a0000"),
    ("riscv64-6.12-4g-two-nodes.txt", b"[    1.250000] Oops - load access fault [#1]"),
])
def test_an_oops_on_the_way_to_the_agent_fails_kernel_clean(name: str, oops: bytes) -> None:
    """The real passing boot is clean; the same console with one oops line (in the
    format the pinned kernel prints, tests/unit/test_triage.py) before the agent's
    report is not."""
    raw = (LOGS / name).read_bytes()
    clean = judge_kernel_clean(parse_dt_transcript(raw).base)
    assert clean is not None and clean.verdict is Verdict.PASS
    at = raw.index(b"BOOTFUZZ-AGENT")
    result = judge_kernel_clean(parse_dt_transcript(raw[:at] + oops + b"\r\n" + raw[at:]).base)
    assert result is not None and result.verdict is Verdict.FAIL
    assert result.observed == oops.decode().split("] ", 1)[1]
