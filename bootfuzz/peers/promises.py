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
    MemoryMapSource,
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

# --------------------------------------------------------------------------------------
# Real loaders (bootfuzz.peers.loaders), each on QEMU pc: SeaBIOS for the BIOS ones, OVMF
# for the EFI ones.  "memory" is QEMU's -m (total RAM) everywhere.
# --------------------------------------------------------------------------------------

#: GRUB 2.06 (grub-core/loader/i386/linux.c and linux16.c, grub_cmd_initrd, as read):
#: initrd_addr_max capped at GRUB_LINUX_INITRD_MAX_ADDRESS, less 64 KiB, then the
#: relocator's highest free 4 KiB-aligned chunk whose start is at most that - size.
#: GRUB's own allocations sit above it at any size, so the window is a bound only
#: (measured: debian-6.1-cloud at 5G ends 0x103000 under it, at 256M 15 MiB under
#: the top of low RAM).
GRUB_INITRD_MAX_ADDRESS = 0x37FFFFFF
GRUB_INITRD_MARGIN = 0x10000
_GRUB_RULE = InitrdRule(
    "GRUB grub_cmd_initrd: highest free chunk starting at or below "
    "min(initrd_addr_max, 0x37FFFFFF) - 64 KiB - size (a bound: GRUB's own memory is above)",
    reserve_top=QEMU_PC_TOP_RESERVED, kernel_limit=KernelLimit.ADDR_MAX,
    inclusive_limit=True, upper_bound_only=True, loader_cap=GRUB_INITRD_MAX_ADDRESS,
    margin=GRUB_INITRD_MARGIN)
#: GRUB's linux and linux16 put "BOOT_IMAGE=<path> " before the arguments (measured;
#: grub-core/loader/i386/linux.c writes it before grub_create_loader_cmdline).
GRUB_BOOT_IMAGE = b"BOOT_IMAGE=/vmlinuz "
#: The firmware's E820 passed through: SeaBIOS's map as QEMU -kernel sees it.
_SEABIOS_WITHHELD = QEMU_PC.withheld

GRUB_BIOS = TargetPromises(
    description="GRUB 2 i386-pc 'linux'/'initrd' from an El Torito ISO, SeaBIOS, QEMU pc",
    gap=PC_GAP, withheld=_SEABIOS_WITHHELD,
    initrd_rules=((EntryProtocol.BOOT64, _GRUB_RULE),),
    entries=((EntryProtocol.BOOT64, "GRUB's 'linux': the kernel's 32-bit protected-mode "
              "entry (code32_start) with a zero page GRUB wrote; its setup code never runs"),),
    cmdline_prefix=GRUB_BOOT_IMAGE,
)

GRUB_BIOS_LINUX16 = TargetPromises(
    description="GRUB 2 i386-pc 'linux16'/'initrd16' from an El Torito ISO, SeaBIOS, QEMU pc",
    gap=PC_GAP, withheld=_SEABIOS_WITHHELD,
    initrd_rules=((EntryProtocol.BOOT64, _GRUB_RULE),),
    entries=((EntryProtocol.BOOT64, "GRUB's 'linux16': the kernel's 16-bit real-mode setup "
              "entry; the setup code asks the BIOS for the E820 itself"),),
    cmdline_prefix=GRUB_BOOT_IMAGE,
)

SYSLINUX_ISOLINUX = TargetPromises(
    description="ISOLINUX (SYSLINUX 6.04) KERNEL/INITRD/APPEND from an ISO, SeaBIOS, QEMU pc",
    gap=PC_GAP, withheld=_SEABIOS_WITHHELD,
    initrd_rules=((EntryProtocol.BOOT64, InitrdRule(
        "SYSLINUX load_linux: the top of the highest usable RAM below initrd_addr_max + 1, "
        "page aligned (measured at 256M and 5G: ends at below_4g - 128 KiB or at 2 GiB)",
        reserve_top=QEMU_PC_TOP_RESERVED, kernel_limit=KernelLimit.ADDR_MAX)),),
    entries=((EntryProtocol.BOOT64, "SYSLINUX: the kernel's 16-bit real-mode setup entry"),),
    # "BOOT_IMAGE=<KERNEL> " before APPEND, " initrd=<INITRD>" after it (measured).
    cmdline_prefix=GRUB_BOOT_IMAGE,
    cmdline_suffix=b" initrd=/initrd.img",
)

#: OVMF on QEMU pc: RAM split as QEMU pc's; the UEFI map describes every byte of it but
#: the legacy hole (measured at 256M and 5G; OVMF keeps no EBDA, its own areas appear as
#: typed descriptors, judged through the map).
#: The EFI stub loading the initrd itself (LoadFile2 from OVMF or systemd-boot):
#: drivers/firmware/efi/libstub efi_load_initrd() gives the device-path initrd only the
#: hard limit, initrd_addr_max or, with XLF_CAN_BE_LOADED_ABOVE_4G, none (as read;
#: measured at 5G: debian-6.1-cloud's initrd at 0xbd5b8000, above its 2 GiB
#: initrd_addr_max), allocated as EfiLoaderData from the top of free memory.
STUB_INITRD_RULE = InitrdRule(
    "EFI stub, LoadFile2 initrd: EfiLoaderData pages below initrd_addr_max, or anywhere "
    "with XLF_CAN_BE_LOADED_ABOVE_4G", kernel_limit=KernelLimit.ADDR_MAX_OR_ANY)
#: GRUB on EFI: its grub_cmd_initrd window (as on BIOS), in EfiLoaderData pages.
GRUB_EFI_INITRD_RULE = InitrdRule(
    "GRUB grub_cmd_initrd on EFI: EfiLoaderData pages ending at or below "
    "min(initrd_addr_max, 0x37FFFFFF) - 64 KiB", kernel_limit=KernelLimit.ADDR_MAX,
    loader_cap=GRUB_INITRD_MAX_ADDRESS, margin=GRUB_INITRD_MARGIN)


#: edk2's QEMU kernel loader (OVMF on x86, ArmVirtQemu on arm64) appends this to the
#: command line when QEMU has an initrd, for stubs that read the initrd= option (measured).
EDK2_INITRD_OPTION = b" initrd=initrd"


def _efi(description: str, entry: str, *, memory_map: MemoryMapSource = MemoryMapSource.EFI_STUB,
         rule: InitrdRule = STUB_INITRD_RULE, prefix: bytes = b"", suffix: bytes = b""
         ) -> TargetPromises:
    return TargetPromises(
        description=description, gap=PC_GAP, withheld=(LEGACY_HOLE,), memory_map=memory_map,
        initrd_rules=((EntryProtocol.BOOT64, rule),),
        entries=((EntryProtocol.BOOT64, entry),), cmdline_prefix=prefix, cmdline_suffix=suffix)


EFI_STUB_OVMF = _efi(
    "the kernel's EFI stub started by OVMF (QEMU -kernel through fw_cfg: LoadImage/"
    "StartImage, initrd by LoadFile2), QEMU pc",
    "the bzImage's PE/COFF entry (efi_pe_entry); the stub builds boot_params and its E820 "
    "from the UEFI memory map",
    # OVMF appends " initrd=initrd" when QEMU has an initrd (measured).
    suffix=EDK2_INITRD_OPTION)

GRUB_EFI = _efi(
    "GRUB 2 x86_64-efi 'linux'/'initrd' from an El Torito ISO, OVMF, QEMU pc",
    "GRUB's own x86 Linux loader on EFI: GRUB exits boot services, writes the zero page "
    "(its E820 from the UEFI map, efi_info) and enters the kernel's 64-bit entry; the EFI "
    "stub never runs (measured: no 'EFI stub:' line, GRUB's memory type 20 in the E820)",
    memory_map=MemoryMapSource.EFI_LOADER, rule=GRUB_EFI_INITRD_RULE, prefix=GRUB_BOOT_IMAGE)

SYSTEMD_BOOT = _efi(
    "systemd-boot (systemd 252) Type #1 entry on a FAT ESP image, OVMF, QEMU pc",
    "systemd-boot starts the bzImage's PE/COFF entry (LoadImage/StartImage), initrd by "
    "LoadFile2",
    # "initrd=\\<path> " before the options, one per initrd (measured).
    prefix=b"initrd=\\initrd.img ")

KNOWN_PROMISES.update({
    "grub-bios": GRUB_BIOS,
    "grub-bios-linux16": GRUB_BIOS_LINUX16,
    "grub-efi": GRUB_EFI,
    "syslinux": SYSLINUX_ISOLINUX,
    "efi-stub": EFI_STUB_OVMF,
    "systemd-boot": SYSTEMD_BOOT,
})
