"""The UEFI memory map a kernel booted through its EFI stub printed, and what follows from it.

On an EFI boot nobody hands the kernel a BIOS E820 table: the EFI stub asks the firmware
for its memory map (GetMemoryMap, at ExitBootServices), derives the E820 table in
``boot_params`` from it and passes the map itself on (``efi_info``).  With ``efi=debug``
the kernel prints that map (``efi: mem00: [Conventional|...] range=[...]``) before its
runtime map.  Three things can then be judged, by whoever started the stub (OVMF's own
loader, systemd-boot, GRUB's handover):

- the map against the platform: every RAM descriptor inside the machine's RAM, and all of
  the machine's RAM described (less what the platform never maps: the legacy hole);
- the kernel's ``BIOS-e820`` print against the E820 the stub derives from the map
  (drivers/firmware/efi/libstub/x86-stub.c setup_e820(), as read: which EFI type becomes
  which E820 type, adjacent ranges of one type merged);
- the initrd: loaders that go through the stub allocate it as ``EfiLoaderData`` pages at
  or below the kernel's ``initrd_addr_max`` (the stub's soft limit), so the RAMDISK lies in
  one Loader Data descriptor.

Pure: descriptors in, :class:`OracleResult` out.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bootfuzz.abi.e820 import E820Type
from bootfuzz.judge.patterns import line_body
from bootfuzz.judge.promises import U64_MAX
from bootfuzz.judge.verdict import OracleResult, judged, unknown
from bootfuzz.loader.layout import PAGE_SIZE, align_up
from bootfuzz.loader.platform import Platform


class EfiType(enum.StrEnum):
    """EFI memory types by the names the kernel prints (efi_md_typeattr_format())."""

    RESERVED = "Reserved"
    LOADER_CODE = "Loader Code"
    LOADER_DATA = "Loader Data"
    BOOT_CODE = "Boot Code"
    BOOT_DATA = "Boot Data"
    RUNTIME_CODE = "Runtime Code"
    RUNTIME_DATA = "Runtime Data"
    CONVENTIONAL = "Conventional"
    UNUSABLE = "Unusable"
    ACPI_RECLAIM = "ACPI Reclaim"
    ACPI_NVS = "ACPI Mem NVS"
    MMIO = "MMIO"
    MMIO_PORT = "MMIO Port"
    PAL_CODE = "PAL Code"
    PERSISTENT = "Persistent"
    UNACCEPTED = "Unaccepted"


#: What the EFI stub makes of each type in the E820 table (setup_e820(), as read).
#: A type missing here is left out of the table.
STUB_E820: dict[EfiType, E820Type] = {
    EfiType.RESERVED: E820Type.RESERVED,
    EfiType.RUNTIME_CODE: E820Type.RESERVED,
    EfiType.RUNTIME_DATA: E820Type.RESERVED,
    EfiType.MMIO: E820Type.RESERVED,
    EfiType.MMIO_PORT: E820Type.RESERVED,
    EfiType.PAL_CODE: E820Type.RESERVED,
    EfiType.UNUSABLE: E820Type.UNUSABLE,
    EfiType.ACPI_RECLAIM: E820Type.ACPI,
    EfiType.LOADER_CODE: E820Type.RAM,
    EfiType.LOADER_DATA: E820Type.RAM,
    EfiType.BOOT_CODE: E820Type.RAM,
    EfiType.BOOT_DATA: E820Type.RAM,
    EfiType.CONVENTIONAL: E820Type.RAM,
    EfiType.ACPI_NVS: E820Type.NVS,
    EfiType.PERSISTENT: E820Type.PMEM,
}

#: Descriptors that are not RAM: device windows the firmware maps for runtime services.
NOT_RAM = frozenset({EfiType.MMIO, EfiType.MMIO_PORT})

#: How the kernel prints an E820 type (as judge.observation reads ``BIOS-e820`` lines).
E820_WORDS: dict[E820Type, str] = {
    E820Type.RAM: "usable",
    E820Type.RESERVED: "reserved",
    E820Type.ACPI: "ACPI data",
    E820Type.NVS: "ACPI NVS",
    E820Type.UNUSABLE: "unusable",
    E820Type.PMEM: "persistent (type 7)",
}

#: x86 (efi_print_memmap()): "efi: mem07: [Conventional|...|WB|WT|WC|UC] range=[A-B] (..MB)".
_DESCRIPTOR = re.compile(
    r"efi: mem(\d+): \[([^|\]]+)\|([^\]]*)\] range=\[0x([0-9a-f]+)-0x([0-9a-f]+)\]")
#: arm64/riscv64 (drivers/firmware/efi/efi-init.c reserve_regions(), under efi=debug): a
#: heading, then "efi:   0xA-0xB [Conventional|...|WB|  |  |  ]" per descriptor.
_DT_HEADING = "efi: Processing EFI memory map:"
_DT_DESCRIPTOR = re.compile(r"efi:\s+0x([0-9a-f]+)-0x([0-9a-f]+) \[([^|\]]+)\|([^\]]*)\]")
#: The attributes (efi_md_typeattr_format()'s columns) that make a descriptor memory to
#: efi-init.c's is_memory(): the kernel maps it cacheable in some way.
MEMORY_ATTRIBUTES = frozenset({"WB", "WT", "WC"})
#: efi-init.c is_usable_memory(): free after ExitBootServices(), System RAM when also WB;
#: any other memory descriptor is added to memblock but marked no-map.
USABLE_TYPES = frozenset({EfiType.LOADER_CODE, EfiType.LOADER_DATA, EfiType.ACPI_RECLAIM,
                          EfiType.BOOT_CODE, EfiType.BOOT_DATA, EfiType.CONVENTIONAL,
                          EfiType.PERSISTENT})


def _attributes(columns: str) -> frozenset[str]:
    return frozenset(w.strip() for w in columns.split("|") if w.strip())


@dataclass(frozen=True)
class EfiDescriptor:
    index: int
    type_text: str  # as printed, stripped
    start: int
    end: int  # inclusive, as printed
    attributes: frozenset[str] = frozenset()  # the columns printed: "RUN", "WB", ...

    @property
    def type(self) -> EfiType | None:
        try:
            return EfiType(self.type_text)
        except ValueError:
            return None

    @property
    def size(self) -> int:
        return self.end + 1 - self.start


def parse_efi_memmap(lines: Iterable[str]) -> tuple[EfiDescriptor, ...]:
    """The boot-time UEFI memory map a console printed: x86's first ``efi: memNN:``
    listing (the runtime map printed later starts again at mem00 and is not taken), or
    the device-tree architectures' listing under "Processing EFI memory map:"."""
    out: list[EfiDescriptor] = []
    in_dt_listing = False
    for line in lines:
        body = line_body(line)
        if in_dt_listing:
            d = _DT_DESCRIPTOR.search(body)
            if d is None:
                break
            out.append(EfiDescriptor(len(out), d.group(3).strip(), int(d.group(1), 16),
                                     int(d.group(2), 16), _attributes(d.group(4))))
            continue
        if _DT_HEADING in body and not out:
            in_dt_listing = True
            continue
        m = _DESCRIPTOR.search(body)
        if m is None:
            continue
        index = int(m.group(1))
        if index != len(out):
            if out:
                break
            continue
        out.append(EfiDescriptor(index, m.group(2).strip(), int(m.group(4), 16),
                                 int(m.group(5), 16), _attributes(m.group(3))))
    return tuple(out)


def efi_memblock(descriptors: Sequence[EfiDescriptor]) -> list[tuple[int, int, bool]]:
    """The memory a device-tree architecture's kernel takes from the UEFI map
    (efi-init.c reserve_regions(): the DT's memory nodes are dropped, each memory
    descriptor added, those not usable marked no-map), as memblock keeps it: sorted,
    adjacent ranges of the same kind merged.  (start, inclusive end, usable)."""
    out: list[tuple[int, int, bool]] = []
    for d in sorted(descriptors, key=lambda d: d.start):
        if not d.attributes & MEMORY_ATTRIBUTES:
            continue
        usable = d.type in USABLE_TYPES and "WB" in d.attributes
        if out and out[-1][2] == usable and out[-1][1] + 1 == d.start:
            out[-1] = (out[-1][0], d.end, usable)
        else:
            out.append((d.start, d.end, usable))
    return out


def _ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return "\n".join(_fmt(s, e) for s, e in ranges) or "(none)"


def judge_efi_memblock(descriptors: Sequence[EfiDescriptor],
                       node_ranges: Sequence[tuple[int, int]]) -> OracleResult:
    """The kernel's "Early memory node ranges" are the UEFI map's memory, split where
    usable and no-map ranges meet (efi_memblock)."""
    name = "efi-memblock"
    want = [(s, e) for s, e, _ in efi_memblock(descriptors)]
    if not descriptors:
        return unknown(name, "(the memory of the UEFI map)",
                       "no UEFI memory map in the log (efi=debug missing, or not an EFI boot)")
    if not node_ranges:
        return unknown(name, _ranges(want), "no 'Early memory node ranges' in the log")
    return judged(name, list(node_ranges) == want, _ranges(want), _ranges(node_ranges),
                  "against the UEFI memory map the kernel printed")


def judge_efi_system_ram(descriptors: Sequence[EfiDescriptor],
                         system_ram: Sequence[tuple[int, int]] | None) -> OracleResult:
    """/proc/iomem's System RAM is the UEFI map's usable memory (the no-map ranges are
    "reserved" there: arm64's request_standard_resources())."""
    name = "iomem-ram"
    want = [(s, e) for s, e, usable in efi_memblock(descriptors) if usable]
    if not descriptors:
        return unknown(name, "(the usable memory of the UEFI map)",
                       "no UEFI memory map in the log (efi=debug missing, or not an EFI boot)")
    if system_ram is None:
        return unknown(name, _ranges(want), "no agent report")
    return judged(name, list(system_ram) == want, _ranges(want), _ranges(system_ram),
                  "against the UEFI memory map the kernel printed")


def stub_e820(descriptors: Sequence[EfiDescriptor]) -> list[tuple[int, int, str]]:
    """The E820 table the stub derives from *descriptors*, adjacent same-type ranges
    merged as the kernel's sanitizer prints them: (start, inclusive end, words)."""
    ranges: list[tuple[int, int, E820Type]] = []
    for d in sorted(descriptors, key=lambda d: d.start):
        t = d.type
        if t is None or t not in STUB_E820:
            continue
        e820 = STUB_E820[t]
        if ranges and ranges[-1][2] == e820 and ranges[-1][1] + 1 == d.start:
            ranges[-1] = (ranges[-1][0], d.end, e820)
        else:
            ranges.append((d.start, d.end, e820))
    return [(s, e, E820_WORDS.get(t, f"type {int(t)}")) for s, e, t in ranges]


def _fmt(start: int, end: int) -> str:
    return f"[mem {start:#012x}-{end:#012x}]"


def _as_kernel_treats(words: str) -> str:
    """An E820 type as the kernel uses it: a type it does not know is reserved
    (arch/x86/kernel/e820.c: only RAM is memory; the ACPI spec leaves other numbers
    reserved), so "type 20" counts as "reserved"."""
    return words if words in E820_WORDS.values() or words == "soft reserved" else "reserved"


def judge_efi_e820(descriptors: Sequence[EfiDescriptor],
                   printed: Sequence[tuple[int, int, str]],
                   loader_made: bool = False) -> OracleResult:
    """The kernel's BIOS-e820 print is the E820 the stub derives from the printed map.

    *loader_made*: the loader, not the stub, wrote the E820 (GRUB on EFI); it is held
    to the stub's rules as the kernel treats the types, and a type number the kernel
    does not know (GRUB's own memory types) is named in the detail.
    """
    name = "efi-e820"
    if not descriptors:
        return unknown(name, "(the E820 derived from the EFI map)",
                       "no 'efi: memNN:' lines (efi=debug missing, or not an EFI boot)")
    want = stub_e820(descriptors)
    expected = "\n".join(f"{_fmt(s, e)} {t}" for s, e, t in want)
    if not printed:
        return unknown(name, expected, "no BIOS-e820 lines in the log")
    observed = "\n".join(f"{_fmt(s, e)} {t}" for s, e, t in printed)
    if not loader_made:
        return judged(name, list(printed) == want, expected, observed)
    merged: list[tuple[int, int, str]] = []
    for s, e, t in printed:
        t = _as_kernel_treats(t)
        if merged and merged[-1][2] == t and merged[-1][1] + 1 == s:
            merged[-1] = (merged[-1][0], e, t)
        else:
            merged.append((s, e, t))
    odd = sorted({t for _, _, t in printed if _as_kernel_treats(t) != t})
    detail = (f"types the kernel does not know, treated as reserved: {', '.join(odd)}"
              if odd else "")
    return judged(name, merged == want, expected, observed, detail)


def judge_efi_ram(descriptors: Sequence[EfiDescriptor], platform: Platform | None,
                  withheld: Sequence[tuple[str, int, int]] | None) -> OracleResult:
    """Every RAM descriptor lies in the platform's RAM, and together they describe all
    of it but what the platform never maps (*withheld*: the legacy hole on a PC)."""
    name = "efi-ram"
    if platform is None or withheld is None:
        return unknown(name, "(nothing promised)", "the target promised no memory layout")
    kept = sum(abs(e - s) for _, s, e in withheld)
    want = platform.memory - kept
    names = ", ".join(f"{n} {abs(e - s):#x}" for n, s, e in withheld)
    expected = (f"{want:#x} bytes of RAM descriptors ({platform.memory:#x} less {names}), "
                "none outside the platform's RAM")

    def outside(d: EfiDescriptor) -> list[str]:
        return [r.kind.value for r in platform.regions_touched(d.start, d.end + 1)
                if not r.ram]

    return _judge_ram(descriptors, want, expected, outside)


def judge_efi_ram_range(descriptors: Sequence[EfiDescriptor], start: int,
                        size: int) -> OracleResult:
    """Every RAM descriptor lies in the machine's one RAM range [start, start + size),
    and together they describe all of it (QEMU's virt machine: no holes of its own)."""
    expected = (f"{size:#x} bytes of RAM descriptors, none outside the machine's RAM "
                f"{_fmt(start, start + size - 1)}")

    def outside(d: EfiDescriptor) -> list[str]:
        return [] if start <= d.start and d.end < start + size else ["space past RAM"]

    return _judge_ram(descriptors, size, expected, outside)


def _judge_ram(descriptors: Sequence[EfiDescriptor], want: int, expected: str,
               outside: Callable[[EfiDescriptor], list[str]]) -> OracleResult:
    name = "efi-ram"
    if not descriptors:
        return unknown(name, expected, "no UEFI memory map in the log (efi=debug missing?)")
    ram = [d for d in descriptors if d.type not in NOT_RAM]
    problems = []
    for d in ram:
        where = outside(d)
        if where:
            problems.append(f"mem{d.index:02} {d.type_text} {_fmt(d.start, d.end)} in the "
                            + ", the ".join(where))
    spans = sorted((d.start, d.end) for d in ram)
    for (_s0, e0), (s1, _e1) in itertools.pairwise(spans):
        if s1 <= e0:
            problems.append(f"descriptors overlap at {s1:#x}")
    got = sum(d.size for d in ram)
    if got != want:
        problems.append(f"{abs(got - want):#x} bytes {'more' if got > want else 'less'}")
    observed = f"{got:#x} bytes in {len(ram)} RAM descriptors"
    return judged(name, not problems, expected, observed, "; ".join(problems))


def judge_efi_initrd(descriptors: Sequence[EfiDescriptor], ramdisk: tuple[int, int] | None,
                     initrd_size: int, limit: int, rule: str = "") -> OracleResult:
    """The initrd lies in one EfiLoaderData allocation (what a loader allocates through
    UEFI), its data ending at or below *limit* (the loader's rule, inclusive)."""
    name = "ramdisk-rule"
    bound = "no limit" if limit >= U64_MAX else f"at or below {limit:#x}"
    expected = (f"RAMDISK of {align_up(initrd_size, PAGE_SIZE):#x} bytes inside one Loader "
                f"Data descriptor, data ending {bound}" + (f" ({rule})" if rule else ""))
    if not descriptors:
        return unknown(name, expected, "no 'efi: memNN:' lines (efi=debug missing?)")
    if ramdisk is None:
        return unknown(name, expected, "no RAMDISK line")
    start, end = ramdisk
    holder = [d for d in descriptors if d.start <= start and end <= d.end]
    observed = f"RAMDISK: {_fmt(start, end)} in " + (
        f"mem{holder[0].index:02} {holder[0].type_text} {_fmt(holder[0].start, holder[0].end)}"
        if holder else "no single descriptor")
    problems = []
    if not holder or holder[0].type is not EfiType.LOADER_DATA:
        problems.append("not inside a Loader Data allocation")
    last = start + initrd_size - 1
    if last > limit:
        problems.append(f"data ends at {last:#x}, above {limit:#x}")
    return judged(name, not problems, expected, observed, "; ".join(problems))


__all__ = ["EfiDescriptor", "EfiType", "efi_memblock", "judge_efi_e820", "judge_efi_initrd",
           "judge_efi_memblock", "judge_efi_ram", "judge_efi_ram_range", "judge_efi_system_ram",
           "parse_efi_memmap", "stub_e820"]
