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
#: The first line of an oops report.  source: arch/x86/kernel/dumpstack.c
#: (__die_header), traps.c, lib/bug.c, arch/x86/mm/fault.c.
OOPS = KernelMessage(
    "kernel-oops",
    re.compile(r"(?:kernel BUG at |BUG: |Oops: |general protection fault|invalid opcode: )"),
    "the kernel oopsed (BUG, Oops, general protection fault, invalid opcode)",
)
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
}
PANIC_EVIDENCE = _PANIC_LINES
