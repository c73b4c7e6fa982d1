"""Tiny guests on our KVM VMM: the entry state a plan asks for, the UART, every way out.

Each payload (tests/payloads.py) checks the registers and segments the boot protocol
promises, prints OK or BAD<n> on COM1 and leaves through the agent's exit port; the
firmware tests run the same payloads under QEMU (tests/integration/test_firmware.py).  The VMM
runs as its own process (``python -m bootfuzz.cli.vmm run``), as the backend runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.guest.protocol import AGENT_EXIT_VALUE, FIRMWARE_ENTERING_MESSAGE
from bootfuzz.loader import layout
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.x86 import (
    FLAT_CODE32,
    FLAT_CODE64,
    FLAT_DATA,
    Cr0,
    Cr4,
    Efer,
    identity_page_tables,
)
from bootfuzz.run.kvm.vm import KvmError, open_kvm
from bootfuzz.run.kvm.vmm import (
    EXIT_HALTED,
    EXIT_RESET,
    EXIT_TIMEOUT,
    Manifest,
    ManifestBlob,
)
from tests.payloads import (
    OK32_OUTPUT,
    OK64_OUTPUT,
    PAYLOAD32,
    PAYLOAD64,
    PAYLOAD_ADDR,
    RBX64_VALUE,
    RBX_VALUE,
    assemble,
)


def _kvm_unusable() -> str | None:
    try:
        os.close(open_kvm())
    except KvmError as e:
        return str(e)
    if shutil.which("as") is None or shutil.which("ld") is None:
        return "as/ld not installed (binutils): cannot assemble the test guests"
    return None


_REASON = _kvm_unusable()
pytestmark = [pytest.mark.kvm, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]

MEMORY = 64 * layout.MiB
AGENT_STATUS = (AGENT_EXIT_VALUE << 1) | 1

def gdt(mode: HandoffMode) -> bytes:
    code = FLAT_CODE64 if mode is HandoffMode.LONG_64 else FLAT_CODE32
    return b"".join(w.to_bytes(8, "little") for w in (0, FLAT_CODE32, code, FLAT_DATA))


def cpu_state(mode: HandoffMode) -> CpuState:
    long_mode = mode is HandoffMode.LONG_64
    return CpuState(
        mode=mode,
        rip=PAYLOAD_ADDR,
        rsi=layout.ZERO_PAGE_ADDR,
        rbx=RBX64_VALUE if long_mode else RBX_VALUE,
        rsp=layout.BOOT_STACK_TOP,
        cr0=int(Cr0.PE | Cr0.ET | (Cr0.PG if long_mode else 0)),
        cr3=layout.PML4_ADDR if long_mode else 0,
        cr4=int(Cr4.PAE) if long_mode else 0,
        efer=int(Efer.LME | Efer.LMA) if long_mode else 0,
        gdt_base=layout.GDT_ADDR,
        gdt_limit=layout.GDT_SIZE - 1,
        code_selector=layout.BOOT_CS,
        data_selector=layout.BOOT_DS,
    )


def write_manifest(tmp: Path, mode: HandoffMode, payload: bytes,
                   memory: int = MEMORY) -> Path:
    blobs = {"gdt": (layout.GDT_ADDR, gdt(mode)), "payload": (PAYLOAD_ADDR, payload)}
    if mode is HandoffMode.LONG_64:
        blobs["page_tables"] = (layout.PML4_ADDR, identity_page_tables(layout.PML4_ADDR, 5))
    entries = []
    for name, (addr, data) in blobs.items():
        path = tmp / f"{name}.bin"
        path.write_bytes(data)
        entries.append(ManifestBlob(name, addr, len(data), str(path)))
    manifest = Manifest(memory, ((0, memory),), tuple(entries), cpu_state(mode))
    out = tmp / "manifest.json"
    out.write_text(manifest.to_json())
    return out


def run_vmm(manifest: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootfuzz.cli.vmm", "run", str(manifest), *extra],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_kvm_protected_32_reaches_payload_with_protocol_state(tmp_path: Path) -> None:
    """32-bit entry: paging off, IF clear, ESI/EBX/ESP from the plan, __BOOT_CS/__BOOT_DS."""
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.PROTECTED_32,
                                  assemble(tmp_path, PAYLOAD32)))
    assert proc.stdout == FIRMWARE_ENTERING_MESSAGE + OK32_OUTPUT, proc.stderr
    assert proc.returncode == AGENT_STATUS


def test_kvm_long_64_reaches_payload_in_64bit_mode(tmp_path: Path) -> None:
    """64-bit entry: EFER.LMA, CR3 = our tables, all 64 bits of RBX, IF clear."""
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.LONG_64, assemble(tmp_path, PAYLOAD64)))
    assert proc.stdout == FIRMWARE_ENTERING_MESSAGE + OK64_OUTPUT, proc.stderr
    assert proc.returncode == AGENT_STATUS


def test_kvm_long_64_ram_above_4g_is_usable(tmp_path: Path) -> None:
    """A split platform: the payload writes and reads back a word at 4 GiB."""
    source = """
    .code64
    .globl _start
_start:
    movabsq $0x100000000, %rdi
    movq $0x1122334455667788, %rax
    movq %rax, (%rdi)
    cmpq (%rdi), %rax
    jne 9f
    movb $'H', %al
    movw $0x3f8, %dx
    outb %al, %dx
9:  movb $EXIT_VALUE, %al
    outb %al, $EXIT_PORT
"""
    payload = assemble(tmp_path, source)
    mode = HandoffMode.LONG_64
    manifest_path = write_manifest(tmp_path, mode, payload)
    m = Manifest.from_json(manifest_path.read_text())
    low = 3 * layout.GiB
    split = Manifest(low + 64 * layout.MiB, ((0, low), (layout.FOUR_GIB, 64 * layout.MiB)),
                     m.blobs, m.cpu)
    manifest_path.write_text(split.to_json())
    proc = run_vmm(manifest_path)
    assert proc.stdout == FIRMWARE_ENTERING_MESSAGE + "H", proc.stderr
    assert proc.returncode == AGENT_STATUS


def test_kvm_hlt_with_interrupts_off_reports_halted(tmp_path: Path) -> None:
    payload = assemble(tmp_path, ".code32\n.globl _start\n_start: cli\n hlt\n jmp _start\n")
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.PROTECTED_32, payload))
    assert proc.returncode == EXIT_HALTED
    assert "bootfuzz-kvm: guest halted with interrupts off" in proc.stderr
    assert f"RIP={PAYLOAD_ADDR + 2:#018x}" in proc.stderr  # just past cli; hlt


def test_kvm_triple_fault_is_a_reset(tmp_path: Path) -> None:
    """ud2 with an empty IDT: #UD -> #GP -> #DF -> shutdown."""
    payload = assemble(tmp_path, ".code32\n.globl _start\n_start: ud2\n")
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.PROTECTED_32, payload))
    assert proc.returncode == EXIT_RESET
    assert "bootfuzz-kvm: guest reset (triple fault)" in proc.stderr


def test_kvm_i8042_reset_command_is_a_reset(tmp_path: Path) -> None:
    payload = assemble(tmp_path, ".code32\n.globl _start\n_start: movb $0xfe, %al\n"
                                 " outb %al, $0x64\n jmp _start\n")
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.PROTECTED_32, payload))
    assert proc.returncode == EXIT_RESET
    assert "i8042" in proc.stderr


def test_kvm_own_timeout_stops_a_spinning_guest(tmp_path: Path) -> None:
    payload = assemble(tmp_path, ".code32\n.globl _start\n_start: jmp _start\n")
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.PROTECTED_32, payload),
                   "--timeout", "1")
    assert proc.returncode == EXIT_TIMEOUT
    assert "timeout" in proc.stderr


def test_kvm_manifest_blob_outside_ram_is_a_usage_error(tmp_path: Path) -> None:
    manifest_path = write_manifest(tmp_path, HandoffMode.PROTECTED_32,
                                   assemble(tmp_path, ".code32\n_start: hlt\n"))
    m = Manifest.from_json(manifest_path.read_text())
    small = Manifest(PAYLOAD_ADDR, ((0, PAYLOAD_ADDR),), m.blobs, m.cpu)  # payload at the end
    manifest_path.write_text(small.to_json())
    proc = run_vmm(manifest_path)
    assert proc.returncode == 2
    assert "blob payload at 0x100000 is not inside RAM" in proc.stderr
