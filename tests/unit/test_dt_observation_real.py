"""The device-tree parser on real consoles of the pinned arm64 and riscv64 kernels
(tests/data/logs/dt, recorded by bootfuzz boot; see the README there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.judge.dt_observation import parse_dt_transcript
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
