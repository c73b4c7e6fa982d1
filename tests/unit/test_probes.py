"""Probes: the images (bootfuzz.guest.probes; our loader takes them), the generated
include, the report parser and the checker (bootfuzz.judge.probe), on synthetic reports
built from real plans."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from bootfuzz.abi.bootparam import BOOT_PARAMS, BOOT_PARAMS_SIZE, E820_TABLE_OFFSET, SETUP_HEADER
from bootfuzz.abi.e820 import E820Entry
from bootfuzz.abi.pvh import HVM_MODLIST_ENTRY, HVM_START_INFO
from bootfuzz.case import BootCase, EntryProtocol
from bootfuzz.compression import Compression
from bootfuzz.errors import ConfigError, HarnessBuildError
from bootfuzz.guest import harness, probes
from bootfuzz.guest.probes import (
    BIOS_16,
    PROBE16_OFFSET,
    PROBE16_PAGE_BYTES,
    PROBE_CMDLINE_BYTES,
    PROBE_ENTRIES,
    PROBE_LINE_PREFIX,
    PROBE_RAMDISK_EDGE,
    PVH_LOAD_ADDR,
    REGS_16,
    REGS_64,
    REGS_PVH,
    SETUP_HEADER_REPORTED,
    ProbeImages,
    build_probes,
    probes_include,
)
from bootfuzz.judge.probe import ProbeReport, ProbeReportError, check_probe, parse_probe_report
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.kernel.image import KernelImage, load_kernel_image
from bootfuzz.kernel.payload import detect_compression
from bootfuzz.kernel.vmlinux import read_vmlinux
from bootfuzz.loader.layout import PAGE_SIZE, GiB, MiB
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.loader.real16 import REAL_MODE_BASE, bios_memory
from bootfuzz.run.probe import PROBE_CMDLINE, initrd_edges, run_probe
from tests.fakes import FakeInitrd

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("gcc", "as", "ld")),
    reason="gcc/binutils not installed",
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def images(cache: Path) -> ProbeImages:
    return build_probes(cache)


@pytest.fixture(scope="module")
def image(images: ProbeImages) -> KernelImage:
    return load_kernel_image(images.bzimage)


INITRD_BYTES = bytes(range(256)) * 20 + b"the last bytes!!"


@pytest.fixture(scope="module")
def initrd(tmp_path_factory: pytest.TempPathFactory) -> FakeInitrd:
    path = tmp_path_factory.mktemp("initrd") / "initrd.img"
    path.write_bytes(INITRD_BYTES)
    return FakeInitrd(len(INITRD_BYTES), path)


def make_plan(image: KernelImage, entry: EntryProtocol, memory: int = 256 * MiB,
              initrd: FakeInitrd | None = None, cmdline: str = PROBE_CMDLINE) -> BootPlan:
    case = BootCase(kernel="probe", memory=memory, cmdline=cmdline, entry=entry)
    return plan_boot(case, image, qemu_pc(memory), initrd)


def check_read(plan: BootPlan, report: ProbeReport) -> list[OracleResult]:
    """check_probe with the initrd's edges read back from the plan's file, as run_probe does."""
    return check_probe(plan, report, edges=initrd_edges(plan))


# ---- the image ----


def test_build_probes_bzimage_is_accepted_by_our_parser(
    images: ProbeImages, image: KernelImage
) -> None:
    assert image.has_64bit_entry
    assert image.pref_address == probes.PROBE_PREF_ADDRESS == 0x1000000
    assert image.init_size == probes.PROBE_INIT_SIZE
    assert image.cmdline_size == 2047
    assert image.initrd_addr_max == 0x7FFFFFFF
    assert image.version == 0x020F
    assert image.relocatable
    assert image.kernel_alignment == 0x200000
    assert image.kernel_version_string == probes.PROBE_VERSION_STRING.decode()
    # The header reaches kernel_info_offset: the jump's displacement says so.
    assert len(image.header.raw) == SETUP_HEADER["kernel_info_offset"].end - 0x1F1
    probe64 = images.probe64.read_bytes()
    assert image.protected_mode_code[: len(probe64)] == probe64


def test_build_probes_16bit_entry_reaches_the_16bit_probe(
    images: ProbeImages, image: KernelImage
) -> None:
    """The setup entry's short jump ends at the header's end; the near jump there
    lands on the 16-bit probe, which the image carries at PROBE16_OFFSET."""
    raw = image.data
    jump_end = 0x202 + raw[0x201]
    assert jump_end == SETUP_HEADER["kernel_info_offset"].end
    assert raw[jump_end] == 0xE9  # jmp rel16
    target = (jump_end + 3 + int.from_bytes(raw[jump_end + 1 : jump_end + 3], "little")) & 0xFFFF
    assert target == PROBE16_OFFSET
    code = images.probe16.read_bytes()
    assert raw[PROBE16_OFFSET : PROBE16_OFFSET + len(code)] == code
    assert code[:3] == b"\x2e\x89\x26"  # movw %sp, %cs:disp16: SP is saved first
    assert PROBE16_OFFSET + len(code) <= image.protected_mode_offset


def test_build_probes_64bit_entry_is_code_at_0x200(images: ProbeImages) -> None:
    code = images.probe64.read_bytes()
    # movq %rsi, disp32(%rip): the first thing startup_64 does.
    assert code[0x200:0x203] == b"\x48\x89\x35"


def test_build_probes_payload_is_the_uncompressed_pvh_elf(
    images: ProbeImages, image: KernelImage
) -> None:
    elf = images.pvh_elf.read_bytes()
    assert image.payload == elf
    assert detect_compression(image.payload) is Compression.NONE
    assert image.vmlinux == elf


def test_build_probes_read_vmlinux_finds_pvh_entry_at_symbol(images: ProbeImages) -> None:
    elf = images.pvh_elf.read_bytes()
    info = read_vmlinux(elf)
    with images.pvh_elf.open("rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        assert symtab is not None
        (symbol,) = symtab.get_symbol_by_name("pvh_entry")  # type: ignore[attr-defined]
        pvh_entry = symbol["st_value"]
    assert info.pvh_entry == pvh_entry == PVH_LOAD_ADDR
    assert info.elfclass == 64
    assert info.machine == "EM_X86_64"
    assert [s.p_paddr for s in info.segments] == [PVH_LOAD_ADDR, PVH_LOAD_ADDR + PAGE_SIZE]
    text, data = info.segments
    assert text.p_paddr <= pvh_entry < text.p_paddr + text.p_filesz
    assert data.p_memsz > data.p_filesz > 0  # the stack lives in the bss


def test_build_probes_second_call_uses_cache(
    images: ProbeImages, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*args: object) -> None:
        raise AssertionError("rebuilt although the cache was valid")

    monkeypatch.setattr(harness, "_run", no_build)
    assert build_probes(cache) == images
    assert [p.name for p in (cache / "probes").iterdir()] == [images.directory.name]


def test_build_probes_source_change_gets_new_key(
    images: ProbeImages, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "probes"
    shutil.copytree(probes.PROBE_SOURCE_DIR, src)
    monkeypatch.setattr(probes, "PROBE_SOURCE_DIR", src)
    with (src / "probe64.S").open("a") as f:
        f.write("/* changed */\n")
    rebuilt = build_probes(cache)
    assert rebuilt.directory != images.directory
    assert rebuilt.bzimage.read_bytes() == images.bzimage.read_bytes()  # a comment only


def test_build_probes_assembler_error_carries_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "probes"
    shutil.copytree(probes.PROBE_SOURCE_DIR, src)
    monkeypatch.setattr(probes, "PROBE_SOURCE_DIR", src)
    pvh = src / "probe_pvh.S"
    pvh.write_text(pvh.read_text().replace("pushfl\n", "notaninstruction\n", 1))
    with pytest.raises(HarnessBuildError) as info:
        build_probes(tmp_path / "cache")
    assert str(info.value).startswith("harness build: assembling the PVH probe failed (exit 1)")
    assert "notaninstruction" in str(info.value)
    assert list((tmp_path / "cache" / "probes").iterdir()) == []


def test_probe_source_change_keeps_harness_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent and firmware are not rebuilt (nor initrds re-keyed) for a probe edit."""
    tools = harness.build_tools()
    before = harness._cache_key(tools, harness.handoff_include())
    src = tmp_path / "harness"
    shutil.copytree(harness.HARNESS_SOURCE_DIR, src)
    monkeypatch.setattr(harness, "HARNESS_SOURCE_DIR", src)
    assert harness._cache_key(tools, harness.handoff_include()) == before
    with (src / "probes" / "probe64.S").open("a") as f:
        f.write("/* changed */\n")
    assert harness._cache_key(tools, harness.handoff_include()) == before
    with (src / "agent" / "init.c").open("a") as f:
        f.write("/* changed */\n")
    assert harness._cache_key(tools, harness.handoff_include()) != before


@pytest.mark.parametrize("entry", PROBE_ENTRIES)
def test_plan_boot_accepts_probe_for_entry(image: KernelImage, entry: EntryProtocol) -> None:
    plan = make_plan(image, entry)
    want = {EntryProtocol.BOOT64: 0x1000200, EntryProtocol.PVH: PVH_LOAD_ADDR,
            EntryProtocol.REAL16: 0}[entry]
    assert plan.cpu.rip == want


# ---- the generated include ----


def parse_equ(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2), 16)
            for m in re.finditer(r"^\.equ (\w+), (0x[0-9a-f]+)  #", text, re.M)}


def macro_fields(text: str, name: str) -> list[tuple[str, str, int]]:
    body = re.search(rf"^\.macro {name}\n(.*?)^\.endm", text, re.M | re.S)
    assert body is not None
    return [(m.group(1), m.group(2), int(m.group(3)))
            for m in re.finditer(r"^\tFIELD (\w+), ([^,]+), (\d+)$", body.group(1), re.M)]


def test_probes_include_offsets_come_from_declarations() -> None:
    equ = parse_equ(probes_include())
    assert equ["BP_CMD_LINE_PTR"] == BOOT_PARAMS["cmd_line_ptr"].offset == 0x228
    assert equ["BP_EXT_RAMDISK_SIZE"] == BOOT_PARAMS["ext_ramdisk_size"].offset == 0xC4
    assert equ["BP_E820_TABLE"] == E820_TABLE_OFFSET == 0x2D0
    assert equ["BP_SIZE"] == BOOT_PARAMS_SIZE
    assert equ["HSI_MEMMAP_PADDR"] == HVM_START_INFO["memmap_paddr"].offset == 40
    assert equ["MOD_SIZE"] == HVM_MODLIST_ENTRY["size"].offset == 8
    assert equ["EXIT_PORT"] == 0xF4 and equ["COM1_BASE"] == 0x3F8
    assert equ["XEN_ELFNOTE_PHYS32_ENTRY"] == 18
    assert equ["CMDLINE_BYTES"] == PROBE_CMDLINE_BYTES


def test_probes_include_field_tables_match_python() -> None:
    text = probes_include()
    assert macro_fields(text, "FIELDS_BOOT_PARAMS") == [
        (n, f"{BOOT_PARAMS[n].offset:#x}", BOOT_PARAMS[n].size)
        for n in probes.BOOT_PARAMS_REPORTED
    ]
    assert [f[0] for f in macro_fields(text, "FIELDS_START_INFO")] == [
        f.name for f in HVM_START_INFO
    ]
    assert macro_fields(text, "FIELDS_REGS_64") == [
        (n, f"saved_{n}-saved", size) for n, size in REGS_64
    ]
    assert macro_fields(text, "FIELDS_REGS_PVH") == [
        (n, f"saved_{n}-saved", size) for n, size in REGS_PVH
    ]
    assert macro_fields(text, "FIELDS_REGS_16") == [
        (n, f"saved_{n}-saved", size) for n, size in REGS_16
    ]
    assert macro_fields(text, "FIELDS_BIOS_16") == [
        (n, f"saved_bios_{n}-saved", size) for n, size in BIOS_16
    ]
    assert macro_fields(text, "FIELDS_SETUP_HEADER") == [
        (n, f"{BOOT_PARAMS[n].offset:#x}", BOOT_PARAMS[n].size) for n in SETUP_HEADER_REPORTED
    ]


def test_probes_include_is_what_was_built(images: ProbeImages) -> None:
    assert (images.directory / probes.INCLUDE_NAME).read_text() == probes_include()


# ---- synthetic reports: what a correct probe prints for a plan ----


def hexint(value: int, size: int) -> str:
    return "0x" + value.to_bytes(size, "little")[::-1].hex()


def good_report(plan: BootPlan, edges: tuple[bytes, bytes]) -> dict[str, Any]:
    cpu = plan.cpu
    gdt = b"" if plan.case.entry is EntryProtocol.REAL16 else plan.blob("gdt").data or b""
    regs: dict[str, int] = {
        "cs": cpu.code_selector, "ds": cpu.data_selector, "es": cpu.data_selector,
        "ss": cpu.data_selector, "gdt_limit": cpu.gdt_limit, "gdt_base": cpu.gdt_base,
        "cr0": cpu.cr0, "cr4": cpu.cr4,
    }  # fmt: skip
    head = {"v": 1, "entry": plan.case.entry.value}
    cmdline = (plan.cmdline + b"\0")[:PROBE_CMDLINE_BYTES].hex()
    ramdisk = {"ramdisk_head_hex": edges[0].hex(), "ramdisk_tail_hex": edges[1].hex()}
    if plan.case.entry is EntryProtocol.REAL16:
        setup = plan.blob("setup").data or b""
        mem = bios_memory(plan.e820)
        bios = {"e801_ax": mem.e801_low_kib, "e801_bx": mem.e801_high_blocks,
                "e801_cx": mem.e801_low_kib, "e801_dx": mem.e801_high_blocks,
                "ext_mem_kib": mem.ext_mem_kib, "base_mem_kib": mem.base_mem_kib}
        regs |= {"ip": cpu.rip, "sp": cpu.rsp, "fs": cpu.data_selector,
                 "gs": cpu.data_selector, "eflags": 0x46, "cr0": 0x6000_0010}
        return head | {
            "regs": {n: hexint(regs[n], size) for n, size in REGS_16},
            "setup_header": {n: hexint(int(BOOT_PARAMS[n].decode(setup)), BOOT_PARAMS[n].size)
                             for n in SETUP_HEADER_REPORTED},
            "bios": {n: hexint(bios[n], size) for n, size in BIOS_16},
            "e820_hex": b"".join(e.pack() for e in plan.e820).hex(),
            "cmdline_hex": cmdline,
            **ramdisk,
            "setup_page_hex": setup[:PROBE16_PAGE_BYTES].hex(),
        }
    if plan.case.entry is EntryProtocol.BOOT64:
        regs |= {"rsi": cpu.rsi, "rbx": cpu.rbx, "rsp": cpu.rsp, "rip": cpu.rip,
                 "rflags": 0x46, "cr3": cpu.cr3, "efer": cpu.efer}
        zp = plan.zero_page
        count = zp[BOOT_PARAMS["e820_entries"].offset]
        return head | {
            "regs": {n: hexint(regs[n], size) for n, size in REGS_64},
            "gdt_hex": gdt.hex(),
            "boot_params": {n: hexint(int(BOOT_PARAMS[n].decode(zp)), BOOT_PARAMS[n].size)
                            for n in probes.BOOT_PARAMS_REPORTED},
            "e820_hex": zp[E820_TABLE_OFFSET : E820_TABLE_OFFSET + 20 * count].hex(),
            "cmdline_hex": cmdline,
            **ramdisk,
            "zero_page_hex": zp.hex(),
        }
    regs |= {"ebx": cpu.rbx, "esi": cpu.rsi, "esp": cpu.rsp, "eip": cpu.rip, "eflags": 0x46}
    page = plan.blob("pvh_start_info").data or b""
    info = HVM_START_INFO.parse(page)
    module0 = None
    if plan.initrd is not None:
        module0 = {f.name: hexint(v, f.size) for f in HVM_MODLIST_ENTRY
                   for v in [{"paddr": plan.initrd.addr, "size": plan.initrd.size}.get(f.name, 0)]}
    memmap_at = int(info["memmap_paddr"]) - plan.blob("pvh_start_info").addr
    return head | {
        "regs": {n: hexint(regs[n], size) for n, size in REGS_PVH},
        "gdt_hex": gdt.hex(),
        "start_info": {f.name: hexint(int(info[f.name]), f.size) for f in HVM_START_INFO},
        "module0": module0,
        "memmap_hex": page[memmap_at : memmap_at + 24 * int(info["memmap_entries"])].hex(),
        "cmdline_hex": cmdline,
        **ramdisk,
        "start_info_page_hex": page.hex(),
    }


def line(report: dict[str, Any]) -> str:
    return f"{PROBE_LINE_PREFIX} {json.dumps(report, separators=(',', ':'))}"


def parsed(text: str) -> ProbeReport:
    report = parse_probe_report(text)
    assert isinstance(report, ProbeReport), report
    return report


def by_name(results: list[OracleResult]) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in results}


def failing(results: list[OracleResult]) -> list[str]:
    assert all(r.verdict is not Verdict.UNKNOWN for r in results)
    return [r.name for r in results if r.verdict is Verdict.FAIL]


EDGES = (INITRD_BYTES[:PROBE_RAMDISK_EDGE], INITRD_BYTES[-PROBE_RAMDISK_EDGE:])
NAMES_64 = [
    "probe-entry", "probe-rip", "probe-rsi", "probe-rbx", "probe-rsp", "probe-cr0", "probe-cr3",
    "probe-cr4", "probe-efer", "probe-cs", "probe-data-segments", "probe-gdt", "probe-gdtr",
    "probe-interrupts", "probe-boot-params", "probe-zero-page", "probe-memory-map",
    "probe-cmdline", "probe-ramdisk",
]  # fmt: skip
NAMES_16 = [
    "probe-entry", "probe-ip", "probe-sp", "probe-cr0", "probe-cr4", "probe-cs",
    "probe-data-segments", "probe-interrupts", "probe-setup-header", "probe-setup-page",
    "probe-bios-memory", "probe-memory-map", "probe-cmdline", "probe-ramdisk",
]  # fmt: skip
NAMES = {EntryProtocol.BOOT64: NAMES_64, EntryProtocol.REAL16: NAMES_16}
NAMES_PVH = [
    "probe-entry", "probe-eip", "probe-esi", "probe-ebx", "probe-esp", "probe-cr0", "probe-cr4",
    "probe-cs", "probe-data-segments", "probe-gdt", "probe-gdtr", "probe-interrupts",
    "probe-start-info", "probe-start-info-page", "probe-module0", "probe-memory-map",
    "probe-cmdline", "probe-ramdisk",
]  # fmt: skip


@pytest.mark.parametrize("memory", [256 * MiB, 5 * GiB], ids=["256M", "5G"])
@pytest.mark.parametrize("entry", PROBE_ENTRIES)
def test_check_probe_good_report_passes_every_oracle(
    image: KernelImage, initrd: FakeInitrd, entry: EntryProtocol, memory: int
) -> None:
    plan = make_plan(image, entry, memory, initrd)
    results = check_read(plan, parsed("noise\n" + line(good_report(plan, EDGES)) + "\n"))
    assert [r.name for r in results] == NAMES.get(entry, NAMES_PVH)
    assert failing(results) == []


def test_check_probe_reads_initrd_edges_from_the_plan_file(
    image: KernelImage, initrd: FakeInitrd
) -> None:
    plan = make_plan(image, EntryProtocol.BOOT64, initrd=initrd)
    assert initrd_edges(plan) == EDGES
    report = parsed(line(good_report(plan, EDGES)))
    assert failing(check_read(plan, report)) == []


@pytest.mark.parametrize("entry", PROBE_ENTRIES)
def test_check_probe_without_initrd_expects_no_ramdisk(
    image: KernelImage, entry: EntryProtocol
) -> None:
    plan = make_plan(image, entry)
    report = parsed(line(good_report(plan, (b"", b""))))
    assert failing(check_read(plan, report)) == []
    if entry is EntryProtocol.PVH:
        assert report.module0 is None


Mutation = Callable[[BootPlan], BootPlan]


def replace_cpu(**changes: Any) -> Mutation:
    return lambda plan: dataclasses.replace(plan, cpu=dataclasses.replace(plan.cpu, **changes))


@pytest.mark.parametrize(
    ("entry", "mutate", "oracle"),
    [
        (EntryProtocol.BOOT64, replace_cpu(rsi=0x7001), "probe-rsi"),
        (EntryProtocol.BOOT64, replace_cpu(rip=0x1000000), "probe-rip"),
        (EntryProtocol.BOOT64, replace_cpu(cr3=0xA000), "probe-cr3"),
        (EntryProtocol.BOOT64, replace_cpu(efer=0x100), "probe-efer"),
        (EntryProtocol.BOOT64, replace_cpu(data_selector=0x20), "probe-data-segments"),
        (EntryProtocol.PVH, replace_cpu(rbx=0x6008), "probe-ebx"),
        (EntryProtocol.PVH, replace_cpu(cr4=0x20), "probe-cr4"),
        (EntryProtocol.PVH, replace_cpu(code_selector=0x08), "probe-cs"),
        (EntryProtocol.PVH, replace_cpu(gdt_base=0x600), "probe-gdtr"),
        (EntryProtocol.BOOT64, lambda p: dataclasses.replace(p, cmdline=p.cmdline + b"x"),
         "probe-cmdline"),
        (EntryProtocol.PVH, lambda p: dataclasses.replace(p, cmdline=b"Bootfuzz"),
         "probe-cmdline"),
        (EntryProtocol.BOOT64, lambda p: dataclasses.replace(p, e820=p.e820[:-1]),
         "probe-memory-map"),
        (EntryProtocol.PVH,
         lambda p: dataclasses.replace(p, e820=(*p.e820[:-1], E820Entry(0xFFFF0000, 0x10000, 1))),
         "probe-memory-map"),
        (EntryProtocol.REAL16, replace_cpu(rip=0x200), "probe-ip"),
        (EntryProtocol.REAL16, replace_cpu(rsp=0xD000), "probe-sp"),
        (EntryProtocol.REAL16, replace_cpu(code_selector=0x1000), "probe-cs"),
        (EntryProtocol.REAL16, replace_cpu(data_selector=0x1020), "probe-data-segments"),
        (EntryProtocol.REAL16, lambda p: dataclasses.replace(p, cmdline=b"Bootfuzz"),
         "probe-cmdline"),
        (EntryProtocol.REAL16, lambda p: dataclasses.replace(p, e820=p.e820[:-1]),
         "probe-memory-map"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_check_probe_one_wrong_plan_value_fails_its_oracle_only(
    image: KernelImage, initrd: FakeInitrd, entry: EntryProtocol, mutate: Mutation, oracle: str
) -> None:
    plan = make_plan(image, entry, initrd=initrd)
    report = parsed(line(good_report(plan, EDGES)))
    assert failing(check_probe(mutate(plan), report, edges=EDGES)) == [oracle]


def test_check_probe_zero_page_byte_flip_names_field(
    image: KernelImage, initrd: FakeInitrd
) -> None:
    plan = make_plan(image, EntryProtocol.BOOT64, initrd=initrd)
    zp = bytearray(plan.zero_page)
    offset = BOOT_PARAMS["tboot_addr"].offset
    zp[offset] ^= 0x01
    results = check_probe(dataclasses.replace(plan, zero_page=bytes(zp)),
                          parsed(line(good_report(plan, EDGES))), edges=EDGES)
    assert failing(results) == ["probe-zero-page"]
    (zero_page,) = [r for r in results if r.name == "probe-zero-page"]
    assert zero_page.observed == "1 bytes differ"
    assert zero_page.detail == "0x58 (tboot_addr): 0x01 -> 0x00"


def test_check_probe_boot_params_field_differs_fails_both_views(
    image: KernelImage, initrd: FakeInitrd
) -> None:
    plan = make_plan(image, EntryProtocol.BOOT64, initrd=initrd)
    zp = bytearray(plan.zero_page)
    BOOT_PARAMS.pack_into(zp, {"ramdisk_size": plan.initrd.size + 1 if plan.initrd else 1})
    results = check_probe(dataclasses.replace(plan, zero_page=bytes(zp)),
                          parsed(line(good_report(plan, EDGES))), edges=EDGES)
    assert failing(results) == ["probe-boot-params", "probe-zero-page"]
    (params,) = [r for r in results if r.name == "probe-boot-params"]
    assert params.detail == "differs: ramdisk_size"


def test_check_probe_16_setup_page_byte_flip_names_field(
    image: KernelImage, initrd: FakeInitrd
) -> None:
    plan = make_plan(image, EntryProtocol.REAL16, initrd=initrd)
    report = good_report(plan, EDGES)
    page = bytearray.fromhex(report["setup_page_hex"])
    page[BOOT_PARAMS["type_of_loader"].offset] ^= 0x0F
    report["setup_page_hex"] = page.hex()
    results = check_probe(plan, parsed(line(report)), edges=EDGES)
    assert failing(results) == ["probe-setup-page"]
    (setup_page,) = [r for r in results if r.name == "probe-setup-page"]
    assert setup_page.detail == "0x210 (type_of_loader): 0xff -> 0xf0"


def test_check_probe_16_bios_answer_differs_fails(image: KernelImage) -> None:
    plan = make_plan(image, EntryProtocol.REAL16)
    report = good_report(plan, (b"", b""))
    report["bios"]["ext_mem_kib"] = "0x8600"  # AH = 86h: the call was refused
    results = check_read(plan, parsed(line(report)))
    assert failing(results) == ["probe-bios-memory"]


def test_check_probe_16_interrupts_enabled_fails(image: KernelImage) -> None:
    plan = make_plan(image, EntryProtocol.REAL16)
    report = good_report(plan, (b"", b""))
    report["regs"]["eflags"] = "0x00000246"
    assert failing(check_read(plan, parsed(line(report)))) == ["probe-interrupts"]


def test_check_probe_16_setup_header_as_the_loader_wrote_it(image: KernelImage) -> None:
    """The header the probe reads in its segment: the loader's fields, 16-bit values."""
    plan = make_plan(image, EntryProtocol.REAL16)
    report = parsed(line(good_report(plan, (b"", b""))))
    assert plan.cpu.code_selector == (REAL_MODE_BASE >> 4) + 0x20
    assert report.params["type_of_loader"] == 0xFF
    assert report.params["cmd_line_ptr"] == REAL_MODE_BASE + 0xE000
    assert report.params["heap_end_ptr"] == 0xDE00


def test_check_probe_interrupts_enabled_fails(image: KernelImage) -> None:
    plan = make_plan(image, EntryProtocol.PVH)
    report = good_report(plan, (b"", b""))
    report["regs"]["eflags"] = "0x00000246"
    assert failing(check_read(plan, parsed(line(report)))) == ["probe-interrupts"]


@pytest.mark.parametrize(
    ("cr0", "ok"),
    [("0x80000011", True), ("0x80000031", True), ("0x80000001", False), ("0x00000011", False)],
    ids=["planned", "plus-NE", "no-ET", "no-PG"],
)
def test_check_probe_cr0_needs_planned_bits_and_paging(
    image: KernelImage, cr0: str, ok: bool
) -> None:
    plan = make_plan(image, EntryProtocol.BOOT64)
    report = good_report(plan, (b"", b""))
    report["regs"]["cr0"] = "0x" + cr0[2:].rjust(16, "0")
    assert failing(check_read(plan, parsed(line(report)))) == ([] if ok else ["probe-cr0"])


def test_check_probe_pvh_paging_on_fails_cr0(image: KernelImage) -> None:
    plan = make_plan(image, EntryProtocol.PVH)
    report = good_report(plan, (b"", b""))
    report["regs"]["cr0"] = "0x80000011"
    assert failing(check_read(plan, parsed(line(report)))) == ["probe-cr0"]


def test_check_probe_module_missing_fails_module0(image: KernelImage, initrd: FakeInitrd) -> None:
    plan = make_plan(image, EntryProtocol.PVH, initrd=initrd)
    report = good_report(plan, (b"", b""))
    report["module0"] = None
    assert failing(check_probe(plan, parsed(line(report)), edges=(b"", b""))) == [
        "probe-module0"
    ]


def test_check_probe_ramdisk_tail_differs_fails(image: KernelImage, initrd: FakeInitrd) -> None:
    plan = make_plan(image, EntryProtocol.BOOT64, initrd=initrd)
    report = parsed(line(good_report(plan, EDGES)))
    assert failing(check_probe(plan, report, edges=(EDGES[0], b"x" * 16))) == ["probe-ramdisk"]


def test_check_probe_long_cmdline_compares_first_bytes_only(image: KernelImage) -> None:
    plan = make_plan(image, EntryProtocol.BOOT64, cmdline="a" * 100)
    report = good_report(plan, (b"", b""))
    assert report["cmdline_hex"] == "61" * PROBE_CMDLINE_BYTES
    assert failing(check_read(plan, parsed(line(report)))) == []


def test_check_probe_other_entry_is_one_failure(image: KernelImage) -> None:
    plan64 = make_plan(image, EntryProtocol.BOOT64)
    pvh_report = parsed(line(good_report(make_plan(image, EntryProtocol.PVH), (b"", b""))))
    results = check_read(plan64, pvh_report)
    assert [(r.name, r.verdict) for r in results] == [("probe-entry", Verdict.FAIL)]


# ---- parse_probe_report ----


@pytest.fixture(scope="module")
def report64(image: KernelImage) -> dict[str, Any]:
    return good_report(make_plan(image, EntryProtocol.BOOT64), (b"", b""))


def error_of(text: str) -> str:
    report = parse_probe_report(text)
    assert isinstance(report, ProbeReportError), report
    return report.message


def test_parse_probe_report_no_line_is_none() -> None:
    assert parse_probe_report("bootfuzz-fw: entering kernel\n") is None
    assert parse_probe_report("") is None
    assert parse_probe_report(f"x {PROBE_LINE_PREFIX} {{}}\n") is None  # not at line start


def test_parse_probe_report_decodes_values(report64: dict[str, Any]) -> None:
    report = parsed(line(report64) + "\r\n")
    assert report.entry is EntryProtocol.BOOT64
    assert report.regs["rsi"] == 0x7000
    assert report.regs["cs"] == 0x10
    assert report.params["boot_flag"] == 0xAA55
    assert len(report.page) == BOOT_PARAMS_SIZE
    assert report.module0 is None


def test_parse_probe_report_truncated_line_is_error(report64: dict[str, Any]) -> None:
    text = line(report64)[:-40]
    assert error_of(text).startswith("not one JSON object (")


def test_parse_probe_report_two_lines_is_error(report64: dict[str, Any]) -> None:
    text = line(report64) + "\n" + line(report64) + "\n"
    assert error_of(text) == "2 probe lines: the guest ran more than once"


def test_parse_probe_report_wrong_version_is_error(report64: dict[str, Any]) -> None:
    assert error_of(line(report64 | {"v": 2})) == "probe report: v: format version 2, expected 1"


def test_parse_probe_report_unknown_entry_is_error(report64: dict[str, Any]) -> None:
    assert error_of(line(report64 | {"entry": "32"})) == (
        "probe report: entry: '32' is not a probe's entry (64, pvh, 16)")
    assert error_of(line(report64 | {"entry": None})) == (
        "probe report: entry: None is not a probe's entry (64, pvh, 16)")


def test_parse_probe_report_missing_key_is_error(report64: dict[str, Any]) -> None:
    broken = {k: v for k, v in report64.items() if k != "gdt_hex"}
    assert error_of(line(broken)).startswith(
        "probe report: (top level): keys ['v', 'entry', 'regs', 'boot_params'")


def test_parse_probe_report_missing_register_is_error(report64: dict[str, Any]) -> None:
    regs = {k: v for k, v in report64["regs"].items() if k != "efer"}
    assert error_of(line(report64 | {"regs": regs})).startswith(
        "probe report: regs: keys [")


@pytest.mark.parametrize(
    "value", ["0x", "0xzz", "12", 12], ids=["empty", "non-hex", "no-0x", "int"]
)
def test_parse_probe_report_bad_register_value_is_error(
    report64: dict[str, Any], value: object
) -> None:
    regs = report64["regs"] | {"rsi": value}
    assert error_of(line(report64 | {"regs": regs})) == (
        f"probe report: regs.rsi: {value!r} is not a 0x hex string"
    )


def test_parse_probe_report_odd_hex_is_error(report64: dict[str, Any]) -> None:
    message = error_of(line(report64 | {"cmdline_hex": "616"}))
    assert message == "probe report: cmdline_hex: not a string of hex digits"


def test_parse_probe_report_partial_e820_entry_is_error(report64: dict[str, Any]) -> None:
    message = error_of(line(report64 | {"e820_hex": "00" * 21}))
    assert message == "probe report: e820_hex: 21 bytes, not whole entries of 20"


@pytest.mark.parametrize("size", [BOOT_PARAMS_SIZE - 1, BOOT_PARAMS_SIZE + 1])
def test_parse_probe_report_zero_page_size_is_checked(
    report64: dict[str, Any], size: int
) -> None:
    message = error_of(line(report64 | {"zero_page_hex": "00" * size}))
    assert message == f"probe report: zero_page_hex: expected {BOOT_PARAMS_SIZE} bytes, got {size}"


def test_run_probe_entry_without_probe_is_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        run_probe("32", "qemu-tcg", 256 * MiB)
    assert str(info.value) == (
        "bootfuzz: no probe answers the entry '32' (probes exist for: 64, pvh, 16)"
    )


def test_parse_probe_report_16_has_no_gdt_and_a_bios_object(image: KernelImage) -> None:
    report16 = good_report(make_plan(image, EntryProtocol.REAL16), (b"", b""))
    assert error_of(line(report16 | {"gdt_hex": ""})).startswith(
        "probe report: (top level): keys [")
    broken = {k: v for k, v in report16.items() if k != "bios"}
    assert error_of(line(broken)).endswith(
        "expected ['v', 'entry', 'regs', 'setup_header', 'bios', 'e820_hex', 'cmdline_hex', "
        "'ramdisk_head_hex', 'ramdisk_tail_hex', 'setup_page_hex']")
    bios = {k: v for k, v in report16["bios"].items() if k != "base_mem_kib"}
    assert error_of(line(report16 | {"bios": bios})).startswith("probe report: bios: keys [")
