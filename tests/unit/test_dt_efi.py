"""The arm64 EFI-stub peer judged on the UEFI map the kernel printed: a recorded edk2
boot, then one planted defect at a time (bootfuzz.judge.efi_map through
bootfuzz.peers.dt_diff.validity_oracles)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, InitrdSpec, harness_cmdline
from bootfuzz.compression import Compression
from bootfuzz.errors import CmdlineError, ConfigError
from bootfuzz.judge.dt_observation import parse_dt_transcript
from bootfuzz.judge.efi_map import (
    EfiType,
    efi_memblock,
    judge_efi_memblock,
    judge_efi_ram_range,
    parse_efi_memmap,
)
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.peers import matrix
from bootfuzz.peers.dt_diff import (
    FIRMWARE_PEERS,
    PEER_EFI_NAME,
    PEER_UBOOT_NAME,
    check_console_booti,
    check_peer_case,
    expected_cmdline,
    peer_firmware,
    qemu_kernel_argv,
    validity_oracles,
)
from bootfuzz.transcript import GuestExit

DATA = Path(__file__).resolve().parent.parent / "data" / "targets"
LOG = re.sub(r"\r+\n", "\n", (DATA / "efi-stub-virt-256M-6.12-cloud-arm64.txt")
             .read_bytes().decode())
INITRD_SIZE = 1057618
PAYLOAD_SHA = "6c000e37611d7fb99394778bdfaa2aee1e743db58cbd2a2fded707da7cf470a6"
CASE = BootCase(kernel="debian-6.12-cloud-arm64", memory=256 << 20, arch=Arch.ARM64,
                backend="qemu-virt", cmdline=harness_cmdline(Arch.ARM64),
                initrd=InitrdSpec(1 << 20, Compression.GZIP, 0))


def judge(text: str = LOG, case: BootCase = CASE) -> dict[str, OracleResult]:
    obs = parse_dt_transcript(text)
    return {r.name: r for r in validity_oracles(case, obs, GuestExit.POWER_OFF, "test",
                                                PAYLOAD_SHA, efi=True,
                                                initrd_size=INITRD_SIZE)}


def planted(old: str, new: str, text: str = LOG) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def failing(results: dict[str, OracleResult]) -> set[str]:
    return {n for n, r in results.items() if r.verdict is not Verdict.PASS}


def test_the_arm64_listing_is_parsed_with_its_attributes() -> None:
    descs = parse_efi_memmap(LOG.splitlines())
    assert len(descs) == 32 and [d.index for d in descs] == list(range(32))
    assert descs[0].type is EfiType.CONVENTIONAL and descs[0].start == 0x4000_0000
    assert descs[0].attributes == {"WB"}
    flash = [d for d in descs if d.start == 0x0400_0000]
    assert len(flash) == 1 and flash[0].type is EfiType.MMIO
    assert flash[0].attributes == {"RUN", "WC"}
    runtime = [d for d in descs if d.type is EfiType.RUNTIME_CODE]
    assert runtime and all("RUN" in d.attributes for d in runtime)


def test_the_kernels_memory_is_the_maps_split_where_no_map_ranges_meet() -> None:
    """efi-init.c: every WB/WT/WC descriptor is memory (the WC flash window too), those
    not usable (runtime code and data, MMIO) no-map; the kernel printed exactly that."""
    descs = parse_efi_memmap(LOG.splitlines())
    blocks = efi_memblock(descs)
    assert blocks[0] == (0x0400_0000, 0x07FF_FFFF, False)  # the flash window
    assert [u for _, _, u in blocks] == [False, True, False, True, False, True]
    obs = parse_dt_transcript(LOG)
    assert [(a, b) for _, a, b in obs.memory_node_ranges] == [(s, e) for s, e, _ in blocks]


def test_the_recorded_boot_passes_every_oracle() -> None:
    results = judge()
    assert {"boot", "cmdline", "agent-cmdline", "payload-digest", "efi-ram", "efi-memblock",
            "iomem-ram", "initrd-unpacked"} == set(results)
    assert not failing(results), {n: r.observed for n, r in results.items()}


def test_edk2_appends_its_initrd_option_only_with_an_initrd() -> None:
    assert expected_cmdline(CASE, efi=True) == ("efi=debug " + CASE.cmdline
                                                + " initrd=initrd")
    bare = BootCase(kernel=CASE.kernel, memory=CASE.memory, arch=Arch.ARM64,
                    backend="qemu-virt", cmdline=CASE.cmdline, initrd=None)
    assert expected_cmdline(bare, efi=True) == "efi=debug " + CASE.cmdline
    assert expected_cmdline(CASE, efi=False) == CASE.cmdline
    # Without its initrd= option the kernel saw another line than edk2 is known to give.
    results = judge(planted(" initrd=initrd\n", "\n"))
    assert "cmdline" in failing(results)


@pytest.mark.parametrize(("old", "new", "oracle"), [
    # a descriptor past the machine's 256 MiB of RAM
    ("0x00004ffe0000-0x00004fffefff [Conventional",
     "0x00004ffe0000-0x00005fffefff [Conventional", "efi-ram"),
    # a descriptor lost: 64 MiB of RAM undescribed (and the kernel's memory no longer it)
    ("efi:   0x000040000000-0x000043ffffff [Conventional|   |  |  |  |  |  |  |  |  |  |   "
     "|WB|  |  |  ]\n", "", "efi-ram"),
    # the kernel took a runtime range as usable: its memory is not the map's
    ("node   0: [mem 0x000000004c440000-0x000000004c72ffff]",
     "node   0: [mem 0x000000004c440000-0x000000004c72efff]", "efi-memblock"),
    # the initrd freed one page short
    ("Freeing initrd memory: 1032K", "Freeing initrd memory: 1028K", "initrd-unpacked"),
])
def test_one_planted_defect_fails_its_oracle(old: str, new: str, oracle: str) -> None:
    assert oracle in failing(judge(planted(old, new)))


def test_no_map_in_the_log_is_unknown_not_a_pass() -> None:
    assert judge_efi_ram_range((), 0x4000_0000, 256 << 20).verdict is Verdict.UNKNOWN
    assert judge_efi_memblock((), [(0x4000_0000, 0x4FFF_FFFF)]).verdict is Verdict.UNKNOWN


def test_riscv64_has_no_uefi_peer_and_the_matrix_leaves_it_out() -> None:
    with pytest.raises(ConfigError, match="arm64 kernels only"):
        peer_firmware(PEER_EFI_NAME, Arch.RISCV64)
    assert PEER_EFI_NAME in matrix.dt_targets(Arch.ARM64.value)
    assert PEER_EFI_NAME not in matrix.dt_targets(Arch.RISCV64.value)
    cell = matrix.Cell("k", matrix.DT_ENTRY, "256M", "gzip", PEER_EFI_NAME, Arch.RISCV64.value)
    assert matrix.static_skip(cell)
    assert PEER_UBOOT_NAME in matrix.dt_targets(Arch.RISCV64.value)  # U-Boot runs on both


def test_riscv64_u_boot_is_refused_where_qemus_initrd_would_overlap_its_image(
        tmp_path: Path) -> None:
    """QEMU puts -initrd half the RAM (at most 128 MiB) past U-Boot's entry at RAM + 2 MiB:
    at 160 MiB that is 0x85200000, inside a 30 MiB Image at kernel_addr_r 0x84000000."""
    image = tmp_path / "Image"
    image.write_bytes(bytes(30 << 20))
    riscv = BootCase(kernel="k", memory=160 << 20, arch=Arch.RISCV64, backend="qemu-virt",
                     cmdline=harness_cmdline(Arch.RISCV64), initrd=InitrdSpec(1 << 20))
    with pytest.raises(ConfigError, match="past 0x85200000"):
        check_console_booti(riscv, image)
    check_console_booti(dataclasses.replace(riscv, memory=256 << 20), image)  # 0x88200000


def test_a_line_that_edk2s_additions_push_past_the_limit_is_refused_for_that_peer() -> None:
    """Our loader gives a 2047-byte line whole; through UEFI the kernel would get
    'efi=debug ' + line + ' initrd=initrd' (24 bytes more) and cut it."""
    efi = FIRMWARE_PEERS[PEER_EFI_NAME, Arch.ARM64]
    uboot = FIRMWARE_PEERS[PEER_UBOOT_NAME, Arch.ARM64]
    limit = Arch.ARM64.command_line_size
    assert limit == 2048

    def with_length(n: int, initrd: bool = True) -> BootCase:
        pad = n - len(CASE.cmdline) - 1
        return dataclasses.replace(CASE, cmdline=f"{CASE.cmdline} {'x' * pad}",
                                   initrd=CASE.initrd if initrd else None)

    longest = with_length(limit - 1 - len("efi=debug ") - len(" initrd=initrd"))
    check_peer_case(longest, efi)
    assert len(expected_cmdline(longest, True)) == limit - 1
    over = with_length(limit - len("efi=debug ") - len(" initrd=initrd"))
    with pytest.raises(CmdlineError, match=r"2048 bytes through efi-stub:virt .* shorten the "
                       r"line by 1 byte for"):
        check_peer_case(over, efi)
    check_peer_case(over, uboot)  # booti passes the line as given
    check_peer_case(over, None)  # QEMU's own -kernel too
    # Without an initrd edk2 adds nothing after the line: 14 bytes more fit.
    check_peer_case(with_length(limit - 1 - len("efi=debug "), initrd=False), efi)


def test_the_peer_is_started_by_uefi_with_efi_debug_first() -> None:
    efi, uboot = FIRMWARE_PEERS[PEER_EFI_NAME, Arch.ARM64], FIRMWARE_PEERS[PEER_UBOOT_NAME,
                                                                            Arch.ARM64]
    argv = qemu_kernel_argv(CASE, Path("Image"), Path("initrd"), firmware=efi)
    assert argv[argv.index("-bios") + 1] == str(efi.path)
    assert argv[argv.index("-append") + 1] == "efi=debug " + CASE.cmdline
    assert argv[argv.index("-initrd") + 1] == "initrd"
    argv = qemu_kernel_argv(CASE, Path("Image"), Path("initrd"), firmware=uboot)
    assert argv[argv.index("-bios") + 1] == str(uboot.path)
    assert argv[argv.index("-append") + 1] == CASE.cmdline  # booti: no UEFI map to print
    # riscv64's U-Boot is QEMU's -kernel behind OpenSBI; the Image goes to kernel_addr_r.
    riscv = dataclasses.replace(CASE, arch=Arch.RISCV64, cmdline=harness_cmdline(Arch.RISCV64))
    rv = FIRMWARE_PEERS[PEER_UBOOT_NAME, Arch.RISCV64]
    argv = qemu_kernel_argv(riscv, Path("Image"), Path("initrd"), firmware=rv)
    assert argv[argv.index("-bios") + 1] == "default"
    assert argv[argv.index("-kernel") + 1] == str(rv.path)
    assert "loader,file=Image,addr=0x84000000,force-raw=on" in argv
