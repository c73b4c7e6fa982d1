"""The promises of the targets we know, as data: our loader on QEMU pc, QEMU's own
loader on pc (SeaBIOS) and microvm (qboot), and "none" for an unknown command.

The types and what each field means are in bootfuzz.judge.promises; the numbers
here are measured on QEMU 7.2 or read from its source, each with its origin.
"""

from __future__ import annotations

from bootfuzz.case import EntryProtocol
from bootfuzz.judge.promises import (
    Anchor,
    GapRule,
    InitrdRule,
    KernelLimit,
    TargetPromises,
    Withheld,
)
from bootfuzz.loader.layout import HIGH_MEMORY_START, LOW_RAM_END, GiB
from bootfuzz.loader.platform import PC_LOWMEM_WHEN_SPLIT, PC_SPLIT_THRESHOLD

#: SeaBIOS's extended BIOS data area: the top KiB below 640 KiB.  Measured on QEMU
#: 7.2 pc and microvm (qboot): "BIOS-e820: [mem 0x9fc00-0x9ffff] reserved".
EBDA_START = 0x9FC00
#: RAM QEMU 7.2's pc firmware keeps at the top of low RAM (ACPI tables and
#: SeaBIOS's high tables): "BIOS-e820: [mem 0xbffe0000-0xbfffffff] reserved" at 5G,
#: "[mem 0xffe0000-0xfffffff]" at 256M.  source: measured.
QEMU_PC_TOP_RESERVED = 0x20000
#: QEMU microvm: min(memory, 3 GiB) below 4 GiB.  source: qemu-tcg-backend.md.
MICROVM_LOWMEM_MAX = 3 * GiB

LEGACY_HOLE = Withheld("legacy VGA/ROM hole", LOW_RAM_END, HIGH_MEMORY_START)
SEABIOS_LOW = Withheld("EBDA + legacy VGA/ROM hole", EBDA_START, HIGH_MEMORY_START)
PC_GAP = GapRule(PC_SPLIT_THRESHOLD, PC_LOWMEM_WHEN_SPLIT)
MICROVM_GAP = GapRule(MICROVM_LOWMEM_MAX, MICROVM_LOWMEM_MAX)

_OURS_RULE = InitrdRule("top of low RAM, below initrd_addr_max + 1 (bootfuzz.loader.plan)")

OURS_QEMU_TCG = TargetPromises(
    description=("our loader on QEMU-TCG pc "
                 "(bootfuzz.loader.plan, bootfuzz.loader.platform.qemu_pc)"),
    gap=PC_GAP,
    withheld=(LEGACY_HOLE,),
    # The default placement (InitrdPlacement.TOP) is the same for every entry path.
    initrd_rules=tuple((e, _OURS_RULE) for e in EntryProtocol),
    exact=True,
    entries=((EntryProtocol.BOOT64, "64-bit entry, zero page in RSI"),
             (EntryProtocol.BOOT32, "32-bit entry, zero page in ESI"),
             (EntryProtocol.REAL16, "16-bit entry through the kernel's setup code and our BIOS"),
             (EntryProtocol.PVH, "PVH entry of the vmlinux, hvm_start_info in EBX"),
             (EntryProtocol.VMLINUX, "the vmlinux's own 64-bit entry, zero page in RSI")),
)

_QEMU_ENTRIES = (
    (EntryProtocol.BOOT64, "bzImage through QEMU's linuxboot option ROM (16-bit real-mode "
     "setup entry): QEMU has no 64-bit entry, so this is its default bzImage path"),
    (EntryProtocol.PVH, "the decompressed ELF vmlinux given to -kernel: QEMU enters its "
     "XEN_ELFNOTE_PHYS32_ENTRY with hvm_start_info (pvh.bin option ROM / qboot)"),
)
#: QEMU pc's acpi_data_size (128 KiB ACPI + 32 KiB other BIOS data).
#: source: hw/i386/pc.c pc_machine_class_init, "acpi_data_size = 0x20000 + 0x8000".
QEMU_PC_ACPI_DATA_SIZE = 0x28000

QEMU_PC = TargetPromises(
    description="QEMU pc with SeaBIOS, -kernel/-initrd/-append",
    gap=PC_GAP,
    withheld=(SEABIOS_LOW, Withheld("ACPI/SeaBIOS tables at the top of low RAM",
                                    QEMU_PC_TOP_RESERVED, 0, Anchor.TOP_OF_LOW)),
    initrd_rules=(
        # Measured on QEMU 7.2 with 1 MiB and 1 MiB + 1 initrds at 256M and 5G: the
        # initrd ends at below_4g - 128 KiB (exclusive), above initrd_addr_max when
        # the kernel allows it.  hw/i386/x86.c would give below_4g - acpi_data_size.
        (EntryProtocol.BOOT64, InitrdRule(
            "QEMU 7.2 pc bzImage path: align_down(below_4g - 0x20000 - size), up to "
            "4 GiB - 1 with XLF_CAN_BE_LOADED_ABOVE_4G (measured)",
            reserve_top=QEMU_PC_TOP_RESERVED, kernel_limit=KernelLimit.ADDR_MAX_OR_4G)),
        # source: hw/i386/x86.c x86_load_linux(), PVH branch: initrd_max =
        # below_4g - acpi_data_size - 1; (initrd_max - size) & ~4095.
        (EntryProtocol.PVH, InitrdRule(
            "QEMU x86_load_linux PVH branch: (below_4g - acpi_data_size - 1 - size) & ~4095",
            reserve_top=QEMU_PC_ACPI_DATA_SIZE, kernel_limit=KernelLimit.NONE,
            inclusive_limit=True)),
    ),
    entries=_QEMU_ENTRIES,
)

QEMU_MICROVM = TargetPromises(
    description="QEMU microvm with qboot, -kernel/-initrd/-append",
    gap=MICROVM_GAP,
    withheld=(SEABIOS_LOW,),
    initrd_rules=(
        # qboot re-reads the header and places the initrd itself, ignoring QEMU's
        # ramdisk_image and XLF_CAN_BE_LOADED_ABOVE_4G: at 5G a 6.1 initrd ends below
        # 2 GiB, not 3 GiB (measured).  source: qboot linuxboot.c parse_bzimage().
        (EntryProtocol.BOOT64, InitrdRule(
            "qboot parse_bzimage: (min(initrd_addr_max, lowmem - 1) - size) & ~4095",
            kernel_limit=KernelLimit.ADDR_MAX, inclusive_limit=True)),
        # source: hw/i386/x86.c PVH branch with acpi_data_size 0 (hw/i386/microvm.c).
        (EntryProtocol.PVH, InitrdRule(
            "QEMU x86_load_linux PVH branch, acpi_data_size 0: (below_4g - 1 - size) & ~4095",
            kernel_limit=KernelLimit.NONE, inclusive_limit=True)),
    ),
    entries=_QEMU_ENTRIES,
)

#: Promises a command template may name (``promises = "qemu-pc"``).
KNOWN_PROMISES: dict[str, TargetPromises] = {
    "qemu-pc": QEMU_PC,
    "qemu-microvm": QEMU_MICROVM,
    "none": TargetPromises(description="no promises"),
}
