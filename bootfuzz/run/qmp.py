"""A minimal QEMU Machine Protocol client, and the halt probe built on it.

QMP is JSON lines over a socket: QEMU greets, the client negotiates capabilities,
then each command gets one ``return`` or ``error`` reply, with asynchronous
``event`` messages in between (skipped here).  This client is blocking with a
short timeout per reply, as the console session asks it only while the guest is
quiet; it is ours rather than the QEMU project's qemu.qmp package because that
one is asyncio throughout and we need two commands from inside a pexpect loop.

Why ``info registers`` (QMP's human-monitor-command) and not ``query-status``:
query-status reports the VM's run state, which stays ``running`` while the vCPU
sits in HLT, and query-cpus-fast has no halted field on x86 (QEMU dropped
query-cpus and its ``halted`` in 6.0).  The register dump prints the vCPU's
``HLT=`` and ``RFL=`` (x86_cpu_dump_state, target/i386/cpu-dump.c, QEMU 2.x to
9.x), which is what tells a guest that can never run again: halted with IF clear
(nothing but an NMI or INIT wakes it, and on our ``pc`` machine nothing sends one).
The ``-d`` logs were the other choice: ``-d int`` logs every interrupt of a healthy
boot (thousands of lines) and neither it nor ``-d guest_errors`` logs a HLT.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from pathlib import Path
from typing import Any

#: Seconds to wait for QEMU's greeting or one reply.
REPLY_TIMEOUT = 2.0
#: EFLAGS.IF (Intel SDM vol. 1, 3.4.3).
EFLAGS_IF = 1 << 9
_RFL = re.compile(r"\bRFL=([0-9a-fA-F]+)")
_EFL = re.compile(r"\bEFL=([0-9a-fA-F]+)")  # the 32-bit dump's name for it
_HLT = re.compile(r"\bHLT=([01])\b")
_RIP = re.compile(r"\b[RE]IP=([0-9a-fA-F]+)")


class QmpError(Exception):
    """QMP could not be spoken (no socket yet, a closed one, a garbled reply)."""


class QmpClient:
    """One QMP connection; :meth:`execute` sends a command and returns its result."""

    def __init__(self, path: Path, timeout: float = REPLY_TIMEOUT) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.buffer = b""
        try:
            self.sock.connect(str(path))
            greeting = self._message()
            if "QMP" not in greeting:
                raise QmpError(f"no QMP greeting: {greeting!r:.200}")
            self.execute("qmp_capabilities")
        except (OSError, QmpError) as exc:
            self.close()
            raise QmpError(f"QMP at {path}: {exc}") from None

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        doc: dict[str, Any] = {"execute": command}
        if arguments:
            doc["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(doc).encode() + b"\n")
            while True:
                reply = self._message()
                if "event" in reply:
                    continue
                if "error" in reply:
                    raise QmpError(f"{command}: {reply['error']}")
                if "return" not in reply:
                    raise QmpError(f"{command}: unexpected reply {reply!r:.200}")
                return reply["return"]
        except OSError as exc:
            raise QmpError(f"{command}: {exc}") from None

    def _message(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise QmpError("QEMU closed the QMP socket")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            doc = json.loads(line)
        except ValueError:
            raise QmpError(f"not JSON: {line[:200]!r}") from None
        if not isinstance(doc, dict):
            raise QmpError(f"not a JSON object: {line[:200]!r}")
        return doc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def halted_with_interrupts_off(registers: str) -> int | None:
    """The RIP of a vCPU the register dump shows halted with IF clear, else None."""
    hlt = _HLT.search(registers)
    flags = _RFL.search(registers) or _EFL.search(registers)
    if hlt is None or flags is None or hlt.group(1) != "1":
        return None
    if int(flags.group(1), 16) & EFLAGS_IF:
        return None
    rip = _RIP.search(registers)
    return int(rip.group(1), 16) if rip is not None else 0


class QmpHaltProbe:
    """A console HaltProbe for QEMU: connects on first use, asks ``info registers``.

    A guest counts as halted for good when two dumps a probe apart both show HLT
    with IF clear at the same RIP (one dump could catch a vCPU mid-update).  Any
    QMP trouble answers "not halted": the session's silence timeout still ends a
    guest this probe cannot see.
    """

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.client: QmpClient | None = None
        self.seen_at: int | None = None  # RIP of the last halted dump
        self.failed_at = 0.0

    def halted(self) -> str | None:
        try:
            if self.client is None:
                if time.monotonic() - self.failed_at < REPLY_TIMEOUT:
                    return None
                self.client = QmpClient(self.socket_path)
            dump = self.client.execute("human-monitor-command",
                                       {"command-line": "info registers"})
        except QmpError:
            if self.client is not None:
                self.client.close()
                self.client = None
            self.failed_at = time.monotonic()
            return None
        rip = halted_with_interrupts_off(str(dump))
        if rip is None or rip != self.seen_at:
            self.seen_at = rip
            return None
        return f"the guest CPU halted with interrupts off at RIP {rip:#x} (QEMU, over QMP)"

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        with contextlib.suppress(OSError):
            self.socket_path.unlink(missing_ok=True)
