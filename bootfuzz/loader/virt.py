"""QEMU's ``virt`` machines (aarch64, riscv64) as our loader sees them: where RAM is,
what the emulator itself keeps in it, and the devices our DTB describes.

The devices are described as QEMU 7.2 builds them (hw/arm/virt.c, hw/riscv/virt.c;
``-machine virt,dumpdtb=FILE`` prints QEMU's own tree for comparison): the CPU, the
interrupt controller (GICv2 / PLIC and the hart's local controller), the timer and
the UART, at the addresses and with the interrupt numbers the machine really has.
Devices the harness does not need (virtio-mmio, PCIe, flash, RTC, fw-cfg) are left
out: a missing node only hides a device, a wrong one would mislead the kernel.

Facts this module relies on, measured with ``info roms`` on QEMU 7.2:
* aarch64 without -kernel and -bios: QEMU still writes its own DTB as a 1 MiB ROM at
  the start of RAM (hw/arm/boot.c, arm_setup_firmware_boot);
* riscv64 with ``-bios none``: QEMU writes its own DTB as a 1 MiB ROM at
  ALIGN_DOWN(min(RAM end, 3 GiB) - 1 MiB, 2 MiB) (hw/riscv/boot.c, riscv_load_fdt).
ROMs may not overlap ``-device loader`` blobs (QEMU refuses to start), and the kernel
never learns of these copies, so our loader keeps its blobs out of them; to the
kernel they are plain RAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from bootfuzz.arch import Arch
from bootfuzz.errors import LayoutError
from bootfuzz.loader.fdt_writer import FdtNode, cells, prop_str, prop_strs, prop_u32
from bootfuzz.loader.platform import Fixture

MiB = 1 << 20
GiB = 1 << 30

#: QEMU virt's DRAM base.  source: hw/arm/virt.c base_memmap[VIRT_MEM],
#: hw/riscv/virt.c virt_memmap[VIRT_DRAM].
RAM_BASE = {Arch.ARM64: 0x4000_0000, Arch.RISCV64: 0x8000_0000}
#: The size of QEMU's own DTB ROM (FDT_MAX_SIZE in both boards' create_fdt).
EMULATOR_DTB_SIZE = 1 * MiB
#: riscv_load_fdt keeps its copy below 3 GiB (32-bit loaders must reach it).
RISCV_FDT_CEILING = 3 * GiB
#: Where OpenSBI fw_dynamic is linked to run (FW_TEXT_START of the generic platform)
#: and the block of RAM we leave to it: the kernel's text_offset (2 MiB) above it.
OPENSBI_SIZE = 2 * MiB
#: The largest RAM QEMU virt takes for each arch with our 40-bit address cells.
MAX_MEMORY = {Arch.ARM64: 255 * GiB, Arch.RISCV64: 255 * GiB}

# Devices, as QEMU 7.2 places them.  source: hw/arm/virt.c base_memmap and a15irqmap.
ARM64_UART = 0x0900_0000
ARM64_UART_IRQ = 1  # SPI 1
ARM64_GIC_DIST = 0x0800_0000
ARM64_GIC_CPU = 0x0801_0000
ARM64_GIC_SIZE = 0x1_0000
ARM64_APB_CLOCK_HZ = 24_000_000
ARM64_CPU = "cortex-a57"
# source: hw/riscv/virt.c virt_memmap, UART0_IRQ; the ISA string and MMU type of
# QEMU 7.2's default rv64 CPU as its own DTB states them.
RISCV_UART = 0x1000_0000
RISCV_UART_IRQ = 10
RISCV_UART_CLOCK_HZ = 3_686_400
RISCV_CLINT = 0x0200_0000
RISCV_CLINT_SIZE = 0x1_0000
RISCV_PLIC = 0x0C00_0000
RISCV_PLIC_SIZE = 0x60_0000
RISCV_PLIC_NDEV = 0x60
RISCV_TEST = 0x10_0000
RISCV_TIMEBASE_HZ = 10_000_000
RISCV_ISA = "rv64imafdch_zicsr_zifencei_zihintpause_zba_zbb_zbc_zbs_sstc"
RISCV_MMU = "riscv,sv48"
# RISC-V interrupt numbers of the hart-local controller (privileged spec, mip bits).
IRQ_S_SOFT, IRQ_M_SOFT, IRQ_S_TIMER, IRQ_M_TIMER, IRQ_S_EXT, IRQ_M_EXT = 1, 3, 5, 7, 9, 11
# sifive_test finisher values (hw/misc/sifive_test.c): pass = power off, reset.
FINISHER_PASS = 0x5555
FINISHER_RESET = 0x7777

#: GIC interrupt specifier: type (0 SPI, 1 PPI), number, flags.
#: source: Documentation/devicetree/bindings/interrupt-controller/arm,gic.yaml.
GIC_SPI, GIC_PPI = 0, 1
IRQ_LEVEL_HIGH = 4
#: PPI flags: the CPU mask of our one CPU (bits 8..15) and level-high, as QEMU writes them.
PPI_ONE_CPU_LEVEL_HIGH = (1 << 8) | IRQ_LEVEL_HIGH
#: ARM generic timer PPIs: secure, non-secure, virtual, hypervisor.  source: virt.h.
ARM_TIMER_PPIS = (13, 14, 11, 10)

PHANDLE_CLOCK, PHANDLE_GIC, PHANDLE_CPU0, PHANDLE_CPU_INTC, PHANDLE_PLIC, PHANDLE_TEST = (
    1, 2, 3, 4, 5, 6
)


#: QEMU virt takes its RAM in whole MiB here (our -m is a number of MiB): the step of
#: every memory size the loader plans for these machines.
RAM_GRANULE = MiB


@dataclass(frozen=True)
class VirtMachine:
    """One ``virt`` machine with *memory* bytes of RAM from RAM_BASE[arch]."""

    arch: Arch
    memory: int

    def __post_init__(self) -> None:
        if self.memory <= 0 or self.memory % RAM_GRANULE:
            raise LayoutError(f"RAM size {self.memory} is not a positive number of MiB")
        if self.memory > MAX_MEMORY[self.arch]:
            raise LayoutError(f"{self.memory} bytes of RAM is more than the loader plans for")

    @property
    def ram_start(self) -> int:
        return RAM_BASE[self.arch]

    @property
    def ram_end(self) -> int:
        return self.ram_start + self.memory

    def reserved(self) -> tuple[Fixture, ...]:
        """What the emulator (and, on riscv64, OpenSBI) holds in RAM at a fixed place:
        no blob of ours may go there."""
        if self.arch is Arch.ARM64:
            return (Fixture("QEMU's own DTB", self.ram_start, EMULATOR_DTB_SIZE),)
        top = min(self.ram_end, RISCV_FDT_CEILING)
        fdt = (top - EMULATOR_DTB_SIZE) & ~(2 * MiB - 1)
        return (Fixture("OpenSBI", self.ram_start, OPENSBI_SIZE),
                Fixture("QEMU's own DTB", fdt, EMULATOR_DTB_SIZE))

    def in_ram(self, start: int, end: int) -> bool:
        return self.ram_start <= start <= end <= self.ram_end


def root_props(arch: Arch, address_cells: int, size_cells: int) -> tuple[tuple[str, bytes], ...]:
    if arch is Arch.ARM64:
        model = compatible = "linux,dummy-virt"
        extra: tuple[tuple[str, bytes], ...] = (("interrupt-parent", prop_u32(PHANDLE_GIC)),)
    else:
        model, compatible, extra = "riscv-virtio,qemu", "riscv-virtio", ()
    return (
        ("#address-cells", prop_u32(address_cells)),
        ("#size-cells", prop_u32(size_cells)),
        ("compatible", prop_str(compatible)),
        ("model", prop_str(model)),
        *extra,
    )


def _reg(address_cells: int, size_cells: int, *ranges: tuple[int, int]) -> bytes:
    return b"".join(cells(a, address_cells) + cells(s, size_cells) for a, s in ranges)


def uart_path(arch: Arch) -> str:
    """/chosen/stdout-path: the UART node our DTB describes."""
    return f"/pl011@{ARM64_UART:x}" if arch is Arch.ARM64 else f"/soc/serial@{RISCV_UART:x}"


def device_nodes(arch: Arch, address_cells: int, size_cells: int) -> tuple[FdtNode, ...]:
    """CPU, interrupt controller, timer and UART (plus what they need) for *arch*."""

    def reg(*ranges: tuple[int, int]) -> bytes:
        return _reg(address_cells, size_cells, *ranges)

    if arch is Arch.ARM64:
        cpus = FdtNode("cpus", (("#address-cells", prop_u32(1)), ("#size-cells", prop_u32(0))), (
            FdtNode("cpu@0", (("device_type", prop_str("cpu")),
                              ("compatible", prop_str(f"arm,{ARM64_CPU}")),
                              ("reg", prop_u32(0)),
                              ("phandle", prop_u32(PHANDLE_CPU0)))),
        ))
        psci = FdtNode("psci", (("compatible", prop_strs("arm,psci-1.0", "arm,psci-0.2",
                                                          "arm,psci")),
                                ("method", prop_str("hvc"))))
        gic = FdtNode(f"intc@{ARM64_GIC_DIST:x}", (
            ("compatible", prop_str("arm,cortex-a15-gic")),
            ("#interrupt-cells", prop_u32(3)),
            ("interrupt-controller", b""),
            ("reg", reg((ARM64_GIC_DIST, ARM64_GIC_SIZE), (ARM64_GIC_CPU, ARM64_GIC_SIZE))),
            ("phandle", prop_u32(PHANDLE_GIC)),
        ))
        timer = FdtNode("timer", (
            ("compatible", prop_strs("arm,armv8-timer", "arm,armv7-timer")),
            ("interrupts", prop_u32(*(v for ppi in ARM_TIMER_PPIS
                                      for v in (GIC_PPI, ppi, PPI_ONE_CPU_LEVEL_HIGH)))),
            ("always-on", b""),
        ))
        clock = FdtNode("apb-pclk", (
            ("compatible", prop_str("fixed-clock")),
            ("#clock-cells", prop_u32(0)),
            ("clock-frequency", prop_u32(ARM64_APB_CLOCK_HZ)),
            ("clock-output-names", prop_str("clk24mhz")),
            ("phandle", prop_u32(PHANDLE_CLOCK)),
        ))
        uart = FdtNode(f"pl011@{ARM64_UART:x}", (
            ("compatible", prop_strs("arm,pl011", "arm,primecell")),
            ("reg", reg((ARM64_UART, 0x1000))),
            ("interrupts", prop_u32(GIC_SPI, ARM64_UART_IRQ, IRQ_LEVEL_HIGH)),
            ("clocks", prop_u32(PHANDLE_CLOCK, PHANDLE_CLOCK)),
            ("clock-names", prop_strs("uartclk", "apb_pclk")),
        ))
        return (cpus, psci, gic, timer, clock, uart)
    intc = FdtNode("interrupt-controller", (
        ("#interrupt-cells", prop_u32(1)),
        ("interrupt-controller", b""),
        ("compatible", prop_str("riscv,cpu-intc")),
        ("phandle", prop_u32(PHANDLE_CPU_INTC)),
    ))
    cpus = FdtNode("cpus", (("#address-cells", prop_u32(1)), ("#size-cells", prop_u32(0)),
                            ("timebase-frequency", prop_u32(RISCV_TIMEBASE_HZ))), (
        FdtNode("cpu@0", (("device_type", prop_str("cpu")), ("reg", prop_u32(0)),
                          ("status", prop_str("okay")), ("compatible", prop_str("riscv")),
                          ("riscv,isa", prop_str(RISCV_ISA)), ("mmu-type", prop_str(RISCV_MMU)),
                          ("phandle", prop_u32(PHANDLE_CPU0))), (intc,)),
    ))
    soc = FdtNode("soc", (("#address-cells", prop_u32(address_cells)),
                          ("#size-cells", prop_u32(size_cells)),
                          ("compatible", prop_str("simple-bus")), ("ranges", b"")), (
        FdtNode(f"serial@{RISCV_UART:x}", (
            ("interrupts", prop_u32(RISCV_UART_IRQ)),
            ("interrupt-parent", prop_u32(PHANDLE_PLIC)),
            ("clock-frequency", prop_u32(RISCV_UART_CLOCK_HZ)),
            ("reg", reg((RISCV_UART, 0x100))),
            ("compatible", prop_str("ns16550a")),
        )),
        FdtNode(f"test@{RISCV_TEST:x}", (
            ("reg", reg((RISCV_TEST, 0x1000))),
            ("compatible", prop_strs("sifive,test1", "sifive,test0", "syscon")),
            ("phandle", prop_u32(PHANDLE_TEST)),
        )),
        FdtNode(f"plic@{RISCV_PLIC:x}", (
            ("phandle", prop_u32(PHANDLE_PLIC)),
            ("riscv,ndev", prop_u32(RISCV_PLIC_NDEV)),
            ("reg", reg((RISCV_PLIC, RISCV_PLIC_SIZE))),
            ("interrupts-extended", prop_u32(PHANDLE_CPU_INTC, IRQ_M_EXT,
                                             PHANDLE_CPU_INTC, IRQ_S_EXT)),
            ("interrupt-controller", b""),
            ("compatible", prop_strs("sifive,plic-1.0.0", "riscv,plic0")),
            ("#address-cells", prop_u32(0)),
            ("#interrupt-cells", prop_u32(1)),
        )),
        FdtNode(f"clint@{RISCV_CLINT:x}", (
            ("interrupts-extended", prop_u32(PHANDLE_CPU_INTC, IRQ_M_SOFT,
                                             PHANDLE_CPU_INTC, IRQ_M_TIMER)),
            ("reg", reg((RISCV_CLINT, RISCV_CLINT_SIZE))),
            ("compatible", prop_strs("sifive,clint0", "riscv,clint0")),
        )),
    ))
    poweroff = FdtNode("poweroff", (("value", prop_u32(FINISHER_PASS)), ("offset", prop_u32(0)),
                                    ("regmap", prop_u32(PHANDLE_TEST)),
                                    ("compatible", prop_str("syscon-poweroff"))))
    reboot = FdtNode("reboot", (("value", prop_u32(FINISHER_RESET)), ("offset", prop_u32(0)),
                                ("regmap", prop_u32(PHANDLE_TEST)),
                                ("compatible", prop_str("syscon-reboot"))))
    return (cpus, soc, poweroff, reboot)
