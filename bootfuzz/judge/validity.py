"""Validity oracles: is what the kernel saw *allowed*, whoever loaded it?

The exact oracles (bootfuzz.judge.oracles) compare the kernel's view with the bytes our
loader wrote, which only works for our loader.  These judge any target by the boot
protocol and the platform the target promised (bootfuzz.judge.promises.TargetPromises):
pure functions of the request (:class:`LoadRequest`), the promises and the
:class:`Observation`.  Where a target promised nothing, the oracle says unknown.

RAM accounting: the kernel's usable RAM adds up to the memory asked for, less what
the target's firmware withholds.  Every PC firmware withholds the legacy hole
[0xA0000, 0x100000) (VGA memory and the BIOS/option-ROM area); SeaBIOS and qboot
also keep the EBDA [0x9FC00, 0xA0000); QEMU pc's firmware keeps 128 KiB at the top
of low RAM for its ACPI tables.  The promises list these areas; nothing else may go.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bootfuzz.abi.e820 import firmware_memmap_type
from bootfuzz.case import EntryProtocol
from bootfuzz.judge.efi_map import judge_efi_e820, judge_efi_initrd, judge_efi_ram
from bootfuzz.judge.observation import E820Line, Observation
from bootfuzz.judge.oracles import (
    NO_KERNEL_REPORTS,
    judge_agent_cmdline,
    judge_boot,
    judge_cmdline,
    judge_kernel_clean,
    judge_payload,
    judge_unpack,
)
from bootfuzz.judge.promises import MemoryMapSource, TargetPromises
from bootfuzz.judge.verdict import OracleResult, judged, unknown
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, align_up
from bootfuzz.transcript import GuestExit

#: What a kernel with no initrd (and so no /init) must end in.  source:
#: init/do_mounts.c mount_block_root(), "VFS: Unable to mount root fs on %s".
USABLE = "usable"


@dataclass(frozen=True)
class LoadRequest:
    """What any loader was asked to do, from the case and the files built for it, with
    the kernel's own limits on where the initrd may go."""

    memory: int
    cmdline: bytes
    initrd_size: int | None  # bytes of the initrd image
    payload_size: int | None
    payload_sha256: str | None
    initrd_addr_max: int
    initrd_high_ok: bool  # XLF_CAN_BE_LOADED_ABOVE_4G
    entry: EntryProtocol = EntryProtocol.BOOT64


@dataclass(frozen=True)
class ValidityEvidence:
    """What a validity oracle may look at: the request, the target's promises, and what
    the kernel printed (compare bootfuzz.judge.oracles.ExactEvidence: our own plan)."""

    request: LoadRequest
    promises: TargetPromises
    observation: Observation
    guest_exit: GuestExit
    end_detail: str


ValidityOracle = Callable[[ValidityEvidence], OracleResult]


def _fmt(start: int, end: int) -> str:
    return f"[mem {start:#012x}-{end:#012x}]"


def usable_lines(obs: Observation) -> list[E820Line]:
    return [ln for ln in obs.bios_e820 if ln.type_text == USABLE]


def check_boot(ev: ValidityEvidence) -> OracleResult:
    """With an initrd: our agent reported and powered off.  Without: the no-root panic."""
    return judge_boot(ev.observation, ev.guest_exit, ev.end_detail,
                      agent=ev.request.initrd_size is not None, firmware_marker=False)


def check_kernel_clean(ev: ValidityEvidence) -> OracleResult:
    """The boot reached our agent without a kernel BUG, oops or WARNING: the rule our
    own loader's boots are judged by (oracles.judge_kernel_clean), since a layout a
    peer makes can be what the kernel warns about as well as ours."""
    result = judge_kernel_clean(ev.observation)
    if result is None:
        return unknown("kernel-clean", NO_KERNEL_REPORTS,
                       "no agent report: the boot oracle says how the boot ended")
    return result


def check_gap(ev: ValidityEvidence) -> OracleResult:
    """No printed RAM where the target's machine has none: the legacy video/BIOS area,
    the 32-bit MMIO gap it promised, the space beyond its RAM (docs/platform-rules.md)."""
    platform = ev.promises.platform(ev.request.memory)
    if platform is None:
        return unknown("e820-gap", "(no gap promised)", "the target promised no MMIO gap")
    start, end = platform.mmio_gap
    expected = (f"no usable RAM in the legacy area, the MMIO gap {_fmt(start, end - 1)} or "
                f"beyond RAM (from {platform.top_of_ram:#x})")
    lines = ev.observation.bios_e820
    if not lines:
        return unknown("e820-gap", expected, "no BIOS-e820 lines in the log")
    bad = []
    for ln in usable_lines(ev.observation):
        outside = [r.kind.value for r in platform.regions_touched(ln.start, ln.end + 1)
                   if not r.ram]
        if outside:
            bad.append(f"usable {_fmt(ln.start, ln.end)} in the {', the '.join(outside)}")
    return judged("e820-gap", not bad, expected, "; ".join(bad) or "none")


def check_ram_total(ev: ValidityEvidence) -> OracleResult:
    """Printed usable RAM == memory asked for - what the target's firmware withholds."""
    promised = ev.promises.ram_promised(ev.request.memory)
    withheld = ev.promises.withheld_ranges(ev.request.memory)
    if promised is None or withheld is None:
        return unknown("ram-total", "(nothing promised)",
                       "the target promised no memory layout or withheld areas")
    kept = sum(abs(e - s) for _, s, e in withheld)
    names = ", ".join(f"{n} {abs(e - s):#x}" for n, s, e in withheld)
    want = promised - kept
    expected = f"{want:#x} bytes usable ({promised:#x} less {names})"
    lines = usable_lines(ev.observation)
    if not ev.observation.bios_e820:
        return unknown("ram-total", expected, "no BIOS-e820 lines in the log")
    got = sum(ln.end + 1 - ln.start for ln in lines)
    observed = f"{got:#x} bytes usable in {len(lines)} lines"
    diff = got - want
    detail = "" if not diff else f"{abs(diff):#x} bytes {'more' if diff > 0 else 'less'}"
    return judged("ram-total", diff == 0, expected, observed, detail)


def _inside_usable(obs: Observation, start: int, last: int) -> bool:
    return any(ln.start <= start and last <= ln.end for ln in usable_lines(obs))


def check_ramdisk(ev: ValidityEvidence) -> OracleResult:
    """RAMDISK: inside printed usable RAM, page aligned, its size, not moved, allowed."""
    exp, obs = ev.request, ev.observation
    if exp.initrd_size is None:
        ok = obs.ramdisk is None
        return judged("ramdisk", ok, "no RAMDISK line (no initrd)",
                      "no RAMDISK line" if ok else f"RAMDISK {obs.ramdisk}")
    span = align_up(exp.initrd_size, PAGE_SIZE)
    limit = "below 4 GiB (XLF_CAN_BE_LOADED_ABOVE_4G)" if exp.initrd_high_ok else (
        f"ending at or below initrd_addr_max {exp.initrd_addr_max:#x}")
    expected = (f"RAMDISK of {span:#x} bytes, page aligned, inside usable RAM, {limit}, "
                "not moved")
    if obs.ramdisk is None:
        if obs.bios_e820 and (obs.init_process or obs.agent):
            return judged("ramdisk", False, expected, "no RAMDISK line",
                          "the kernel ignored the initrd")
        return unknown("ramdisk", expected, "the log ends before the RAMDISK line")
    rd = obs.ramdisk
    observed = f"RAMDISK: {_fmt(rd.start, rd.end)}"
    problems = []
    if rd.start % PAGE_SIZE:
        problems.append("not page aligned")
    if rd.end + 1 - rd.start != span:
        problems.append(f"{rd.end + 1 - rd.start:#x} bytes, not {span:#x}")
    if not _inside_usable(obs, rd.start, rd.end):
        problems.append("not inside one usable BIOS-e820 range")
    data_last = rd.start + exp.initrd_size - 1
    if exp.initrd_high_ok:
        if data_last >= FOUR_GIB:
            problems.append("above 4 GiB: ramdisk_image has only 32 bits in the header")
    elif data_last > exp.initrd_addr_max:
        problems.append(f"ends at {data_last:#x}, above initrd_addr_max {exp.initrd_addr_max:#x}")
    if obs.ramdisk_move is not None:
        m = obs.ramdisk_move
        problems.append(f"moved to {_fmt(m.dest.start, m.dest.end)}")
    if obs.ramdisk_no_room_size is not None:
        problems.append("the kernel found no place for it")
    return judged("ramdisk", not problems, expected, observed, "; ".join(problems))


def check_ramdisk_rule(ev: ValidityEvidence) -> OracleResult:
    """The initrd is where the target's own placement rule puts it (where it states one)."""
    exp, obs = ev.request, ev.observation
    rule, gap = ev.promises.initrd_rule(ev.request.entry), ev.promises.gap
    if exp.initrd_size is None:
        return judged("ramdisk-rule", obs.ramdisk is None, "no initrd", str(obs.ramdisk))
    if rule is None or gap is None:
        return unknown("ramdisk-rule", "(no placement rule promised)",
                       "the target states no initrd placement rule")
    addr = rule.address(gap.low_end(exp.memory), exp.initrd_addr_max, exp.initrd_high_ok,
                        exp.initrd_size)
    last = align_up(addr + exp.initrd_size, PAGE_SIZE) - 1
    expected = f"RAMDISK: {_fmt(addr, last)} ({rule.description})"
    if rule.upper_bound_only:
        expected = f"RAMDISK starting at or below {addr:#x} ({rule.description})"
    if obs.ramdisk is None:
        return unknown("ramdisk-rule", expected, "no RAMDISK line")
    observed = f"RAMDISK: {_fmt(obs.ramdisk.start, obs.ramdisk.end)}"
    if rule.upper_bound_only:
        return judged("ramdisk-rule", obs.ramdisk.start <= addr, expected, observed)
    return judged("ramdisk-rule", (obs.ramdisk.start, obs.ramdisk.end) == (addr, last),
                  expected, observed)


def check_cmdline(ev: ValidityEvidence) -> OracleResult:
    """As asked, with what the target's loader promises to add (GRUB's BOOT_IMAGE=)."""
    return judge_cmdline(ev.observation, ev.promises.kernel_cmdline(ev.request.cmdline))


def check_agent_cmdline(ev: ValidityEvidence) -> OracleResult:
    return judge_agent_cmdline(ev.observation,
                               ev.promises.kernel_cmdline(ev.request.cmdline))


def check_efi_ram(ev: ValidityEvidence) -> OracleResult:
    """EFI targets: the UEFI map describes the platform's RAM (bootfuzz.judge.efi_map)."""
    return judge_efi_ram(ev.observation.efi_memmap, ev.promises.platform(ev.request.memory),
                         ev.promises.withheld_ranges(ev.request.memory))


def check_efi_e820(ev: ValidityEvidence) -> OracleResult:
    """EFI targets: the printed E820 is the one the stub derives from the UEFI map."""
    printed = [(ln.start, ln.end, ln.type_text) for ln in ev.observation.bios_e820]
    return judge_efi_e820(ev.observation.efi_memmap, printed,
                          loader_made=ev.promises.memory_map is MemoryMapSource.EFI_LOADER)


def check_efi_initrd(ev: ValidityEvidence) -> OracleResult:
    """EFI targets: the initrd sits in an EfiLoaderData allocation below its limit."""
    exp, obs = ev.request, ev.observation
    if exp.initrd_size is None:
        return judged("ramdisk-rule", obs.ramdisk is None, "no initrd", str(obs.ramdisk))
    rule = ev.promises.initrd_rule(exp.entry)
    if rule is None:
        return unknown("ramdisk-rule", "(no placement rule promised)",
                       "the target states no initrd placement rule")
    rd = None if obs.ramdisk is None else (obs.ramdisk.start, obs.ramdisk.end)
    return judge_efi_initrd(obs.efi_memmap, rd, exp.initrd_size,
                            rule.limit(exp.initrd_addr_max, exp.initrd_high_ok),
                            rule.description)


def check_unpacked(ev: ValidityEvidence) -> OracleResult:
    """The initramfs was unpacked without error and exactly its pages were freed."""
    return judge_unpack(ev.observation, ev.request.initrd_size)


def check_payload(ev: ValidityEvidence) -> OracleResult:
    exp = ev.request
    if exp.payload_size is None or exp.payload_sha256 is None:
        return unknown("payload-digest", "(no initrd)", "no initrd in the case")
    return judge_payload(ev.observation, exp.payload_size, exp.payload_sha256)


def _map_text(entries: Sequence[tuple[int, int, str]]) -> str:
    return "\n".join(f"{_fmt(s, e)} {t}" for s, e, t in entries)


def check_memmap(ev: ValidityEvidence) -> OracleResult:
    """/sys/firmware/memmap equals the kernel's (sanitized) BIOS-e820 print."""
    printed = []
    for ln in ev.observation.bios_e820:
        t = ln.type
        printed.append((ln.start, ln.end, firmware_memmap_type(t if t is not None else 0)))
    expected = _map_text(printed)
    agent = ev.observation.agent
    if agent is None:
        return unknown("firmware-memmap", expected, "no agent report")
    if not printed:
        return unknown("firmware-memmap", "(no BIOS-e820 print)", "no BIOS-e820 lines")
    got = sorted((m.start, m.end, m.type) for m in agent.memmap)
    observed = _map_text(got)
    return judged("firmware-memmap", observed == expected, expected, observed)


#: Oracles that need our agent; without an initrd there is none, so they do not apply.
AGENT_VALIDITY = frozenset({"agent-cmdline", "payload-digest", "firmware-memmap",
                            "kernel-clean"})

VALIDITY_ORACLES: tuple[ValidityOracle, ...] = (
    check_boot,
    check_kernel_clean,
    check_gap,
    check_ram_total,
    check_ramdisk,
    check_ramdisk_rule,
    check_cmdline,
    check_agent_cmdline,
    check_unpacked,
    check_payload,
    check_memmap,
)


#: On an EFI-stub boot the RAM accounting and the initrd rule are judged on the UEFI
#: map (the E820 is derived from it), and the derivation itself is judged.
_EFI_REPLACES: dict[ValidityOracle, ValidityOracle] = {
    check_ram_total: check_efi_ram, check_ramdisk_rule: check_efi_initrd}
EFI_VALIDITY_ORACLES: tuple[ValidityOracle, ...] = (
    *(_EFI_REPLACES.get(o, o) for o in VALIDITY_ORACLES), check_efi_e820)


def judge_validity(ev: ValidityEvidence) -> list[OracleResult]:
    """Every validity oracle that applies to the case (agent ones need an initrd)."""
    oracles = EFI_VALIDITY_ORACLES if ev.promises.memory_map.efi else VALIDITY_ORACLES
    results = [oracle(ev) for oracle in oracles]
    if ev.request.initrd_size is None:
        results = [r for r in results if r.name not in AGENT_VALIDITY]
    return results


__all__ = ["VALIDITY_ORACLES", "LoadRequest", "ValidityEvidence", "judge_validity"]
