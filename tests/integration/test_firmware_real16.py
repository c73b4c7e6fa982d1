"""The firmware's REAL_16 mode under real QEMU and on our KVM VMM: entry state and
every BIOS answer.

A 16-bit payload stands in for the kernel's setup code: it checks the state
boot.rst promises at the jump, then calls each service the setup code uses and
prints the registers and flags it got back on COM1, one line per call, for the
test to compare with what the plan's BIOS data block says.  Each test runs on both:
QEMU maps the firmware as its BIOS, our VMM as a PC's ROM and starts it at the
reset vector in real mode (bootfuzz.run.kvm.vmm), so the answers must be the same.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.guest.harness import HarnessArtifacts
from bootfuzz.guest.protocol import (
    AGENT_EXIT_PORT,
    AGENT_EXIT_VALUE,
    FIRMWARE_ENTERING_MESSAGE,
    QEMU_AGENT_EXIT_STATUS,
)
from bootfuzz.loader import layout
from bootfuzz.loader.layout import BIOS_DATA_ADDR, GiB
from bootfuzz.loader.placement import plan_e820
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.loader.real16 import (
    HEAP_END,
    REAL_MODE_BASE,
    _real16_cpu,
    bios_memory,
    build_bios_data,
)
from bootfuzz.run.backends.qemu_tcg import handoff_block
from bootfuzz.run.kvm.cpu import firmware_reset_state
from bootfuzz.run.kvm.vmm import Manifest, ManifestBlob
from tests.integration.test_firmware import QEMU, run_qemu

BACKENDS = [
    pytest.param("qemu-tcg", marks=[pytest.mark.qemu, pytest.mark.skipif(
        QEMU is None, reason="qemu-system-x86_64 not installed (qemu-system-x86)")]),
    pytest.param("kvm", marks=pytest.mark.kvm),
]
VMM_MEMORY = 64 * layout.MiB  # as run_qemu's -m

SMAP = 0x534D4150
BUFFER = 0x4000  # in the payload's data segment, away from its code and stack

PAYLOAD16 = """
    .code16
    .globl _start
/* PROBE tag: dump flags and EAX..EDX as the BIOS left them, then restore them. */
.macro PROBE tag
    pushfl
    pushal
    movb $\\tag, %al
    call dump
    popal
    popfl
.endm
_start:
    /* boot.rst entry state: CS = seg+0x20, DS=ES=FS=GS=SS = seg, SP, IF = 0. */
    pushfw
    popw %ax
    movw %cs, %bx
    movw %ds, %cx
    movw %sp, %dx
    movw %ss, %si
    movw %es, %di
    shll $16, %ecx
    movw %si, %cx
    shll $16, %edx
    movw %di, %dx
    andl $0x200, %eax
    shll $16, %ebx
    movw %fs, %bx
    movw %gs, %si
    shll $16, %eax
    movw %si, %ax
    PROBE 'R'
    /* The E820 chain, with a 24-byte buffer size (>= 20 is what counts). */
    xorl %ebx, %ebx
1:  movl $0xe820, %eax
    movl $SMAP, %edx
    movl $24, %ecx
    movw $BUFFER, %di
    int $0x15
    PROBE 'E'
    jc 2f
    call dumpbuf
    testl %ebx, %ebx
    jnz 1b
2:  movl $0xe820, %eax; xorl %ebx, %ebx; movl $20, %ecx; movl $0x12345678, %edx
    movw $BUFFER, %di; int $0x15; PROBE 'S'
    movl $0xe820, %eax; xorl %ebx, %ebx; movl $19, %ecx; movl $SMAP, %edx
    movw $BUFFER, %di; int $0x15; PROBE 'C'
    movl $0xe820, %eax; movl $COUNT, %ebx; movl $20, %ecx; movl $SMAP, %edx
    movw $BUFFER, %di; int $0x15; PROBE 'B'
    movl $0xe801, %eax; xorl %ebx, %ebx; xorl %ecx, %ecx; xorl %edx, %edx
    stc; int $0x15; PROBE 'M'
    movl $0x8800, %eax; stc; int $0x15; PROBE 'X'
    xorw %ax, %ax; movw %ax, %fs
    movzwl %fs:0x413, %eax; movzwl %fs:0x40e, %ebx; xorl %ecx, %ecx; xorl %edx, %edx
    PROBE 'D'
    movl $0x2403, %eax; xorl %ebx, %ebx; stc; int $0x15; PROBE 'A'
    movl $0x2402, %eax; stc; int $0x15; PROBE 'a'
    movl $0xc000, %eax; clc; int $0x15; PROBE 'c'
    movl $0x5300, %eax; xorl %ebx, %ebx; clc; int $0x15; PROBE 'P'
    movl $0xe980, %eax; xorl %ebx, %ebx; xorl %ecx, %ecx; movl $0x47534943, %edx
    clc; int $0x15; PROBE 'I'
    movl $0x4100, %eax; movl $0x55aa, %ebx; movl $0x80, %edx; clc; int $0x13; PROBE 'H'
    movl $0x0201, %eax; movl $1, %ecx; movl $0x80, %edx; movl $BUFFER, %ebx
    clc; int $0x13; PROBE 'h'
    movl $0x0100, %eax; int $0x16; PROBE 'K'
    movl $0x0200, %eax; int $0x16; PROBE 'k'
    movl $0x0f00, %eax; movl $0xffff, %ebx; int $0x10; PROBE 'V'
    movl $0x0300, %eax; xorl %ebx, %ebx; xorl %ecx, %ecx; movl $0xffff, %edx
    int $0x10; PROBE 'v'
    movl $0x1200, %eax; movl $0x10, %ebx; int $0x10; PROBE 'G'
    movl $0x4f00, %eax; int $0x10; PROBE 'W'
    movl $0x0200, %eax; clc; int $0x1a; PROBE 'T'
    clc; int $0x60; PROBE 'U'
    movb $EXIT_VALUE, %al
    outb %al, $EXIT_PORT
3:  hlt
    jmp 3b

/* "<tag> <CF><ZF> eax ebx ecx edx" from the pushal/pushfl frame. */
dump:
    pushw %bp
    movw %sp, %bp
    call putc
    movb $' ', %al; call putc
    movl 36(%bp), %eax; andb $1, %al; addb $'0', %al; call putc
    movl 36(%bp), %eax; shrb $6, %al; andb $1, %al; addb $'0', %al; call putc
    movl 32(%bp), %eax; call hex32
    movl 20(%bp), %eax; call hex32
    movl 28(%bp), %eax; call hex32
    movl 24(%bp), %eax; call hex32
    movb $'\\n', %al; call putc
    popw %bp
    ret
/* "e" and the 20 bytes at ES:DI in hex. */
dumpbuf:
    pushal
    movb $'e', %al; call putc
    movb $' ', %al; call putc
    movw $20, %cx
1:  movb %es:(%di), %al
    incw %di
    movb %al, %ah
    shrb $4, %al; call nibble
    movb %ah, %al; call nibble
    loop 1b
    movb $'\\n', %al; call putc
    popal
    ret
hex32:
    pushw %cx
    movb %al, %ch
    movb $' ', %al; call putc
    movb %ch, %al
    movw $8, %cx
1:  roll $4, %eax
    pushl %eax
    call nibble
    popl %eax
    loop 1b
    popw %cx
    ret
nibble:
    andb $0x0f, %al
    addb $'0', %al
    cmpb $'9', %al
    jbe putc
    addb $('a' - '0' - 10), %al
putc:
    pushw %dx
    movw $0x3f8, %dx
    outb %al, %dx
    popw %dx
    ret
"""


def assemble16(tmp: Path, symbols: dict[str, int]) -> bytes:
    """The payload as a flat binary whose offset 0 is the setup entry (IP = 0)."""
    (tmp / "p16.S").write_text(PAYLOAD16)
    defsyms = [arg for k, v in symbols.items() for arg in ("--defsym", f"{k}={v:#x}")]
    subprocess.run(["as", "--32", *defsyms, "-o", tmp / "p16.o", tmp / "p16.S"], check=True)
    out = tmp / "p16.bin"
    subprocess.run(["ld", "-m", "elf_i386", "-Ttext=0", "--oformat", "binary", "-o", out,
                    tmp / "p16.o"], check=True)
    return out.read_bytes()


def parse(out: str) -> list[tuple[str, str, list[int]]]:
    """(tag, CF+ZF digits, words) per payload line; the E820 buffer lines keep raw hex."""
    rows: list[tuple[str, str, list[int]]] = []
    for line in out.splitlines():
        if not line or line.startswith("bootfuzz-fw"):
            continue
        tag, flags, *rest = line.split(" ")
        if tag == "e":
            rows.append((tag, flags, []))
        else:
            rows.append((tag, flags, [int(w, 16) for w in rest]))
    return rows


TABLE: tuple[E820Entry, ...] = plan_e820(qemu_pc(5 * GiB))


def run_vmm_firmware(firmware: Path, blobs: Mapping[int, bytes], tmp: Path,
                     timeout: float = 120) -> tuple[int | None, str]:
    """As run_qemu, on our VMM: the firmware as the BIOS, the vCPU at the reset vector."""
    files = []
    for i, (addr, data) in enumerate(sorted(blobs.items())):
        path = tmp / f"blob{i}.bin"
        path.write_bytes(data)
        files.append(ManifestBlob(f"blob{i}", addr, len(data), str(path)))
    manifest = Manifest(VMM_MEMORY, ((0, VMM_MEMORY),), tuple(files), firmware_reset_state(),
                        str(firmware))
    (tmp / "manifest.json").write_text(manifest.to_json())
    proc = subprocess.run(
        [sys.executable, "-m", "bootfuzz.cli.vmm", "run", str(tmp / "manifest.json"),
         "--timeout", str(timeout)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout + 30,
    )
    return proc.returncode, proc.stdout


def boot_payload(harness: HarnessArtifacts, tmp: Path, backend: str = "qemu-tcg"
                 ) -> tuple[int | None, str]:
    cpu = _real16_cpu(REAL_MODE_BASE)
    payload = assemble16(tmp, {
        "SMAP": SMAP, "BUFFER": BUFFER, "COUNT": len(TABLE),
        "EXIT_VALUE": AGENT_EXIT_VALUE, "EXIT_PORT": AGENT_EXIT_PORT,
    })
    run = run_vmm_firmware if backend == "kvm" else run_qemu
    return run(harness.firmware, {
        layout.HANDOFF_ADDR: handoff_block(cpu),
        BIOS_DATA_ADDR: build_bios_data(TABLE),
        REAL_MODE_BASE + 0x200: payload,
    }, tmp)


@pytest.fixture(scope="module", params=BACKENDS)
def answers(request: pytest.FixtureRequest, harness: HarnessArtifacts,
            tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[int | None, str, dict[str, tuple[str, list[int]]], list[str]]:
    if request.param == "kvm":
        from bootfuzz.run.doctor import kvm_status

        if not kvm_status().usable:
            pytest.skip(reason=f"kvm backend not usable here: {kvm_status().detail}")
    status, out = boot_payload(harness, tmp_path_factory.mktemp("p16"), request.param)
    rows = parse(out)
    by_tag = {tag: (flags, words) for tag, flags, words in rows if tag not in "Ee"}
    e820_lines = [ln for ln in out.splitlines() if ln[:2] in ("E ", "e ")]
    return status, out, by_tag, e820_lines


Answers = tuple[int | None, str, dict[str, tuple[str, list[int]]], list[str]]


def test_real16_enters_setup_with_boot_rst_state(answers: Answers) -> None:
    status, out, tags, _ = answers
    assert out.startswith(FIRMWARE_ENTERING_MESSAGE)
    assert status == QEMU_AGENT_EXIT_STATUS
    _, (if_gs, cs_fs, ds_ss, sp_es) = tags["R"]
    seg = REAL_MODE_BASE >> 4
    assert cs_fs == (seg + 0x20) << 16 | seg
    assert ds_ss == seg << 16 | seg
    assert sp_es == HEAP_END << 16 | seg
    assert if_gs == 0 << 16 | seg  # IF clear


def test_real16_e820_chain_returns_the_table_then_ebx_zero(answers: Answers) -> None:
    _, _, _, lines = answers
    calls = [ln for ln in lines if ln.startswith("E ")]
    bufs = [ln.split(" ")[1] for ln in lines if ln.startswith("e ")]
    assert len(calls) == len(bufs) == len(TABLE)
    for i, (call, buf) in enumerate(zip(calls, bufs, strict=True)):
        _, flags, eax, ebx, ecx, _ = call.split(" ")
        assert flags[0] == "0"  # CF clear on every entry, the last included
        assert int(eax, 16) == SMAP and int(ecx, 16) == 20
        assert int(ebx, 16) == (i + 1 if i + 1 < len(TABLE) else 0)
        assert bytes.fromhex(buf) == TABLE[i].pack()


def test_real16_e820_errors_set_cf(answers: Answers) -> None:
    _, _, tags, _ = answers
    for tag in ("S", "C", "B"):  # bad signature, 19-byte buffer, EBX past the end
        flags, (eax, *_rest) = tags[tag]
        assert flags[0] == "1", tag
        assert eax >> 8 & 0xFF == 0x86, tag


def test_real16_e801_and_88_agree_with_the_table(answers: Answers) -> None:
    _, _, tags, _ = answers
    mem = bios_memory(TABLE)
    flags, (ax, bx, cx, dx) = tags["M"]
    assert flags[0] == "0"
    assert (ax & 0xFFFF, cx & 0xFFFF) == (mem.e801_low_kib,) * 2 == (15 * 1024,) * 2
    assert (bx & 0xFFFF, dx & 0xFFFF) == (mem.e801_high_blocks,) * 2
    flags, (ax, *_) = tags["X"]
    assert flags[0] == "0" and ax & 0xFFFF == mem.ext_mem_kib == 63 * 1024


def test_real16_bda_base_memory_and_no_ebda(answers: Answers) -> None:
    _, _, tags, _ = answers
    _, (base, ebda, _, _) = tags["D"]
    assert (base, ebda) == (640, 0)


def test_real16_a20_services(answers: Answers) -> None:
    _, _, tags, _ = answers
    flags, (ax, bx, _, _) = tags["A"]
    assert flags[0] == "0" and ax & 0xFF00 == 0 and bx & 0xFFFF == 0x0002
    flags, (ax, *_) = tags["a"]
    assert flags[0] == "0" and ax & 0xFFFF == 0x0001  # enabled by the firmware


def test_real16_unsupported_services_set_cf(answers: Answers) -> None:
    _, _, tags, _ = answers
    for tag in ("c", "P", "I"):  # config table, APM, IST
        flags, (ax, *_) = tags[tag]
        assert flags[0] == "1" and ax >> 8 & 0xFF == 0x86, tag
    flags, (ax, bx, cx, dx) = tags["I"]
    assert (ax, bx, cx, dx) == (0x8680, 0, 0, 0x47534943)  # only AH changed
    for tag in ("H", "h"):  # EDD check, MBR read
        flags, (ax, *_) = tags[tag]
        assert flags[0] == "1" and ax >> 8 & 0xFF == 0x01, tag
    flags, _ = tags["U"]  # a vector nobody serves
    assert flags[0] == "1"


def test_real16_keyboard_video_and_clock(answers: Answers) -> None:
    _, _, tags, _ = answers
    flags, _ = tags["K"]
    assert flags[1] == "1"  # ZF: no key waiting
    _, (ax, *_) = tags["k"]
    assert ax & 0xFF == 0  # no shift keys
    _, (ax, bx, _, _) = tags["V"]
    assert ax & 0xFFFF == 80 << 8 | 3 and bx & 0xFF00 == 0  # 80 columns, mode 3, page 0
    _, (_, _, cx, dx) = tags["v"]
    assert (cx & 0xFFFF, dx & 0xFFFF) == (0x0607, 0)
    _, (_, bx, _, _) = tags["G"]
    assert bx & 0xFF == 0x10  # BL unchanged: not EGA/VGA
    _, (ax, *_) = tags["W"]
    assert ax & 0xFFFF != 0x004F  # no VBE
    flags, (_, _, cx, dx) = tags["T"]
    assert flags[0] == "0" and dx & 0xFF == 0
    assert all(int(f"{v:02x}") < 60 for v in (cx & 0xFF, dx >> 8 & 0xFF))  # BCD minutes, seconds


@pytest.mark.kvm
def test_real16_firmware_halted_on_a_bad_handoff_is_hung_on_kvm(
    harness: HarnessArtifacts, tmp_path: Path
) -> None:
    """No hand-off block: the firmware says so and halts with interrupts off; the VMM
    sees the halted vCPU at once and the backend reports the guest hung (not killed)."""
    from bootfuzz.guest.protocol import FIRMWARE_BAD_MAGIC_MESSAGE
    from bootfuzz.run.backends.kvm import KvmBackend
    from bootfuzz.run.doctor import kvm_status
    from bootfuzz.run.kvm.vmm import EXIT_HALTED
    from bootfuzz.transcript import GuestExit

    if not kvm_status().usable:
        pytest.skip(reason=f"kvm backend not usable here: {kvm_status().detail}")
    status, out = run_vmm_firmware(harness.firmware, {}, tmp_path, timeout=60)
    assert out == FIRMWARE_BAD_MAGIC_MESSAGE
    assert status == EXIT_HALTED
    assert KvmBackend.exit_statuses[status] is GuestExit.HUNG
