"""The VMM's port devices, driven the way drivers/tty/serial/8250 and the i8042 driver do."""

from __future__ import annotations

import pytest

from bootfuzz.guest.protocol import AGENT_EXIT_PORT, AGENT_EXIT_VALUE, QEMU_AGENT_EXIT_STATUS
from bootfuzz.run.kvm.devices import (
    I8042,
    AgentPowerOff,
    ConsoleBuffer,
    GuestReset,
    PortBus,
    Uart16550A,
    pc_devices,
)

COM1 = 0x3F8
IER, IIR, LCR, MCR, LSR, MSR, SCR = (COM1 + i for i in range(1, 8))
FCR = IIR  # write side of the same port


class Sink:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, data: bytes) -> None:
        self.chunks.append(data)


class Irqs:
    def __init__(self) -> None:
        self.events: list[tuple[int, bool]] = []

    def __call__(self, irq: int, level: bool) -> None:
        self.events.append((irq, level))


def uart() -> tuple[Uart16550A, Sink, Irqs]:
    sink, irqs = Sink(), Irqs()
    console = ConsoleBuffer(sink, clock=lambda: 0.0)
    return Uart16550A(console=console, irq=irqs), sink, irqs


def test_uart_lsr_always_transmitter_empty() -> None:
    u, _, _ = uart()
    assert u.read(LSR, 1) == 0x60


def test_uart_scratch_ier_test_keeps_low_nibble_only() -> None:
    """autoconfig(): IER 0 reads 0; IER 0x0f reads 0x0f; bit 6 (XScale UUE) never sticks."""
    u, _, _ = uart()
    u.write(IER, 1, 0)
    assert u.read(IER, 1) & 0x0F == 0
    u.write(IER, 1, 0x0F)
    assert u.read(IER, 1) == 0x0F
    u.write(IER, 1, 0x40)
    assert u.read(IER, 1) == 0x00


def test_uart_loopback_msr_test_gives_0x90() -> None:
    """autoconfig(): MCR = LOOP | 0x0A must read MSR & 0xf0 == 0x90."""
    u, _, _ = uart()
    u.write(MCR, 1, 0x10 | 0x0A)
    assert u.read(MSR, 1) & 0xF0 == 0x90


def test_uart_msr_outside_loopback_is_connected_idle_line() -> None:
    u, _, _ = uart()
    assert u.read(MSR, 1) == 0xB0


def test_uart_fifo_enabled_iir_reads_16550a() -> None:
    u, _, _ = uart()
    u.write(FCR, 1, 0x01)
    assert u.read(IIR, 1) >> 6 == 3


def test_uart_fifo_disabled_iir_reads_8250() -> None:
    u, _, _ = uart()
    u.write(FCR, 1, 0x00)
    assert u.read(IIR, 1) == 0x01


def test_uart_16750_probe_is_not_matched() -> None:
    """autoconfig_16550a(): IIR >> 5 must not be 6 then 7 (that would be a 16750)."""
    u, _, _ = uart()
    u.write(LCR, 1, 0)
    u.write(FCR, 1, 0x01 | 0x20)
    status1 = u.read(IIR, 1) >> 5
    u.write(LCR, 1, 0x80)
    u.write(FCR, 1, 0x01 | 0x20)
    status2 = u.read(IIR, 1) >> 5
    assert (status1, status2) != (6, 7)


def test_uart_thre_interrupt_on_enable_then_cleared_by_iir_read() -> None:
    """serial8250_do_startup()'s THRE test: a real 16550 reasserts THRE when enabled."""
    u, _, irqs = uart()
    u.write(FCR, 1, 0x01)
    u.write(IER, 1, 0x02)
    assert u.read(IIR, 1) == 0xC2
    assert u.read(IIR, 1) == 0xC1
    u.write(IER, 1, 0)
    u.write(IER, 1, 0x02)
    assert u.read(IIR, 1) & 0x0F == 0x02
    assert irqs.events == [(4, True), (4, False), (4, True), (4, False)]


def test_uart_transmit_with_thri_raises_irq_again() -> None:
    u, sink, irqs = uart()
    u.write(IER, 1, 0x02)
    u.read(IIR, 1)
    u.write(COM1, 1, ord("x"))
    assert irqs.events[-1] == (4, True)
    u.console.flush()
    assert sink.chunks == [b"x"]


def test_uart_dlab_routes_to_divisor_not_output() -> None:
    u, sink, _ = uart()
    u.write(LCR, 1, 0x80)
    u.write(COM1, 1, 0x01)
    u.write(IER, 1, 0x00)
    assert (u.dll, u.dlm) == (1, 0)
    u.write(LCR, 1, 0x03)
    u.console.flush()
    assert sink.chunks == []


def test_uart_loopback_bytes_are_not_printed() -> None:
    u, sink, _ = uart()
    u.write(MCR, 1, 0x10)
    u.write(COM1, 1, ord("a"))
    u.console.flush()
    assert sink.chunks == []


def test_uart_scratch_register_round_trips() -> None:
    u, _, _ = uart()
    u.write(SCR, 1, 0xA5)
    assert u.read(SCR, 1) == 0xA5


def test_console_coalesces_until_flush() -> None:
    sink = Sink()
    console = ConsoleBuffer(sink, clock=lambda: 0.0)
    for b in b"hello":
        console.write(bytes((b,)))
    assert sink.chunks == []
    console.flush()
    assert sink.chunks == [b"hello"]


def test_console_flushes_at_max_hold() -> None:
    sink = Sink()
    console = ConsoleBuffer(sink, clock=lambda: 0.0)
    console.write(b"a" * (ConsoleBuffer.MAX_HOLD - 1))
    assert sink.chunks == []
    console.write(b"b")
    assert len(sink.chunks) == 1


def test_console_flushes_when_oldest_byte_is_old() -> None:
    now = [0.0]
    sink = Sink()
    console = ConsoleBuffer(sink, clock=lambda: now[0])
    console.write(b"a")
    now[0] = ConsoleBuffer.MAX_AGE
    console.write(b"b")
    assert sink.chunks == [b"ab"]


def test_i8042_selftest_and_ctr_round_trip() -> None:
    kbc = I8042()
    assert kbc.read(0x64, 1) & 0x01 == 0  # i8042_flush(): nothing to read
    kbc.write(0x64, 1, 0xAA)
    assert kbc.read(0x64, 1) & 0x01
    assert kbc.read(0x60, 1) == 0x55
    kbc.write(0x64, 1, 0x60)
    kbc.write(0x60, 1, 0x47)
    kbc.write(0x64, 1, 0x20)
    assert kbc.read(0x60, 1) == 0x47


def test_i8042_aux_loopback_sets_auxdata_and_irq12() -> None:
    irqs = Irqs()
    kbc = I8042(irq=irqs, ctr=0x03)
    kbc.write(0x64, 1, 0xD3)
    kbc.write(0x60, 1, 0x5A)
    assert kbc.read(0x64, 1) & 0x21 == 0x21
    assert irqs.events == [(12, True)]
    assert kbc.read(0x60, 1) == 0x5A
    assert irqs.events[-1] == (12, False)


def test_i8042_keyboard_reset_acks_and_passes_bat() -> None:
    kbc = I8042()
    kbc.write(0x60, 1, 0xFF)
    assert [kbc.read(0x60, 1), kbc.read(0x60, 1)] == [0xFA, 0xAA]


def test_i8042_command_fe_resets() -> None:
    with pytest.raises(GuestReset, match="0xfe"):
        I8042().write(0x64, 1, 0xFE)


@pytest.mark.parametrize("command", [0xFF, 0xF1], ids=["ff", "f1"])
def test_i8042_pulse_without_reset_line_leaves_controller_as_it_was(command: int) -> None:
    """0xF0-0xFF pulse the output lines whose bits are 0; bit 0 set: the CPU reset line
    is not pulsed.  No reset, nothing queued, no command left waiting for a data byte,
    output port and CTR unchanged."""
    kbc = I8042()
    kbc.write(0x64, 1, command)
    assert kbc.read(0x64, 1) & 0x01 == 0  # OBF clear: no reply byte
    kbc.write(0x60, 1, 0xFF)  # goes to the keyboard (reset), not to a pending command
    assert [kbc.read(0x60, 1), kbc.read(0x60, 1)] == [0xFA, 0xAA]
    kbc.write(0x64, 1, 0xD0)  # read output port
    assert kbc.read(0x60, 1) == 0x03  # reset line high (not asserted), A20 on
    kbc.write(0x64, 1, 0x20)  # read CTR
    assert kbc.read(0x60, 1) == I8042().ctr


def test_agent_exit_value_gives_qemu_status_99() -> None:
    devs = pc_devices(ConsoleBuffer(Sink()), Irqs())
    with pytest.raises(AgentPowerOff) as exc:
        devs.bus.write(AGENT_EXIT_PORT, 1, AGENT_EXIT_VALUE)
    assert exc.value.status == QEMU_AGENT_EXIT_STATUS == 99


def test_bus_unknown_port_reads_all_ones_and_is_counted() -> None:
    bus = PortBus()
    assert bus.read(0x80, 1) == 0xFF
    assert bus.read(0xCF8, 4) == 0xFFFFFFFF
    bus.write(0x80, 1, 0x12)
    assert bus.unknown == {0x80: 2, 0xCF8: 1}


def test_bus_verbose_names_unknown_port_once() -> None:
    logged: list[str] = []
    bus = PortBus(verbose=True, log=logged.append)
    bus.write(0x80, 1, 0)
    bus.write(0x80, 1, 0)
    assert logged == ["bootfuzz-kvm: unhandled port write 0x0080"]


def test_bus_quiet_by_default() -> None:
    logged: list[str] = []
    PortBus(log=logged.append).write(0x80, 1, 0)
    assert logged == []


def test_reset_control_cf9_resets() -> None:
    devs = pc_devices(ConsoleBuffer(Sink()), Irqs())
    with pytest.raises(GuestReset, match="0xcf9"):
        devs.bus.write(0xCF9, 1, 0x06)


def test_port92_a20_write_does_not_reset() -> None:
    devs = pc_devices(ConsoleBuffer(Sink()), Irqs())
    devs.bus.write(0x92, 1, 0x02)
    assert devs.bus.read(0x92, 1) == 0x02


def test_cmos_update_in_progress_never_set() -> None:
    devs = pc_devices(ConsoleBuffer(Sink()), Irqs())
    devs.bus.write(0x70, 1, 0x8A)  # NMI-disable bit plus RTC_FREQ_SELECT
    assert devs.bus.read(0x71, 1) & 0x80 == 0
    devs.bus.write(0x70, 1, 0x0B)
    assert devs.bus.read(0x71, 1) == 0x02


def test_pio_rep_outsb_all_items_in_one_exit() -> None:
    from bootfuzz.run.kvm import abi
    from bootfuzz.run.kvm.vmm import handle_pio

    sink = Sink()
    devs = pc_devices(ConsoleBuffer(sink, clock=lambda: 0.0), Irqs())
    handle_pio(devs, abi.KVM_EXIT_IO_OUT, 0x3F8, 1, 5, memoryview(bytearray(b"hello")))
    devs.uart.console.flush()
    assert sink.chunks == [b"hello"]


def test_pio_rep_insw_fills_every_item() -> None:
    from bootfuzz.run.kvm import abi
    from bootfuzz.run.kvm.vmm import handle_pio

    devs = pc_devices(ConsoleBuffer(Sink()), Irqs())
    buf = bytearray(6)
    handle_pio(devs, abi.KVM_EXIT_IO_IN, 0x1F0, 2, 3, memoryview(buf))
    assert bytes(buf) == b"\xff" * 6
    assert devs.bus.unknown[0x1F0] == 3
