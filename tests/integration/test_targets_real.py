"""Peer targets booting the pinned kernels for real, judged by the validity oracles."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers.differential import compare
from bootfuzz.peers.targets import (
    CommandTarget,
    OursTarget,
    QemuDirectTarget,
    QemuMachine,
    load_template,
)
from tests.target_runs import case, explain

pytestmark = pytest.mark.qemu
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "qemu-pc.toml"
TIMEOUT = 240.0


@pytest.mark.parametrize("mem", ["256M", "5G"])
@pytest.mark.parametrize("machine", [QemuMachine.PC, QemuMachine.MICROVM])
def test_qemu_direct_6_1_cloud_passes_validity(machine: QemuMachine, mem: str,
                                               tmp_path: Path) -> None:
    run = QemuDirectTarget(machine).run(case(mem), tmp_path, timeout=TIMEOUT,
                                        silence_timeout=90)
    assert run.verdict is Verdict.PASS, explain(run)
    assert [r.name for r in run.validity][:6] == ["boot", "kernel-clean", "e820-gap",
                                                   "ram-total", "ramdisk", "ramdisk-rule"]
    assert run.exact == ()


def test_command_target_qemu_template_passes(tmp_path: Path) -> None:
    run = CommandTarget(load_template(EXAMPLE)).run(case("256M"), tmp_path, timeout=TIMEOUT,
                                                    silence_timeout=90)
    assert run.verdict is Verdict.PASS, explain(run)
    assert run.argv[run.argv.index("-m") + 1] == "262144K"


def test_diff_ours_vs_qemu_pc_5g_known_differences(tmp_path: Path) -> None:
    c = case("5G")
    ours = OursTarget().run(c, tmp_path / "ours", timeout=TIMEOUT, silence_timeout=90)
    peer = QemuDirectTarget().run(c, tmp_path / "qemu", timeout=TIMEOUT, silence_timeout=90)
    assert ours.verdict is Verdict.PASS, explain(ours)
    assert peer.verdict is Verdict.PASS, explain(peer)
    rows = {r.field: r for r in compare(ours, peer).rows}
    # SeaBIOS's EBDA entry exists only on QEMU's side, quoted from its console.
    ebda = [r for r in rows.values() if r.right.startswith("[mem 0x000000000009fc00-")]
    assert len(ebda) == 1 and ebda[0].left == "(none)"
    assert "BIOS-e820: [mem 0x000000000009fc00" in ebda[0].right_evidence[0].text
    # Our loader honours initrd_addr_max (2 GiB); QEMU uses XLF_CAN_BE_LOADED_ABOVE_4G.
    ramdisk = rows["RAMDISK"]
    assert ramdisk.differs
    assert int(ramdisk.left[5:15], 16) < 0x80000000 <= int(ramdisk.right[5:15], 16)
    assert "RAMDISK: [mem" in ramdisk.left_evidence[0].text
    assert "RAMDISK: [mem" in ramdisk.right_evidence[0].text
    assert rows["boot_params.type_of_loader"].right == "0xb0"
    assert not rows["Command line"].differs
