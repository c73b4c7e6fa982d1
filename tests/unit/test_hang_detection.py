"""Hangs found in seconds: the console's halt probe, QMP's register dump read for a
halted CPU, the silence learned per kernel, and each line's arrival time.

The console runs real processes (small Python scripts standing in for a backend);
the QMP client talks to a stand-in QMP server on a real unix socket.  The real QEMU
guests are in tests/integration/test_hang_detection_real.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootfuzz.case import InitrdSpec
from bootfuzz.compression import Compression
from bootfuzz.errors import BackendError
from bootfuzz.run import silence
from bootfuzz.run.backends.base import HaltProbing
from bootfuzz.run.backends.kvm import KvmBackend
from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend, qmp_socket
from bootfuzz.run.console import CONSOLE_PATTERNS, PatternKind, run_console
from bootfuzz.run.exits import classify_exit
from bootfuzz.run.phases import guest_phases
from bootfuzz.run.qmp import QmpClient, QmpError, QmpHaltProbe, halted_with_interrupts_off
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript

# What QEMU 7.2 printed for `info registers` of a guest that ran `cli; hlt` in long
# mode (captured over QMP from the firmware test's payload), cut to the lines read.
DUMP_CLI_HLT = (
    "\r\nCPU#0\r\n"
    "RAX=0000000000000000 RBX=0123456789abcdef RCX=0000000000000000 RDX=0000000000000000\r\n"
    "RSI=0000000000007000 RDI=0000000000000000 RBP=0000000000000000 RSP=0000000000008ff0\r\n"
    "RIP=0000000000100002 RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n"
)


def py(body: str) -> list[str]:
    prelude = ("import sys, time\n"
               "def say(s):\n    sys.stdout.write(s + '\\n'); sys.stdout.flush()\n")
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


class StandInProbe:
    """Says "halted" from its *after*-th question on (None: never); counts calls."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.asked = 0
        self.closed = 0

    def halted(self) -> str | None:
        self.asked += 1
        if self.after is not None and self.asked >= self.after:
            return "stand-in: halted with interrupts off"
        return None

    def close(self) -> None:
        self.closed += 1


# ---- the console's halt probe -------------------------------------------------------------


def test_a_quiet_guest_the_probe_calls_halted_ends_halted_and_hung() -> None:
    probe = StandInProbe(after=2)
    t = run_console(py("say('up'); time.sleep(60)"), timeout=60, silence_timeout=60,
                    probe=probe)
    assert (t.end, t.end_detail) == (SessionEnd.HALTED, "stand-in: halted with interrupts off")
    assert probe.asked == 2 and probe.closed == 1
    assert t.killed and t.text == "up\n"
    # The session stopped the process: its status says nothing; the probe said hung.
    assert classify_exit(t, QemuTcgBackend.exit_statuses) is GuestExit.HUNG


def test_an_oops_tail_ends_when_the_probe_finds_the_guest_halted() -> None:
    """The early exception handler halts after an oops with no panic end line: the
    tail (here 600 s, past the test's deadline) ends on the probe's answer."""
    probe = StandInProbe(after=1)
    patterns = tuple(dataclasses.replace(p, tail_time=600.0) if p.kind is PatternKind.KERNEL_OOPS
                     else p for p in CONSOLE_PATTERNS)
    t = run_console(py("say('[    0.000000] BUG: kernel NULL pointer dereference'); "
                       "say('[    0.000000] RIP: 0010:f+0x1/0x2'); time.sleep(900)"),
                    timeout=900, silence_timeout=900, probe=probe, patterns=patterns)
    assert t.end is SessionEnd.KERNEL_OOPS
    assert probe.asked == 1 and t.killed
    assert t.text.endswith("RIP: 0010:f+0x1/0x2\n")


def test_a_probe_that_never_sees_a_halt_leaves_the_silence_timeout_in_charge() -> None:
    probe = StandInProbe(after=None)
    t = run_console(py("say('up'); time.sleep(60)"), timeout=60, silence_timeout=1.5,
                    probe=probe)
    assert t.end is SessionEnd.SILENCE
    assert probe.asked >= 1 and probe.closed == 1
    assert classify_exit(t, QemuTcgBackend.exit_statuses) is GuestExit.KILLED


def test_a_guest_that_ends_by_itself_is_never_judged_by_the_probe() -> None:
    probe = StandInProbe(after=1)
    t = run_console(py("say('BOOTFUZZ-AGENT {}'); sys.exit(99)"), timeout=60,
                    silence_timeout=60, probe=probe)
    assert t.end is SessionEnd.AGENT_REPORT and t.exit_status == 99
    assert probe.closed == 1


def test_the_probe_is_closed_when_the_backend_cannot_start(tmp_path: Path) -> None:
    probe = StandInProbe(after=None)
    with pytest.raises(BackendError):
        run_console([str(tmp_path / "no-such-qemu")], timeout=5, silence_timeout=5, probe=probe)
    assert probe.closed == 1


def test_only_qemu_needs_probing_our_vmm_exits_on_a_halt() -> None:
    assert isinstance(QemuTcgBackend(), HaltProbing)
    assert not isinstance(KvmBackend(), HaltProbing)


def test_qemu_listens_for_qmp_where_its_probe_connects(tmp_path: Path) -> None:
    assert qmp_socket(tmp_path) == tmp_path.resolve() / "qmp.sock"
    deep = tmp_path / ("d" * 120)
    path = qmp_socket(deep)
    assert len(str(path)) <= 107 and path != qmp_socket(tmp_path / ("e" * 120))
    assert isinstance(QemuTcgBackend().halt_probe(deep), QmpHaltProbe)


# ---- reading the register dump -------------------------------------------------------------


def test_a_dump_halted_with_if_clear_gives_the_rip() -> None:
    assert halted_with_interrupts_off(DUMP_CLI_HLT) == 0x100002


@pytest.mark.parametrize(("old", "new", "why"), [
    ("HLT=1", "HLT=0", "running"),
    ("RFL=00000046", "RFL=00000246", "halted with IF set: an interrupt wakes it"),
    ("RFL=00000046", "", "no flags in the dump"),
])
def test_a_dump_that_is_not_a_dead_cpu_says_none(old: str, new: str, why: str) -> None:
    assert halted_with_interrupts_off(DUMP_CLI_HLT.replace(old, new)) is None, why


# ---- the QMP client, against a stand-in server ---------------------------------------------


@dataclasses.dataclass
class StandInQmp:
    """A QMP server on a unix socket answering each command from *answers*."""

    path: Path
    answers: dict[str, list[dict[str, object]]]
    received: list[dict[str, object]] = dataclasses.field(default_factory=list)

    def serve(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            f.flush()
            for line in f:
                doc = json.loads(line)
                self.received.append(doc)
                for reply in self.answers.get(str(doc["execute"]), [{"return": {}}]):
                    f.write(json.dumps(reply).encode() + b"\n")
                f.flush()


@pytest.fixture
def qmp_server(tmp_path: Path) -> Iterator[StandInQmp]:
    server = StandInQmp(tmp_path / "qmp.sock", {})
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(server.path))
    listener.listen(1)
    thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
    thread.start()
    yield server
    listener.close()


def test_qmp_client_negotiates_skips_events_and_returns_the_result(
        qmp_server: StandInQmp) -> None:
    qmp_server.answers["human-monitor-command"] = [
        {"event": "RTC_CHANGE", "data": {}}, {"return": DUMP_CLI_HLT}]
    client = QmpClient(qmp_server.path)
    try:
        got = client.execute("human-monitor-command", {"command-line": "info registers"})
    finally:
        client.close()
    assert got == DUMP_CLI_HLT
    assert qmp_server.received == [
        {"execute": "qmp_capabilities"},
        {"execute": "human-monitor-command", "arguments": {"command-line": "info registers"}}]


def test_qmp_client_raises_on_an_error_reply(qmp_server: StandInQmp) -> None:
    qmp_server.answers["query-status"] = [{"error": {"class": "GenericError", "desc": "no"}}]
    client = QmpClient(qmp_server.path)
    try:
        with pytest.raises(QmpError, match=r"query-status.*GenericError"):
            client.execute("query-status")
    finally:
        client.close()


def test_halt_probe_needs_two_dumps_at_one_rip_and_removes_the_socket(
        qmp_server: StandInQmp) -> None:
    qmp_server.answers["human-monitor-command"] = [{"return": DUMP_CLI_HLT}]
    probe = QmpHaltProbe(qmp_server.path)
    assert probe.halted() is None  # one dump could catch a vCPU mid-update
    why = probe.halted()
    assert why is not None and "halted with interrupts off at RIP 0x100002" in why
    probe.close()
    assert not qmp_server.path.exists()


def test_halt_probe_without_a_socket_says_not_halted(tmp_path: Path) -> None:
    probe = QmpHaltProbe(tmp_path / "absent.sock")
    assert probe.halted() is None
    probe.close()


# ---- arrival times and phases --------------------------------------------------------------


def test_each_line_is_timed_when_it_arrived() -> None:
    t = run_console(py("say('a'); time.sleep(1.0); say('b'); say('BOOTFUZZ-AGENT {}')"),
                    timeout=60, silence_timeout=60)
    assert len(t.line_times) == 3 == t.text.count("\n")
    assert list(t.line_times) == sorted(t.line_times)
    assert t.first_output_after is not None and t.line_times[0] >= t.first_output_after
    # The sleep lies between them: not stamped together, though a busy machine may read
    # the first line late (it failed at a 0.4 s sleep and >= 0.4 under a campaign's load).
    assert t.line_times[1] - t.line_times[0] >= 0.5


TRANSCRIPT = Transcript(
    text=("bootfuzz-fw: entering kernel\n[    0.0] Linux version 6.1\n"
          "[    0.5] RAMDISK: [mem 0x0fefe000-0x0fffffff]\n"
          "[    1.5] Freeing initrd memory: 1032K\nBOOTFUZZ-AGENT {}\n"),
    raw=b"", end=SessionEnd.AGENT_REPORT, exit_status=99, signal=None, duration=3.0,
    first_output_after=0.25, firmware_entered=True, end_detail="", killed=False,
    line_times=(0.25, 1.0, 1.5, 2.0, 2.75),
)


def test_guest_phases_end_at_their_lines_and_add_up() -> None:
    phases = guest_phases(TRANSCRIPT)
    assert phases == {"backend-start": 0.25, "to-ramdisk": 1.25, "to-unpacked": 0.5,
                      "to-agent": 0.75, "to-exit": 0.25}
    assert sum(phases.values()) == TRANSCRIPT.duration


def test_a_phase_whose_line_never_came_is_left_out_and_the_next_runs_from_the_last() -> None:
    no_initrd = dataclasses.replace(
        TRANSCRIPT, text=TRANSCRIPT.text.replace("RAMDISK", "NO").replace("Freeing", "No"))
    assert guest_phases(no_initrd) == {"backend-start": 0.25, "to-agent": 2.5, "to-exit": 0.25}
    silent = dataclasses.replace(TRANSCRIPT, text="", line_times=(), first_output_after=None)
    assert guest_phases(silent) == {"backend-start": 3.0}


# ---- the silence learned per kernel --------------------------------------------------------

SHA = "ab" * 32


def boot_with_gap(gap: float) -> Transcript:
    """A passing boot whose longest quiet stretch is *gap* seconds."""
    return dataclasses.replace(TRANSCRIPT, first_output_after=0.1,
                               line_times=(0.2, 0.3, 0.3 + gap, 0.4 + gap, 0.5 + gap))


def test_longest_gap_counts_the_start_and_every_pair_of_lines() -> None:
    assert silence.longest_gap(TRANSCRIPT) == 0.75
    assert silence.longest_gap(boot_with_gap(4.0)) == 4.0
    late_start = dataclasses.replace(TRANSCRIPT, first_output_after=2.0,
                                     line_times=(2.0, 2.1))
    assert silence.longest_gap(late_start) == 2.0


SMALL = InitrdSpec(1 << 20, Compression.BZIP2)


def test_a_kernel_never_seen_keeps_the_default(tmp_path: Path) -> None:
    learned = silence.LearnedSilence(60.0)
    assert silence.timeout_for(learned, SHA, SMALL, tmp_path) == 60.0
    assert silence.timeout_for(learned, None, SMALL, tmp_path) == 60.0
    assert silence.timeout_for(7.0, SHA, SMALL, tmp_path) == 7.0  # a fixed timeout stays


def test_silence_is_learned_after_min_boots_as_factor_times_the_longest_gap(
        tmp_path: Path) -> None:
    learned = silence.LearnedSilence(60.0)
    for i in range(silence.MIN_BOOTS):
        assert silence.timeout_for(learned, SHA, SMALL, tmp_path) == 60.0, f"after {i} boots"
        silence.learn(SHA, boot_with_gap(5.0 if i == 1 else 1.0), SMALL, tmp_path)
    assert silence.read_record(SHA, tmp_path) == silence.SilenceRecord(
        5.0, silence.MIN_BOOTS, (("bzip2", 1 << 20),))
    assert silence.timeout_for(learned, SHA, SMALL, tmp_path) == silence.GAP_FACTOR * 5.0
    # Another kernel has learned nothing.
    assert silence.timeout_for(learned, "cd" * 32, SMALL, tmp_path) == 60.0


def test_a_heavier_unpack_than_any_on_record_gets_the_default(tmp_path: Path) -> None:
    """The unpack is a boot's longest quiet stretch and grows with the initrd: gaps
    learned from 1 MiB of bzip2 say nothing about 8 MiB of it, nor about xz."""
    learned = silence.LearnedSilence(60.0)
    for _ in range(silence.MIN_BOOTS):
        silence.learn(SHA, boot_with_gap(5.0), SMALL, tmp_path)
    assert silence.timeout_for(learned, SHA, InitrdSpec(1 << 19, Compression.BZIP2),
                               tmp_path) == 15.0
    assert silence.timeout_for(learned, SHA, None, tmp_path) == 15.0  # nothing to unpack
    assert silence.timeout_for(learned, SHA, InitrdSpec(8 << 20, Compression.BZIP2),
                               tmp_path) == 60.0
    assert silence.timeout_for(learned, SHA, InitrdSpec(1 << 19, Compression.XZ),
                               tmp_path) == 60.0
    silence.learn(SHA, boot_with_gap(6.0), InitrdSpec(8 << 20, Compression.BZIP2), tmp_path)
    assert silence.timeout_for(learned, SHA, InitrdSpec(8 << 20, Compression.BZIP2),
                               tmp_path) == 18.0


def test_learned_silence_never_drops_below_the_floor_nor_exceeds_the_default(
        tmp_path: Path) -> None:
    for _ in range(silence.MIN_BOOTS):
        silence.learn(SHA, boot_with_gap(0.5), SMALL, tmp_path)
    learned = silence.LearnedSilence(60.0)
    assert silence.timeout_for(learned, SHA, SMALL, tmp_path) == silence.FLOOR
    silence.learn(SHA, boot_with_gap(30.0), SMALL, tmp_path)
    assert silence.timeout_for(learned, SHA, SMALL, tmp_path) == 60.0


def test_an_unreadable_record_costs_the_default_never_an_error(tmp_path: Path) -> None:
    path = tmp_path / "silence" / f"{SHA}.json"
    path.parent.mkdir()
    for bad in ("{", '{"longest_gap": "x", "boots": 5}', "[]", '{"boots": 5}',
                '{"longest_gap": 1, "boots": 5, "payloads": {"gzip": "x"}}'):
        path.write_text(bad)
        assert silence.read_record(SHA, tmp_path) == silence.SilenceRecord(0.0, 0), bad
    silence.learn(SHA, boot_with_gap(2.0), SMALL, tmp_path)  # a broken record starts again
    assert silence.read_record(SHA, tmp_path) == silence.SilenceRecord(
        2.0, 1, (("bzip2", 1 << 20),))


def _learn_many(cache: str, n: int) -> None:
    for _ in range(n):
        silence.learn(SHA, boot_with_gap(1.0), SMALL, Path(cache))


def test_parallel_boots_each_count(tmp_path: Path) -> None:
    """Workers of a campaign learn at once: the lock makes every boot count."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_learn_many, args=(str(tmp_path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    assert silence.read_record(SHA, tmp_path).boots == 100


def test_the_kernel_file_is_hashed_by_content_and_again_when_it_changes(
        tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"kernel")
    assert silence.file_sha256(path) == hashlib.sha256(b"kernel").hexdigest()
    path.write_bytes(b"another kernel")
    assert silence.file_sha256(path) == hashlib.sha256(b"another kernel").hexdigest()
