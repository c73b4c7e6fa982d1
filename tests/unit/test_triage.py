"""Crash titles and signatures (bootfuzz.fuzz.triage) on real consoles and on formats.

The recorded logs (tests/data/logs/crashes, README there) are real boots: each gets its
expected title; the two boots of one case at two KASLR offsets get one title although
their addresses differ; logs of different crash sites never share a signature.  Console
formats no recorded boot has (a general protection fault, a bare oops, old register
dumps) are tested on hand-written lines built from the kernel's format strings.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.fuzz.triage import (
    TITLE_LENGTH,
    Signature,
    crash_title,
    evidence,
    normalize,
    signature,
)
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.judge.patterns import CRASH_PATTERNS, OOPS
from bootfuzz.judge.verdict import OracleResult, Verdict
from bootfuzz.transcript import GuestExit
from tests.fakes import FakeResult, FakeTranscript

LOGS = Path(__file__).parent.parent / "data" / "logs"
CRASHES = LOGS / "crashes"
TITLES: dict[str, str] = tomllib.loads((CRASHES / "titles.toml").read_text())


def console(name: str) -> str:
    return (CRASHES / name).read_text()


def failed(text: str, failing: tuple[str, ...] = ("boot",),
           guest_exit: GuestExit = GuestExit.KILLED) -> FakeResult:
    oracles = tuple(OracleResult(n, Verdict.FAIL, "e", "o") for n in failing)
    return FakeResult(Verdict.FAIL, oracles, parse_transcript(text), guest_exit,
                      FakeTranscript(text))


def sig(text: str, failing: tuple[str, ...] = ("boot",)) -> Signature:
    s = signature(failed(text, failing))
    assert s is not None
    return s


# -- the recorded logs ------------------------------------------------------------------


def test_every_recorded_log_has_an_expected_title() -> None:
    assert set(TITLES) == {p.name for p in CRASHES.glob("*.txt")}


@pytest.mark.parametrize("name", sorted(TITLES))
def test_recorded_log_gets_its_title(name: str) -> None:
    assert crash_title(console(name)) == TITLES[name]
    assert sig(console(name)) == Signature(("boot",), TITLES[name])


@pytest.mark.parametrize("name", ["panic-no-root-6.1-cloud-real.txt",
                                  "panic-no-root-6.1-qemu-kernel-real.txt"])
def test_older_real_no_root_logs_get_the_no_root_title(name: str) -> None:
    title = "Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(N,N)"
    assert crash_title((LOGS / name).read_text(errors="replace")) == title


_ADDRESS = re.compile(r"\b(?:0x)?[0-9a-f]{16}\b")


@pytest.mark.parametrize("stem", ["kernel-bug-fortify-6.1-cloud-kaslr",
                                  "bug-page-fault-e820-no-mmio-gap-6.1-cloud-kaslr"])
def test_one_site_at_two_kaslr_offsets_is_one_signature(stem: str) -> None:
    a, b = console(f"{stem}-a.txt"), console(f"{stem}-b.txt")
    # Really two offsets: the kernel's addresses differ between the boots.
    assert set(_ADDRESS.findall(a)) != set(_ADDRESS.findall(b))
    assert sig(a) == sig(b)
    assert sig(a).slug == sig(b).slug


def test_recorded_logs_of_different_sites_never_share_a_signature() -> None:
    by_title: dict[str, list[str]] = {}
    for name, title in TITLES.items():
        by_title.setdefault(title, []).append(name)
    assert sorted(len(v) for v in by_title.values() if len(v) > 1) == [2, 2]  # the pairs
    for (t1, n1), (t2, n2) in itertools.combinations(by_title.items(), 2):
        assert sig(console(n1[0])) != sig(console(n2[0])), (t1, t2)
        assert sig(console(n1[0])).slug != sig(console(n2[0])).slug


def test_same_bug_at_another_source_line_differs() -> None:
    """The fortify BUG of 6.1 and 6.12: one bug, two sites (lines 1027 and 1040)."""
    assert sig(console("kernel-bug-fortify-6.1-cloud-kaslr-a.txt")) != sig(
        console("kernel-bug-fortify-6.12-cloud.txt"))


def test_kernel_bug_outranks_an_earlier_warning_and_the_panic() -> None:
    text = console("kernel-bug-fortify-6.12-cloud.txt")
    lines = text.splitlines()
    warning = next(i for i, ln in enumerate(lines) if "WARNING: CPU: 0" in ln)
    bug = next(i for i, ln in enumerate(lines) if "kernel BUG at" in ln)
    assert warning < bug  # the WARNING comes first in the console
    assert crash_title(text) == "kernel BUG at lib/string_helpers.c:1040"


def test_bug_outranks_the_panic_it_causes() -> None:
    text = console("bug-page-fault-e820-no-mmio-gap-6.1-cloud-kaslr-a.txt")
    assert "Kernel panic - not syncing: Attempted to kill the idle task!" in text
    assert crash_title(text) == TITLES["bug-page-fault-e820-no-mmio-gap-6.1-cloud-kaslr-a.txt"]


def test_the_same_case_with_other_failing_oracles_is_another_signature() -> None:
    text = console("panic-deadlocked-on-memory-6.1-cloud-73m.txt")
    assert sig(text, ("boot",)) != sig(text, ("boot", "initrd-unpacked"))


def test_evidence_quotes_the_crash_lines() -> None:
    text = console("kernel-bug-fortify-6.1-cloud-kaslr-a.txt")
    result = failed(text, ("boot", "cmdline"))
    shown = evidence(result, sig(text, ("boot", "cmdline")))
    assert "kernel BUG at lib/string_helpers.c:1027!" in shown
    assert "RIP: 0010:fortify_panic+0xf/0x11" in shown
    assert "PANIC: early exception 0x06" in shown
    assert "Command line: console=ttyS0" in shown
    assert "Call Trace" not in shown and "RAX:" not in shown


# -- formats no recorded boot has -------------------------------------------------------
# Lines as the kernel's format strings print them (sources in judge/patterns.py).


def ts(seconds: float) -> str:
    return f"[{seconds:12.6f}] "


def oops(header: str, rip: str, *, at: float = 1.0, extra: str = "") -> str:
    return "".join(ts(at + i / 100) + ln + "\r\r\n" for i, ln in enumerate([
        header,
        "CPU: 0 PID: 1 Comm: swapper/0 Not tainted 6.1.0-56-cloud-amd64 #1",
        "RIP: 0010:" + rip,
        "RSP: 0000:ffffc90000013e28 EFLAGS: 00010246",
        *(extra.splitlines()),
        "Kernel panic - not syncing: Fatal exception",
    ]))


@pytest.mark.parametrize(("log", "title"), [
    # 5.x-6.1 and 6.12 general protection fault headers
    (oops("general protection fault, probably for non-canonical address "
          "0xdffffc0000000000: 0000 [#1] PREEMPT SMP NOPTI", "e820__update_table+0x31/0x1b0"),
     "general protection fault in e820__update_table"),
    (oops("Oops: general protection fault, probably for non-canonical address "
          "0x6b6b6b6b6b6b6b6b: 0000 [#1] PREEMPT SMP NOPTI", "e820__update_table+0x2c/0x1b0"),
     "general protection fault in e820__update_table"),
    # an oops with no BUG line: the trap and the function
    (oops("invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", "setup_arch+0x5c4/0xd40"),
     "invalid opcode in setup_arch"),
    (oops("Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", "setup_arch+0x5c4/0xd40"),
     "invalid opcode in setup_arch"),
    (oops("divide error: 0000 [#1] SMP", "calibrate_delay+0x3a/0x190"),
     "divide error in calibrate_delay"),
    ("PANIC: early exception 0x0e IP 10:ffffffff8a2e31c4 error 0 cr2 0xffffffffff5fd000\r\n"
     + ts(0) + "RIP: 0010:early_memremap+0x3/0x30\r\n",
     "early exception 0x0e in early_memremap"),
    # 3.x/4.x register dump: RIP with bracketed addresses before the symbol
    (ts(2) + "RIP: 0010:[<ffffffff8131d0a4>]  [<ffffffff8131d0a4>] memcpy_orig+0x54/0x110\n",
     "crash in memcpy_orig"),
    # a RIP outside any symbol names nothing: the panic does
    (ts(2) + "RIP: 0010:0x1000\n" + ts(2) + "Kernel panic - not syncing: Fatal exception\n",
     "Kernel panic - not syncing: Fatal exception"),
    # WARN() with no file recorded; pre-4.x WARNING; lockdep's (no site at all)
    (ts(1) + "WARNING: CPU: 1 PID: 7 at e820__range_add+0x9/0x40\n",
     "WARNING: at e820__range_add"),
    (ts(1) + "WARNING: at arch/x86/kernel/e820.c:123 e820_add_region+0x9/0x40()\n",
     "WARNING: at arch/x86/kernel/e820.c:123 e820_add_region"),
    (ts(1) + "WARNING: possible recursive locking detected\n",
     "WARNING: possible recursive locking detected"),
    # BUG lines: the function from the RIP that follows; a source line kept
    (ts(3) + "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [swapper/0:1]\n"
     + ts(3) + "RIP: 0010:memblock_find_in_range_node+0x1f/0x1b0\n",
     "BUG: soft lockup - CPU#N stuck for Ns! [swapper/N:N] in memblock_find_in_range_node"),
    (ts(3) + "BUG: sleeping function called from invalid context at kernel/sched/core.c:9901\n",
     "BUG: sleeping function called from invalid context at kernel/sched/core.c:9901"),
    (ts(3) + "BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
     + ts(3) + "Oops: 0000 [#1] PREEMPT SMP NOPTI\n"
     + ts(3) + "RIP: 0010:ext4_fill_super+0x3a/0x1200 [ext4]\n",
     "BUG: kernel NULL pointer dereference, address: 0x? in ext4_fill_super"),
])
def test_format_title(log: str, title: str) -> None:
    assert crash_title(log) == title


def test_nothing_crashed_is_no_title_and_the_exit_names_the_signature() -> None:
    text = console("warning-early-ioremap-setup-indirect-6.1-cloud.txt")
    quiet = "\n".join(ln for ln in text.splitlines() if "WARNING" not in ln
                      and "RIP:" not in ln)
    assert crash_title(quiet) is None
    assert sig(quiet).title == "exit: killed"
    power_off = signature(failed(quiet, ("cmdline",), GuestExit.POWER_OFF))
    assert power_off == Signature(("cmdline",), "mismatch")


def test_only_the_first_boot_is_titled() -> None:
    """A guest that reset prints a second boot; its crash is not this failure's."""
    first = ts(0) + "Linux version 6.1.0\n" + ts(1) + "Kernel panic - not syncing: first\n"
    second = ts(0) + "Linux version 6.1.0\n" + ts(1) + "kernel BUG at mm/slub.c:1!\n"
    assert crash_title(first + second) == "Kernel panic - not syncing: first"


def test_crash_lines_count_only_at_the_start_of_a_message() -> None:
    """The kernel echoing a command line that mentions a BUG is no crash."""
    line = ts(0) + "Command line: console=ttyS0 x=kernel_BUG_at y=BUG:\n"
    assert crash_title(line) is None


def test_title_length_is_bounded() -> None:
    text = ts(1) + "Kernel panic - not syncing: " + "x" * 500 + "\n"
    assert len(crash_title(text) or "") == TITLE_LENGTH


def test_precedence_is_the_issues_order() -> None:
    assert [p.name for p in CRASH_PATTERNS] == [
        "kernel-bug", "bug", "unable-to-handle", "warning", "warning-function", "warning-text",
        "general-protection-fault", "rip", "kernel-panic", "decompressor-error"]


def test_normalize_keeps_sites_and_identifiers_blanks_what_varies() -> None:
    assert normalize("at 0xffff8880 pid 123 ffffffffa0001234") == "at 0x? pid N 0x?"
    assert normalize("CPU#1 stuck for 23s! [kworker/1:2] at mm/slub.c:4321 ext4_foo+0x1/0x2"
                     ) == "CPU#N stuck for Ns! [kworker/N:N] at mm/slub.c:4321 ext4_foo"
    assert normalize("x86_64_start_kernel") == "x86_64_start_kernel"


# -- the property: one site, one signature; two sites, two -------------------------------

_FUNCS = st.sampled_from(["fortify_panic", "find_cpio_data", "e820__update_table",
                          "setup_arch", "memblock_alloc_range_nid", "x86_64_start_kernel"])
_FILES = st.sampled_from(["lib/string_helpers.c", "mm/memblock.c", "arch/x86/kernel/e820.c"])
_KINDS = st.sampled_from(["kernel-bug", "page-fault", "warning", "gpf", "invalid-opcode"])


@dataclass(frozen=True)
class Site:
    kind: str
    file: str
    line: int
    func: str


_SITES = st.builds(Site, _KINDS, _FILES, st.integers(1, 3000), _FUNCS)


@st.composite
def crash_log(draw: st.DrawFn, site: Site) -> str:
    """One crash at *site*, at a random KASLR offset, time, CPU and PID."""
    kaslr = draw(st.integers(0, 511)) << 21
    text_addr = 0xFFFFFFFF81000000 + kaslr + draw(st.integers(0, 1 << 20))
    data_addr = 0xFFFF888000000000 + (draw(st.integers(0, 1 << 30)) << 12)
    at, cpu, pid = draw(st.floats(0, 100)), draw(st.integers(0, 63)), draw(st.integers(0, 99999))
    off, size = draw(st.integers(0, 0xFFF)), draw(st.integers(0x1000, 0x2000))
    rip = f"{site.func}+{off:#x}/{size:#x}"
    regs = f"RAX: {data_addr:016x} RBX: {text_addr:016x} RCX: {pid:016x}"
    header = {
        "kernel-bug": f"kernel BUG at {site.file}:{site.line}!",
        "page-fault": f"BUG: unable to handle page fault for address: {data_addr:016x}",
        "warning": f"WARNING: CPU: {cpu} PID: {pid} at {site.file}:{site.line} {rip}",
        "gpf": f"general protection fault, probably for non-canonical address "
               f"{data_addr ^ (1 << 63):#x}: 0000 [#1] PREEMPT SMP NOPTI",
        "invalid-opcode": "invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
    }[site.kind]
    return "".join(f"[{at:12.6f}] {ln}\r\r\n" for ln in [
        header, f"CPU: {cpu} PID: {pid} Comm: swapper/{cpu} Not tainted 6.1.0 #1",
        f"RIP: 0010:{rip}", regs,
        f"PANIC: early exception 0x06 IP 10:{text_addr:x} error 0 cr2 {data_addr:#x}",
        "Kernel panic - not syncing: Fatal exception"])


def _identity(site: Site) -> tuple[str, ...]:
    """What tells two sites apart for the kind's title (the others do not appear)."""
    if site.kind == "kernel-bug":
        return (site.kind, site.file, str(site.line))
    if site.kind == "warning":
        return (site.kind, site.file, str(site.line), site.func)
    return (site.kind, site.func)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), a=_SITES, b=_SITES)
def test_signatures_equal_exactly_when_the_sites_are_equal(
    data: st.DataObject, a: Site, b: Site,
) -> None:
    log_a, log_b = data.draw(crash_log(a)), data.draw(crash_log(b))
    assert (sig(log_a) == sig(log_b)) == (_identity(a) == _identity(b))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), site=_SITES)
def test_one_site_at_any_addresses_is_one_signature(data: st.DataObject, site: Site) -> None:
    assert sig(data.draw(crash_log(site))) == sig(data.draw(crash_log(site)))


# arm64 and riscv64 oopses.  No boot here produced one (a device-tree loader's faults
# kill these kernels before their console is up, or not at all), so the lines are
# written from the format strings of the pinned kernels themselves (``strings`` of
# debian-6.12-cloud-arm64 and debian-6.12-riscv64: "Internal error: %s: %016lx [#%d] SMP",
# "pc : %pS", "%s [#%d]", "epc : %pS", "Unable to handle kernel %s at virtual address
# %016lx", "Oops - load access fault", ...).
ARM64_PAGE_FAULT = [
    "Unable to handle kernel paging request at virtual address ffff8000800a0000",
    "Mem abort info:",
    "Internal error: Oops: 0000000096000007 [#1] SMP",
    "CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.117+deb13-cloud-arm64 #1",
    "pc : of_fdt_unflatten_tree+0x2c/0x70",
    "lr : unflatten_device_tree+0x40/0x98",
    "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b",
]
RISCV_LOAD_FAULT = [
    "Oops - load access fault [#1]",
    "CPU: 0 UID: 0 PID: 1 Comm: swapper/0 Not tainted 6.12.117+deb13-riscv64 #1",
    "epc : memblock_add_range+0x1a/0x2e0",
    " ra : memblock_reserve+0x5c/0x80",
    "epc : ffffffff80a0c3b2 ra : ffffffff80a0c8e4 sp : ff20000000013d80",
    "Kernel panic - not syncing: Fatal exception",
]


def lines(bodies: list[str], at: float = 1.0) -> str:
    return "".join(ts(at + i / 100) + b + "\r\r\n" for i, b in enumerate(bodies))


@pytest.mark.parametrize(("log", "title"), [
    (lines(ARM64_PAGE_FAULT), "Unable to handle kernel paging request in of_fdt_unflatten_tree"),
    (lines([ARM64_PAGE_FAULT[0].replace("ffff8000800a0000", "ffff800081e40000"),
            *ARM64_PAGE_FAULT[1:]]),  # another KASLR offset: the same title
     "Unable to handle kernel paging request in of_fdt_unflatten_tree"),
    (lines(["Unable to handle kernel NULL pointer dereference at virtual address "
            "0000000000000008", *ARM64_PAGE_FAULT[1:]]),
     "Unable to handle kernel NULL pointer dereference in of_fdt_unflatten_tree"),
    (lines(["Internal error: Oops - Undefined instruction: 0000000002000000 [#1] SMP",
            "pc : early_init_dt_scan_chosen+0x10/0x1d0"]),
     "Oops - Undefined instruction in early_init_dt_scan_chosen"),
    (lines(RISCV_LOAD_FAULT), "Oops - load access fault in memblock_add_range"),
    (lines(["Unable to handle kernel paging request at virtual address ff60000002000000",
            "Oops [#1]", *RISCV_LOAD_FAULT[1:]]),
     "Unable to handle kernel paging request in memblock_add_range"),
    (lines(["kernel BUG at mm/memblock.c:1477!", "Kernel BUG [#1]", *RISCV_LOAD_FAULT[1:]]),
     "kernel BUG at mm/memblock.c:1477"),
    # riscv's register line without symbols names nothing: the panic does
    (lines(["Oops [#1]", RISCV_LOAD_FAULT[4], RISCV_LOAD_FAULT[5]]),
     "Kernel panic - not syncing: Fatal exception"),
])
def test_device_tree_oops_titles(log: str, title: str) -> None:
    assert crash_title(log) == title


@pytest.mark.parametrize("body", [
    ARM64_PAGE_FAULT[0], ARM64_PAGE_FAULT[2], RISCV_LOAD_FAULT[0], "Oops [#1]",
    "Kernel BUG [#1]", "Internal error: Oops - BUG: 00000000f2000800 [#1] SMP"])
def test_device_tree_oops_lines_are_oopses(body: str) -> None:
    """The console stops on them and kernel-clean fails on them, as on x86's."""
    assert OOPS.match(ts(1) + body)


@pytest.mark.parametrize("body", [
    "[Firmware Bug]: Unable to handle paging request in EFI runtime service",
    "Oopsed too often (kernel.oops_limit is 10000)", "Kernel BUG reporting enabled"])
def test_lookalikes_are_not_oopses(body: str) -> None:
    assert not OOPS.match(ts(1) + body)


def test_two_device_tree_crash_sites_never_share_a_signature() -> None:
    a = lines(ARM64_PAGE_FAULT)
    assert sig(a) != sig(a.replace("of_fdt_unflatten_tree", "unflatten_dt_nodes"))
    assert sig(a) == sig(lines(ARM64_PAGE_FAULT, at=3.0))
