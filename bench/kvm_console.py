"""Console throughput of our KVM VMM: guest bytes per second reaching the reader.

Two guests print N bytes to COM1 and leave through the agent's exit port:
``outb`` one byte per instruction (one KVM exit per byte), and ``rep outsb``
(KVM hands us up to a page per exit).  The VMM runs as a process with stdout
on a pipe, as under the console session; the clock runs from the first byte
read to the last.

    .venv/bin/python bench/kvm_console.py --bytes 200000

Prints bytes/s for each guest.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bootfuzz.guest.protocol import (
    AGENT_EXIT_PORT,
    AGENT_EXIT_VALUE,
    COM1_BASE,
    FIRMWARE_ENTERING_MESSAGE,
    QEMU_AGENT_EXIT_STATUS,
)
from bootfuzz.loader import layout
from bootfuzz.loader.x86 import FLAT_CODE32, FLAT_DATA
from bootfuzz.run.kvm.calibrate import _cpu
from bootfuzz.run.kvm.vmm import Manifest, ManifestBlob

CODE_ADDR = layout.HIGH_MEMORY_START
DATA_ADDR = 2 * layout.MiB
MEMORY = 64 * layout.MiB
_EXIT = b"\xb0" + bytes((AGENT_EXIT_VALUE,)) + b"\xe6" + bytes((AGENT_EXIT_PORT,)) + b"\xf4"
_DX_COM1 = b"\x66\xba" + COM1_BASE.to_bytes(2, "little")  # mov $COM1_BASE, %dx


def outb_guest(n: int) -> bytes:
    """mov $n,%ecx; mov $0x3f8,%dx; mov $'x',%al; 1: out %al,%dx; dec %ecx; jnz 1b; exit."""
    return (b"\xb9" + n.to_bytes(4, "little") + _DX_COM1 + b"\xb0x"
            + b"\xee\x49\x75\xfc" + _EXIT)


def outsb_guest(n: int) -> bytes:
    """mov $DATA,%esi; mov $n,%ecx; mov $0x3f8,%dx; cld; rep outsb; exit."""
    return (b"\xbe" + DATA_ADDR.to_bytes(4, "little") + b"\xb9" + n.to_bytes(4, "little")
            + _DX_COM1 + b"\xfc\xf3\x6e" + _EXIT)


def run(tmp: Path, code: bytes, n: int) -> float:
    gdt = b"".join(w.to_bytes(8, "little") for w in (0, FLAT_CODE32, FLAT_CODE32, FLAT_DATA))
    data = (b"x" * 63 + b"\n") * (n // 64 + 1)
    blobs = []
    for name, addr, content in (("gdt", layout.GDT_ADDR, gdt), ("code", CODE_ADDR, code),
                                ("data", DATA_ADDR, data[:n])):
        path = tmp / f"{name}.bin"
        path.write_bytes(content)
        blobs.append(ManifestBlob(name, addr, len(content), str(path)))
    cpu = _cpu()
    manifest = tmp / "manifest.json"
    manifest.write_text(Manifest(MEMORY, ((0, MEMORY),), tuple(blobs), cpu).to_json())
    proc = subprocess.Popen([sys.executable, "-m", "bootfuzz.cli.vmm", "run", str(manifest)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    got = 0
    first = last = 0.0
    header = len(FIRMWARE_ENTERING_MESSAGE)
    while chunk := os.read(fd, 1 << 16):
        now = time.perf_counter()
        if got < header <= got + len(chunk):
            first = now
        got += len(chunk)
        last = now
    status = proc.wait()
    if status != QEMU_AGENT_EXIT_STATUS or got != header + n:
        raise SystemExit(f"guest ended with status {status} after {got} bytes")
    return n / max(last - first, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=100_000, help="bytes each guest prints")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in (("outb", outb_guest), ("rep outsb", outsb_guest)):
            rate = run(Path(tmp), build(args.bytes), args.bytes)
            print(f"{name:10s} {args.bytes} bytes: {rate:,.0f} bytes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
