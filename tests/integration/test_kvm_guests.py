"""Tiny guests on our KVM VMM: the entry state a plan asks for, the UART, every way out.

Each payload checks the registers and segments the boot protocol promises,
prints OK or BAD<n> on COM1 and leaves through the agent's exit port, as the
firmware tests do under QEMU (tests/integration/test_firmware.py).  The VMM
runs as its own process (``python -m bootfuzz.run.kvm run``), as the backend runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.guest.harness import AGENT_EXIT_PORT, AGENT_EXIT_VALUE, FIRMWARE_ENTERING_MESSAGE
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

PAYLOAD_ADDR = layout.HIGH_MEMORY_START
MEMORY = 64 * layout.MiB
RBX_VALUE = 0x1234_5678
RBX64_VALUE = 0x0123_4567_89AB_CDEF  # long mode must load all 64 bits
AGENT_STATUS = (AGENT_EXIT_VALUE << 1) | 1

PRINT_AND_EXIT32 = """
print:
    movw $0x3f8, %dx
1:  lodsb
    testb %al, %al
    jz 2f
    outb %al, %dx
    jmp 1b
2:  movl $rep_msg, %esi
    movl $rep_len, %ecx
    rep outsb
    movb $EXIT_VALUE, %al
    outb %al, $EXIT_PORT
3:  hlt
    jmp 3b
rep_msg: .ascii "rep\\n"
    .set rep_len, . - rep_msg
"""

PAYLOAD32 = """
    .code32
    .globl _start
_start:
    movb $'1', %cl; cmpl $EXP_RSI, %esi; jne bad
    movb $'2', %cl; cmpl $EXP_RBX, %ebx; jne bad
    movb $'3', %cl; cmpl $EXP_RSP, %esp; jne bad
    movb $'4', %cl; movl %cs, %eax; cmpl $EXP_CS, %eax; jne bad
    movb $'5', %cl; movl %ds, %eax; cmpl $EXP_DS, %eax; jne bad
    movb $'6', %cl; movl %ss, %eax; cmpl $EXP_DS, %eax; jne bad
    movb $'7', %cl; movl %cr0, %eax; testl $CR0_PG, %eax; jnz bad
    movb $'8', %cl; orl %ebp, %edi; jnz bad
    movb $'9', %cl; pushfl; popl %eax; testl $0x200, %eax; jnz bad
    movb $'A', %cl; pushl $0x5a5a5a5a; popl %eax; cmpl $0x5a5a5a5a, %eax; jne bad
    movb $'B', %cl; movl $0x200000, %edi; movl $0xfeedf00d, (%edi)
    cmpl $0xfeedf00d, (%edi); jne bad
    movl $msg_ok, %esi
    jmp print
bad:
    movb %cl, msg_bad + 3
    movl $msg_bad, %esi
""" + PRINT_AND_EXIT32 + """
msg_ok: .asciz "OK32\\n"
msg_bad: .asciz "BAD?\\n"
"""

PAYLOAD64 = """
    .code64
    .globl _start
_start:
    movb $'1', %r8b; cmpq $EXP_RSI, %rsi; jne bad
    movb $'2', %r8b; movabsq $EXP_RBX64, %rax; cmpq %rax, %rbx; jne bad
    movb $'3', %r8b; cmpq $EXP_RSP, %rsp; jne bad
    movb $'4', %r8b; movl %cs, %eax; cmpl $EXP_CS, %eax; jne bad
    movb $'5', %r8b; movl %ds, %eax; cmpl $EXP_DS, %eax; jne bad
    movb $'6', %r8b; movq %cr3, %rax; cmpq $EXP_CR3, %rax; jne bad
    movb $'7', %r8b; movl $0xc0000080, %ecx; rdmsr; testl $EFER_LMA, %eax; jz bad
    movb $'8', %r8b; orq %rbp, %rdi; jnz bad
    movb $'9', %r8b; pushfq; popq %rax; testl $0x200, %eax; jnz bad
    movb $'A', %r8b; movq %cr4, %rax; testl $CR4_PAE, %eax; jz bad
    leaq msg_ok(%rip), %rsi
    jmp print
bad:
    movb %r8b, msg_bad + 3(%rip)
    leaq msg_bad(%rip), %rsi
print:
    movw $0x3f8, %dx
1:  lodsb
    testb %al, %al
    jz 2f
    outb %al, %dx
    jmp 1b
2:  leaq rep_msg(%rip), %rsi
    movl $rep_len, %ecx
    rep outsb
    movb $EXIT_VALUE, %al
    outb %al, $EXIT_PORT
3:  hlt
    jmp 3b
rep_msg: .ascii "rep\\n"
    .set rep_len, . - rep_msg
msg_ok: .asciz "OK64\\n"
msg_bad: .asciz "BAD?\\n"
"""


def assemble(tmp: Path, source: str, symbols: Mapping[str, int] | None = None,
             name: str = "payload") -> bytes:
    """A flat binary linked at PAYLOAD_ADDR."""
    symbols = {**default_symbols(), **(symbols or {})}
    src = tmp / f"{name}.S"
    src.write_text(source)
    defsyms = [arg for k, v in symbols.items() for arg in ("--defsym", f"{k}={v:#x}")]
    obj = tmp / f"{name}.o"
    subprocess.run(["as", "--64", *defsyms, "-o", obj, src], check=True)
    out = tmp / f"{name}.bin"
    subprocess.run(["ld", "-m", "elf_x86_64", f"-Ttext={PAYLOAD_ADDR:#x}", "--oformat",
                    "binary", "-o", out, obj], check=True)
    return out.read_bytes()


def default_symbols() -> dict[str, int]:
    return {
        "EXP_RSI": layout.ZERO_PAGE_ADDR,
        "EXP_RBX": RBX_VALUE,
        "EXP_RBX64": RBX64_VALUE,
        "EXP_RSP": layout.BOOT_STACK_TOP,
        "EXP_CS": layout.BOOT_CS,
        "EXP_DS": layout.BOOT_DS,
        "EXP_CR3": layout.PML4_ADDR,
        "CR0_PG": int(Cr0.PG),
        "CR4_PAE": int(Cr4.PAE),
        "EFER_LMA": int(Efer.LMA),
        "EXIT_VALUE": AGENT_EXIT_VALUE,
        "EXIT_PORT": AGENT_EXIT_PORT,
    }


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
        [sys.executable, "-m", "bootfuzz.run.kvm", "run", str(manifest), *extra],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_kvm_protected_32_reaches_payload_with_protocol_state(tmp_path: Path) -> None:
    """32-bit entry: paging off, IF clear, ESI/EBX/ESP from the plan, __BOOT_CS/__BOOT_DS."""
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.PROTECTED_32,
                                  assemble(tmp_path, PAYLOAD32)))
    assert proc.stdout == FIRMWARE_ENTERING_MESSAGE + "OK32\nrep\n", proc.stderr
    assert proc.returncode == AGENT_STATUS


def test_kvm_long_64_reaches_payload_in_64bit_mode(tmp_path: Path) -> None:
    """64-bit entry: EFER.LMA, CR3 = our tables, all 64 bits of RBX, IF clear."""
    proc = run_vmm(write_manifest(tmp_path, HandoffMode.LONG_64, assemble(tmp_path, PAYLOAD64)))
    assert proc.stdout == FIRMWARE_ENTERING_MESSAGE + "OK64\nrep\n", proc.stderr
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
