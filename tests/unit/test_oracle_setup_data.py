"""The setup-data oracle: the kernel's /sys/kernel/boot_params/setup_data view, modelled
on the nodes the plan wrote (RNG seeds zeroed in place, indirect nodes followed)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.abi.setup_data import SETUP_DATA_HEADER, SETUP_INDIRECT_PAYLOAD, SetupType
from bootfuzz.case import BootCase, InitrdSpec, Overrides, SetupDataNode
from bootfuzz.judge.observation import AgentReport, AgentSetupData, parse_transcript
from bootfuzz.judge.oracles import (
    ORACLES,
    ExactEvidence,
    check_e820_extended,
    check_setup_data,
)
from bootfuzz.judge.setup_data_model import expected_setup_data
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import SETUP_DATA_AREA, MiB
from bootfuzz.loader.placement import place_setup_data
from bootfuzz.loader.plan import Blob, BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeInitrd, fake_bzimage

IMAGE = parse_kernel_image(fake_bzimage(init_size=0x3378000))
SEED = bytes(range(1, 33))
TARGET = b"indirect target bytes"
INDIRECT_TYPE = SetupType.SETUP_INDIRECT | SetupType.SETUP_JAILHOUSE
HEADER = SETUP_DATA_HEADER.size


def indirect(target: int, size: int = len(TARGET), kind: int = INDIRECT_TYPE) -> bytes:
    return SETUP_INDIRECT_PAYLOAD.build({"type": kind, "reserved": 0, "len": size, "addr": target})


def plan(*nodes: SetupDataNode, overrides: Overrides | None = None) -> BootPlan:
    ov = overrides or Overrides(setup_data=nodes)
    case = BootCase(kernel="fake", memory=256 * MiB, overrides=ov, initrd=InitrdSpec(1 * MiB))
    return plan_boot(case, IMAGE, qemu_pc(256 * MiB), FakeInitrd(1 * MiB))


#: RNG seed, an indirect node aimed at the payload of the SETUP_NONE node after it,
#: that node: the loader places them from SETUP_DATA_AREA in order.
SEED_NODE = SetupDataNode(SetupType.SETUP_RNG_SEED, SEED)
_TARGET_ADDR = SETUP_DATA_AREA + HEADER + len(SEED) + HEADER + SETUP_INDIRECT_PAYLOAD.size + HEADER
NODES = (
    SEED_NODE,
    SetupDataNode(SetupType.SETUP_INDIRECT, indirect(_TARGET_ADDR)),
    SetupDataNode(SetupType.SETUP_NONE, TARGET),
)
SHOWN = (
    AgentSetupData(SetupType.SETUP_RNG_SEED, b""),
    AgentSetupData(INDIRECT_TYPE, TARGET),
    AgentSetupData(SetupType.SETUP_NONE, TARGET),
)


def judge(p: BootPlan, shown: tuple[AgentSetupData, ...] | None,
          errors: tuple[str, ...] = ()) -> OracleResult | None:
    agent = None
    if shown is not None:
        agent = AgentReport(version=1, cmdline=p.cmdline, payload=None, memmap=(),
                            boot_params=p.zero_page, errors=errors, setup_data=shown)
    obs = dataclasses.replace(parse_transcript(""), agent=agent)
    return check_setup_data(ExactEvidence(p, obs, GuestExit.POWER_OFF, "powered off"))


def verdict(p: BootPlan, shown: tuple[AgentSetupData, ...]) -> Verdict:
    result = judge(p, shown)
    assert result is not None
    return result.verdict


def test_nodes_fixture_target_is_the_none_nodes_payload() -> None:
    _, blobs = place_setup_data(NODES)
    assert blobs[2].addr + HEADER == _TARGET_ADDR


# ---- the model ----


def test_model_rng_seed_zeroed_with_its_len() -> None:
    assert expected_setup_data(plan(SEED_NODE)) == (AgentSetupData(SetupType.SETUP_RNG_SEED, b""),)


def test_model_does_not_change_the_plan() -> None:
    p = plan(SEED_NODE)
    before = p.blob("setup_data0").data
    expected_setup_data(p)
    assert p.blob("setup_data0").data == before
    assert before is not None and before[HEADER:] == SEED


def test_model_indirect_shows_inner_type_and_target_rest_as_written() -> None:
    assert expected_setup_data(plan(*NODES)) == SHOWN


def test_model_nested_indirect_shows_its_own_payload() -> None:
    nested = indirect(0x1000, 8, SetupType.SETUP_INDIRECT)
    assert expected_setup_data(plan(SetupDataNode(SetupType.SETUP_INDIRECT, nested))) == (
        AgentSetupData(SetupType.SETUP_INDIRECT, nested),
    )


def test_model_indirect_target_inside_a_seed_is_seen_zeroed() -> None:
    """ksysfs reads the target after setup_arch zeroed the seed it lies in."""
    seed_payload = SETUP_DATA_AREA + HEADER
    nodes = (SEED_NODE, SetupDataNode(SetupType.SETUP_INDIRECT, indirect(seed_payload, 8)))
    assert expected_setup_data(plan(*nodes))[1] == AgentSetupData(INDIRECT_TYPE, bytes(8))


def test_model_e820_ext_node_of_the_loader_comes_first_as_written() -> None:
    table = tuple(E820Entry(0x100000 + i * 0x2000, 0x1000, 1) for i in range(130))
    p = plan(overrides=Overrides(e820=table, setup_data=(SEED_NODE,)))
    written = p.blob("setup_data0").data
    assert written is not None
    assert expected_setup_data(p) == (
        AgentSetupData(SetupType.SETUP_E820_EXT, written[HEADER:]),
        AgentSetupData(SetupType.SETUP_RNG_SEED, b""),
    )
    assert len(written) == HEADER + 2 * 20


def test_model_head_from_predicted_fields_without_zero_page() -> None:
    """The 16-bit entry has no zero page of ours: the head comes from the predicted fields."""
    p = plan(*NODES)
    no_zp = dataclasses.replace(p, zero_page=b"",
                                boot_params_fields=(("setup_data", SETUP_DATA_AREA),))
    assert expected_setup_data(no_zp) == SHOWN
    assert isinstance(expected_setup_data(dataclasses.replace(no_zp, boot_params_fields=())), str)


def test_model_head_not_a_node_is_not_modelled() -> None:
    p = plan(*NODES, overrides=Overrides(setup_data=NODES, fields=(("setup_data", 0x1234),)))
    assert expected_setup_data(p) == "the chain reaches 0x1234, which is not a node we wrote"


def test_model_chain_loop_is_not_modelled() -> None:
    looping = SETUP_DATA_HEADER.build({"next": SETUP_DATA_AREA, "type": 0, "len": 0})
    p = plan(SEED_NODE)
    p = dataclasses.replace(p, blobs=tuple(
        Blob(b.name, b.addr, len(looping), data=looping) if b.name == "setup_data0" else b
        for b in p.blobs
    ))
    assert expected_setup_data(p) == f"the chain loops at {SETUP_DATA_AREA:#x}"


def test_model_indirect_target_outside_our_nodes_is_not_modelled() -> None:
    p = plan(SetupDataNode(SetupType.SETUP_INDIRECT, indirect(0x98000, 16)))
    assert expected_setup_data(p) == (
        "the indirect target [0x98000, +0x10) is not memory we wrote"
    )


@pytest.mark.parametrize(("size", "modelled"), [(8, True), (9, False)])
def test_model_indirect_target_end_boundary(size: int, modelled: bool) -> None:
    """A target ending exactly at the end of a node is ours; one byte further is not."""
    last8 = SETUP_DATA_AREA + HEADER + SETUP_INDIRECT_PAYLOAD.size - 8  # its own addr field
    p = plan(SetupDataNode(SetupType.SETUP_INDIRECT, indirect(last8, size)))
    assert isinstance(expected_setup_data(p), tuple) is modelled


def test_model_short_indirect_payload_is_not_modelled() -> None:
    p = plan(SetupDataNode(SetupType.SETUP_INDIRECT, indirect(0x1000)[:16]))
    assert expected_setup_data(p) == (
        f"the indirect node at {SETUP_DATA_AREA:#x} has no whole setup_indirect"
    )


# ---- the oracle ----


def test_oracle_not_applicable_without_setup_data() -> None:
    assert judge(plan(), ()) is None


def test_oracle_runs_right_after_e820_extended() -> None:
    assert ORACLES[ORACLES.index(check_e820_extended) + 1] is check_setup_data


def test_oracle_kernel_view_as_modelled_passes() -> None:
    result = judge(plan(*NODES), SHOWN)
    assert result is not None
    assert (result.name, result.verdict) == ("setup-data", Verdict.PASS)
    assert result.expected == result.observed == (
        f"0: type 0x9, 0 bytes\n"
        f"1: type 0x80000006, {len(TARGET)} bytes {TARGET.hex()}\n"
        f"2: type 0x0, {len(TARGET)} bytes {TARGET.hex()}"
    )


def test_oracle_seed_not_zeroed_fails() -> None:
    shown = (AgentSetupData(SetupType.SETUP_RNG_SEED, SEED), *SHOWN[1:])
    assert verdict(plan(*NODES), shown) is Verdict.FAIL


def test_oracle_one_target_byte_changed_fails() -> None:
    changed = bytes([TARGET[0] ^ 1]) + TARGET[1:]
    shown = (SHOWN[0], AgentSetupData(INDIRECT_TYPE, changed), SHOWN[2])
    assert verdict(plan(*NODES), shown) is Verdict.FAIL


def test_oracle_indirect_shown_as_outer_type_fails() -> None:
    shown = (SHOWN[0], AgentSetupData(SetupType.SETUP_INDIRECT, TARGET), SHOWN[2])
    assert verdict(plan(*NODES), shown) is Verdict.FAIL


@pytest.mark.parametrize("shown", [SHOWN[:2], (*SHOWN, SHOWN[2]), ()],
                         ids=["one-missing", "one-extra", "none"])
def test_oracle_node_count_differs_fails(shown: tuple[AgentSetupData, ...]) -> None:
    assert verdict(plan(*NODES), shown) is Verdict.FAIL


def test_oracle_without_agent_is_unknown() -> None:
    result = judge(plan(*NODES), None)
    assert result is not None
    assert (result.verdict, result.detail) == (Verdict.UNKNOWN, "no agent report")


def test_oracle_unmodelled_chain_is_unknown_with_the_reason() -> None:
    p = plan(SetupDataNode(SetupType.SETUP_INDIRECT, indirect(0x98000, 16)))
    result = judge(p, ())
    assert result is not None
    assert result.verdict is Verdict.UNKNOWN
    assert result.detail == "the indirect target [0x98000, +0x10) is not memory we wrote"


BIG = bytes(i % 251 for i in range(100))


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (AgentSetupData(0, BIG[:64], truncated=True), Verdict.PASS),
        (AgentSetupData(0, b"\xff" + BIG[1:64], truncated=True), Verdict.FAIL),
        (AgentSetupData(0, BIG, truncated=True), Verdict.FAIL),  # nothing was left to read
        (AgentSetupData(0, BIG[:64]), Verdict.FAIL),  # short, and not said to be
    ],
    ids=["prefix", "prefix-differs", "whole-but-truncated", "short-not-truncated"],
)
def test_oracle_truncated_data_compares_the_prefix(shown: AgentSetupData,
                                                   expected: Verdict) -> None:
    p = plan(SetupDataNode(SetupType.SETUP_NONE, BIG))
    assert verdict(p, (shown,)) is expected


def test_oracle_long_data_shown_by_size_prefix_and_digest() -> None:
    result = judge(plan(SetupDataNode(SetupType.SETUP_NONE, BIG)),
                   (AgentSetupData(0, BIG[:65], truncated=True),))
    assert result is not None
    digest = hashlib.sha256(BIG).hexdigest()[:16]
    assert result.expected == f"0: type 0x0, 100 bytes {BIG[:16].hex()}... sha256 {digest}"
    assert result.observed.startswith(f"0: type 0x0, 65+ bytes {BIG[:16].hex()}... sha256 ")


def test_oracle_carries_the_agents_setup_data_errors() -> None:
    errors = ("read /sys/kernel/boot_params/setup_data/0/data: errno 5", "open /payload: errno 2")
    result = judge(plan(SEED_NODE), (AgentSetupData(SetupType.SETUP_RNG_SEED, b""),), errors)
    assert result is not None
    assert result.verdict is Verdict.PASS
    assert result.detail == "read /sys/kernel/boot_params/setup_data/0/data: errno 5"
