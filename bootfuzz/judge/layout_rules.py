"""Validity oracles: does a plan obey the boot protocol and the platform?

The exact-match oracles (bootfuzz.judge.oracles) ask "did the kernel see what we wrote";
these ask "should anyone have written that".  They judge the plan alone, so they
answer for every boot, also one that hangs, and they flag the classic loader bugs
that a lucky boot can hide: an initrd inside the decompressor's window, RAM
claimed inside the MMIO gap, a command line without its NUL, a header field that
contradicts the blob it describes.  Every field is read back from the bytes the plan
writes (bootfuzz.judge.plan_view); the rules about the platform's regions are in
bootfuzz.judge.region_rules.  The table of regions and rules is docs/platform-rules.md.
Sources: boot.rst and shared/reference/boot-protocol.md (sections cited per rule).
"""

from __future__ import annotations

from collections.abc import Callable

from bootfuzz.abi.bootparam import (
    BOOT_PARAMS,
    LEGACY_CMDLINE_SIZE,
    LoadFlags,
    XLoadFlags,
)
from bootfuzz.abi.pvh import HVM_MODLIST_ENTRY, HVM_START_INFO, HVM_START_MAGIC_VALUE
from bootfuzz.abi.setup_data import SETUP_DATA_HEADER
from bootfuzz.case import EntryProtocol
from bootfuzz.judge.plan_view import (
    PVH_MAPPED_LIMIT,
    Handover,
    field,
    handover,
    header_bytes,
    setup_data_chain,
    start_info,
    told,
)
from bootfuzz.judge.region_rules import (
    ram_entries,
    rule_blobs_disjoint,
    rule_blobs_in_ram,
    rule_e820_adds_up,
    rule_e820_count,
    rule_e820_ram_real,
    where,
)
from bootfuzz.judge.verdict import OracleResult, judged
from bootfuzz.loader.layout import FOUR_GIB, LOW_RAM_END, PAGE_SIZE
from bootfuzz.loader.plan import Blob, BootPlan

#: A rule answers, or returns None where it does not apply (no initrd, no setup_data).
Rule = Callable[[BootPlan], OracleResult | None]
U32 = 0xFFFF_FFFF


def _span(a: int, b: int) -> str:
    return f"[{a:#x}, {b:#x})"


def _overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def _blob(plan: BootPlan, name: str) -> Blob | None:
    return next((b for b in plan.blobs if b.name == name), None)


def rule_initrd_in_ram(plan: BootPlan) -> OracleResult | None:
    """The initrd the kernel is told about lies inside one E820 RAM range and the
    machine's RAM (5.4, 5.7)."""
    name = "valid-initrd-in-ram"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    i = plan.initrd
    expected = f"{_span(i.addr, i.end)} inside one E820 RAM range and the machine's RAM"
    in_e820 = any(e.addr <= i.addr and i.end <= e.end for e in ram_entries(plan))
    outside = where(plan.platform, i.addr, i.end)
    observed = ("inside E820 RAM" if in_e820 else "not inside any one E820 RAM range") + (
        f", reaches the {outside}" if outside else ", inside the machine's RAM")
    return judged(name, in_e820 and not outside, expected, observed)


def rule_initrd_outside_kernel(plan: BootPlan) -> OracleResult | None:
    """Nothing the kernel needs may lie in [run, run + init_size) (1, init_size; 5.7)."""
    name = "valid-initrd-outside-kernel"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    i = plan.initrd
    run, end = plan.kernel_window
    what = "decompression window" if plan.case.entry is EntryProtocol.BOOT64 else "kernel image"
    expected = f"initrd {_span(i.addr, i.end)} outside the kernel's {what} {_span(run, end)}"
    hit = _overlaps(i.addr, i.end, run, end)
    observed = f"overlaps it by {min(i.end, end) - max(i.addr, run):#x} bytes" if hit else "outside"
    return judged(name, not hit, expected, observed)


def rule_initrd_below_max(plan: BootPlan) -> OracleResult | None:
    """initrd_addr_max bounds the last initrd byte, unless a 64-bit loader may go higher."""
    name = "valid-initrd-addr-max"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    i = plan.initrd
    if plan.case.entry is EntryProtocol.PVH:
        info = start_info(plan)
        if info is None or info.module0 is None:
            return judged(name, False, "PVH module below 4 GiB (32-bit address)",
                          "no module entry to read")
        mod = HVM_MODLIST_ENTRY.parse(info.module0)
        end = int(mod["paddr"]) + int(mod["size"])
        return judged(name, end <= FOUR_GIB, "PVH module below 4 GiB (32-bit address)",
                      f"module 0 ends at {end:#x}")
    limit = plan.image_header.get("initrd_addr_max", 0x37FFFFFF)
    above_ok = bool(plan.image_header.get("xloadflags", 0)
                    & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G)
    if above_ok:
        return judged(name, True,
                      f"last byte <= {limit:#x}, or anywhere (XLF_CAN_BE_LOADED_ABOVE_4G)",
                      f"last byte {i.end - 1:#x}")
    return judged(name, i.end - 1 <= limit, f"last byte <= initrd_addr_max {limit:#x}",
                  f"last byte {i.end - 1:#x}")


def rule_initrd_aligned(plan: BootPlan) -> OracleResult | None:
    """A page-aligned start: free_initrd_mem WARNs otherwise (4.2)."""
    name = "valid-initrd-aligned"
    if plan.initrd is None:
        return None  # not applicable: no initrd
    return judged(name, plan.initrd.addr % PAGE_SIZE == 0, "initrd start aligned to 4 KiB",
                  f"{plan.initrd.addr:#x}")


def rule_cmdline_terminated(plan: BootPlan) -> OracleResult | None:
    """The command line ends in a NUL within cmdline_size + 1 bytes (header 0x238)."""
    name = "valid-cmdline-terminated"
    limit = plan.image_header.get("cmdline_size", LEGACY_CMDLINE_SIZE)
    data = plan.blob("cmdline").data or b""
    nul = data.find(b"\0")
    expected = f"a NUL within the first {limit + 1} bytes"
    if nul < 0:
        return judged(name, False, expected, f"no NUL in the {len(data)} bytes written")
    return judged(name, nul <= limit, expected, f"NUL at offset {nul}")


def rule_zero_page(plan: BootPlan) -> OracleResult | None:
    """Sentinel 0, a loader type, KASLR_FLAG clear (2.1, 2.2, 5.2); the 16-bit entry's
    header has no sentinel (the setup code builds boot_params itself)."""
    name = "valid-zero-page"
    raw = header_bytes(plan)
    if raw is None:
        return None  # not applicable: the PVH entry has no loader-written zero page
    bad = []
    if handover(plan) is Handover.BOOT_PARAMS and field(raw, "sentinel"):
        bad.append(f"sentinel is {field(raw, 'sentinel'):#x}: the kernel wipes the ext_* fields")
    if plan.initrd is not None and not field(raw, "type_of_loader"):
        bad.append("type_of_loader is 0: the kernel ignores the initrd")
    if field(raw, "loadflags") & LoadFlags.KASLR_FLAG:
        bad.append("KASLR_FLAG set: kernel-internal, a loader must clear it")
    return judged(name, not bad, "sentinel 0, type_of_loader != 0, KASLR_FLAG clear",
                  "; ".join(bad) or "as expected")


def rule_boot_data_outside_kernel(plan: BootPlan) -> OracleResult | None:
    """boot_params, the command line and setup_data stay out of the kernel window (1)."""
    name = "valid-boot-data-outside-kernel"
    run, end = plan.kernel_window
    bad = [
        f"{b.name} {_span(b.addr, b.end)}"
        for b in plan.blobs
        if (b.name in ("zero_page", "cmdline", "pvh_start_info") or b.name.startswith("setup_data"))
        and _overlaps(b.addr, b.end, run, end)
    ]
    return judged(name, not bad, f"nothing the kernel reads inside {_span(run, end)}",
                  "; ".join(bad) or "as expected")


def rule_setup_data_chain(plan: BootPlan) -> OracleResult | None:
    """hdr.setup_data heads a chain of the nodes loaded, each in E820 RAM and its len
    the payload's size, ending with next = 0 (2.3)."""
    name = "valid-setup-data"
    loaded = [b for b in plan.blobs if b.name.startswith("setup_data")]
    t = told(plan)
    head = t.setup_data if t is not None else 0
    if not loaded and not head:
        return None  # not applicable: no setup_data
    nodes, stop = setup_data_chain(plan, head)
    bad = [stop] if stop else []
    ram = ram_entries(plan)
    for node in nodes:
        end = node.addr + SETUP_DATA_HEADER.size + node.length
        if not any(e.addr <= node.addr and end <= e.end for e in ram):
            bad.append(f"node {_span(node.addr, end)} not in E820 RAM")
        blob = node.blob
        if blob is not None and blob.addr == node.addr and end != blob.end:
            bad.append(f"node at {node.addr:#x}: len {node.length:#x} says it ends at "
                       f"{end:#x}, the blob ends at {blob.end:#x}")
    reached = {n.addr for n in nodes}
    missed = [b.name for b in loaded if b.addr not in reached]
    if missed:
        bad.append(f"loaded but not on the chain: {', '.join(missed)}")
    return judged(name, not bad, "every node loaded is on the chain, in RAM, its len its "
                  "payload's size; the chain ends with next = 0",
                  "; ".join(bad) or f"{len(nodes)} nodes")


def rule_above_4g(plan: BootPlan) -> OracleResult | None:
    """Only a 64-bit entry into an XLF_CAN_BE_LOADED_ABOVE_4G kernel may get data above 4 GiB.

    source: boot.rst, xloadflags bit 1; the 32-bit, 16-bit and PVH paths take 32-bit
    pointers (boot-protocol.md 3.2, 3.6).
    """
    name = "valid-below-4g"
    high = [b for b in plan.blobs if b.end > FOUR_GIB]
    if not high:
        return None
    allowed = (plan.case.entry in (EntryProtocol.BOOT64, EntryProtocol.VMLINUX)
               and bool(plan.image_header.get("xloadflags", 0)
                        & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G))
    what = ", ".join(f"{b.name} {_span(b.addr, b.end)}" for b in high)
    return judged(name, allowed, "data above 4 GiB only for a 64-bit entry into a kernel with "
                  "XLF_CAN_BE_LOADED_ABOVE_4G", f"{what} (entry {plan.case.entry.value})")


#: kernel proper's __startup_64 hangs unless its physical load address is 2 MiB
#: aligned.  source: arch/x86/kernel/head64.c; boot-protocol.md 3.4.
VMLINUX_LOAD_ALIGN = 2 << 20


def rule_kernel_load(plan: BootPlan) -> OracleResult | None:
    """The kernel sits where its own rules allow (boot.rst "relocatable_kernel",
    min_alignment, pref_address; PVH's PHYS32_RELOC note), inside E820 RAM."""
    name = "valid-kernel-load"
    entry, load, hdr = plan.case.entry, plan.kernel_load, plan.image_header
    problems = []
    if entry in (EntryProtocol.BOOT64, EntryProtocol.BOOT32):
        if not hdr.get("relocatable_kernel", 0):
            if load != plan.kernel_default_load:
                problems.append(f"not relocatable: must load at pref_address "
                                f"{plan.kernel_default_load:#x}")
        else:
            align = 1 << hdr.get("min_alignment", 0) if hdr.get("min_alignment") else (
                hdr.get("kernel_alignment", 1) or 1)
            if load % align:
                problems.append(f"not aligned to 1 << min_alignment ({align:#x})")
    elif entry is EntryProtocol.REAL16:
        raw = header_bytes(plan)
        code32 = field(raw, "code32_start") if raw is not None else load
        if code32 != load:
            problems.append(f"code32_start {code32:#x} is not where the protected-mode code "
                            "was loaded (the setup code jumps there)")
    elif entry is EntryProtocol.VMLINUX:
        if load % VMLINUX_LOAD_ALIGN:
            problems.append(f"not {VMLINUX_LOAD_ALIGN:#x}-aligned (__startup_64 hangs)")
    elif entry is EntryProtocol.PVH and load != plan.kernel_default_load:
        reloc = plan.pvh_reloc
        if reloc is None:
            problems.append("moved from p_paddr, but the kernel has no PHYS32_RELOC note")
        else:
            shift = load - plan.kernel_default_load
            if shift % reloc.align:
                problems.append(f"moved by {shift:#x}, not a multiple of the note's "
                                f"alignment {reloc.align:#x}")
            if not reloc.min_addr <= load <= reloc.max_addr:
                problems.append(f"outside the note's [{reloc.min_addr:#x}, {reloc.max_addr:#x}]")
    run, end = plan.kernel_window
    if not any(e.addr <= run and end <= e.end for e in ram_entries(plan)):
        problems.append(f"its window {_span(run, end)} is not inside one E820 RAM range")
    return judged(name, not problems, f"a load address the kernel's rules allow, window in RAM "
                  f"(entry {entry.value})", f"{load:#x}: " + ("; ".join(problems) or "as expected"))


def _told_initrd_text(plan: BootPlan) -> str:
    """The fields the kernel computes the initrd from, as written."""
    raw = header_bytes(plan)
    if raw is None:
        info = start_info(plan)
        if info is None:
            return "no hvm_start_info"
        if not info.fields["nr_modules"] or info.module0 is None:
            return f"nr_modules {info.fields['nr_modules']}, no module entry read"
        mod = HVM_MODLIST_ENTRY.parse(info.module0)
        return (f"module 0 paddr {int(mod['paddr']):#x} size {int(mod['size']):#x} "
                "(Linux keeps the low 32 bits of each)")
    text = f"ramdisk_image {field(raw, 'ramdisk_image'):#x}, ramdisk_size " \
           f"{field(raw, 'ramdisk_size'):#x}"
    if handover(plan) is Handover.BOOT_PARAMS:
        text += (f", ext_ramdisk_image {field(raw, 'ext_ramdisk_image'):#x}, ext_ramdisk_size "
                 f"{field(raw, 'ext_ramdisk_size'):#x}")
        if field(raw, "sentinel"):
            text += " (the sentinel makes the kernel zero the ext_* halves)"
    return text


def rule_initrd_fields(plan: BootPlan) -> OracleResult | None:
    """The initrd the kernel computes from the header (ramdisk_image/size and their ext_*
    high halves, or PVH's module 0) is exactly the initrd loaded (5.1)."""
    name = "valid-initrd-fields"
    blob = _blob(plan, "initrd")
    t = told(plan)
    taken = t.initrd if t is not None else None
    if blob is None and taken is None:
        return None  # not applicable: no initrd loaded and none described
    expected = (f"the initrd as loaded: {blob.addr:#x}, {blob.size:#x} bytes" if blob
                else "no initrd described (none loaded)")
    got = (f"the kernel takes {taken[0]:#x}, {taken[1]:#x} bytes" if taken
           else "the kernel takes no initrd")
    ok = blob is not None and taken == (blob.addr, blob.size)
    return judged(name, ok, expected, f"{got} from {_told_initrd_text(plan)}")


def rule_cmdline_pointer(plan: BootPlan) -> OracleResult | None:
    """The command-line pointer the kernel computes (cmd_line_ptr | ext_cmd_line_ptr << 32,
    or PVH's 32-bit cmdline_paddr) is where the command line was loaded; the 16-bit
    entry's lies below 0xA0000 (boot.rst, cmd_line_ptr)."""
    name = "valid-cmdline-pointer"
    blob = _blob(plan, "cmdline")
    t = told(plan)
    if blob is None:
        return None
    expected = f"{blob.addr:#x}, where the command line was loaded"
    if t is None:
        return judged(name, False, expected, "no hvm_start_info to read the pointer from")
    raw = header_bytes(plan)
    if raw is None:
        info = start_info(plan)
        written = f"cmdline_paddr {info.fields['cmdline_paddr']:#x}" if info else "?"
    else:
        written = f"cmd_line_ptr {field(raw, 'cmd_line_ptr'):#x}"
        if handover(plan) is Handover.BOOT_PARAMS:
            written += f", ext_cmd_line_ptr {field(raw, 'ext_cmd_line_ptr'):#x}"
            if field(raw, "sentinel"):
                written += " (wiped by the sentinel)"
    problems = []
    if t.cmdline != blob.addr:
        problems.append(f"the kernel reads its command line at {t.cmdline:#x}")
    if handover(plan) is Handover.SETUP_HEADER and blob.end > LOW_RAM_END:
        problems.append(f"the 16-bit entry's command line must end below {LOW_RAM_END:#x}")
    return judged(name, not problems, expected,
                  f"{written}: " + ("; ".join(problems) or "as expected"))


#: setup_header fields the kernel only *reads* from boot_params after the loader
#: copied them from the image (boot.rst "R"): they must hold the image's values.
#: The decompressor itself reads init_size and kernel_alignment from the loader's
#: copy (arch/x86/boot/compressed/head_64.S); the rest describe the image.
HEADER_READ_ONLY = (
    "setup_sects", "syssize", "boot_flag", "jump", "header", "version", "start_sys_seg",
    "kernel_version", "initrd_addr_max", "relocatable_kernel", "min_alignment", "xloadflags",
    "cmdline_size", "payload_offset", "payload_length", "pref_address", "init_size",
    "handover_offset", "kernel_info_offset",
)
#: boot.rst's heap_end_ptr is "the offset of the end of the setup stack/heap, minus 0x200";
#: the setup code's segment is 64 KiB.
HEAP_END_PTR_BIAS = 0x200
SETUP_SEGMENT = 0x10000


def rule_setup_header(plan: BootPlan) -> OracleResult | None:
    """The header the loader hands over is the image's, but for what a loader writes:
    read-only fields copied unchanged, kernel_alignment a power of two no lower than
    1 << min_alignment, and for the 16-bit entry a valid setup heap (CAN_USE_HEAP)."""
    name = "valid-setup-header"
    raw = header_bytes(plan)
    if raw is None or not plan.image_header:
        return None  # not applicable: PVH hands over no header
    image = plan.image_header
    bad = [f"{n} {field(raw, n):#x}, the image says {image[n]:#x}"
           for n in HEADER_READ_ONLY if n in image and field(raw, n) != image[n]]
    align = field(raw, "kernel_alignment")
    minimum = 1 << image.get("min_alignment", 0) if image.get("relocatable_kernel") else 1
    if image.get("kernel_alignment") and (align & (align - 1) or align < minimum):
        bad.append(f"kernel_alignment {align:#x} is not a power of two >= {minimum:#x} "
                   "(the decompressor aligns its run address to it)")
    if handover(plan) is Handover.SETUP_HEADER:
        heap_end = field(raw, "heap_end_ptr") + HEAP_END_PTR_BIAS
        setup = _blob(plan, "setup")
        if not field(raw, "loadflags") & LoadFlags.CAN_USE_HEAP:
            bad.append("CAN_USE_HEAP clear: the setup code runs without a heap "
                       "('Ancient bootloader')")
        elif setup is not None and not setup.size < heap_end <= SETUP_SEGMENT:
            bad.append(f"heap_end_ptr {field(raw, 'heap_end_ptr'):#x}: the heap would end at "
                       f"offset {heap_end:#x}, not between the setup code's end "
                       f"{setup.size:#x} and {SETUP_SEGMENT:#x}")
    return judged(name, not bad, "the image's read-only fields, a kernel_alignment the "
                  "kernel accepts", "; ".join(bad) or "as expected")


#: boot_params fields that describe hardware or firmware this platform does not have:
#: a loader must leave them zero.  The harness machine is a PC (hardware_subarch 0)
#: without EFI, TXT, OLPC firmware, SEV-SNP or ACPI tables (our firmware publishes
#: none).  source: boot.rst (hardware_subarch), zero-page.rst, boot-protocol.md 2.1.
ABSENT_HARDWARE: dict[str, str] = {
    "hardware_subarch": "0 is X86_SUBARCH_PC, this machine",
    "hardware_subarch_data": "only a non-PC subarchitecture has data",
    "tboot_addr": "no Intel TXT (tboot) here",
    "acpi_rsdp_addr": "no ACPI tables here: the pointer reaches no RSDP",
    "efi_info": "not an EFI boot: efi_loader_signature turns EFI on",
    "olpc_ofw_header": "no OLPC Open Firmware here",
    "cc_blob_address": "no SEV-SNP here",
}


def rule_platform_fields(plan: BootPlan) -> OracleResult | None:
    """Fields that describe hardware or firmware the platform lacks are zero."""
    name = "valid-platform-fields"
    raw = header_bytes(plan)
    if raw is None:
        return None  # PVH: valid-start-info judges rsdp_paddr
    names = [n for n in ABSENT_HARDWARE
             if handover(plan) is Handover.BOOT_PARAMS or n.startswith("hardware_subarch")]
    bad = []
    for n in names:
        value = BOOT_PARAMS[n].decode(raw)
        if value if isinstance(value, int) else any(value):
            shown = f"{value:#x}" if isinstance(value, int) else "non-zero bytes"
            bad.append(f"{n} {shown} ({ABSENT_HARDWARE[n]})")
    return judged(name, not bad, f"zero: {', '.join(names)}", "; ".join(bad) or "all zero")


def rule_start_info(plan: BootPlan) -> OracleResult | None:
    """hvm_start_info as Linux's PVH entry needs it: the magic, version >= 1 with a
    memory map, every table it points at readable below 1 GiB, no RSDP on a machine
    without ACPI (boot-protocol.md 3.6, enlighten.c)."""
    name = "valid-start-info"
    if handover(plan) is not Handover.START_INFO:
        return None
    expected = ("magic 0x336ec578, version >= 1, memmap and modules readable below 1 GiB, "
                "rsdp_paddr 0")
    info = start_info(plan)
    ebx = plan.cpu.rbx
    if info is None:
        return judged(name, False, expected, f"EBX {ebx:#x} reaches no hvm_start_info in RAM")
    f = info.fields
    bad = []
    if f["magic"] != HVM_START_MAGIC_VALUE:
        bad.append(f"magic {f['magic']:#x}: Linux BUG()s")
    if f["version"] < 1 or not f["memmap_entries"]:
        bad.append(f"version {f['version']}, memmap_entries {f['memmap_entries']}: without a "
                   "memory map Linux BUG()s outside Xen")
    tables = [("hvm_start_info", ebx, HVM_START_INFO.size)]
    if f["memmap_entries"]:
        tables.append(("the memory map", f["memmap_paddr"], 24 * f["memmap_entries"]))
        if info.memmap is None:
            bad.append(f"memmap_paddr {f['memmap_paddr']:#x} reaches no table in RAM")
    if f["nr_modules"]:
        tables.append(("the module list", f["modlist_paddr"],
                       HVM_MODLIST_ENTRY.size * f["nr_modules"]))
        if info.module0 is None:
            bad.append(f"modlist_paddr {f['modlist_paddr']:#x} reaches no module entry in RAM")
    bad += [f"{what} {_span(addr, addr + size)} is above the 1 GiB Linux maps at entry"
            for what, addr, size in tables if addr + size > PVH_MAPPED_LIMIT]
    if f["rsdp_paddr"]:
        bad.append(f"rsdp_paddr {f['rsdp_paddr']:#x}: this machine has no ACPI tables")
    return judged(name, not bad, expected, "; ".join(bad) or "as expected")


RULES: tuple[Rule, ...] = (
    rule_initrd_in_ram,
    rule_initrd_outside_kernel,
    rule_initrd_below_max,
    rule_initrd_aligned,
    rule_e820_ram_real,
    rule_e820_adds_up,
    rule_e820_count,
    rule_cmdline_terminated,
    rule_zero_page,
    rule_boot_data_outside_kernel,
    rule_setup_data_chain,
    rule_above_4g,
    rule_kernel_load,
    rule_blobs_in_ram,
    rule_blobs_disjoint,
    rule_initrd_fields,
    rule_cmdline_pointer,
    rule_setup_header,
    rule_platform_fields,
    rule_start_info,
)


def check_layout(plan: BootPlan) -> list[OracleResult]:
    """The answers of every rule that applies to *plan*."""
    return [r for rule in RULES if (r := rule(plan)) is not None]
