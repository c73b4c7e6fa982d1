"""Every rule of docs/platform-rules.md, each with a layout that breaks it and one that
does not, over plans of every hand-over structure: boot_params (64-bit, 32-bit, direct
vmlinux), the 16-bit entry's setup header, and PVH's hvm_start_info.

A layout an override can express is planned through overrides (it must plan, and
run); what no override reaches (byte-array fields, setup_data's next pointers, the
entry registers) is edited in the planned bytes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.abi.bootparam import BOOT_PARAMS, LoadFlags
from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.abi.pvh import HVM_START_INFO
from bootfuzz.abi.setup_data import SETUP_DATA_HEADER
from bootfuzz.case import BootCase, EntryProtocol, Overrides, SetupDataNode
from bootfuzz.errors import ConfigError, LayoutError
from bootfuzz.fuzz.strategies import boot_cases
from bootfuzz.judge.layout_rules import RULES, check_layout
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.image import KernelImage, parse_kernel_image
from bootfuzz.loader.layout import (
    CMDLINE_ADDR,
    FOUR_GIB,
    ZERO_PAGE_ADDR,
    GiB,
    MiB,
)
from bootfuzz.loader.placement import plan_e820
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from tests.fakes import FakeInitrd, fake_bzimage
from tests.unit.test_decompress import make_elf

#: A bzImage whose payload is an uncompressed ELF with a PVH entry note (16 MiB).
IMAGE = parse_kernel_image(fake_bzimage(0x8000, payload=make_elf(load=b"\x90" * 0x2000),
                                        init_size=0x3378000))
#: The same kernel without XLF_CAN_BE_LOADED_ABOVE_4G: initrd_addr_max binds.
IMAGE_LOW = parse_kernel_image(fake_bzimage(0x8000, init_size=0x3378000, xloadflags=0x1))
RAM, RESERVED, ACPI = E820Type.RAM, E820Type.RESERVED, E820Type.ACPI


def plan(entry: EntryProtocol = EntryProtocol.BOOT64, memory: int = 256 * MiB,
         initrd: int | None = MiB, image: KernelImage = IMAGE, **overrides: object) -> BootPlan:
    case = BootCase(kernel="fake", memory=memory, cmdline="console=ttyS0", entry=entry,
                    overrides=Overrides(**overrides))  # type: ignore[arg-type]
    return plan_boot(case, image, qemu_pc(memory), None if initrd is None else FakeInitrd(initrd))


def edit(p: BootPlan, name: str, struct_name: str, values: dict[str, int],
         base: int = 0) -> BootPlan:
    """*p* with fields of the blob *name* rewritten (a layout no override reaches)."""
    structs = {"hvm_start_info": HVM_START_INFO, "setup_data": SETUP_DATA_HEADER,
               "boot_params": BOOT_PARAMS}
    blobs = []
    for b in p.blobs:
        if b.name == name:
            data = bytearray(b.data or b"")
            structs[struct_name].pack_into(data, values, base)
            b = dataclasses.replace(b, data=bytes(data))
        blobs.append(b)
    zero_page = next((b.data for b in blobs if b.name == "zero_page"), p.zero_page) or b""
    return dataclasses.replace(p, blobs=tuple(blobs), zero_page=zero_page)


def edit_bytes(p: BootPlan, name: str, offset: int, data: bytes) -> BootPlan:
    blobs = []
    for b in p.blobs:
        if b.name == name:
            raw = bytearray(b.data or b"")
            raw[offset : offset + len(data)] = data
            b = dataclasses.replace(b, data=bytes(raw))
        blobs.append(b)
    zero_page = next((b.data for b in blobs if b.name == "zero_page"), p.zero_page) or b""
    return dataclasses.replace(p, blobs=tuple(blobs), zero_page=zero_page)


def results(p: BootPlan) -> dict[str, OracleResult]:
    return {r.name: r for r in check_layout(p)}


def failing(p: BootPlan) -> set[str]:
    return {n for n, r in results(p).items() if r.verdict is Verdict.FAIL}


P64, P32, PV, P16, PVH = (EntryProtocol.BOOT64, EntryProtocol.BOOT32, EntryProtocol.VMLINUX,
                          EntryProtocol.REAL16, EntryProtocol.PVH)


@pytest.mark.parametrize("entry", [P64, P32, PV, P16, PVH])
@pytest.mark.parametrize("memory", [256 * MiB, 6 * GiB])
def test_own_layout_of_every_entry_passes_every_rule(entry: EntryProtocol, memory: int) -> None:
    r = results(plan(entry, memory))
    assert {n: x.observed for n, x in r.items() if x.verdict is not Verdict.PASS} == {}
    assert len(r) >= len(RULES) - 5  # most rules answer for every plan


#: Low RAM, the legacy area, RAM above 1 MiB, the MMIO gap, RAM above 4 GiB, beyond.
LOW_E820 = (E820Entry(0, 0xA0000, RAM), E820Entry(0x100000, 255 * MiB, RAM))

Layout = Callable[[], BootPlan]

#: (rule, a layout that breaks it, words its observation must contain)
BREAKS: list[tuple[str, str, Layout, str]] = [
    # ---- regions: what the E820 table may claim (docs/platform-rules.md, table 1) ----
    ("legacy RAM", "valid-e820-ram-real",
     lambda: plan(e820=(E820Entry(0, 0x100000, RAM), E820Entry(0x100000, 255 * MiB, RAM))),
     "reaches the legacy video and BIOS ROM area (VGA window, option ROMs, BIOS"),
    ("gap RAM", "valid-e820-ram-real",
     lambda: plan(e820=(*LOW_E820, E820Entry(0xFEC00000, 0x1000, RAM))),
     "reaches the 32-bit MMIO gap (IOAPIC)"),
    ("gap ACPI", "valid-e820-ram-real",
     lambda: plan(e820=(*LOW_E820, E820Entry(0xE0000000, 0x10000, ACPI))),
     "ACPI data [0xe0000000, 0xe0010000) reaches the 32-bit MMIO gap"),
    ("RAM past the top of low RAM", "valid-e820-ram-real",
     lambda: plan(e820=(E820Entry(0, 0xA0000, RAM), E820Entry(0x100000, 511 * MiB, RAM))),
     "reaches the 32-bit MMIO gap"),
    ("RAM past 4G top", "valid-e820-ram-real",
     lambda: plan(memory=6 * GiB, e820=(*plan_e820(qemu_pc(6 * GiB)),
                                        E820Entry(FOUR_GIB + 3 * GiB, GiB, RAM))),
     "reaches the space beyond RAM"),
    ("PVH memmap legacy", "valid-e820-ram-real",
     lambda: plan(PVH, e820=(E820Entry(0, 0x100000, RAM), E820Entry(0x100000, 255 * MiB, RAM))),
     "legacy video and BIOS ROM area"),
    ("16-bit BIOS table gap", "valid-e820-ram-real",
     lambda: plan(P16, e820=(*LOW_E820, E820Entry(0x10000000, 0x1000, RAM))),
     "32-bit MMIO gap"),
    ("RAM above 4G forgotten", "valid-e820-total",
     lambda: plan(memory=6 * GiB, e820=plan_e820(qemu_pc(6 * GiB))[:-1]),
     "0xc0000000 bytes of RAM not described"),
    ("low RAM forgotten", "valid-e820-total",
     lambda: plan(e820=(E820Entry(0x1000, 0x9F000, RAM), E820Entry(0x100000, 255 * MiB, RAM))),
     "0x1000 bytes of RAM not described"),
    ("one entry", "valid-e820-entries", lambda: plan(fields=(("e820_entries", 1),)),
     "e820_entries = 1"),
    ("entry wraps", "valid-e820-entries",
     lambda: plan(e820=(*LOW_E820, E820Entry(1 << 63, 1 << 63, RESERVED),
                        E820Entry((1 << 64) - 0x1000, 0x2000, RESERVED))),
     "entry 3 0xfffffffffffff000+0x2000 wraps past 2**64"),
    ("PVH 129", "valid-e820-entries",
     lambda: plan(PVH, e820=(*plan_e820(qemu_pc(256 * MiB)),
                             *(E820Entry(FOUR_GIB + i * 0x1000, 0x1000, RESERVED)
                               for i in range(125)))),
     "memmap_entries = 129"),
    ("16-bit one entry", "valid-e820-entries",
     lambda: plan(P16, e820=(E820Entry(0x100000, 255 * MiB, RAM),)), "BIOS E820 entries = 1"),
    # ---- regions: where a loader's bytes land --------------------------------------
    ("initrd in the legacy area", "valid-blobs-in-ram", lambda: plan(initrd_addr=0xC0000),
     "initrd: 0x40000 bytes at [0xc0000, 0x100000) in the legacy video and BIOS ROM area"),
    ("initrd in the gap", "valid-blobs-in-ram", lambda: plan(initrd_addr=0xF0000000),
     "in the 32-bit MMIO gap (PCI devices' memory BARs), not stored"),
    ("initrd beyond RAM", "valid-blobs-in-ram",
     lambda: plan(memory=6 * GiB, initrd_addr=FOUR_GIB + 3 * GiB),
     "in the space beyond RAM, not stored"),
    ("initrd in the gap: not E820 RAM", "valid-initrd-in-ram",
     lambda: plan(initrd_addr=0xF0000000),
     "not inside any one E820 RAM range, reaches the 32-bit MMIO gap"),
    ("cmdline over the zero page", "valid-blobs-disjoint",
     lambda: plan(cmdline_addr=ZERO_PAGE_ADDR - 8),
     "cmdline [0x7000, 0x7006) overwritten by zero_page"),
    ("setup_data under the initrd", "valid-blobs-disjoint",
     lambda: plan(initrd_addr=0x6000000, setup_data=(SetupDataNode(9, b"\1" * 32, 0x6002000),)),
     "setup_data0 [0x6002000, 0x6002030) overwritten by initrd"),
    ("initrd above initrd_addr_max", "valid-initrd-addr-max",
     lambda: plan(memory=3 * GiB, image=IMAGE_LOW, initrd_addr=0x7FF80000),
     "last byte 0x8007ffff"),
    ("PVH module above 4G: its end", "valid-initrd-addr-max",
     lambda: plan(PVH, memory=6 * GiB, initrd_addr=5 * GiB), "module 0 ends at 0x140100000"),
    # ---- fields: what the header tells about the blobs ------------------------------
    ("ramdisk_size", "valid-initrd-fields", lambda: plan(fields=(("ramdisk_size", 0x80000),)),
     "0x80000 bytes from ramdisk_image"),
    ("ext_ramdisk_image", "valid-initrd-fields",
     lambda: plan(fields=(("ext_ramdisk_image", 1),)), "ext_ramdisk_image 0x1"),
    ("ext_ramdisk_size", "valid-initrd-fields",
     lambda: plan(fields=(("ext_ramdisk_size", 1),)), "0x100100000 bytes"),
    ("no ramdisk_image", "valid-initrd-fields", lambda: plan(fields=(("ramdisk_image", 0),)),
     "the kernel takes no initrd"),
    ("described but none loaded", "valid-initrd-fields",
     lambda: plan(initrd=None, fields=(("ramdisk_image", 0x8000000),
                                       ("ramdisk_size", 0x1000))),
     "the kernel takes 0x8000000, 0x1000 bytes"),
    ("sentinel wipes the high half", "valid-initrd-fields",
     lambda: plan(memory=6 * GiB, initrd_addr=5 * GiB, fields=(("sentinel", 0xFF),)),
     "the sentinel makes the kernel zero the ext_* halves"),
    ("PVH module above 4G", "valid-initrd-fields",
     lambda: plan(PVH, memory=6 * GiB, initrd_addr=5 * GiB),
     "module 0 paddr 0x140000000 size 0x100000 (Linux keeps the low 32 bits"),
    ("PVH module size", "valid-initrd-fields",
     lambda: plan(PVH, start_info=(("module0.size", 0x1000),)),
     "module 0 paddr 0x"),
    ("PVH no module", "valid-initrd-fields", lambda: plan(PVH, start_info=(("nr_modules", 0),)),
     "the kernel takes no initrd from nr_modules 0"),
    ("16-bit ramdisk_size", "valid-initrd-fields",
     lambda: plan(P16, fields=(("ramdisk_size", 0x1000),)), "ramdisk_size 0x1000"),
    ("ext_cmd_line_ptr", "valid-cmdline-pointer",
     lambda: plan(fields=(("ext_cmd_line_ptr", 1),)),
     f"the kernel reads its command line at {FOUR_GIB + CMDLINE_ADDR:#x}"),
    ("cmd_line_ptr 0", "valid-cmdline-pointer", lambda: plan(fields=(("cmd_line_ptr", 0),)),
     "the kernel reads its command line at 0x0"),
    ("PVH cmdline above 4G", "valid-cmdline-pointer",
     lambda: plan(PVH, memory=6 * GiB, cmdline_addr=5 * GiB),
     "cmdline_paddr 0x140000000: the kernel reads its command line at 0x40000000"),
    ("16-bit cmdline above 640K", "valid-cmdline-pointer",
     lambda: plan(P16, cmdline_addr=0x200000),
     "the 16-bit entry's command line must end below 0xa0000"),
    ("init_size", "valid-setup-header", lambda: plan(fields=(("init_size", 0x1000000),)),
     "init_size 0x1000000, the image says 0x3378000"),
    ("syssize", "valid-setup-header", lambda: plan(P32, fields=(("syssize", 1),)),
     "syssize 0x1, the image says 0x800"),
    ("kernel_alignment", "valid-setup-header",
     lambda: plan(fields=(("kernel_alignment", 0x1000),)),
     "kernel_alignment 0x1000 is not a power of two >= 0x200000"),
    ("16-bit without heap", "valid-setup-header",
     lambda: plan(P16, fields=(("loadflags", int(LoadFlags.LOADED_HIGH)),)),
     "CAN_USE_HEAP clear"),
    ("16-bit heap past its segment", "valid-setup-header",
     lambda: plan(P16, fields=(("heap_end_ptr", 0xFF00),)),
     "the heap would end at offset 0x10100"),
    ("hardware_subarch", "valid-platform-fields",
     lambda: plan(fields=(("hardware_subarch", 2),)), "hardware_subarch 0x2"),
    ("acpi_rsdp_addr", "valid-platform-fields",
     lambda: plan(PV, fields=(("acpi_rsdp_addr", 0xE0000),)), "acpi_rsdp_addr 0xe0000"),
    ("tboot_addr", "valid-platform-fields", lambda: plan(fields=(("tboot_addr", 0x1000),)),
     "no Intel TXT"),
    ("efi_info", "valid-platform-fields",
     lambda: edit_bytes(plan(), "zero_page", BOOT_PARAMS["efi_info"].offset, b"EL64"),
     "efi_info non-zero bytes"),
    ("16-bit hardware_subarch", "valid-platform-fields",
     lambda: plan(P16, fields=(("hardware_subarch", 3),)), "hardware_subarch 0x3"),
    ("setup_data len", "valid-setup-data",
     lambda: plan(setup_data=(SetupDataNode(9, b"\1" * 32, length=64),)),
     "len 0x40 says it ends at"),
    ("setup_data unchained", "valid-setup-data",
     lambda: plan(setup_data=(SetupDataNode(9, b"\1" * 32),), fields=(("setup_data", 0),)),
     "loaded but not on the chain: setup_data0"),
    ("setup_data loop", "valid-setup-data",
     lambda: edit(plan(setup_data=(SetupDataNode(9, b"\1" * 32),)), "setup_data0",
                  "setup_data", {"next": plan(setup_data=(SetupDataNode(9, b"\1" * 32),))
                                 .blob("setup_data0").addr}),
     "the chain loops back"),
    ("setup_data nowhere", "valid-setup-data", lambda: plan(fields=(("setup_data", 0x8000000),)),
     "a next pointer 0x8000000 reaches no setup_data node in RAM"),
    ("16-bit code32_start", "valid-kernel-load",
     lambda: plan(P16, fields=(("code32_start", 0x200000),)),
     "code32_start 0x200000 is not where the protected-mode code was loaded"),
    ("16-bit type_of_loader", "valid-zero-page",
     lambda: plan(P16, fields=(("type_of_loader", 0),)), "type_of_loader is 0"),
    # ---- hvm_start_info --------------------------------------------------------------
    ("magic", "valid-start-info",
     lambda: plan(PVH, start_info=(("magic", 0x1234),)),
     "magic 0x1234: Linux BUG()s"),
    ("version 0", "valid-start-info",
     lambda: plan(PVH, start_info=(("version", 0),)),
     "version 0, memmap_entries"),
    ("memmap nowhere", "valid-start-info",
     lambda: plan(PVH, start_info=(("memmap_paddr", 0x30000000),)),
     "memmap_paddr 0x30000000 reaches no table in RAM"),
    ("memmap above 1G", "valid-start-info",
     lambda: plan(PVH, memory=2 * GiB, start_info=(("memmap_paddr", 0x50000000),)),
     "the memory map [0x50000000, 0x50000060) is above the 1 GiB"),
    ("modlist nowhere", "valid-start-info",
     lambda: plan(PVH, start_info=(("modlist_paddr", 0x30000000),)),
     "modlist_paddr 0x30000000 reaches no module entry in RAM"),
    ("rsdp", "valid-start-info",
     lambda: plan(PVH, start_info=(("rsdp_paddr", 0xF0000),)),
     "rsdp_paddr 0xf0000: this machine has no ACPI tables"),
    ("no start_info at EBX", "valid-start-info",
     lambda: dataclasses.replace(plan(PVH), cpu=dataclasses.replace(plan(PVH).cpu,
                                                                   rbx=0x30000000)),
     "EBX 0x30000000 reaches no hvm_start_info in RAM"),
]


@pytest.mark.parametrize(("rule", "layout", "words"), [b[1:] for b in BREAKS],
                         ids=[b[0] for b in BREAKS])
def test_rule_breaking_layout_fails_it(rule: str, layout: Layout, words: str) -> None:
    r = results(layout())
    assert rule in r, f"{rule} did not answer"
    assert r[rule].verdict is Verdict.FAIL, r[rule]
    assert words in r[rule].observed, r[rule].observed


#: (rule, a layout close to a breaking one that obeys it)
KEEPS: list[tuple[str, str, Layout]] = [
    ("reserved in the gap and beyond", "valid-e820-ram-real",
     lambda: plan(e820=(*LOW_E820, E820Entry(0xFEC00000, 0x1000, RESERVED),
                        E820Entry(FOUR_GIB, GiB, RESERVED)))),
    ("RAM above 4G", "valid-e820-ram-real", lambda: plan(memory=6 * GiB)),
    ("reserved in the legacy area", "valid-e820-ram-real",
     lambda: plan(e820=(*LOW_E820, E820Entry(0xA0000, 0x60000, RESERVED)))),
    ("RAM split by a reservation", "valid-e820-total",
     lambda: plan(e820=(*LOW_E820, E820Entry(0x8000000, 0x1000, RESERVED)))),
    ("two entries", "valid-e820-entries", lambda: plan(e820=LOW_E820)),
    ("PVH 128", "valid-e820-entries",
     lambda: plan(PVH, e820=(*plan_e820(qemu_pc(256 * MiB)),
                             *(E820Entry(FOUR_GIB + i * 0x1000, 0x1000, RESERVED)
                               for i in range(124))))),
    ("initrd at the top of RAM", "valid-blobs-in-ram",
     lambda: plan(initrd_addr=256 * MiB - MiB)),
    ("initrd above 4G", "valid-blobs-in-ram",
     lambda: plan(memory=6 * GiB, initrd_addr=FOUR_GIB + 3 * GiB - MiB)),
    ("initrd ending at initrd_addr_max", "valid-initrd-addr-max",
     lambda: plan(memory=3 * GiB, image=IMAGE_LOW, initrd_addr=0x7FF00000)),
    ("PVH module below 4G", "valid-initrd-addr-max", lambda: plan(PVH, memory=6 * GiB)),
    ("cmdline next to the zero page", "valid-blobs-disjoint",
     lambda: plan(cmdline_addr=ZERO_PAGE_ADDR - 0x20)),
    ("initrd above 4G with ext_ramdisk_image", "valid-initrd-fields",
     lambda: plan(memory=6 * GiB, initrd_addr=5 * GiB)),
    ("size rewritten to the same", "valid-initrd-fields",
     lambda: plan(fields=(("ramdisk_size", MiB),))),
    ("cmdline above 4G with ext_cmd_line_ptr", "valid-cmdline-pointer",
     lambda: plan(memory=6 * GiB, cmdline_addr=5 * GiB)),
    ("kernel_alignment lowered to the minimum", "valid-setup-header",
     lambda: plan(fields=(("kernel_alignment", 0x200000),))),
    ("root_flags is the loader's", "valid-setup-header",
     lambda: plan(fields=(("root_flags", 0),))),
    ("16-bit heap to the segment's end", "valid-setup-header",
     lambda: plan(P16, fields=(("heap_end_ptr", 0xFE00),))),
    ("alt_mem_k is not hardware", "valid-platform-fields",
     lambda: plan(fields=(("alt_mem_k", 0x1000),))),
    ("two chained nodes", "valid-setup-data",
     lambda: plan(setup_data=(SetupDataNode(9, b"\1" * 32), SetupDataNode(0, b"\2" * 8)))),
    ("PVH start_info reserved word", "valid-start-info",
     lambda: plan(PVH, start_info=(("flags", 1),))),
]


@pytest.mark.parametrize(("rule", "layout"), [k[1:] for k in KEEPS], ids=[k[0] for k in KEEPS])
def test_rule_obeying_layout_passes_it(rule: str, layout: Layout) -> None:
    r = results(layout())
    assert rule in r and r[rule].verdict is Verdict.PASS, r.get(rule)


#: Rules whose breaking layouts live in tests/unit/test_layout_rules.py.
TESTED_THERE = {"valid-initrd-outside-kernel", "valid-initrd-aligned",
                "valid-cmdline-terminated", "valid-boot-data-outside-kernel", "valid-below-4g",
                "valid-kernel-load", "valid-zero-page", "valid-e820-entries"}


def test_every_rule_has_a_breaking_layout() -> None:
    answered = {r.name for _, _, layout, _ in BREAKS for r in check_layout(layout())}
    assert len(answered) == len(RULES)  # every rule answered somewhere above
    assert answered <= {b[1] for b in BREAKS} | TESTED_THERE


@settings(max_examples=max(300, settings().max_examples), deadline=None)
@given(boot_cases(image=IMAGE, valid_only=False),
       st.sampled_from([P64, P32, PV, P16, PVH]))
def test_any_overridden_case_plans_or_is_refused_and_every_rule_answers(
        case: BootCase, entry: EntryProtocol) -> None:
    """Overrides plan whatever they ask (or are refused with one ConfigError), and the
    rules judge whatever was planned: pass or fail, never a crash."""
    case = dataclasses.replace(case, entry=entry)
    initrd = None if case.initrd is None else FakeInitrd(MiB)
    try:
        p = plan_boot(case, IMAGE, qemu_pc(case.memory), initrd)
    except ConfigError:
        return
    verdicts = {r.verdict for r in check_layout(p)}
    assert verdicts <= {Verdict.PASS, Verdict.FAIL}


#: docs/platform-rules.md section 3: what no loader can make, each with its one error.
UNREPRESENTABLE: list[tuple[str, Callable[[], BootPlan], str]] = [
    ("past 2**64", lambda: plan(initrd_addr=(1 << 64) - 0x1000), r"ends past 2\*\*64"),
    ("wider than its field", lambda: plan(fields=(("ramdisk_size", 1 << 32),)),
     "override: ramdisk_size: 0x100000000 does not fit in 4 bytes"),
    ("16-bit: a boot_params field", lambda: plan(P16, fields=(("tboot_addr", 1),)),
     "only the setup header: tboot_addr cannot be overridden"),
    ("16-bit: a cmdline above 4 GiB", lambda: plan(P16, memory=6 * GiB, cmdline_addr=5 * GiB),
     "holds a 32-bit cmd_line_ptr: 0x140000000 cannot be written there"),
    ("PVH: boot_params fields", lambda: plan(PVH, fields=(("ramdisk_size", 1),)),
     "the PVH entry has no zero page or setup_data of ours to override"),
    ("PVH: an unknown start_info field", lambda: plan(PVH, start_info=(("bogus", 1),)),
     "hvm_start_info has no field 'bogus'"),
    ("64-bit: start_info", lambda: plan(start_info=(("magic", 1),)),
     "the 64 entry hands over boot_params, not hvm_start_info"),
    ("PVH: 161 memory-map entries",
     lambda: plan(PVH, e820=tuple(E820Entry(i << 12, 0x1000, RAM) for i in range(161))),
     "161 memory map entries do not fit the start_info page"),
    ("16-bit: 204 BIOS entries",
     lambda: plan(P16, e820=tuple(E820Entry(i << 12, 0x1000, RAM) for i in range(204))),
     "204 E820 entries do not fit our BIOS's table"),
]


@pytest.mark.parametrize(("layout", "message"), [u[1:] for u in UNREPRESENTABLE],
                         ids=[u[0] for u in UNREPRESENTABLE])
def test_unrepresentable_override_is_refused_with_one_error(layout: Callable[[], BootPlan],
                                                            message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        layout()
