"""EFI targets judged on the kernel's UEFI map: recorded OVMF boots, one planted defect
at a time (bootfuzz.judge.efi_map through bootfuzz.judge.validity)."""

from __future__ import annotations

import re
from pathlib import Path

from bootfuzz.judge.efi_map import EfiType, judge_efi_e820, parse_efi_memmap, stub_e820
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.promises import TargetPromises
from bootfuzz.judge.validity import LoadRequest, ValidityEvidence, judge_validity
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.peers.promises import EFI_STUB_OVMF, GRUB_EFI, QEMU_PC
from bootfuzz.transcript import GuestExit

DATA = Path(__file__).resolve().parent.parent / "data" / "targets"


def _log(name: str) -> str:
    return re.sub(r"\r+\n", "\n", (DATA / name).read_bytes().decode())


#: efi-stub (OVMF -kernel) and grub-efi booting debian-6.1-cloud at 256M, 1M gzip initrd.
STUB_LOG = _log("efi-stub-256M-6.1-cloud.txt")
GRUB_LOG = _log("grub-efi-256M-6.1-cloud.txt")
HARNESS = b"console=ttyS0 earlyprintk=serial panic=-1 cryptomgr.notests mitigations=off"
GOOD = LoadRequest(
    memory=256 << 20, cmdline=HARNESS + b" efi=debug", initrd_size=1056202,
    payload_size=1 << 20,
    payload_sha256="6c000e37611d7fb99394778bdfaa2aee1e743db58cbd2a2fded707da7cf470a6",
    initrd_addr_max=0x7FFFFFFF, initrd_high_ok=True,
)


def judge(text: str = STUB_LOG, promises: TargetPromises = EFI_STUB_OVMF
          ) -> dict[str, OracleResult]:
    ev = ValidityEvidence(GOOD, promises, parse_transcript(text), GuestExit.POWER_OFF, "test")
    return {r.name: r for r in judge_validity(ev)}


def planted(old: str, new: str, text: str = STUB_LOG) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def failing(results: dict[str, OracleResult]) -> set[str]:
    return {n for n, r in results.items() if r.verdict is Verdict.FAIL}


def test_parse_takes_the_boot_map_not_the_runtime_map() -> None:
    descs = parse_efi_memmap(STUB_LOG.splitlines())
    assert [d.index for d in descs] == list(range(134))
    assert descs[0].type is EfiType.CONVENTIONAL and (descs[0].start, descs[0].end) == (
        0, 0x9FFFF)
    assert descs[-1].type is EfiType.MMIO  # the flash window, in the gap
    # The runtime map printed later (mem00 again) is not appended.
    assert STUB_LOG.count("efi: mem00:") == 2


def test_recorded_efi_stub_boot_passes_every_oracle() -> None:
    results = judge()
    assert {n: r.verdict for n, r in results.items()} == dict.fromkeys(results, Verdict.PASS)
    assert set(results) == {"boot", "kernel-clean", "e820-gap", "efi-ram", "ramdisk",
                            "ramdisk-rule", "cmdline", "agent-cmdline", "initrd-unpacked",
                            "payload-digest", "firmware-memmap", "efi-e820"}
    assert "mem12 Loader Data" in results["ramdisk-rule"].observed


def test_bios_promises_on_the_efi_log_fail_ram_total() -> None:
    """The same log judged as a BIOS machine: OVMF's E820 is nothing like SeaBIOS's."""
    results = judge(promises=QEMU_PC)
    assert "efi-e820" not in results
    assert results["ram-total"].verdict is Verdict.FAIL


def test_runtime_data_reported_usable_fails_efi_e820() -> None:
    text = planted("BIOS-e820: [mem 0x000000000eaa0000-0x000000000eba1fff] reserved",
                   "BIOS-e820: [mem 0x000000000eaa0000-0x000000000eba1fff] usable")
    # The agent's /sys/firmware/memmap (what the kernel really had) disagrees too.
    assert failing(judge(text)) == {"efi-e820", "firmware-memmap"}


def test_missing_descriptor_fails_efi_ram() -> None:
    line = next(ln for ln in STUB_LOG.splitlines()
                if "efi: mem06: [Conventional" in ln)
    results = judge(planted(line + "\n", ""))
    # mem06 gone: 87 MiB less RAM described, the listing stops at mem05 (no mem06).
    assert results["efi-ram"].verdict is Verdict.FAIL
    assert "less" in results["efi-ram"].detail


def test_descriptor_in_the_gap_fails_efi_ram() -> None:
    """The flash window described as RAM: RAM in the 32-bit MMIO gap."""
    moved = planted("efi: mem133: [MMIO        |", "efi: mem133: [Conventional|")
    results = judge(moved)
    assert results["efi-ram"].verdict is Verdict.FAIL
    assert "in the 32-bit MMIO gap" in results["efi-ram"].detail


def test_initrd_outside_loader_data_fails_the_rule() -> None:
    text = planted("RAMDISK: [mem 0x0d5af000-0x0d6b0fff]", "RAMDISK: [mem 0x01500000-0x01601fff]")
    results = judge(text)
    assert results["ramdisk-rule"].verdict is Verdict.FAIL
    assert "not inside a Loader Data allocation" in results["ramdisk-rule"].detail


def test_without_efi_debug_the_efi_oracles_cannot_answer() -> None:
    text = "\n".join(ln for ln in STUB_LOG.splitlines() if "efi: mem" not in ln)
    results = judge(text)
    for name in ("efi-ram", "efi-e820", "ramdisk-rule"):
        assert results[name].verdict is Verdict.UNKNOWN, name


def test_grub_efi_e820_has_grub_type_20_judged_as_the_kernel_treats_it() -> None:
    obs = parse_transcript(GRUB_LOG)
    printed = [(ln.start, ln.end, ln.type_text) for ln in obs.bios_e820]
    assert "type 20" in {t for _, _, t in printed}
    strict = judge_efi_e820(obs.efi_memmap, printed)
    assert strict.verdict is Verdict.FAIL  # not what the stub would have written
    lenient = judge_efi_e820(obs.efi_memmap, printed, loader_made=True)
    assert lenient.verdict is Verdict.PASS
    assert lenient.detail == "types the kernel does not know, treated as reserved: type 20"
    ev = ValidityEvidence(GOOD, GRUB_EFI, obs, GuestExit.POWER_OFF, "test")
    results = {r.name: r for r in judge_validity(ev)}
    assert failing(results) == set(), {n: r.detail for n, r in results.items()}


def test_stub_e820_merges_adjacent_ranges_of_one_type() -> None:
    descs = parse_efi_memmap(STUB_LOG.splitlines())
    table = stub_e820(descs)
    assert table[0] == (0, 0x9FFFF, "usable")
    # Boot Data, Conventional and Loader Code/Data from 9 MiB up are one usable range.
    assert (0x900000, 0xEA9FFFF, "usable") in table


def test_stub_initrd_limit_is_initrd_addr_max_unless_the_kernel_may_go_above_4g() -> None:
    """The recorded initrd ends at 0x0d6b0fff: over a 0x0d000000 initrd_addr_max it is
    wrong for a kernel without XLF_CAN_BE_LOADED_ABOVE_4G, fine for one with it."""
    obs = parse_transcript(STUB_LOG)
    for high_ok, verdict in ((False, Verdict.FAIL), (True, Verdict.PASS)):
        request = LoadRequest(**{**GOOD.__dict__, "initrd_addr_max": 0x0D000000,
                                 "initrd_high_ok": high_ok})
        ev = ValidityEvidence(request, EFI_STUB_OVMF, obs, GuestExit.POWER_OFF, "test")
        rule = {r.name: r for r in judge_validity(ev)}["ramdisk-rule"]
        assert rule.verdict is verdict, rule
