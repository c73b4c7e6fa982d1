"""run_console with real pexpect and no VM: recorded logs through ``cat`` and small
Python scripts that print, sleep, fork and exit the way a backend would."""

from __future__ import annotations

import dataclasses
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bootfuzz.errors import BackendError, HarnessBug
from bootfuzz.judge.observation import parse_transcript
from bootfuzz.run import console
from bootfuzz.run.console import (
    CONSOLE_PATTERNS,
    ConsoleReply,
    PatternKind,
    Replies,
    run_console,
)
from bootfuzz.transcript import SessionEnd, Transcript

LOGS = Path(__file__).resolve().parent.parent / "data" / "logs"
BANNER = "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org)"
PANIC = "[    3.060556] Kernel panic - not syncing: VFS: Unable to mount root fs"


def py(body: str) -> list[str]:
    """argv running *body* in a fresh Python with a flushing ``say``."""
    prelude = (
        "import os, signal, sys, time\n"
        "def say(s):\n    sys.stdout.write(s + '\\n'); sys.stdout.flush()\n"
    )
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


def cat(name: str) -> list[str]:
    return ["cat", str(LOGS / name)]


def run(argv: list[str], **kwargs: object) -> Transcript:
    options: dict[str, object] = {"timeout": 20.0, "silence_timeout": 10.0} | kwargs
    return run_console(argv, **options)  # type: ignore[arg-type]


def with_tail_time(kind: PatternKind, seconds: float) -> tuple[console.ConsolePattern, ...]:
    return tuple(
        dataclasses.replace(p, tail_time=seconds) if p.kind is kind else p for p in CONSOLE_PATTERNS
    )


def gone(pid: int, within: float = 3.0) -> bool:
    """True once *pid* no longer runs (absent, or a zombie nobody reaped yet)."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def pids(text: str) -> list[int]:
    m = re.search(r"^pids ([\d ]+)$", text, re.MULTILINE)
    assert m is not None, text
    return [int(p) for p in m.group(1).split()]


# ---- the agent report --------------------------------------------------------------------


def test_console_agent_report_then_exit_records_exit_status() -> None:
    t = run(py("say('booting'); say('BOOTFUZZ-AGENT {\"v\":1}'); sys.exit(99)"))
    assert t.end is SessionEnd.AGENT_REPORT
    assert (t.exit_status, t.signal, t.killed) == (99, None, False)
    assert t.end_detail == 'BOOTFUZZ-AGENT {"v":1}'
    assert t.text == 'booting\nBOOTFUZZ-AGENT {"v":1}\n'


def test_console_agent_line_without_newline_is_not_a_report() -> None:
    t = run(py("sys.stdout.write('BOOTFUZZ-AGENT {}'); sys.stdout.flush(); sys.exit(0)"))
    assert t.end is SessionEnd.EXITED
    assert (t.exit_status, t.signal) == (0, None)
    assert t.end_detail == "exit status 0"


def test_console_agent_report_guest_still_running_is_killed_after_grace() -> None:
    t = run(
        py("say('BOOTFUZZ-AGENT {}'); time.sleep(60)"),
        patterns=with_tail_time(PatternKind.AGENT_REPORT, 0.3),
    )
    assert t.end is SessionEnd.AGENT_REPORT
    assert (t.signal, t.killed) == (signal.SIGTERM, True)
    assert t.duration < 3


def test_console_recorded_good_boot_ends_on_agent_report() -> None:
    t = run(cat("boot-6.1-good-agent-report.txt"))
    assert t.end is SessionEnd.AGENT_REPORT
    assert t.exit_status == 0
    assert t.firmware_entered is True
    recorded = (LOGS / "boot-6.1-good-agent-report.txt").read_text()
    assert t.text == recorded.replace("\r\n", "\n")
    assert parse_transcript(t.text).agent is not None


# ---- kernel panic ------------------------------------------------------------------------


def test_console_recorded_panic_reads_on_to_end_marker() -> None:
    t = run(cat("panic-no-root-6.1-qemu-kernel-real.txt"))
    assert t.end is SessionEnd.KERNEL_PANIC
    assert t.end_detail == PANIC + " on unknown-block(0,0)"
    assert "---[ end Kernel panic - not syncing: VFS" in t.text
    assert t.firmware_entered is False


def test_console_panic_end_marker_ends_before_tail_time() -> None:
    t = run(
        py(f"""
        say({PANIC!r}); say('Call Trace:'); say(' <TASK>')
        say('[    3.068000] ---[ end Kernel panic - not syncing: VFS ]---')
        time.sleep(60)
    """)
    )
    assert t.end is SessionEnd.KERNEL_PANIC
    assert t.text.endswith("---[ end Kernel panic - not syncing: VFS ]---\n")
    assert t.duration < 4  # the tail time is 5 s
    assert t.signal == signal.SIGTERM


def test_console_panic_without_end_marker_stops_after_tail_time() -> None:
    t = run(
        py(f"say({PANIC!r}); say('Call Trace:'); time.sleep(60)"),
        patterns=with_tail_time(PatternKind.KERNEL_PANIC, 0.3),
    )
    assert t.end is SessionEnd.KERNEL_PANIC
    assert t.text.endswith("Call Trace:\n")
    assert t.duration < 3


# ---- reboot, firmware --------------------------------------------------------------------


def test_console_second_banner_is_reboot() -> None:
    t = run(
        py(f"say({BANNER!r}); say('reboot: Restarting system'); say({BANNER!r}); time.sleep(60)")
    )
    assert t.end is SessionEnd.REBOOT
    assert t.end_detail == BANNER
    assert t.signal == signal.SIGTERM


def test_console_single_banner_is_not_reboot() -> None:
    t = run(py(f"say({BANNER!r}); sys.exit(3)"))
    assert t.end is SessionEnd.EXITED
    assert t.exit_status == 3
    assert t.end_detail == "exit status 3"


def test_console_recorded_reboot_log_is_reboot() -> None:
    t = run(cat("reboot-second-banner.txt"))
    assert t.end is SessionEnd.REBOOT
    assert t.firmware_entered is True


def test_console_recorded_bad_handoff_magic_is_firmware_error() -> None:
    t = run(cat("firmware-bad-handoff-magic.txt"))
    assert t.end is SessionEnd.FIRMWARE_ERROR
    assert t.end_detail == "bootfuzz-fw: bad handoff magic"
    assert t.firmware_entered is False


def test_console_firmware_marker_is_recorded_without_ending() -> None:
    t = run(py("say('bootfuzz-fw: entering kernel'); sys.exit(0)"))
    assert t.end is SessionEnd.EXITED
    assert t.firmware_entered is True


# ---- silence, timeout, process groups ----------------------------------------------------


def test_console_silence_ends_a_quiet_guest() -> None:
    t = run(py("say('up'); time.sleep(60)"), silence_timeout=1.0)
    assert t.end is SessionEnd.SILENCE
    assert t.end_detail == "no output for 1 s"
    assert (t.signal, t.killed) == (signal.SIGTERM, True)


# The kill tests end the session with a stop pattern, not silence: a slow Python
# start on a loaded machine must not end the session before the script is ready.


def test_console_kill_reaches_a_forked_child_ignoring_sigterm() -> None:
    t = run(
        py("""
            child = os.fork()
            if child == 0:
                # Only SIGKILL ends it (SIGHUP comes when the session leader dies).
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                time.sleep(60)
                os._exit(0)
            say(f'pids {os.getpid()} {child}')
            time.sleep(60)
        """),
        stop_patterns=["^pids "],
    )
    assert t.end is SessionEnd.EARLY_STOP
    assert (t.signal, t.killed) == (signal.SIGTERM, True)
    assert all(gone(pid) for pid in pids(t.text))


def test_console_leader_ignoring_sigterm_gets_sigkill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_KILL_GRACE", 0.3)
    t = run(
        py("signal.signal(signal.SIGTERM, signal.SIG_IGN); say('up'); time.sleep(60)"),
        stop_patterns=["^up$"],
    )
    assert t.end is SessionEnd.EARLY_STOP
    assert (t.signal, t.killed) == (signal.SIGKILL, True)


def test_console_silence_counts_from_last_output() -> None:
    t = run(
        py("for i in range(5):\n    say(f'line {i}'); time.sleep(0.3)\ntime.sleep(60)"),
        silence_timeout=1.0,
    )
    assert t.end is SessionEnd.SILENCE
    assert t.text == "".join(f"line {i}\n" for i in range(5))
    assert t.duration > 2.0  # 5 x 0.3 s of output, then 1 s of silence


def test_console_chatty_guest_hits_overall_timeout() -> None:
    t = run(py("while True:\n    say('tick'); time.sleep(0.05)"), timeout=1.5, silence_timeout=1.0)
    assert t.end is SessionEnd.TIMEOUT
    assert t.end_detail == "no end of boot before the deadline"
    assert 1.5 <= t.duration < 4
    assert t.text.count("tick\n") > 5


def test_console_keyboard_interrupt_still_kills_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []

    def interrupted(self: object, line: str) -> None:
        seen.extend(pids(line))
        raise KeyboardInterrupt

    monkeypatch.setattr(console._Session, "_classify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(py("say(f'pids {os.getpid()}'); time.sleep(60)"))
    assert len(seen) == 1 and gone(seen[0])


def test_console_process_killed_by_own_signal_is_exited() -> None:
    t = run(py("say('bye'); os.kill(os.getpid(), signal.SIGABRT)"))
    assert t.end is SessionEnd.EXITED
    assert (t.exit_status, t.signal, t.killed) == (None, signal.SIGABRT, False)
    assert t.end_detail == "killed by signal 6"


def test_console_process_exiting_zero_on_sigterm_is_marked_killed() -> None:
    """QEMU catches SIGTERM and exits 0: only ``killed`` tells it from a guest reset."""
    t = run(
        py("signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); say('up'); time.sleep(60)"),
        stop_patterns=["^up$"],
    )
    assert t.end is SessionEnd.EARLY_STOP
    assert (t.exit_status, t.signal, t.killed) == (0, None, True)


# ---- stop patterns, log file, bytes ------------------------------------------------------


def test_console_stop_pattern_ends_early() -> None:
    line = "[    0.000000] RAMDISK: [mem 0x0f000000-0x0f09ffff]"
    t = run(
        py(f"say('before'); say({line!r}); say('after'); time.sleep(60)"),
        stop_patterns=[r"RAMDISK: \[mem "],
    )
    assert t.end is SessionEnd.EARLY_STOP
    assert t.end_detail == line
    assert t.signal == signal.SIGTERM


def test_console_table_pattern_wins_over_stop_pattern() -> None:
    t = run(
        py(f"say({PANIC!r}); say('---[ end Kernel panic'); sys.exit(0)"), stop_patterns=["Kernel"]
    )
    assert t.end is SessionEnd.KERNEL_PANIC


def test_console_bad_stop_pattern_is_harness_bug() -> None:
    with pytest.raises(HarnessBug, match=r"^bootfuzz: run_console: bad stop pattern: "):
        run(["true"], stop_patterns=["("])


def test_console_log_file_receives_raw_bytes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    t = run(py("say('one'); say('two'); time.sleep(60)"), stop_patterns=["^two$"], log_path=log)
    assert t.end is SessionEnd.EARLY_STOP
    assert log.read_bytes() == t.raw
    assert b"one" in t.raw and b"two" in t.raw


def test_console_unwritable_log_is_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match=r"^backend: cannot write console log .*/no/such/dir"):
        run(["true"], log_path=tmp_path / "no" / "such" / "dir" / "console.log")


def test_console_line_ends_normalized_and_bad_utf8_replaced() -> None:
    t = run(py(r"sys.stdout.buffer.write(b'caf\xc3\xa9 \xff\r\nnext\n'); sys.stdout.flush()"))
    assert t.text == "café \ufffd\nnext\n"
    assert b"\xff" in t.raw and b"\r" in t.raw


def test_console_first_output_time_is_measured() -> None:
    t = run(py("time.sleep(0.3); say('late'); sys.exit(0)"))
    assert t.first_output_after is not None
    assert 0.3 <= t.first_output_after < t.duration


def test_console_no_output_has_no_first_output_time() -> None:
    t = run(["true"])
    assert t.end is SessionEnd.EXITED
    assert t.first_output_after is None
    assert (t.text, t.raw) == ("", b"")


def test_console_env_and_cwd_reach_the_process(tmp_path: Path) -> None:
    t = run(
        py("say(os.environ['BOOTFUZZ_T'] + ' ' + os.getcwd())"),
        env={"BOOTFUZZ_T": "set"},
        cwd=tmp_path,
    )
    assert t.text == f"set {tmp_path}\n"


# ---- refusing to start -------------------------------------------------------------------


def test_console_missing_binary_is_backend_error_naming_it() -> None:
    with pytest.raises(BackendError) as e:
        run(["/nonexistent/qemu-system-x86_64", "-M", "pc"])
    assert str(e.value).startswith("backend: cannot start /nonexistent/qemu-system-x86_64: ")


def test_console_non_executable_file_is_backend_error(tmp_path: Path) -> None:
    program = tmp_path / "qemu"
    program.write_text("#!/bin/sh\n")
    with pytest.raises(BackendError, match=rf"^backend: cannot start {re.escape(str(program))}: "):
        run([str(program)])


@pytest.mark.parametrize(("argv", "timeout"), [([], 1.0), (["true"], 0.0)])
def test_console_bad_arguments_are_harness_bugs(argv: list[str], timeout: float) -> None:
    with pytest.raises(HarnessBug):
        run_console(argv, timeout=timeout, silence_timeout=1.0)


def test_console_log_write_failure_is_backend_error_and_kills(tmp_path: Path) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full on this host")
    pid_file = tmp_path / "pid"
    script = f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); say('x'); time.sleep(60)"
    with pytest.raises(BackendError, match=r"^backend: cannot write console log /dev/full: "):
        run(py(script), log_path=full)
    assert gone(int(pid_file.read_text()))


def test_console_recorded_real_boot_ends_on_agent_report() -> None:
    t = run(cat("boot-6.1-cloud-real-agent-report.txt"))
    assert t.end is SessionEnd.AGENT_REPORT
    assert t.firmware_entered is True
    assert "\r" not in t.text  # "\r\r\n" from the recording, plus the pty's own "\r"
    assert parse_transcript(t.text).agent is not None


# ---- a loader driven at its prompt -------------------------------------------------------

UBOOT_LIKE = Replies(
    (ConsoleReply(re.compile(rb"Hit any key to stop autoboot"), b"\r"),
     ConsoleReply(re.compile(rb"=> "), b"booti x\r")),
    again=re.compile(rb"\n=> "))


def test_console_replies_are_typed_in_order_once_each() -> None:
    t = run(py("""
        sys.stdout.write('Hit any key to stop autoboot:  2'); sys.stdout.flush()
        sys.stdin.readline()
        sys.stdout.write('\\n=> '); sys.stdout.flush()
        line = sys.stdin.readline().strip()
        say('got ' + line)
        say('BOOTFUZZ-AGENT {}')
    """), replies=UBOOT_LIKE)
    assert t.end is SessionEnd.AGENT_REPORT, t.text
    assert "got booti x" in t.text and t.text.count("got ") == 1


def test_console_a_loader_back_at_its_prompt_ends_the_session_at_once() -> None:
    t = run(py("""
        sys.stdout.write('Hit any key to stop autoboot:  2'); sys.stdout.flush()
        sys.stdin.readline()
        sys.stdout.write('\\n=> '); sys.stdout.flush()
        sys.stdin.readline()
        say('Bad Linux RISCV Image magic!')
        sys.stdout.write('=> '); sys.stdout.flush()
        time.sleep(60)
    """), replies=UBOOT_LIKE)
    assert t.end is SessionEnd.EARLY_STOP
    assert t.end_detail == "the loader came back to its prompt"
    assert t.duration < 5  # not the 10-second silence
