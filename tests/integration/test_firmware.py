"""The firmware stub under real QEMU: reset vector -> hand-off -> a tiny payload.

The payloads (tests/payloads.py, shared with the KVM tests) stand in for a kernel
entry point: they check the registers and segments the boot protocol promises, print
OK or BAD<n> on COM1 and leave QEMU through isa-debug-exit, as the agent does.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from bootfuzz.abi.handoff import HANDOFF, HANDOFF_MAGIC, HandoffMode
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.guest.protocol import (
    AGENT_EXIT_PORT,
    FIRMWARE_BAD_MAGIC_MESSAGE,
    FIRMWARE_BAD_MODE_MESSAGE,
    FIRMWARE_ENTERING_MESSAGE,
    QEMU_AGENT_EXIT_STATUS,
)
from bootfuzz.loader import layout
from tests.payloads import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LME,
    OK32_OUTPUT,
    OK64_OUTPUT,
    PAYLOAD32,
    PAYLOAD64,
    PAYLOAD_ADDR,
    RBX64_VALUE,
    RBX_VALUE,
    assemble,
)

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 not installed (qemu-system-x86)"),
]

ZERO_PAGE = layout.ZERO_PAGE_ADDR  # what a kernel entry would get in RSI
# source: Intel SDM vol. 3A, 3.4.5; the words boot.rst's examples use.
GDT_CODE32 = 0x00CF_9A00_0000_FFFF
GDT_CODE64 = 0x00AF_9A00_0000_FFFF
GDT_DATA = 0x00CF_9200_0000_FFFF
PTE_P_W = 0x3
PTE_PS = 1 << 7

def gdt(code_selector_entry: int) -> bytes:
    words = [0, GDT_CODE32, code_selector_entry, GDT_DATA]
    assert len(words) == layout.GDT_ENTRIES
    return b"".join(w.to_bytes(8, "little") for w in words)


def identity_tables_1gib() -> bytes:
    """PML4 -> PDPT -> one page directory of 2 MiB pages for [0, 1 GiB)."""
    pml4 = bytearray(layout.PAGE_SIZE)
    pdpt = bytearray(layout.PAGE_SIZE)
    pd = bytearray(layout.PAGE_SIZE)
    pml4[0:8] = (layout.PDPT_ADDR | PTE_P_W).to_bytes(8, "little")
    pdpt[0:8] = (layout.PD_BASE_ADDR | PTE_P_W).to_bytes(8, "little")
    for i in range(512):
        pd[i * 8 : i * 8 + 8] = (i * 2 * layout.MiB | PTE_P_W | PTE_PS).to_bytes(8, "little")
    assert layout.PDPT_ADDR == layout.PML4_ADDR + layout.PAGE_SIZE
    assert layout.PD_BASE_ADDR == layout.PDPT_ADDR + layout.PAGE_SIZE
    return bytes(pml4 + pdpt + pd)


def handoff(mode: int, **overrides: int) -> bytes:
    values: dict[str, int | bytes] = {
        "magic": HANDOFF_MAGIC,
        "mode": mode,
        "gdt_limit": layout.GDT_SIZE - 1,
        "gdt_base": layout.GDT_ADDR,
        "rip": PAYLOAD_ADDR,
        "rsi": ZERO_PAGE,
        "rbx": RBX_VALUE,
        "rsp": layout.BOOT_STACK_TOP,
        "code_selector": layout.BOOT_CS,
        "data_selector": layout.BOOT_DS,
        "firmware_code_selector": layout.FIRMWARE_CODE32_SELECTOR,
    }
    if mode == HandoffMode.LONG_64:
        values |= {
            "cr0": CR0_PE | CR0_PG,
            "cr3": layout.PML4_ADDR,
            "cr4": CR4_PAE,
            "efer": EFER_LME,
            "rbx": RBX64_VALUE,
        }
    else:
        values |= {"cr0": CR0_PE}
    values |= overrides
    return HANDOFF.build(values)


def run_qemu(
    firmware: Path, blobs: Mapping[int, bytes], tmp: Path, timeout: float = 20
) -> tuple[int | None, str]:
    """Returns (exit status or None if it had to be killed, serial output)."""
    assert QEMU is not None
    argv: list[str] = [
        QEMU, "-M", "pc", "-m", "64M", "-nodefaults", "-display", "none",
        "-serial", "stdio", "-bios", str(firmware), "-no-reboot",
        "-device", f"isa-debug-exit,iobase={AGENT_EXIT_PORT:#x},iosize=0x04",
    ]  # fmt: skip
    for i, (addr, data) in enumerate(sorted(blobs.items())):
        path = tmp / f"blob{i}.bin"
        path.write_bytes(data)
        argv += ["-device", f"loader,file={path},addr={addr:#x},force-raw=on"]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, out.decode(errors="replace")


def test_firmware_protected_32_reaches_payload_with_protocol_state(
    harness: HarnessArtifacts, tmp_path: Path
) -> None:
    """32-bit entry: paging off, ESI/EBX/ESP from the hand-off, __BOOT_CS/__BOOT_DS."""
    payload = assemble(tmp_path, PAYLOAD32)
    status, out = run_qemu(
        harness.firmware,
        {
            layout.GDT_ADDR: gdt(GDT_CODE32),
            layout.HANDOFF_ADDR: handoff(HandoffMode.PROTECTED_32),
            PAYLOAD_ADDR: payload,
        },
        tmp_path,
    )
    assert out == FIRMWARE_ENTERING_MESSAGE + OK32_OUTPUT
    assert status == QEMU_AGENT_EXIT_STATUS


def test_firmware_long_64_reaches_payload_in_64bit_mode(
    harness: HarnessArtifacts, tmp_path: Path
) -> None:
    """64-bit entry: EFER.LMA set, CR3 = our tables, 64-bit RSI/RBX/RSP from the hand-off."""
    payload = assemble(tmp_path, PAYLOAD64)
    status, out = run_qemu(
        harness.firmware,
        {
            layout.GDT_ADDR: gdt(GDT_CODE64),
            layout.HANDOFF_ADDR: handoff(HandoffMode.LONG_64),
            layout.PML4_ADDR: identity_tables_1gib(),
            PAYLOAD_ADDR: payload,
        },
        tmp_path,
    )
    assert out == FIRMWARE_ENTERING_MESSAGE + OK64_OUTPUT
    assert status == QEMU_AGENT_EXIT_STATUS


def test_firmware_bad_magic_reports_and_halts(harness: HarnessArtifacts, tmp_path: Path) -> None:
    block = bytearray(handoff(HandoffMode.PROTECTED_32))
    block[HANDOFF["magic"].offset] ^= 0x01
    status, out = run_qemu(
        harness.firmware,
        {layout.GDT_ADDR: gdt(GDT_CODE32), layout.HANDOFF_ADDR: bytes(block)},
        tmp_path,
        timeout=3,
    )
    assert out == FIRMWARE_BAD_MAGIC_MESSAGE
    assert status is None  # halted, not exited


def test_firmware_unknown_mode_reports_and_halts(harness: HarnessArtifacts, tmp_path: Path) -> None:
    status, out = run_qemu(
        harness.firmware,
        {layout.GDT_ADDR: gdt(GDT_CODE32), layout.HANDOFF_ADDR: handoff(max(HandoffMode) + 1)},
        tmp_path,
        timeout=3,
    )
    assert out == FIRMWARE_ENTERING_MESSAGE + FIRMWARE_BAD_MODE_MESSAGE
    assert status is None
