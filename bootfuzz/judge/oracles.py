"""Oracles: what the kernel saw, judged against what the loader meant.

Each oracle is a pure function of the plan, the observation and how the guest
ended, and answers pass, fail or unknown (it could not tell: the boot never got
that far), always with the expected and the observed value written out so a
report can be read without the code.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bootfuzz.abi.bootparam import BOOT_PARAMS, BOOT_PARAMS_SIZE, LoadFlags, XLoadFlags
from bootfuzz.abi.e820 import E820Entry, E820Type, firmware_memmap_type, kernel_type_words
from bootfuzz.cmdline import cmdline_shown, cmdline_text
from bootfuzz.judge.e820_model import sanitize
from bootfuzz.judge.observation import (
    COMMAND_LINE_PREFIX,
    KERNEL_COMMAND_LINE_PREFIX,
    AgentSetupData,
    MapKind,
    Observation,
)
from bootfuzz.judge.patterns import INVALID_USER_MAP_PANIC, NO_ROOT_PANIC
from bootfuzz.judge.printk_model import Shown, console_buffers, record_lines, shown_record
from bootfuzz.judge.setup_data_model import expected_setup_data
from bootfuzz.judge.user_memmap import UserMap, apply_user_options
from bootfuzz.judge.verdict import OracleResult, Verdict, judged, unknown
from bootfuzz.kernel.capabilities import UnpackStart
from bootfuzz.loader.layout import PAGE_SIZE, align_up
from bootfuzz.loader.plan import BootPlan
from bootfuzz.transcript import GuestExit


@dataclass(frozen=True)
class ExactEvidence:
    """Everything an exact oracle may look at: our plan (every byte we wrote) and what
    the kernel printed.  A peer's boot is judged from ValidityEvidence instead
    (bootfuzz.judge.validity), which knows only the request and the promises."""

    plan: BootPlan
    observation: Observation
    guest_exit: GuestExit
    end_detail: str  # how the console session ended, in words
    #: The unpack line's spelling this kernel's config dictates (None: unknown config).
    unpack_message: UnpackStart | None = None


#: An oracle answers, or returns None where it does not apply to this plan.
Oracle = Callable[[ExactEvidence], OracleResult | None]


def expected_kernel_map(plan: BootPlan) -> list[E820Entry] | None:
    """What the kernel prints: its sanitizer applied to the table it starts from."""
    return sanitize(plan.kernel_e820 or plan.e820)


def _format_map(entries: Sequence[tuple[int, int, str]]) -> str:
    return "\n".join(f"[mem {s:#018x}-{e:#018x}] {t}" for s, e, t in entries)


def agent_expected(plan: BootPlan) -> bool:
    """Whether our /init agent can run: an initrd that is our cpio archive."""
    spec = plan.case.initrd
    return plan.initrd is not None and spec is not None and not spec.raw


def judge_boot(obs: Observation, guest_exit: GuestExit, end_detail: str, *,
               agent: bool, firmware_marker: bool) -> OracleResult:
    """With an *agent*: it reported and the guest powered off.  Without (no initrd, or
    one that is no cpio archive): the kernel ends in the no-root panic.
    *firmware_marker*: our firmware (or VMM) announces its jump, so a silent start
    can be told from a kernel that died before printing."""
    if not agent:
        expected = f"kernel panic '{NO_ROOT_PANIC} ...' (no /init, no root)"
        ok = any(p.startswith(NO_ROOT_PANIC) for p in obs.panics)
        seen = "; ".join(obs.panics) or f"no panic (guest exit {guest_exit.value})"
        return judged("boot", ok, expected, seen)
    expected = "agent report, then power-off"
    if obs.agent is not None and guest_exit is GuestExit.POWER_OFF:
        return judged("boot", True, expected, expected)
    what = []
    if obs.oopses:
        what.append(f"kernel oops: {obs.oopses[0]}")
    if obs.panics:
        what.append(f"kernel panic: {obs.panics[0]}")
    if obs.linux_version_count > 1:
        what.append("the guest rebooted (a second 'Linux version' line)")
    if obs.agent_error:
        what.append(f"corrupt agent report: {obs.agent_error}")
    elif obs.agent is None:
        what.append("no agent report")
    if firmware_marker and not obs.firmware_entered:
        what.append("the firmware never entered the kernel")
    elif obs.linux_version_count == 0:
        what.append("no kernel output")
    what.append(f"guest exit: {guest_exit.value} ({end_detail})")
    return judged("boot", False, expected, "; ".join(what))


def check_boot(ev: ExactEvidence) -> OracleResult:
    """The guest reached our /init agent and powered off by itself (or, with no agent to
    run, ended in the no-root panic)."""
    return judge_boot(ev.observation, ev.guest_exit, ev.end_detail,
                      agent=agent_expected(ev.plan), firmware_marker=True)


#: What a clean boot prints of the kernel's bug reports.
NO_KERNEL_REPORTS = "no BUG, oops or WARNING"


def judge_kernel_clean(obs: Observation) -> OracleResult | None:
    """A boot that reached our agent printed no BUG, oops or WARNING on the way.

    The kernel survived something it calls a bug; an odd layout of ours can be the
    cause, and a campaign boots a failure again before it reports it, so a warning
    that does not repeat is flaky, not a finding.  Without an agent report the boot
    oracle fails and names the oops itself.
    """
    if obs.agent is None:
        return None
    reports = [*obs.oopses, *obs.warnings]
    observed = reports[0] if reports else NO_KERNEL_REPORTS
    if len(reports) > 1:
        observed += f" (and {len(reports) - 1} more)"
    return judged("kernel-clean", not reports, NO_KERNEL_REPORTS, observed)


def check_kernel_clean(ev: ExactEvidence) -> OracleResult | None:
    """The kernel reported no bug of its own on the way to our agent (judge_kernel_clean)."""
    return judge_kernel_clean(ev.observation)


def check_e820(ev: ExactEvidence) -> OracleResult:
    """The kernel's BIOS-e820 lines equal the sanitized table we wrote, exactly."""
    want = expected_kernel_map(ev.plan)
    expected = (
        _format_map([(e.addr, e.last, kernel_type_words(e.type)) for e in want])
        if want is not None else "(kernel falls back to BIOS-88)"
    )
    lines = ev.observation.bios_e820
    if not lines:
        return unknown("e820", expected, "no BIOS-e820 lines in the log")
    prefix = ev.observation.bios_map_prefix
    observed = _format_map([(ln.start, ln.end, ln.type_text) for ln in lines])
    if prefix != "BIOS-e820":
        return judged("e820", False, expected, observed,
                      f"the kernel used the {prefix} fallback map, not ours")
    return judged("e820", observed == expected, expected, observed)


def check_e820_extended(ev: ExactEvidence) -> OracleResult | None:
    """With a SETUP_E820_EXT node, the kernel's "extended:" map is the whole table, sanitized."""
    full = ev.plan.kernel_e820_ext
    if full is None:
        return None
    want = sanitize(full)
    expected = (_format_map([(e.addr, e.last, kernel_type_words(e.type)) for e in want])
                if want is not None else "(sanitizer fails)")
    lines = ev.observation.e820_tables.get(MapKind.EXTENDED, ())
    if not lines:
        return unknown("e820-extended", expected, "no 'extended:' lines in the log")
    observed = _format_map([(ln.start, ln.end, ln.type_text) for ln in lines])
    return judged("e820-extended", observed == expected, expected, observed)


def _format_setup_data(nodes: Sequence[AgentSetupData]) -> str:
    def show(n: AgentSetupData) -> str:
        size = f"{len(n.data)}{'+' if n.truncated else ''} bytes"
        if len(n.data) > 64:
            return f"{size} {n.data[:16].hex()}... sha256 {hashlib.sha256(n.data).hexdigest()[:16]}"
        return f"{size} {n.data.hex()}" if n.data else size

    return "\n".join(f"{i}: type {n.type:#x}, {show(n)}" for i, n in enumerate(nodes)) or "(none)"


def check_setup_data(ev: ExactEvidence) -> OracleResult | None:
    """/sys/kernel/boot_params/setup_data shows our nodes, in chain order, as the kernel
    left them."""
    if not any(b.name.startswith("setup_data") for b in ev.plan.blobs):
        return None
    if not agent_expected(ev.plan):
        return None  # no agent can run: nothing of its to judge
    want = expected_setup_data(ev.plan)
    if isinstance(want, str):
        return unknown("setup-data", "(not modelled)", want)
    expected = _format_setup_data(want)
    agent = ev.observation.agent
    if agent is None:
        return unknown("setup-data", expected, "no agent report")
    got = agent.setup_data
    ok = len(got) == len(want) and all(
        w.type == g.type and (w.data.startswith(g.data) and len(w.data) > len(g.data)
                              if g.truncated else w.data == g.data)
        for w, g in zip(want, got, strict=False)
    )
    errors = "; ".join(e for e in agent.errors if "setup_data" in e)
    return judged("setup-data", ok, expected, _format_setup_data(got), errors)


def expected_user_map(plan: BootPlan) -> UserMap:
    """The "user:" map for the plan's command line, over the table the kernel holds then:
    its sanitized map (with SETUP_E820_EXT entries) and setup_data marked RESERVED_KERN."""
    base = sanitize(plan.kernel_e820_ext or plan.kernel_e820 or plan.e820) or []
    nodes = [b for b in plan.blobs if b.name.startswith("setup_data")]
    for node in nodes:
        base = [*base]
        kept = [e for e in base if not (e.type == E820Type.RAM and e.addr < node.end
                                        and node.addr < e.end)]
        for e in base:
            if e.type == E820Type.RAM and e.addr < node.end and node.addr < e.end:
                if e.addr < node.addr:
                    kept.append(E820Entry(e.addr, node.addr - e.addr, e.type))
                lo, hi = max(e.addr, node.addr), min(e.end, node.end)
                kept.append(E820Entry(lo, hi - lo, E820Type.RESERVED_KERN))
                if e.end > node.end:
                    kept.append(E820Entry(node.end, e.end - node.end, e.type))
        base = sanitize(kept) or kept
    return apply_user_options(plan.cmdline.decode(errors="replace"), tuple(base))


def check_e820_user(ev: ExactEvidence) -> OracleResult | None:
    """With mem= or memmap= on the command line, the "user:" map is our model's."""
    user = expected_user_map(ev.plan)
    if not user.options:
        return None
    if user.invalid:
        expected = f"panic: {INVALID_USER_MAP_PANIC}"
        ok = any(INVALID_USER_MAP_PANIC in p for p in ev.observation.panics)
        return judged("e820-user", ok, expected, "; ".join(ev.observation.panics) or "no panic")
    if user.table is None:
        expected = "no user-defined map (the options change nothing)"
    else:
        expected = _format_map([(e.addr, e.last, kernel_type_words(e.type)) for e in user.table])
    lines = ev.observation.e820_tables.get(MapKind.USER, ())
    if not lines and user.table is not None:
        return unknown("e820-user", expected, "no 'user:' lines in the log")
    observed = (_format_map([(ln.start, ln.end, ln.type_text) for ln in lines])
                if lines else "no user-defined map (the options change nothing)")
    return judged("e820-user", observed == expected, expected, observed,
                  "options: " + " ".join(user.options))


def judge_cmdline(obs: Observation, cmdline: bytes, *, kernel_message: bool = False
                  ) -> OracleResult:
    """The kernel's "Command line:" message (*kernel_message*: start_kernel's "Kernel
    command line:", which device-tree kernels print) is *cmdline*, byte for byte.

    printk shows the message as one line per newline in it, and a message longer
    than its buffers cut (bootfuzz.judge.printk_model); the lines shown must be
    exactly ours up to such a cut, and agent-cmdline then checks the whole.
    """
    expected = cmdline_shown(cmdline_text(cmdline))
    text = KERNEL_COMMAND_LINE_PREFIX if kernel_message else COMMAND_LINE_PREFIX
    record = obs.kernel_command_line_record if kernel_message else obs.command_line_record
    if record is None:
        return unknown("cmdline", expected, f"no '{text.strip()}' line in the log")
    prefix = text.encode()
    shown = shown_record(record_lines(prefix + cmdline), prefix + record.first,
                         record.prefix, record.following, console_buffers(obs.linux_version))
    seen = cmdline_shown(cmdline_text(b"\n".join(shown.lines)[len(prefix):]))
    return judged("cmdline", shown.how is not Shown.DIFFERENT, expected, seen,
                  f"{shown.detail}; agent-cmdline checks the whole" if shown.detail else "")


def check_cmdline(ev: ExactEvidence) -> OracleResult:
    """The kernel's "Command line:" is the string we wrote."""
    return judge_cmdline(ev.observation, ev.plan.cmdline)


def judge_agent_cmdline(obs: Observation, cmdline: bytes) -> OracleResult:
    """/proc/cmdline inside the guest is *cmdline*."""
    expected = cmdline_shown(cmdline_text(cmdline))
    if obs.agent is None:
        return unknown("agent-cmdline", expected, "no agent report")
    return judged("agent-cmdline", obs.agent.cmdline == cmdline, expected,
                  cmdline_shown(cmdline_text(obs.agent.cmdline)))


def check_agent_cmdline(ev: ExactEvidence) -> OracleResult | None:
    """/proc/cmdline inside the guest is the string we wrote."""
    if not agent_expected(ev.plan):
        return None  # no agent can run: nothing of its to judge
    return judge_agent_cmdline(ev.observation, ev.plan.cmdline)


def check_initrd_placement(ev: ExactEvidence) -> OracleResult:
    """RAMDISK: is [planned address, PAGE_ALIGN(end) - 1] and the kernel did not move it."""
    placed = ev.plan.initrd
    obs = ev.observation
    if placed is None:
        ok = obs.ramdisk is None
        return judged("initrd-placement", ok, "no RAMDISK line (no initrd)",
                      "no RAMDISK line" if ok else f"RAMDISK {obs.ramdisk}")
    last = align_up(placed.end, PAGE_SIZE) - 1
    expected = f"RAMDISK: [mem {placed.addr:#010x}-{last:#010x}], not moved"
    if obs.ramdisk is None:
        if obs.bios_e820 and (obs.init_process or obs.agent):
            return judged("initrd-placement", False, expected, "no RAMDISK line",
                          "the kernel ignored the initrd")
        return unknown("initrd-placement", expected, "the log ends before the RAMDISK line")
    observed = f"RAMDISK: [mem {obs.ramdisk.start:#010x}-{obs.ramdisk.end:#010x}]"
    if obs.ramdisk_move is not None:
        m = obs.ramdisk_move
        observed += f", moved to [mem {m.dest.start:#010x}-{m.dest.end:#010x}]"
    ok = (obs.ramdisk.start, obs.ramdisk.end) == (placed.addr, last) and obs.ramdisk_move is None
    return judged("initrd-placement", ok, expected, observed)


def judge_unpack(obs: Observation, initrd_size: int | None,
                 allowed: Sequence[UnpackStart] = tuple(UnpackStart)) -> OracleResult:
    """The initramfs was unpacked (by one of the *allowed* spellings) without error and
    exactly its pages were freed; with no initrd, nothing was unpacked."""
    if initrd_size is None:
        return judged("initrd-unpacked", obs.unpack_start is None, "no initramfs unpacked",
                      str(obs.unpack_start))
    kib = align_up(initrd_size, PAGE_SIZE) // 1024
    spellings = " or ".join(repr(u.value) for u in allowed)
    expected = f"{spellings}, no failure, 'Freeing initrd memory: {kib}K'"
    if obs.unpack_start is None and obs.initrd_freed_kib is None:
        if obs.agent is not None:
            return judged("initrd-unpacked", False, expected, "no unpack message")
        return unknown("initrd-unpacked", expected, "the log ends before the unpack")
    parts = [repr(obs.unpack_start.value) if obs.unpack_start else "no unpack message"]
    if obs.unpack_failure:
        parts.append(f"Initramfs unpacking failed: {obs.unpack_failure}")
    if obs.not_initramfs:
        parts.append(f"not initramfs: {obs.not_initramfs}")
    parts.append(
        f"Freeing initrd memory: {obs.initrd_freed_kib}K"
        if obs.initrd_freed_kib is not None else "no 'Freeing initrd memory'"
    )
    ok = (
        obs.unpack_start in allowed
        and obs.unpack_failure is None
        and obs.not_initramfs is None
        and obs.initrd_freed_kib == kib
    )
    return judged("initrd-unpacked", ok, expected, ", ".join(parts))


def judge_rejected_image(obs: Observation, initrd_size: int) -> OracleResult:
    """A non-cpio initrd: the kernel tried to unpack it, said why it could not, and
    freed exactly its pages (boot-protocol.md 4.2: the "looks like an initrd" path)."""
    kib = align_up(initrd_size, PAGE_SIZE) // 1024
    expected = (f"an unpack attempt, then 'Initramfs unpacking failed: ...' or 'rootfs image "
                f"is not initramfs (...)', and 'Freeing initrd memory: {kib}K'")
    if obs.unpack_start is None and obs.initrd_freed_kib is None:
        return unknown("initrd-unpacked", expected, "the log ends before the unpack")
    why = obs.unpack_failure or obs.not_initramfs
    observed = (f"{obs.unpack_start.value if obs.unpack_start else 'no unpack message'}, "
                f"{'rejected: ' + why if why else 'not rejected'}, "
                f"Freeing initrd memory: {obs.initrd_freed_kib}K")
    ok = obs.unpack_start is not None and why is not None and obs.initrd_freed_kib == kib
    return judged("initrd-unpacked", ok, expected, observed)


def check_initrd_unpacked(ev: ExactEvidence) -> OracleResult:
    """The kernel unpacked the initramfs without error and freed exactly its pages."""
    spec = ev.plan.case.initrd
    if ev.plan.initrd is not None and spec is not None and spec.raw:
        return judge_rejected_image(ev.observation, ev.plan.initrd.size)
    placed = ev.plan.initrd
    allowed = (ev.unpack_message,) if ev.unpack_message else tuple(UnpackStart)
    return judge_unpack(ev.observation, None if placed is None else placed.size, allowed)


def judge_payload(obs: Observation, size: int, sha256: str) -> OracleResult:
    """The agent read /payload back with *size* bytes and digest *sha256*."""
    expected = f"{size} bytes, sha256 {sha256}"
    agent = obs.agent
    if agent is None:
        return unknown("payload-digest", expected, "no agent report")
    if agent.payload is None:
        return judged("payload-digest", False, expected, "the agent could not read /payload",
                      "; ".join(agent.errors))
    observed = f"{agent.payload.size} bytes, sha256 {agent.payload.sha256.hex()}"
    return judged("payload-digest", observed == expected, expected, observed)


def check_payload(ev: ExactEvidence) -> OracleResult | None:
    """The agent read /payload back with the digest and size the host generated."""
    if not agent_expected(ev.plan):
        return None  # no agent can run: nothing of its to judge
    placed = ev.plan.initrd
    spec = ev.plan.case.initrd
    if placed is None or spec is None:
        return unknown("payload-digest", "(no initrd)", "no initrd was planned")
    return judge_payload(ev.observation, spec.size, placed.payload_sha256)


def check_firmware_memmap(ev: ExactEvidence) -> OracleResult | None:
    """/sys/firmware/memmap (the kernel's firmware table) equals the sanitized E820.

    That table includes SETUP_E820_EXT entries (boot-protocol.md 4.3).
    """
    if not agent_expected(ev.plan):
        return None  # no agent can run: nothing of its to judge
    full = ev.plan.kernel_e820_ext
    want = (sanitize(full) if full is not None else expected_kernel_map(ev.plan)) or []
    expected = _format_map([(e.addr, e.last, firmware_memmap_type(e.type)) for e in want])
    agent = ev.observation.agent
    if agent is None:
        return unknown("firmware-memmap", expected, "no agent report")
    got = sorted((m.start, m.end, m.type) for m in agent.memmap)
    observed = _format_map(got)
    return judged("firmware-memmap", observed == expected, expected, observed)


#: Fields the kernel itself writes into boot_params before /sys/kernel/boot_params
#: shows them, with the bits it may change (None: any).  source: boot-protocol.md
#: 2.1 "Other write-back effects".
KERNEL_WRITTEN: dict[str, int | None] = {
    "screen_info": None,  # orig_x/orig_y and the like, from the decompressor
    "acpi_rsdp_addr": None,  # the RSDP the decompressor found (or 0)
    "scratch": None,  # the 32-bit entry's stack
    "loadflags": int(LoadFlags.KASLR_FLAG),  # set by the decompressor when KASLR ran
    "xloadflags": int(XLoadFlags.XLF_MEM_ENCRYPTION),  # 6.12, mem_encrypt=on
}


def boot_params_differences(written: bytes, kept: bytes) -> list[str]:
    """Names of boot_params fields (or byte ranges) that differ beyond what the kernel writes."""
    diffs: list[str] = []
    covered = bytearray(BOOT_PARAMS_SIZE)
    for field in BOOT_PARAMS:
        covered[field.offset : field.end] = b"\1" * field.size
        a, b = written[field.offset : field.end], kept[field.offset : field.end]
        if a == b:
            continue
        allowed = KERNEL_WRITTEN.get(field.name, 0)
        if allowed is None:
            continue
        xor = int.from_bytes(a, "little") ^ int.from_bytes(b, "little")
        if xor & ~allowed:
            diffs.append(f"{field.name}: wrote {a.hex()}, kernel kept {b.hex()}")
    for offset in range(BOOT_PARAMS_SIZE):
        if not covered[offset] and written[offset] != kept[offset]:
            diffs.append(
                f"byte {offset:#x}: wrote {written[offset]:#04x}, kept {kept[offset]:#04x}"
            )
    return diffs


def _show(value: int | bytes) -> str:
    return value.hex() if isinstance(value, bytes) else f"{value:#x}"


def boot_params_field_differences(
    fields: Sequence[tuple[str, int | bytes]], kept: bytes
) -> list[str]:
    """Fields of *kept* that do not hold the expected values."""
    diffs = []
    for name, want in fields:
        field = BOOT_PARAMS[name]
        got = field.decode(kept)
        if got != want:
            diffs.append(f"{name}: expected {_show(want)}, kernel kept {_show(got)}")
    return diffs


def check_boot_params(ev: ExactEvidence) -> OracleResult | None:
    """The zero page the kernel kept equals the one we wrote, but for what it writes itself.

    Where the kernel builds its own boot_params (PVH), the fields its entry code
    fills from ours are compared instead.
    """
    if not agent_expected(ev.plan):
        return None  # no agent can run: nothing of its to judge
    plan = ev.plan
    if plan.zero_page:
        expected = "boot_params as written (kernel-written fields excepted: "
        expected += ", ".join(KERNEL_WRITTEN) + ")"
    else:
        expected = ", ".join(
            f"{n}={v:#x}" if isinstance(v, int) else n for n, v in plan.boot_params_fields
        )
    agent = ev.observation.agent
    if agent is None:
        return unknown("boot-params", expected, "no agent report")
    if len(agent.boot_params) != BOOT_PARAMS_SIZE:
        return judged("boot-params", False, expected,
                      f"{len(agent.boot_params)} bytes from /sys/kernel/boot_params/data")
    if plan.zero_page:
        diffs = boot_params_differences(plan.zero_page, agent.boot_params)
    else:
        diffs = boot_params_field_differences(plan.boot_params_fields, agent.boot_params)
    return judged("boot-params", not diffs, expected,
                  "; ".join(diffs) if diffs else "as expected")


class StopPoint(enum.StrEnum):
    """Where a run may end early, once the oracles asked for have their answer."""

    RAMDISK = "ramdisk"
    UNPACK = "unpack"


_EARLY_ORACLES = frozenset({"e820", "e820-extended", "e820-user", "cmdline", "initrd-placement"})

#: For each stop point: a console line that proves every oracle listed can answer
#: (printed after the last line they read), and those oracles.  After reserve_initrd
#: prints RAMDISK (and any Move RAMDISK), setup_arch goes on to the ACPI table init,
#: NUMA setup and paging_init's "Zone ranges:"; the first of them ends the run.
#: source: arch/x86/kernel/setup.c (setup_arch order) and mm/mm_init.c.  The unpack
#: ends with "Freeing initrd memory:", after any "Initramfs unpacking failed" or "not
#: initramfs" line (init/initramfs.c, do_populate_rootfs); a boot with no initrd never
#: prints it and runs to its end.
STOP_POINTS: dict[StopPoint, tuple[str, frozenset[str]]] = {
    StopPoint.RAMDISK: (
        r"ACPI: Early table checksum|ACPI BIOS Error|No NUMA configuration|Zone ranges:",
        _EARLY_ORACLES,
    ),
    StopPoint.UNPACK: (r"Freeing initrd memory:", _EARLY_ORACLES | {"initrd-unpacked"}),
}


ORACLES: tuple[Oracle, ...] = (
    check_boot,
    check_kernel_clean,
    check_e820,
    check_e820_extended,
    check_setup_data,
    check_e820_user,
    check_cmdline,
    check_agent_cmdline,
    check_initrd_placement,
    check_initrd_unpacked,
    check_payload,
    check_firmware_memmap,
    check_boot_params,
)


def judge(ev: ExactEvidence, until: StopPoint | None = None) -> list[OracleResult]:
    """Every oracle's answer; with *until*, the ones not asked are unknown, never pass."""
    results = [r for oracle in ORACLES if (r := oracle(ev)) is not None]
    if until is None:
        return results
    asked = STOP_POINTS[until][1]
    return [
        r if r.name in asked else OracleResult(
            r.name, Verdict.UNKNOWN, r.expected, "(not observed)",
            f"not asked: the run stopped early at {until.value}", asked=False,
        )
        for r in results
    ]
