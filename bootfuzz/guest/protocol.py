"""What our guest code and the host agree on: console markers, exit ports, devices.

The agent (harness/agent/init.c) and the firmware stub (harness/firmware/stub.S)
get these values from bootfuzz.guest.harness at build time (``-D`` flags and a
generated include); the backends, the console patterns (bootfuzz.judge.patterns)
and the observation parser read them from here.  So each value exists once, and a
stage that only reads a transcript or traps a port need not import the builder.
The firmware hand-off block's layout is in bootfuzz.abi.handoff.
"""

from __future__ import annotations

import os

# --- the agent ---------------------------------------------------------------------

#: The agent ends the guest by writing AGENT_EXIT_VALUE to this I/O port.
#: QEMU's ``-device isa-debug-exit,iobase=0xf4,iosize=0x04`` traps it; our KVM VMM
#: traps the same port.  0xf4 is the address QEMU's own tests use for the device.
AGENT_EXIT_PORT = 0xF4
AGENT_EXIT_VALUE = 0x31
#: source: QEMU hw/misc/debugexit.c, debug_exit_write(): exit((val << 1) | 1).
QEMU_AGENT_EXIT_STATUS = (AGENT_EXIT_VALUE << 1) | 1  # = 99
#: The agent's report line starts with this word, a space, then one JSON object.
AGENT_LINE_PREFIX = "BOOTFUZZ-AGENT"
#: The JSON object's "v": bump when the report's shape changes.
AGENT_FORMAT_VERSION = 1
#: The lines around a kernel's code symbols, as the x86 kallsyms dumper
#: (harness/coverage/kallsyms.c) and the device-tree agent built as the dumper print
#: them (bootfuzz.run.kallsyms reads what is between).
KALLSYMS_BEGIN = "BOOTFUZZ-KALLSYMS-BEGIN"
KALLSYMS_END = "BOOTFUZZ-KALLSYMS-END"

# --- the firmware stub's messages on COM1 --------------------------------------------

#: The stub's last line before it jumps to the kernel; the backend may wait for it.
FIRMWARE_ENTERING_MESSAGE = "bootfuzz-fw: entering kernel\n"
FIRMWARE_BAD_MAGIC_MESSAGE = "bootfuzz-fw: bad handoff magic\n"
FIRMWARE_BAD_MODE_MESSAGE = "bootfuzz-fw: bad handoff mode\n"
#: The debug build's line for an unserved interrupt: this, the vector, " ax=", AX.
FIRMWARE_UNSERVED_MESSAGE = "bootfuzz-fw: unserved int 0x"

#: Set BOOTFUZZ_FIRMWARE_DEBUG=1 to build a firmware whose BIOS logs every
#: interrupt it does not serve on COM1 (a separate cache entry: the include differs).
FIRMWARE_DEBUG_ENV = "BOOTFUZZ_FIRMWARE_DEBUG"


def firmware_debug() -> bool:
    """Whether $BOOTFUZZ_FIRMWARE_DEBUG asks for the logging BIOS."""
    return os.environ.get(FIRMWARE_DEBUG_ENV, "") not in ("", "0")


# --- the PC devices the firmware drives and our KVM VMM emulates ----------------------

#: source: include/uapi/linux/serial_reg.h (UART_LSR, UART_LSR_THRE); COM1 is the
#: PC/AT standard base the kernel's early serial console also assumes for ttyS0.
COM1_BASE = 0x3F8
UART_LSR = 5
UART_LSR_THRE = 0x20
#: System control port A; bit 1 gates A20 (source: QEMU hw/i386/pc.c, port92).
PORT_SYS_CTRL_A = 0x92
#: 8259 interrupt mask registers (OCW1): the 16-bit entry masks every input, so
#: the setup code's `sti` lets no timer tick in.  source: Intel 8259A data sheet;
#: arch/x86/boot/pm.c mask_all_interrupts writes the same ports.
PIC_MASTER_IMR = 0x21
PIC_SLAVE_IMR = 0xA1
#: CMOS RTC index/data ports and the time registers INT 1Ah AH=02h reads.
#: source: MC146818 data sheet; arch/x86/include/asm/mc146818rtc.h (RTC_PORT).
CMOS_INDEX = 0x70
CMOS_DATA = 0x71
RTC_SECONDS = 0x00
RTC_MINUTES = 0x02
RTC_HOURS = 0x04
