"""Tiny guests in assembly that stand in for a kernel's entry point.

PAYLOAD32 and PAYLOAD64 check the registers and segments the 32-bit and 64-bit boot
protocols promise (Documentation/arch/x86/boot.rst), print OK32/OK64 on COM1 or BAD<n>
(n names the failed check), then "rep" through one `rep outsb` (a string port write
the VMM must take whole), and leave through the agent's exit port.  The firmware tests
run them after our firmware stub under QEMU, the KVM tests on our VMM.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from bootfuzz.guest.protocol import AGENT_EXIT_PORT, AGENT_EXIT_VALUE
from bootfuzz.loader import layout

#: Where the payloads are linked and loaded: the protected-mode kernel's usual address.
PAYLOAD_ADDR = layout.HIGH_MEMORY_START
RBX_VALUE = 0x1234_5678
RBX64_VALUE = 0x0123_4567_89AB_CDEF  # long mode must load all 64 bits

# source: Intel SDM vol. 3A, 2.5 (control registers) and 2.2.1 (IA32_EFER).
CR0_PE = 1 << 0
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
EFER_LME = 1 << 8
EFER_LMA = 1 << 10

#: What COM1 shows when every check of a payload passed.
OK32_OUTPUT = "OK32\nrep\n"
OK64_OUTPUT = "OK64\nrep\n"

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

# Each check jumps to `bad` with its number in %cl (%r8b), so a failure names itself.
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


def entry_symbols() -> dict[str, int]:
    """The values the payloads expect: our fixed guest layout, the boot protocol's segments."""
    return {
        "EXP_RSI": layout.ZERO_PAGE_ADDR,
        "EXP_RBX": RBX_VALUE,
        "EXP_RBX64": RBX64_VALUE,
        "EXP_RSP": layout.BOOT_STACK_TOP,
        "EXP_CS": layout.BOOT_CS,
        "EXP_DS": layout.BOOT_DS,
        "EXP_CR3": layout.PML4_ADDR,
        "CR0_PG": CR0_PG,
        "CR4_PAE": CR4_PAE,
        "EFER_LMA": EFER_LMA,
        "EXIT_VALUE": AGENT_EXIT_VALUE,
        "EXIT_PORT": AGENT_EXIT_PORT,
    }


def assemble(tmp: Path, source: str, symbols: Mapping[str, int] | None = None,
             name: str = "payload") -> bytes:
    """*source* as a flat binary linked at PAYLOAD_ADDR (writable: .text is RAM), with
    entry_symbols() overridden by *symbols*."""
    defsyms = [arg for k, v in {**entry_symbols(), **(symbols or {})}.items()
               for arg in ("--defsym", f"{k}={v:#x}")]
    src, obj, out = (tmp / f"{name}{suffix}" for suffix in (".S", ".o", ".bin"))
    src.write_text(source)
    subprocess.run(["as", "--64", *defsyms, "-o", obj, src], check=True)
    subprocess.run(["ld", "-m", "elf_x86_64", f"-Ttext={PAYLOAD_ADDR:#x}", "--oformat",
                    "binary", "-o", out, obj], check=True)
    return out.read_bytes()
