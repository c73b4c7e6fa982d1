"""The PC devices our VMM emulates in userspace.  Pure: no /dev/kvm, no file descriptors.

KVM's in-kernel irqchip and PIT cover the PIC, IOAPIC, LAPIC and PIT (ports
0x20/0xa0/0x40-0x43/0x61, 0x4d0/0x4d1).  What is left for us to model is what
a Linux boot touches before userspace and what our agent needs: COM1, the
i8042 (probe and reset), a CMOS clock that reads a fixed date (reproducible,
where QEMU gives the host's time), the reset ports, and the agent's exit port.
Everything else reads as all-ones, like an empty ISA bus.  Interrupt lines
are reported through a callback, output through a :class:`ConsoleBuffer`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bootfuzz.guest.protocol import AGENT_EXIT_PORT, COM1_BASE, PORT_SYS_CTRL_A

IrqCallback = Callable[[int, bool], None]


class MachineExit(Exception):
    """A device asked the machine to stop; the VMM turns it into an exit status."""


class AgentPowerOff(MachineExit):
    """The agent wrote to the exit port: exit with QEMU isa-debug-exit's status."""

    def __init__(self, value: int) -> None:
        super().__init__(f"agent wrote {value:#x} to the exit port")
        self.value = value

    @property
    def status(self) -> int:
        """source: QEMU hw/misc/debugexit.c, debug_exit_write(): exit((val << 1) | 1)."""
        return ((self.value << 1) | 1) & 0xFF


class GuestReset(MachineExit):
    """The guest asked for a reset (i8042 pulse, port 0x92, 0xcf9) or triple-faulted."""


class ConsoleBuffer:
    """Guest console bytes on their way to stdout, coalesced.

    Bytes are held only while the guest keeps printing: the VMM flushes after
    every exit that is not a console write, when MAX_HOLD bytes have piled up,
    when the oldest byte is MAX_AGE seconds old, and on its periodic tick.
    """

    MAX_HOLD = 4096
    MAX_AGE = 0.01

    def __init__(self, sink: Callable[[bytes], object],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._clock = clock
        self._buf = bytearray()
        self._since = 0.0
        self.total = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._buf:
            self._since = self._clock()
        self._buf += data
        self.total += len(data)
        if len(self._buf) >= self.MAX_HOLD or self._clock() - self._since >= self.MAX_AGE:
            self.flush()

    def pending(self) -> int:
        return len(self._buf)

    def flush(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self._sink(data)


class PortDevice(Protocol):
    def read(self, port: int, size: int) -> int: ...
    def write(self, port: int, size: int, value: int) -> None: ...


# ---- 16550A UART ----
# source: include/uapi/linux/serial_reg.h
UART_RX = 0  # in, DLAB = 0
UART_TX = 0  # out, DLAB = 0
UART_DLL = 0  # DLAB = 1
UART_IER = 1
UART_DLM = 1  # DLAB = 1
UART_IIR = 2  # in
UART_FCR = 2  # out
UART_LCR = 3
UART_MCR = 4
UART_LSR = 5
UART_MSR = 6
UART_SCR = 7

UART_IER_RDI = 0x01
UART_IER_THRI = 0x02
UART_IER_MASK = 0x0F  # a 16550A has only these; bit 6 writable would mean XScale (UUE)
UART_IIR_NO_INT = 0x01
UART_IIR_THRI = 0x02
UART_IIR_FIFO_ENABLED_16550A = 0xC0
UART_FCR_ENABLE_FIFO = 0x01
UART_LCR_DLAB = 0x80
UART_MCR_DTR = 0x01
UART_MCR_RTS = 0x02
UART_MCR_OUT1 = 0x04
UART_MCR_OUT2 = 0x08
UART_MCR_LOOP = 0x10
UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40
UART_MSR_CTS = 0x10
UART_MSR_DSR = 0x20
UART_MSR_RI = 0x40
UART_MSR_DCD = 0x80
UART_MSR_DELTAS = 0x0F
#: What a connected, idle line shows (QEMU hw/char/serial.c resets to the same).
UART_MSR_IDLE = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS
COM1_IRQ = 4
UART_PORTS = 8


@dataclass
class Uart16550A:
    """COM1 as a 16550A whose transmitter is always empty (output is instant).

    Enough for drivers/tty/serial/8250: the early console and the console's
    polled write only need LSR.THRE; autoconfig() needs the scratch IER test
    (only the low four bits stick), the loopback MSR test (MCR 0x1a -> MSR high
    nibble 0x90) and IIR bits 7:6 = 11 once the FIFO is enabled (16550A);
    serial8250_do_startup()'s THRE test needs a THRE interrupt to be pending as
    soon as IER.THRI is set with the transmitter empty, and to clear when IIR
    reports it.  No receiver: RX reads 0 and LSR never shows data ready.
    """

    console: ConsoleBuffer
    irq: IrqCallback = field(default=lambda irq, level: None)
    base: int = COM1_BASE
    ier: int = 0
    lcr: int = 0
    mcr: int = UART_MCR_OUT2
    fcr: int = 0
    scr: int = 0
    dll: int = 0x0C  # 9600 baud, as a BIOS leaves it
    dlm: int = 0
    thr_ipending: bool = False
    _irq_level: bool = False

    @property
    def ports(self) -> range:
        return range(self.base, self.base + UART_PORTS)

    def _iir(self) -> int:
        fifo = UART_IIR_FIFO_ENABLED_16550A if self.fcr & UART_FCR_ENABLE_FIFO else 0
        if self.ier & UART_IER_THRI and self.thr_ipending:
            return fifo | UART_IIR_THRI
        return fifo | UART_IIR_NO_INT

    def _update_irq(self) -> None:
        level = not self._iir() & UART_IIR_NO_INT
        if level != self._irq_level:
            self._irq_level = level
            self.irq(COM1_IRQ, level)

    def _msr(self) -> int:
        if self.mcr & UART_MCR_LOOP:
            m = self.mcr
            return (
                (UART_MSR_CTS if m & UART_MCR_RTS else 0)
                | (UART_MSR_DSR if m & UART_MCR_DTR else 0)
                | (UART_MSR_RI if m & UART_MCR_OUT1 else 0)
                | (UART_MSR_DCD if m & UART_MCR_OUT2 else 0)
            )
        return UART_MSR_IDLE

    def read(self, port: int, size: int) -> int:
        reg = port - self.base
        dlab = self.lcr & UART_LCR_DLAB
        value: int
        if reg == UART_RX:
            value = self.dll if dlab else 0
        elif reg == UART_IER:
            value = self.dlm if dlab else self.ier
        elif reg == UART_IIR:
            value = self._iir()
            if value & 0x0F == UART_IIR_THRI:
                self.thr_ipending = False
                self._update_irq()
        elif reg == UART_LCR:
            value = self.lcr
        elif reg == UART_MCR:
            value = self.mcr
        elif reg == UART_LSR:
            value = UART_LSR_THRE | UART_LSR_TEMT
        elif reg == UART_MSR:
            value = self._msr()
        else:
            value = self.scr
        return value

    def write(self, port: int, size: int, value: int) -> None:
        reg = port - self.base
        value &= 0xFF
        dlab = self.lcr & UART_LCR_DLAB
        if reg == UART_TX:
            if dlab:
                self.dll = value
                return
            self.transmit(bytes((value,)))
        elif reg == UART_IER:
            if dlab:
                self.dlm = value
                return
            changed = (self.ier ^ value) & UART_IER_MASK
            self.ier = value & UART_IER_MASK
            if changed & UART_IER_THRI:
                # The transmitter is always empty: enabling THRI raises it at once.
                self.thr_ipending = bool(self.ier & UART_IER_THRI)
            self._update_irq()
        elif reg == UART_FCR:
            self.fcr = value & UART_FCR_ENABLE_FIFO
            self._update_irq()
        elif reg == UART_LCR:
            self.lcr = value
        elif reg == UART_MCR:
            self.mcr = value & 0x1F
        elif reg in (UART_LSR, UART_MSR):
            pass  # read-only on a 16550A
        else:
            self.scr = value

    def transmit(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes written to THR (also the fast path for ``rep outsb``)."""
        if not self.mcr & UART_MCR_LOOP:  # in loopback the byte goes to RX, not out
            self.console.write(data)
        self.thr_ipending = True
        self._update_irq()

    def can_transmit_fast(self, port: int) -> bool:
        return port == self.base + UART_TX and not self.lcr & UART_LCR_DLAB


# ---- i8042 keyboard controller ----
# source: drivers/input/serio/i8042.h
I8042_DATA_PORT = 0x60
I8042_COMMAND_PORT = 0x64
I8042_STR_OBF = 0x01
I8042_STR_SYSFLAG = 0x04
I8042_STR_CMDDAT = 0x08
I8042_STR_KEYLOCK = 0x10  # 1 = unlocked
I8042_STR_AUXDATA = 0x20
I8042_CTR_KBDINT = 0x01
I8042_CTR_AUXINT = 0x02
I8042_CTR_SYS = 0x04
I8042_CTR_KBDDIS = 0x10
I8042_CTR_AUXDIS = 0x20
I8042_CMD_CTL_RCTR = 0x20
I8042_CMD_CTL_WCTR = 0x60
I8042_CMD_AUX_DISABLE = 0xA7
I8042_CMD_AUX_ENABLE = 0xA8
I8042_CMD_AUX_TEST = 0xA9
I8042_CMD_CTL_TEST = 0xAA
I8042_CMD_KBD_TEST = 0xAB
I8042_CMD_KBD_DISABLE = 0xAD
I8042_CMD_KBD_ENABLE = 0xAE
I8042_CMD_READ_OUTPUT_PORT = 0xD0
I8042_CMD_WRITE_OUTPUT_PORT = 0xD1
I8042_CMD_KBD_LOOP = 0xD2
I8042_CMD_AUX_LOOP = 0xD3
I8042_CMD_AUX_SEND = 0xD4
I8042_CMD_PULSE_RESET = 0xFE  # pulse output line 0 (CPU reset): arch/x86/kernel/reboot.c
I8042_CTL_TEST_OK = 0x55
I8042_TEST_OK = 0x00
I8042_OUTPUT_PORT_RESET = 0x01  # output port bit 0 low = reset asserted
I8042_OUTPUT_PORT_A20 = 0x02
# source: drivers/input/keyboard/atkbd.c
ATKBD_RET_ACK = 0xFA
ATKBD_RET_BAT = 0xAA
ATKBD_CMD_RESET_BAT = 0xFF
ATKBD_CMD_GETID = 0xF2
ATKBD_ID = (0xAB, 0x83)
KBD_IRQ = 1
AUX_IRQ = 12


@dataclass
class I8042:
    """The controller of drivers/input/serio/i8042.c, a keyboard that ACKs, no mouse."""

    irq: IrqCallback = field(default=lambda irq, level: None)
    ctr: int = I8042_CTR_KBDINT | I8042_CTR_SYS
    output_port: int = I8042_OUTPUT_PORT_RESET | I8042_OUTPUT_PORT_A20
    last_was_command: bool = False
    pending_command: int | None = None
    queue: deque[tuple[int, bool]] = field(default_factory=deque)  # (byte, from aux)
    _levels: dict[int, bool] = field(default_factory=dict)

    ports = (I8042_DATA_PORT, I8042_COMMAND_PORT)

    def _push(self, value: int, aux: bool = False) -> None:
        self.queue.append((value & 0xFF, aux))

    def _update_irq(self) -> None:
        head_aux = self.queue[0][1] if self.queue else None
        kbd = head_aux is False and bool(self.ctr & I8042_CTR_KBDINT)
        aux = head_aux is True and bool(self.ctr & I8042_CTR_AUXINT)
        for irq, level in ((KBD_IRQ, kbd), (AUX_IRQ, aux)):
            if self._levels.get(irq, False) != level:
                self._levels[irq] = level
                self.irq(irq, level)

    def status(self) -> int:
        value = I8042_STR_KEYLOCK
        if self.ctr & I8042_CTR_SYS:
            value |= I8042_STR_SYSFLAG
        if self.last_was_command:
            value |= I8042_STR_CMDDAT
        if self.queue:
            value |= I8042_STR_OBF
            if self.queue[0][1]:
                value |= I8042_STR_AUXDATA
        return value

    def read(self, port: int, size: int) -> int:
        if port == I8042_COMMAND_PORT:
            return self.status()
        value = self.queue.popleft()[0] if self.queue else 0
        self._update_irq()
        return value

    def write(self, port: int, size: int, value: int) -> None:
        value &= 0xFF
        if port == I8042_COMMAND_PORT:
            self.last_was_command = True
            self._command(value)
        else:
            self.last_was_command = False
            self._data(value)
        self._update_irq()

    def _command(self, cmd: int) -> None:
        self.pending_command = None
        if cmd == I8042_CMD_CTL_RCTR:
            self._push(self.ctr)
        elif cmd in (I8042_CMD_CTL_WCTR, I8042_CMD_WRITE_OUTPUT_PORT, I8042_CMD_KBD_LOOP,
                     I8042_CMD_AUX_LOOP, I8042_CMD_AUX_SEND):
            self.pending_command = cmd
        elif cmd == I8042_CMD_AUX_DISABLE:
            self.ctr |= I8042_CTR_AUXDIS
        elif cmd == I8042_CMD_AUX_ENABLE:
            self.ctr &= ~I8042_CTR_AUXDIS
        elif cmd in (I8042_CMD_AUX_TEST, I8042_CMD_KBD_TEST):
            self._push(I8042_TEST_OK)
        elif cmd == I8042_CMD_CTL_TEST:
            self._push(I8042_CTL_TEST_OK)
        elif cmd == I8042_CMD_KBD_DISABLE:
            self.ctr |= I8042_CTR_KBDDIS
        elif cmd == I8042_CMD_KBD_ENABLE:
            self.ctr &= ~I8042_CTR_KBDDIS
        elif cmd == I8042_CMD_READ_OUTPUT_PORT:
            self._push(self.output_port)
        elif cmd >= 0xF0 and not cmd & I8042_OUTPUT_PORT_RESET:
            # 0xF0-0xFF pulse the output lines whose bits are 0; bit 0 is CPU reset.
            raise GuestReset("i8042 reset pulse (command 0xfe)")

    def _data(self, value: int) -> None:
        cmd, self.pending_command = self.pending_command, None
        if cmd == I8042_CMD_CTL_WCTR:
            self.ctr = value
        elif cmd == I8042_CMD_WRITE_OUTPUT_PORT:
            self.output_port = value
            if not value & I8042_OUTPUT_PORT_RESET:
                raise GuestReset("i8042 output port write with the reset line low")
        elif cmd == I8042_CMD_KBD_LOOP:
            self._push(value)
        elif cmd == I8042_CMD_AUX_LOOP:
            self._push(value, aux=True)
        elif cmd == I8042_CMD_AUX_SEND:
            pass  # no mouse: the driver times out waiting for an answer
        else:
            self._keyboard(value)

    def _keyboard(self, value: int) -> None:
        self._push(ATKBD_RET_ACK)
        if value == ATKBD_CMD_RESET_BAT:
            self._push(ATKBD_RET_BAT)
        elif value == ATKBD_CMD_GETID:
            for b in ATKBD_ID:
                self._push(b)


# ---- CMOS / RTC ----
# source: include/linux/mc146818rtc.h
CMOS_INDEX_PORT = 0x70
CMOS_DATA_PORT = 0x71
CMOS_NMI_DISABLE = 0x80
RTC_FREQ_SELECT = 0x0A
RTC_CONTROL = 0x0B
RTC_INTR_FLAGS = 0x0C
RTC_VALID = 0x0D
RTC_REF_CLCK_32KHZ_1024HZ = 0x26  # divider 32.768 kHz, rate 1024 Hz, UIP clear
RTC_24H = 0x02  # BCD, 24-hour
RTC_VRT = 0x80
#: 2000-01-01 00:00:00, a Saturday (BCD): sec, alarm, min, alarm, hour, alarm, wday, mday,
#: month, year.  A fixed clock keeps runs reproducible.
RTC_FIXED_TIME = (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x01, 0x01, 0x00)
CMOS_SIZE = 128


@dataclass
class Cmos:
    index: int = 0
    ram: bytearray = field(default_factory=lambda: bytearray(CMOS_SIZE))

    ports = (CMOS_INDEX_PORT, CMOS_DATA_PORT)

    def __post_init__(self) -> None:
        self.ram[: len(RTC_FIXED_TIME)] = bytes(RTC_FIXED_TIME)
        self.ram[RTC_FREQ_SELECT] = RTC_REF_CLCK_32KHZ_1024HZ
        self.ram[RTC_CONTROL] = RTC_24H
        self.ram[RTC_VALID] = RTC_VRT

    def read(self, port: int, size: int) -> int:
        if port == CMOS_INDEX_PORT:
            return 0xFF
        if self.index == RTC_FREQ_SELECT:
            return self.ram[self.index] & 0x7F  # UIP never set: time reads are stable
        return self.ram[self.index]

    def write(self, port: int, size: int, value: int) -> None:
        if port == CMOS_INDEX_PORT:
            self.index = value & ~CMOS_NMI_DISABLE & 0x7F
        elif self.index not in (RTC_INTR_FLAGS, RTC_VALID):
            self.ram[self.index] = value & 0xFF


# ---- reset ports and the agent's exit port ----
#: PIIX reset control register.  source: QEMU hw/isa/piix.c (rcr_write): bit 2
#: (RST_CPU) set resets the machine.
PORT_RESET_CONTROL = 0xCF9
RCR_RST_CPU = 0x04
SYS_CTRL_A_RESET = 0x01  # port 0x92 bit 0: fast reset.  source: QEMU hw/i386/pc.c
#: isa-debug-exit,iobase=0xf4,iosize=0x04 answers four ports.
AGENT_EXIT_PORTS = range(AGENT_EXIT_PORT, AGENT_EXIT_PORT + 4)


@dataclass
class ResetPorts:
    sys_ctrl_a: int = 0x02  # A20 on

    ports = (PORT_SYS_CTRL_A, PORT_RESET_CONTROL)

    def read(self, port: int, size: int) -> int:
        return self.sys_ctrl_a if port == PORT_SYS_CTRL_A else 0

    def write(self, port: int, size: int, value: int) -> None:
        if port == PORT_SYS_CTRL_A:
            if value & SYS_CTRL_A_RESET and not self.sys_ctrl_a & SYS_CTRL_A_RESET:
                raise GuestReset("port 0x92 fast reset")
            self.sys_ctrl_a = value & 0xFF
        elif value & RCR_RST_CPU:
            raise GuestReset("reset control register 0xcf9")


class AgentExitPort:
    """QEMU's isa-debug-exit at AGENT_EXIT_PORT: any write ends the VM."""

    ports = AGENT_EXIT_PORTS

    def read(self, port: int, size: int) -> int:
        return 0xFFFFFFFF >> (32 - 8 * size)

    def write(self, port: int, size: int, value: int) -> None:
        raise AgentPowerOff(value & 0xFF)


# ---- the port bus ----
#: How many distinct unknown ports are named on stderr with --verbose.
UNKNOWN_PORTS_LOGGED = 16


class PortBus:
    """Port number -> device; unknown ports float high (reads all-ones) and are counted."""

    def __init__(self, verbose: bool = False, log: Callable[[str], object] | None = None) -> None:
        self.devices: dict[int, PortDevice] = {}
        self.unknown: Counter[int] = Counter()
        self.verbose = verbose
        self._log = log or (lambda text: print(text, file=sys.stderr, flush=True))

    def add(self, device: PortDevice, ports: range | tuple[int, ...]) -> None:
        for port in ports:
            self.devices[port] = device

    def _unknown(self, port: int, what: str) -> None:
        if self.verbose and port not in self.unknown and len(self.unknown) < UNKNOWN_PORTS_LOGGED:
            self._log(f"bootfuzz-kvm: unhandled port {what} {port:#06x}")
        self.unknown[port] += 1

    def read(self, port: int, size: int) -> int:
        device = self.devices.get(port)
        if device is None:
            self._unknown(port, "read")
            return (1 << (8 * size)) - 1
        if size == 1:
            return device.read(port, 1) & 0xFF
        value = 0  # a wide access to byte registers reads consecutive ports
        for i in range(size):
            value |= (self.read(port + i, 1) & 0xFF) << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        device = self.devices.get(port)
        if device is None:
            self._unknown(port, "write")
            return
        if size == 1 or isinstance(device, AgentExitPort):
            device.write(port, size, value)
            return
        for i in range(size):
            self.write(port + i, 1, (value >> (8 * i)) & 0xFF)


@dataclass
class PcDevices:
    """The set the VMM installs; the UART is kept for the rep-outsb fast path."""

    bus: PortBus
    uart: Uart16550A
    i8042: I8042
    cmos: Cmos


def pc_devices(console: ConsoleBuffer, irq: IrqCallback, verbose: bool = False) -> PcDevices:
    bus = PortBus(verbose=verbose)
    uart = Uart16550A(console=console, irq=irq)
    i8042 = I8042(irq=irq)
    cmos = Cmos()
    bus.add(uart, uart.ports)
    bus.add(i8042, I8042.ports)
    bus.add(cmos, Cmos.ports)
    bus.add(ResetPorts(), ResetPorts.ports)
    bus.add(AgentExitPort(), AGENT_EXIT_PORTS)
    return PcDevices(bus, uart, i8042, cmos)
