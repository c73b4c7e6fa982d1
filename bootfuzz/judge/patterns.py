"""The console lines that matter, defined once: the kernel's panics, oopses, BUGs and
banner, and our harness's agent and firmware lines.

The console session stops a run on them (bootfuzz.run.console), the observation
records them (bootfuzz.judge.observation) and reproducers quote them as evidence, so
one regex per message keeps the three from drifting apart.  A kernel message is
matched at the start of a line's *body*: the printk timestamp and anything before it
removed (:func:`line_body`); our harness's lines (bootfuzz.guest.protocol) start a line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bootfuzz.guest.protocol import (
    AGENT_LINE_PREFIX,
    FIRMWARE_BAD_MAGIC_MESSAGE,
    FIRMWARE_BAD_MODE_MESSAGE,
    FIRMWARE_ENTERING_MESSAGE,
)

# --- our harness's lines, as the console shows them -------------------------------------

#: Our guest agent prints exactly one line starting with this, then powers off.  It is
#: user space: no timestamp, so it is matched at the start of the raw line.
AGENT_PREFIX = AGENT_LINE_PREFIX + " "
#: Our firmware stub's (or VMM's) last line before it jumps to the kernel.
FIRMWARE_ENTERED = FIRMWARE_ENTERING_MESSAGE.rstrip("\n")
#: Our firmware stub refused the hand-off block and halted.
FIRMWARE_ERRORS = tuple(
    m.rstrip("\n") for m in (FIRMWARE_BAD_MAGIC_MESSAGE, FIRMWARE_BAD_MODE_MESSAGE)
)

# --- the kernel's messages --------------------------------------------------------------

#: A printk timestamp (and optional PRINTK_CALLER tag); anything before it on the
#: same line is noise such as the BIOS's escape sequences.
_PRINTK_PREFIX = re.compile(r"^.*?\[\s*\d+\.\d+\](?:\[\s*[TC]\d+\])? ")


def line_body(line: str) -> str:
    """The message part of a console line: the printk timestamp and noise before it removed."""
    return _PRINTK_PREFIX.sub("", line, count=1)


@dataclass(frozen=True)
class KernelMessage:
    """One kernel message: its regex (matched at the start of a line body) and meaning."""

    name: str
    regex: re.Pattern[str]
    meaning: str

    def match(self, line: str) -> re.Match[str] | None:
        """The message in a raw console line, timestamp or not."""
        return self.regex.match(line_body(line))


#: Group 1 is the panic's reason.  source: kernel/panic.c, panic().
PANIC = KernelMessage("kernel-panic", re.compile(r"Kernel panic - not syncing: (.*)"),
                      "the kernel panicked")
#: The last line of a panic report.  source: kernel/panic.c, panic().
PANIC_END = KernelMessage("kernel-panic-end", re.compile(r"---\[ end Kernel panic"),
                          "the end of a panic report")
#: The first line of an oops report.  x86: arch/x86/kernel/dumpstack.c (__die_header),
#: traps.c, lib/bug.c, arch/x86/mm/fault.c.  arm64: arch/arm64/kernel/traps.c, die()
#: (``Internal error: Oops: 0000000096000004 [#1] SMP``), arch/arm64/mm/fault.c
#: (``Unable to handle kernel paging request at virtual address ...``, before it).
#: riscv64: arch/riscv/kernel/traps.c, die() (``Oops - load access fault [#1]``,
#: ``Kernel BUG [#1]``), arch/riscv/mm/fault.c (the same ``Unable to handle`` line).
OOPS = KernelMessage(
    "kernel-oops",
    re.compile(r"(?:kernel BUG at |BUG: |Oops: |general protection fault|invalid opcode: "
               r"|Internal error: |Unable to handle kernel "
               r"|(?:Oops|Kernel BUG)(?: - [^[]+)? \[#\d+\])"),
    "the kernel oopsed (BUG, Oops, general protection fault, invalid opcode)",
)
#: The first line of a WARN() report: the kernel met a condition its authors call a
#: bug and went on.  source: kernel/panic.c (__warn), lib/bug.c (report_bug).
WARNING = KernelMessage("kernel-warning", re.compile(r"WARNING: "),
                        "the kernel warned (WARN(): a bug it survived)")
#: The banner each boot starts with; a second one means the guest reset and booted
#: again.  source: init/version-timestamp.c, linux_banner.
LINUX_VERSION = KernelMessage("linux-version", re.compile(r"Linux version "),
                              "the kernel's banner: a boot starts")

KERNEL_MESSAGES: tuple[KernelMessage, ...] = (PANIC, PANIC_END, OOPS, LINUX_VERSION)

#: The panic a kernel with no usable /init in its initramfs ends in (no root= either).
#: source: init/do_mounts.c, mount_block_root(): "VFS: Unable to mount root fs on %s".
NO_ROOT_PANIC = "VFS: Unable to mount root fs"
#: The panic after a mem=/memmap= option the kernel cannot apply.  source:
#: arch/x86/kernel/e820.c, e820__finish_early_params().
INVALID_USER_MAP_PANIC = "Invalid user supplied memory map"

# --- crash titles ------------------------------------------------------------------------

#: A kernel symbol as %pS prints it (``func``, ``func.isra.0``, ``func.cold``).
_SYMBOL = r"[A-Za-z_][\w.]*"
#: A symbol with its offset and size, ``func+0x4d/0x2f0``: the offsets are dropped.
SYMBOL_OFFSET = re.compile(rf"(?P<func>{_SYMBOL})\+0x[0-9a-f]+/0x[0-9a-f]+")
#: A source location, ``lib/string_helpers.c:1027``: kept whole in a title.
SOURCE_SITE = re.compile(r"[\w/.-]+\.[chS]:\d+")

#: The faulting instruction of a register dump.  x86 64-bit ``RIP: 0010:func+0x4d/0x2f0``
#: (before 4.x ``RIP: 0010:[<ffffffff8131d0a4>]  [<ffffffff8131d0a4>] func+0x../0x..``),
#: 32-bit ``EIP: func+0x../0x..``; arm64 ``pc : func+0x../0x..``; riscv64
#: ``epc : func+0x../0x..``.  Group ``func``; an address outside any symbol
#: (``RIP: 0010:0x1234``, riscv's ``epc : ffffffff80001234 ra : ...``) does not match.
#: source: arch/x86/kernel/process_64.c, __show_regs(); show_ip();
#: arch/arm64/kernel/process.c and arch/riscv/kernel/process.c, __show_regs().
CRASH_PC = re.compile(
    rf"(?:E?[RE]IP: (?:[0-9a-f]{{4}}:)?(?:\[<[0-9a-f]+>\] *)*|e?pc : ){SYMBOL_OFFSET.pattern}"
)
#: The header of a die() report, whose trap names an oops (:func:`die_trap`).  x86:
#: ``invalid opcode: 0000 [#1] SMP`` (6.12 prefixes ``Oops: ``), or the early exception
#: handler's line before the console is up; arm64: ``Internal error: Oops - BUG:
#: 00000000f2000800 [#1] SMP``; riscv64: ``Oops - load access fault [#1]``.  source:
#: arch/x86/kernel/dumpstack.c, __die_header(); arch/x86/kernel/head64.c / traps.c,
#: early_fixup_exception(); arch/arm64/kernel/traps.c and arch/riscv/kernel/traps.c, die().
DIE_HEADER = re.compile(
    r"(?:Oops: )?(?P<trap>[A-Za-z][\w ]*?): [0-9a-f]{4} \[#\d+\]"
    r"|PANIC: (?P<early>early exception 0x[0-9a-f]{2})"
    r"|Internal error: (?P<arm64>[^:]+): [0-9a-f]{16} \[#\d+\]"
    r"|(?P<riscv>(?:Oops|Kernel BUG)(?: - [^[]+?)?) \[#\d+\]"
)


def die_trap(header: re.Match[str]) -> str:
    """The trap a DIE_HEADER match names, whichever architecture printed it."""
    return next(v for v in header.group("trap", "early", "arm64", "riscv") if v is not None)


@dataclass(frozen=True)
class CrashPattern:
    """One kind of crash line, matched at the start of a line body.

    ``title`` is a str.format template over the regex's named groups: ``site``
    (FILE:LINE) and ``func`` (a symbol) are taken as printed, ``text`` is normalized
    (bootfuzz.fuzz.triage) so addresses, numbers and PIDs drop out.  ``needs_function``:
    the line names no code location, so the title adds ``in FUNC`` from the next
    :data:`CRASH_PC` line, as two crashes of one kind at different sites must differ.
    ``text_before``: the message is the line before this one (the decompressor's).
    """

    name: str
    regex: re.Pattern[str]
    title: str
    needs_function: bool = False
    text_before: bool = False  # ``text`` is the last non-blank line before this one


#: Crash lines in their order of precedence for a title: the first pattern found
#: anywhere in a boot's console names the crash, whatever else it printed.  Sources:
#: lib/bug.c (report_bug: BUG() and WARN()), kernel/panic.c (__warn, panic),
#: arch/x86/mm/fault.c (page_fault_oops), arch/x86/kernel/traps.c (the GP handler).
CRASH_PATTERNS: tuple[CrashPattern, ...] = (
    CrashPattern("kernel-bug", re.compile(rf"kernel BUG at (?P<site>{SOURCE_SITE.pattern})"),
                 "kernel BUG at {site}"),
    # "watchdog: BUG: soft lockup - ..." prints its subsystem first.
    CrashPattern("bug", re.compile(r"(?:\w+: )?BUG: (?P<text>.*)"), "BUG: {text}",
                 needs_function=True),
    # arm64/riscv64 kernel page faults ("Unable to handle kernel paging request at
    # virtual address ...", then die()), as x86's "BUG: unable to handle page fault";
    # the function is the pc's.
    CrashPattern("unable-to-handle", re.compile(
        r"Unable to handle kernel (?P<text>.+?) at virtual address"),
        "Unable to handle kernel {text}", needs_function=True),
    # WARN(): 4.x-6.x "WARNING: CPU: 0 PID: 1 at FILE:LINE func+0x../0x.."; before 4.x
    # "WARNING: at FILE:LINE func+0x../0x..()".
    CrashPattern("warning", re.compile(
        rf"WARNING: (?:CPU: \d+ PID: \d+ )?at (?P<site>{SOURCE_SITE.pattern}) "
        rf"{SYMBOL_OFFSET.pattern}"), "WARNING: at {site} {func}"),
    # WARN() where the file is not recorded: "WARNING: CPU: 0 PID: 1 at func+0x../0x..".
    CrashPattern("warning-function", re.compile(
        rf"WARNING: (?:CPU: \d+ PID: \d+ )?at {SYMBOL_OFFSET.pattern}"), "WARNING: at {func}"),
    # Other warnings (lockdep, RCU): the text, and the function where a CRASH_PC follows.
    CrashPattern("warning-text", re.compile(r"WARNING: (?P<text>.*)"), "WARNING: {text}",
                 needs_function=True),
    CrashPattern("general-protection-fault",
                 re.compile(r"(?:Oops: )?general protection fault"),
                 "general protection fault", needs_function=True),
    # Any other oops: the trap (DIE_HEADER) before the first faulting pc, and its function.
    CrashPattern("rip", CRASH_PC, "{trap} in {func}"),
    CrashPattern("kernel-panic", re.compile(r"Kernel panic - not syncing: (?P<text>.*)"),
                 "Kernel panic - not syncing: {text}"),
    # The bzImage decompressor's error(): "\n\nMESSAGE\n\n -- System halted", then hlt
    # forever (a kernel placed where it cannot run).  source:
    # arch/x86/boot/compressed/misc.c, error().
    CrashPattern("decompressor-error", re.compile(r"\s*-- System halted"),
                 "decompressor: {text}", text_before=True),
)

#: The title of a CRASH_PC line that no DIE_HEADER preceded.
UNNAMED_TRAP = "crash"

# --- what a reproducer quotes ------------------------------------------------------------

_PANIC_LINES = f"{PANIC.regex.pattern}|{PANIC_END.regex.pattern}"

#: Console lines that show each oracle's answer (what a reader of a reproducer wants),
#: searched in each line body; a panic's lines are quoted for any failure that has one.
ORACLE_EVIDENCE: Mapping[str, str] = {
    "boot": "|".join([_PANIC_LINES, LINUX_VERSION.regex.pattern, r"Run .* as init",
                      re.escape(AGENT_LINE_PREFIX), re.escape(FIRMWARE_ENTERED)]),
    "e820": r"BIOS-e820|e820:",
    "cmdline": r"Command line:",
    "agent-cmdline": r"Command line:",
    "initrd-placement": r"RAMDISK",
    "initrd-unpacked": r"initramfs|Initramfs|initrd",
    "kernel-clean": rf"{OOPS.regex.pattern}|{WARNING.regex.pattern}",
}
#: The lines of a crash report a reader wants (its title line, its trap, its faulting pc, the
#: panic), each matched at the start of a line body.
CRASH_EVIDENCE: tuple[re.Pattern[str], ...] = (
    *(p.regex for p in CRASH_PATTERNS), DIE_HEADER, PANIC_END.regex)
