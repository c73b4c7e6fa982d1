"""setup_data nodes booted through our loader on QEMU-TCG: the kernel's sysfs view of
each node (/sys/kernel/boot_params/setup_data) is what the setup-data oracle models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bootfuzz.abi.setup_data import SETUP_DATA_HEADER, SETUP_INDIRECT_PAYLOAD, SetupType
from bootfuzz.case import BootCase, InitrdSpec, Overrides, SetupDataNode
from bootfuzz.judge.observation import AgentSetupData
from bootfuzz.judge.oracles import ExactEvidence, check_setup_data
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.layout import MiB
from bootfuzz.loader.placement import place_setup_data
from bootfuzz.run.boot import BootResult, run_case
from tests.integration.test_boot_real import _many_entries, assert_all_pass

pytestmark = pytest.mark.qemu

SEED = bytes(range(0xA0, 0xC0))  # 32 bytes: enough for "crng init done"
TARGET = b"bootfuzz setup_indirect target\0" + bytes(range(33))  # 64 bytes
#: A type the kernel only parses as an outer node type, and then only under the
#: Jailhouse hypervisor: behind SETUP_INDIRECT it is reserved and nothing more.
INDIRECT_TYPE = SetupType.SETUP_INDIRECT | SetupType.SETUP_JAILHOUSE
#: A nested indirect (type bare SETUP_INDIRECT): not allowed, so never followed.
NESTED_PAYLOAD = SETUP_INDIRECT_PAYLOAD.build(
    {"type": SetupType.SETUP_INDIRECT, "reserved": 0, "len": 8, "addr": 0x1000}
)


def _indirect(addr: int) -> bytes:
    return SETUP_INDIRECT_PAYLOAD.build(
        {"type": INDIRECT_TYPE, "reserved": 0, "len": len(TARGET), "addr": addr}
    )


def indirect_nodes(first: tuple[SetupDataNode, ...] = ()) -> tuple[SetupDataNode, ...]:
    """RNG seed, an indirect node whose target is the payload of the SETUP_NONE node
    after it, that node, and a nested indirect; *first* is what the loader adds in front
    (its own SETUP_E820_EXT node), which shifts every address the loader picks."""

    def nodes(target: int) -> tuple[SetupDataNode, ...]:
        return (
            SetupDataNode(SetupType.SETUP_RNG_SEED, SEED),
            SetupDataNode(SetupType.SETUP_INDIRECT, _indirect(target)),
            SetupDataNode(SetupType.SETUP_NONE, TARGET),
            SetupDataNode(SetupType.SETUP_INDIRECT, NESTED_PAYLOAD),
        )

    # The loader places nodes in order at addresses that depend only on their sizes.
    _, blobs = place_setup_data((*first, *nodes(0)))
    target = blobs[len(first) + 2].addr + SETUP_DATA_HEADER.size
    return nodes(target)


def boot(tmp_path: Path, kernel: str, overrides: Overrides) -> BootResult:
    case = BootCase(kernel=kernel, memory=256 * MiB, initrd=InitrdSpec(1 * MiB),
                    overrides=overrides)
    return run_case(case, run_dir=tmp_path)


#: What every kernel shows: the seed zeroed with its len, the indirect node as its
#: setup_indirect's type over the target's bytes, the rest as written.
SHOWN = (
    AgentSetupData(SetupType.SETUP_RNG_SEED, b""),
    AgentSetupData(INDIRECT_TYPE, TARGET),
    AgentSetupData(SetupType.SETUP_NONE, TARGET),
    AgentSetupData(SetupType.SETUP_INDIRECT, NESTED_PAYLOAD),
)


@pytest.mark.parametrize("kernel", ["debian-6.1-cloud", "debian-6.12-cloud"])
def test_setup_data_rng_indirect_none_shown_as_modelled(tmp_path: Path, kernel: str) -> None:
    result = boot(tmp_path, kernel, Overrides(setup_data=indirect_nodes()))
    assert_all_pass(result)
    verdicts = {r.name: r.verdict for r in result.oracles}
    assert verdicts["setup-data"] is Verdict.PASS
    assert result.observation.agent is not None
    assert result.observation.agent.setup_data == SHOWN
    # The same observation judged against plans that differ in one byte fails.
    assert rejudge(result, 0, 8, SetupType.SETUP_NONE) is Verdict.FAIL  # seed kept, not zeroed
    assert rejudge(result, 2, SETUP_DATA_HEADER.size, TARGET[0] ^ 1) is Verdict.FAIL


def rejudge(result: BootResult, node: int, offset: int, byte: int) -> Verdict:
    """The setup-data verdict had the plan written *byte* at *offset* of node *node*."""
    blobs = []
    for b in result.plan.blobs:
        if b.name == f"setup_data{node}" and b.data is not None:
            data = bytearray(b.data)
            data[offset] = byte
            b = dataclasses.replace(b, data=bytes(data))
        blobs.append(b)
    plan = dataclasses.replace(result.plan, blobs=tuple(blobs))
    ev = ExactEvidence(plan, result.observation, result.guest_exit, result.transcript.end_detail)
    verdict = check_setup_data(ev)
    assert verdict is not None
    return verdict.verdict


def test_setup_data_e820_ext_node_shown_as_written(tmp_path: Path) -> None:
    """A >128-entry table: the loader's SETUP_E820_EXT node comes first, then ours."""
    table = _many_entries(256 * MiB, 100)
    ext = SetupDataNode(SetupType.SETUP_E820_EXT, b"\0" * (20 * (len(table) - 128)))
    result = boot(tmp_path, "debian-6.1-cloud",
                  Overrides(e820=table, setup_data=indirect_nodes((ext,))))
    assert_all_pass(result)
    written = result.plan.blob("setup_data0").data
    assert written is not None
    assert result.observation.agent is not None
    shown = result.observation.agent.setup_data
    assert shown[0] == AgentSetupData(SetupType.SETUP_E820_EXT, written[SETUP_DATA_HEADER.size:])
    assert len(shown[0].data) == 20 * (len(table) - 128)
    assert shown[1:] == SHOWN
