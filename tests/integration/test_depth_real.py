"""The unpack stop point on real kernels: the run ends at "Freeing initrd memory",
the e820, command-line, placement and unpack oracles answer and pass, the rest are
reported unknown (not asked), and the boot's phases end at the unpack."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.judge.oracles import STOP_POINTS, StopPoint
from bootfuzz.judge.verdict import Verdict
from bootfuzz.run.backends.qemu_tcg import QEMU_BINARY
from bootfuzz.run.boot import run_case
from bootfuzz.transcript import SessionEnd

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which(QEMU_BINARY) is None, reason=f"{QEMU_BINARY} missing"),
]


@pytest.mark.parametrize("kernel", ["debian-6.1-cloud", "debian-6.12-cloud"])
def test_boot_until_unpack_answers_the_unpack_too(kernel: str, tmp_path: Path) -> None:
    case = BootCase(kernel=kernel, memory=256 << 20,
                    initrd=InitrdSpec(1 << 20, Compression.ZSTD, seed=3))
    result = run_case(case, tmp_path, until=StopPoint.UNPACK)
    assert result.transcript.end is SessionEnd.EARLY_STOP, result.transcript.end_detail
    asked = {r.name: r.verdict for r in result.oracles if r.asked}
    layout = {n for n in asked if n.startswith("valid-")}
    assert set(asked) - layout == STOP_POINTS[StopPoint.UNPACK][1] - {"e820-extended",
                                                                       "e820-user"}
    assert set(asked.values()) == {Verdict.PASS} and result.verdict is Verdict.PASS
    assert all(r.verdict is Verdict.UNKNOWN for r in result.oracles if not r.asked)
    assert "to-unpacked" in result.phases and "to-agent" not in result.phases
    assert result.until is StopPoint.UNPACK
