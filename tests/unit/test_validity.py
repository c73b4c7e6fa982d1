"""Validity oracles on a recorded QEMU -kernel boot, one planted defect at a time."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.promises import TargetPromises
from bootfuzz.judge.validity import LoadRequest, ValidityEvidence, judge_validity
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.peers.promises import KNOWN_PROMISES, OURS_QEMU_TCG, QEMU_MICROVM, QEMU_PC
from bootfuzz.transcript import GuestExit

DATA = Path(__file__).resolve().parent.parent / "data"
#: As Transcript.text has it: the pty's "\r\r\n" line ends become "\n".
LOG = re.sub(r"\r+\n", "\n",
             (DATA / "targets" / "qemu-direct-pc-256M-6.1-cloud.txt").read_bytes().decode())
SHA = "6c000e37611d7fb99394778bdfaa2aee1e743db58cbd2a2fded707da7cf470a6"
#: The command line the log was recorded with (the harness's of that time).
RECORDED_CMDLINE = b"console=ttyS0 earlyprintk=serial panic=-1"
GOOD = LoadRequest(
    memory=256 << 20, cmdline=RECORDED_CMDLINE, initrd_size=1055736,
    payload_size=1 << 20, payload_sha256=SHA, initrd_addr_max=0x7FFFFFFF, initrd_high_ok=True,
)


def judge(text: str = LOG, expect: LoadRequest = GOOD, promises: TargetPromises = QEMU_PC,
          exit_: GuestExit = GuestExit.POWER_OFF) -> dict[str, OracleResult]:
    ev = ValidityEvidence(expect, promises, parse_transcript(text), exit_, "test")
    return {r.name: r for r in judge_validity(ev)}


def planted(old: str, new: str) -> str:
    assert LOG.count(old) == 1, old
    return LOG.replace(old, new)


def failing(results: dict[str, OracleResult]) -> set[str]:
    return {n for n, r in results.items() if r.verdict is Verdict.FAIL}


def test_validity_recorded_qemu_pc_boot_all_pass() -> None:
    results = judge()
    assert {n: r.verdict for n, r in results.items()} == dict.fromkeys(results, Verdict.PASS)
    assert set(results) == {"boot", "kernel-clean", "e820-gap", "ram-total", "ramdisk",
                            "ramdisk-rule", "cmdline", "agent-cmdline", "initrd-unpacked",
                            "payload-digest", "firmware-memmap"}


def test_validity_a_kernel_warning_on_a_peer_boot_fails_kernel_clean_only() -> None:
    """The rule our own boots have (judge.oracles.judge_kernel_clean) holds for a peer's:
    the warning line is what the failure shows."""
    warning = "WARNING: CPU: 0 PID: 0 at mm/early_ioremap.c:141 __early_ioremap+0xb3/0x167"
    line = next(ln for ln in LOG.splitlines() if "] RAMDISK: [mem" in ln)
    results = judge(planted(line, f"{line}\n[    0.001000] {warning}"))
    assert failing(results) == {"kernel-clean"}
    assert results["kernel-clean"].observed == warning


def test_validity_kernel_clean_needs_the_agent() -> None:
    """Without an agent report the boot oracle fails and says why; kernel-clean does
    not pass a boot it could not see to the end."""
    cut = LOG[:LOG.index("BOOTFUZZ-AGENT")]
    results = judge(cut, exit_=GuestExit.KILLED)
    assert results["boot"].verdict is Verdict.FAIL
    assert results["kernel-clean"].verdict is Verdict.UNKNOWN


def test_validity_ram_in_gap_fails_gap_and_total() -> None:
    text = planted("[mem 0x00000000fffc0000-0x00000000ffffffff] reserved",
                   "[mem 0x00000000fffc0000-0x00000000ffffffff] usable")
    results = judge(text)
    assert results["e820-gap"].verdict is Verdict.FAIL
    assert results["e820-gap"].observed == ("usable [mem 0x00fffc0000-0x00ffffffff] in the "
                                            "32-bit MMIO gap")
    assert results["ram-total"].detail == "0x40000 bytes more"


@pytest.mark.parametrize(("line", "region"), [
    ("[mem 0x00000000000f0000-0x00000000000fffff]", "legacy video and BIOS ROM area"),
    ("[mem 0x000000fd00000000-0x000000ffffffffff]", "space beyond RAM"),
])
def test_validity_ram_in_other_regions_without_ram_fails_gap(line: str, region: str) -> None:
    """Usable RAM printed where the machine has none, besides the gap: the legacy area
    (SeaBIOS reserves it) and beyond RAM (its 64-bit PCI window, reserved)."""
    result = judge(planted(f"{line} reserved", f"{line} usable"))["e820-gap"]
    assert result.verdict is Verdict.FAIL
    assert result.observed.endswith(f"in the {region}"), result.observed


@pytest.mark.parametrize(("last", "verdict"), [(0x0FFFFFFF, Verdict.PASS),
                                               (0x10000FFF, Verdict.FAIL)])
def test_validity_gap_boundary_pair(last: int, verdict: Verdict) -> None:
    # 256M on pc: the gap starts at 0x10000000; RAM may end right below it.
    expect = replace(GOOD, memory=0x10001000) if verdict is Verdict.PASS else GOOD
    text = planted("[mem 0x000000000ffe0000-0x000000000fffffff] reserved",
                   f"[mem 0x000000000ffe0000-{last:#018x}] usable")
    assert judge(text, expect)["e820-gap"].verdict is verdict


def test_validity_ram_missing_fails_total_only() -> None:
    text = planted("[mem 0x0000000000000000-0x000000000009fbff] usable",
                   "[mem 0x0000000000000000-0x000000000008fbff] usable")
    results = judge(text)
    assert failing(results) == {"ram-total", "firmware-memmap"}
    assert results["ram-total"].detail == "0x10000 bytes less"


def test_validity_moved_ramdisk_fails() -> None:
    text = planted("RAMDISK: [mem 0x0fede000-0x0ffdffff]\n",
                   "RAMDISK: [mem 0x0fede000-0x0ffdffff]\n[    0.000000] Move RAMDISK from "
                   "[mem 0x0fede000-0x0ffdffff] to [mem 0x0e000000-0x0e101fff]\n")
    results = judge(text)
    assert failing(results) == {"ramdisk"}
    assert results["ramdisk"].detail == "moved to [mem 0x000e000000-0x000e101fff]"


def test_validity_unaligned_ramdisk_fails() -> None:
    text = planted("RAMDISK: [mem 0x0fede000-", "RAMDISK: [mem 0x0fede800-")
    results = judge(text)
    assert "not page aligned" in results["ramdisk"].detail
    assert results["ramdisk-rule"].verdict is Verdict.FAIL


def test_validity_ramdisk_outside_usable_fails() -> None:
    text = planted("RAMDISK: [mem 0x0fede000-0x0ffdffff]", "RAMDISK: [mem 0x0fedf000-0x0ffe0fff]")
    assert "not inside one usable BIOS-e820 range" in judge(text)["ramdisk"].detail


@pytest.mark.parametrize(("addr_max", "verdict"), [(0x0FFDFBF7, Verdict.PASS),
                                                   (0x0FFDFBF6, Verdict.FAIL)])
def test_validity_ramdisk_initrd_addr_max_boundary_pair(addr_max: int, verdict: Verdict) -> None:
    # The data ends at 0x0fede000 + 1055736 - 1 = 0x0ffdfbf7.
    expect = replace(GOOD, initrd_addr_max=addr_max, initrd_high_ok=False)
    assert judge(expect=expect)["ramdisk"].verdict is verdict


def test_validity_missing_unpack_fails() -> None:
    text = LOG.replace("Trying to unpack rootfs image as initramfs...", "")
    text = text.replace("Freeing initrd memory: 1032K", "")
    results = judge(text)
    assert failing(results) == {"initrd-unpacked"}
    assert results["initrd-unpacked"].observed == "no unpack message"


def test_validity_wrong_freed_size_fails() -> None:
    text = planted("Freeing initrd memory: 1032K", "Freeing initrd memory: 1028K")
    assert failing(judge(text)) == {"initrd-unpacked"}


def test_validity_payload_digest_mismatch_fails() -> None:
    results = judge(expect=replace(GOOD, payload_sha256="00" * 32))
    assert failing(results) == {"payload-digest"}


def test_validity_cmdline_mismatch_fails_both() -> None:
    results = judge(expect=replace(GOOD, cmdline=b"console=ttyS0"))
    assert failing(results) == {"cmdline", "agent-cmdline"}


def test_validity_memmap_differs_from_print_fails() -> None:
    text = planted("[mem 0x000000000009fc00-0x000000000009ffff] reserved",
                   "[mem 0x000000000009fc00-0x000000000009ffff] ACPI data")
    results = judge(text)
    assert failing(results) == {"firmware-memmap"}


def test_validity_boot_without_power_off_fails() -> None:
    results = judge(exit_=GuestExit.KILLED)
    assert failing(results) == {"boot"}


def test_validity_other_promises_change_only_promise_oracles() -> None:
    # Our loader's rule puts this initrd elsewhere; our withheld areas differ too.
    assert failing(judge(promises=OURS_QEMU_TCG)) == {"ram-total", "ramdisk-rule"}
    assert failing(judge(promises=QEMU_MICROVM)) == {"ram-total", "ramdisk-rule"}


def test_validity_no_promises_unknown_not_pass() -> None:
    results = judge(promises=KNOWN_PROMISES["none"])
    unknown = {n for n, r in results.items() if r.verdict is Verdict.UNKNOWN}
    assert unknown == {"e820-gap", "ram-total", "ramdisk-rule"}


def test_validity_no_initrd_expects_no_root_panic() -> None:
    raw = (DATA / "logs" / "panic-no-root-6.1-qemu-kernel-real.txt").read_bytes().decode()
    text = re.sub(r"\r+\n", "\n", raw)
    expect = replace(GOOD, initrd_size=None, payload_size=None, payload_sha256=None,
                     cmdline=b"console=ttyS0")
    results = judge(text, expect, exit_=GuestExit.RESET)
    assert set(results) == {"boot", "e820-gap", "ram-total", "ramdisk", "ramdisk-rule",
                            "cmdline", "initrd-unpacked"}
    assert failing(results) == set()
    assert results["boot"].verdict is Verdict.PASS
