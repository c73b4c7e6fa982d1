"""The VMM process: a manifest (what the KVM backend wrote for one plan) in, a guest run out.

Runs as its own process under the same pexpect console session as QEMU: guest
serial output on stdout, our diagnostics on stderr, and an exit status the
backend classifies (bootfuzz.run.backends.kvm).  The process entry point is
``python -m bootfuzz.cli.vmm``.

With the in-kernel irqchip KVM handles HLT itself: a halted vCPU sleeps inside
KVM_RUN until an interrupt arrives, and never exits to us.  So a periodic
SIGALRM kicks KVM_RUN out (EINTR); on each tick we flush the console, check our
own deadline, and ask KVM whether the vCPU is halted with IF clear (nothing
can ever wake it: the guest is hung, and we say so instead of waiting for the
console session's silence timeout).

Plans that start in protected or long mode get their CpuState written into the
vCPU directly.  A real-mode plan (the 16-bit entry) needs a BIOS: the manifest
then names our firmware image, mapped as a PC maps its BIOS (a ROM just below
4 GiB and a copy at 0xF0000 under 1 MiB), and the vCPU starts at the reset
vector; the firmware reads the plan's state from the hand-off block, as on QEMU.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import FrameType

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import CpuTemplate
from bootfuzz.errors import ConfigError
from bootfuzz.guest.protocol import FIRMWARE_ENTERING_MESSAGE
from bootfuzz.jsonread import JsonReader
from bootfuzz.loader.layout import BIOS_AREA_START
from bootfuzz.loader.plan import CpuState
from bootfuzz.loader.platform import FIRMWARE_SIZE, FIRMWARE_TOP_BASE
from bootfuzz.loader.x86 import RFLAGS_IF
from bootfuzz.run.kvm import abi
from bootfuzz.run.kvm.cpu import make_regs, make_sregs
from bootfuzz.run.kvm.devices import (
    AgentPowerOff,
    ConsoleBuffer,
    GuestReset,
    PcDevices,
    pc_devices,
)
from bootfuzz.run.kvm.vm import GuestMemory, Kvm, KvmError, Vcpu, Vm, create_machine

MANIFEST_VERSION = 2

# Exit statuses of `python -m bootfuzz.cli.vmm run`.  The agent's power-off is
# (value << 1) | 1 = 99, as under QEMU's isa-debug-exit.
EXIT_RESET = 0  # as QEMU under -no-reboot
EXIT_USAGE = 2  # a bad manifest
EXIT_INFRASTRUCTURE = 3  # /dev/kvm missing or an ioctl failed
EXIT_HALTED = 4  # HLT with interrupts off: the guest can never run again
EXIT_INTERNAL_ERROR = 5  # KVM could not run the guest (internal error, failed entry)
EXIT_TIMEOUT = 124  # our own --timeout (as timeout(1))

#: How often KVM_RUN is interrupted to flush output and look for a hung vCPU.
TICK_SECONDS = 0.02
#: Ticks in a row the vCPU must be halted with IF clear before we call it hung.
HALTED_TICKS = 2
#: exit_reason is set to this before KVM_RUN so an interrupted call is recognisable.
_NO_EXIT = 0xFFFF_FFFF
_PREFIX = "bootfuzz-kvm:"


class ManifestError(ConfigError):
    component = "kvm manifest"


_ROOT = "(top level)"


@dataclass(frozen=True)
class ManifestBlob:
    name: str
    addr: int
    size: int
    path: str


_BLOB_FIELDS = tuple(f.name for f in fields(ManifestBlob))
_CPU_FIELDS = tuple(f.name for f in fields(CpuState))


@dataclass(frozen=True)
class Manifest:
    """Everything the VMM needs, as plain JSON: the plan minus what only oracles read."""

    memory: int
    ram: tuple[tuple[int, int], ...]  # (start, size), from the plan's Platform
    blobs: tuple[ManifestBlob, ...]
    cpu: CpuState  # where the vCPU starts: the plan's state, or the firmware's reset
    #: Our firmware image (harness/firmware), mapped as a PC's BIOS; None: no firmware.
    firmware: str | None = None
    cpu_template: CpuTemplate = CpuTemplate.BASELINE

    def to_json(self) -> str:
        cpu = asdict(self.cpu)
        cpu["mode"] = self.cpu.mode.name
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "memory": self.memory,
                "ram": [list(r) for r in self.ram],
                "blobs": [asdict(b) for b in self.blobs],
                "cpu": cpu,
                "firmware": self.firmware,
                "cpu_template": self.cpu_template.value,
            },
            indent=1,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "<text>") -> Manifest:
        """The manifest in *text* (read from *where*); errors name the field."""
        r = JsonReader(where, error=ManifestError)
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise r.fail(_ROOT, f"not JSON: {e}") from None
        doc = r.as_obj(raw, _ROOT)
        r.keys(doc, ("version", "memory", "ram", "blobs", "cpu", "firmware", "cpu_template"),
               _ROOT)
        version = r.field(doc, "version", "")
        if version != MANIFEST_VERSION:
            raise r.fail("version", f"{version!r}, expected {MANIFEST_VERSION}")
        ram = []
        for i, item in enumerate(r.as_list(r.field(doc, "ram", ""), "ram")):
            pair = r.as_list(item, f"ram[{i}]")
            if len(pair) != 2:
                raise r.fail(f"ram[{i}]", f"expected [start, size], got {pair!r}")
            ram.append((r.as_int(pair[0], f"ram[{i}][0]"), r.as_int(pair[1], f"ram[{i}][1]")))
        blobs = []
        for i, item in enumerate(r.as_list(r.field(doc, "blobs", ""), "blobs")):
            path = f"blobs[{i}]"
            blob = r.as_obj(item, path)
            r.keys(blob, _BLOB_FIELDS, path)
            blobs.append(ManifestBlob(
                r.as_str(r.field(blob, "name", path), f"{path}.name"),
                r.as_int(r.field(blob, "addr", path), f"{path}.addr"),
                r.as_int(r.field(blob, "size", path), f"{path}.size"),
                r.as_str(r.field(blob, "path", path), f"{path}.path"),
            ))
        cpu = r.as_obj(r.field(doc, "cpu", ""), "cpu")
        r.keys(cpu, _CPU_FIELDS, "cpu")
        mode = HandoffMode[r.as_choice(r.field(cpu, "mode", "cpu"), "cpu.mode",
                                       HandoffMode.__members__)]
        registers = {name: r.as_int(r.field(cpu, name, "cpu"), f"cpu.{name}")
                     for name in _CPU_FIELDS if name != "mode"}
        firmware = r.field(doc, "firmware", "")
        template = r.as_choice(r.field(doc, "cpu_template", ""), "cpu_template",
                               [t.value for t in CpuTemplate])
        manifest = cls(r.as_int(r.field(doc, "memory", ""), "memory"), tuple(ram), tuple(blobs),
                       CpuState(mode=mode, **registers),
                       None if firmware is None else r.as_str(firmware, "firmware"),
                       CpuTemplate(template))
        manifest.check()
        return manifest

    def check(self) -> None:
        if not self.ram or sum(size for _, size in self.ram) != self.memory:
            raise ManifestError(f"RAM ranges {self.ram} do not add up to {self.memory:#x}")
        if self.firmware is not None and not any(
            s <= BIOS_AREA_START and s + n >= BIOS_AREA_START + FIRMWARE_SIZE for s, n in self.ram
        ):
            raise ManifestError(f"no RAM at {BIOS_AREA_START:#x} for the firmware's copy")
        for blob in self.blobs:
            if not any(s <= blob.addr and blob.addr + blob.size <= s + n for s, n in self.ram):
                raise ManifestError(f"blob {blob.name} at {blob.addr:#x} is not inside RAM")


class _Tick(Exception):
    """Raised by the SIGALRM handler to pull us out of a blocking KVM_RUN."""


def _stdout_sink(data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(1, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[n:]


def diagnostic(text: str) -> None:
    """One line for a person on stderr (the guest's console is stdout)."""
    print(f"{_PREFIX} {text}", file=sys.stderr, flush=True)


def format_registers(regs: abi.kvm_regs, sregs: abi.kvm_sregs) -> str:
    """Every register someone debugging an entry failure asks for first."""
    names = [str(field[0]) for field in abi.kvm_regs._fields_]
    gprs = " ".join(f"{name.upper()}={getattr(regs, name):#018x}" for name in names)
    cs = sregs.cs
    return (
        f"{gprs}\n"
        f"CR0={sregs.cr0:#x} CR2={sregs.cr2:#x} CR3={sregs.cr3:#x} CR4={sregs.cr4:#x} "
        f"EFER={sregs.efer:#x}\n"
        f"CS={cs.selector:#06x} base={cs.base:#x} limit={cs.limit:#x} type={cs.type:#x} "
        f"l={cs.l} db={cs.db} SS={sregs.ss.selector:#06x} DS={sregs.ds.selector:#06x} "
        f"GDT={sregs.gdt.base:#x}/{sregs.gdt.limit:#x} IDT={sregs.idt.base:#x}/{sregs.idt.limit:#x}"
    )


class Machine:
    """One guest: VM, memory, vCPU, devices; :meth:`run` returns the exit status."""

    def __init__(self, manifest: Manifest, *, verbose: bool = False,
                 announce_entry: bool | None = None) -> None:
        self.manifest = manifest
        self.verbose = verbose
        #: Print the firmware's "entering" line ourselves: yes when no firmware runs
        #: to print it (the default), never twice.
        if announce_entry is None:
            announce_entry = manifest.firmware is None
        self.announce_entry = announce_entry
        self.kvm: Kvm
        self.vm: Vm
        self.vcpu: Vcpu
        self.kvm, self.vm, self.vcpu = create_machine(manifest.ram, manifest.cpu_template)
        self.console = ConsoleBuffer(_stdout_sink)
        self.devices = pc_devices(self.console, self.vm.irq_line, verbose=verbose)
        self.exits: Counter[int] = Counter()
        self.mmio_unhandled: Counter[int] = Counter()
        self._in_run = False
        self._tick_pending = False
        self._halted_ticks = 0
        self.started = 0.0

    # ---- set-up ----
    def load_firmware(self) -> None:
        """The firmware image as a PC maps its BIOS: a ROM at the top of 4 GiB, where a
        reset fetches, and a copy in RAM at BIOS_AREA_START (the shadowed alias)."""
        if self.manifest.firmware is None:
            return
        path = self.manifest.firmware
        try:
            with open(path, "rb") as f:
                image = f.read(FIRMWARE_SIZE + 1)
        except OSError as e:
            raise ManifestError(f"firmware: cannot read {path}: {e.strerror}") from None
        if len(image) != FIRMWARE_SIZE:
            raise ManifestError(f"firmware: {path} is not {FIRMWARE_SIZE} bytes")
        self.vm.add_rom(FIRMWARE_TOP_BASE, image)
        self.vm.write(BIOS_AREA_START, image)

    def load(self) -> None:
        self.load_firmware()
        for blob in self.manifest.blobs:
            mem = self.vm.range_for(blob.addr, blob.size)
            self._load_file(mem, blob)
        self.set_entry_state()

    def set_entry_state(self) -> None:
        """The manifest's CpuState on the vCPU; its GDT must already be in guest memory
        (real mode reads none)."""
        cpu = self.manifest.cpu
        gdt = b"" if cpu.mode is HandoffMode.REAL_16 else self.vm.read(cpu.gdt_base,
                                                                        cpu.gdt_limit + 1)
        self.vcpu.set_sregs(make_sregs(cpu, gdt, self.vcpu.get_sregs()))
        self.vcpu.set_regs(make_regs(self.manifest.cpu))

    @staticmethod
    def _load_file(mem: GuestMemory, blob: ManifestBlob) -> None:
        off = blob.addr - mem.guest_phys_addr
        target = memoryview(mem.mapping)[off : off + blob.size]
        try:
            with open(blob.path, "rb", buffering=0) as f:
                got = 0
                while got < blob.size:
                    n = f.readinto(target[got:])
                    if not n:
                        break
                    got += n
        except OSError as e:
            raise ManifestError(
                f"blob {blob.name}: cannot read {blob.path}: {e.strerror}"
            ) from None
        finally:
            target.release()
        if got != blob.size:
            raise ManifestError(f"blob {blob.name}: {blob.path} has {got} bytes, not {blob.size}")

    # ---- the run loop ----
    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        self._tick_pending = True
        if self._in_run:
            raise _Tick

    def run(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        previous = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TICK_SECONDS, TICK_SECONDS)
        self.started = time.monotonic()
        if self.announce_entry:
            # The moment our firmware stub prints this on QEMU: the plan's state is set.
            self.console.write(FIRMWARE_ENTERING_MESSAGE.encode())
            self.console.flush()
        try:
            return self._loop(deadline)
        except AgentPowerOff as e:
            self.console.flush()
            return e.status
        except GuestReset as e:
            self.console.flush()
            diagnostic(f"guest reset ({e})")
            return EXIT_RESET
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0, 0)
            signal.signal(signal.SIGALRM, previous)
            self.console.flush()
            if self.verbose:
                self._summary()

    def _loop(self, deadline: float | None) -> int:
        run_page = self.vcpu.run_page
        while True:
            run_page.exit_reason = _NO_EXIT
            self._in_run = True
            try:
                self.vcpu.run()
                self._in_run = False
            except _Tick:
                self._in_run = False
            except InterruptedError:
                self._in_run = False
                self._tick_pending = True
            reason = run_page.exit_reason
            if reason not in (_NO_EXIT, abi.KVM_EXIT_INTR):
                self.exits[reason] += 1
                status = self._handle_exit(reason)
                if status is not None:
                    return status
            if self._tick_pending or reason in (_NO_EXIT, abi.KVM_EXIT_INTR):
                self._tick_pending = False
                status = self._tick(deadline)
                if status is not None:
                    return status

    def _tick(self, deadline: float | None) -> int | None:
        self.console.flush()
        if deadline is not None and time.monotonic() >= deadline:
            diagnostic(f"timeout: the guest ran for {time.monotonic() - self.started:.1f} s")
            self._dump_registers()
            return EXIT_TIMEOUT
        halted = self.vcpu.mp_state() == abi.KVM_MP_STATE_HALTED
        if halted and not self.vcpu.get_regs().rflags & RFLAGS_IF:
            self._halted_ticks += 1
            return self._halted() if self._halted_ticks >= HALTED_TICKS else None
        self._halted_ticks = 0
        return None

    def _halted(self) -> int:
        self.console.flush()
        diagnostic("guest halted with interrupts off")
        self._dump_registers()
        return EXIT_HALTED

    def _handle_exit(self, reason: int) -> int | None:
        run = self.vcpu.run_page
        if reason == abi.KVM_EXIT_IO:
            self._pio(run.io)
            return None
        if reason == abi.KVM_EXIT_MMIO:
            self._mmio(run.mmio)
            return None
        self.console.flush()
        if reason == abi.KVM_EXIT_SHUTDOWN:
            diagnostic("guest reset (triple fault)")
            return EXIT_RESET
        if reason == abi.KVM_EXIT_SYSTEM_EVENT:
            diagnostic(f"guest reset (system event {run.system_event.type})")
            return EXIT_RESET
        if reason == abi.KVM_EXIT_HLT:  # only without the in-kernel irqchip
            if not self.vcpu.get_regs().rflags & RFLAGS_IF:
                return self._halted()
            return None
        if reason == abi.KVM_EXIT_INTERNAL_ERROR:
            self._internal_error(run.internal, run.emulation_failure)
        elif reason == abi.KVM_EXIT_FAIL_ENTRY:
            diagnostic(
                "KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason="
                f"{run.fail_entry.hardware_entry_failure_reason:#x} cpu={run.fail_entry.cpu}"
            )
        elif reason == abi.KVM_EXIT_EXCEPTION:
            diagnostic(f"KVM_EXIT_EXCEPTION {run.ex.exception} error_code={run.ex.error_code:#x}")
        else:
            diagnostic(f"unexpected exit reason {reason} "
                 f"(hardware_exit_reason={run.hw.hardware_exit_reason:#x})")
        self._dump_registers()
        return EXIT_INTERNAL_ERROR

    def _internal_error(self, internal: abi.kvm_run_internal,
                        emulation: abi.kvm_run_emulation_failure) -> None:
        names = {
            abi.KVM_INTERNAL_ERROR_EMULATION: "emulation failure",
            abi.KVM_INTERNAL_ERROR_SIMUL_EX: "exception while delivering an exception",
            abi.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery failed",
            abi.KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: "unexpected exit reason",
        }
        sub = internal.suberror
        ndata = min(internal.ndata, 16)
        data = " ".join(f"{internal.data[i]:#x}" for i in range(ndata))
        diagnostic(f"KVM_EXIT_INTERNAL_ERROR suberror={sub} ({names.get(sub, 'unknown')}) "
             f"ndata={internal.ndata} data=[{data}]")
        if (sub == abi.KVM_INTERNAL_ERROR_EMULATION and ndata >= 1
                and emulation.flags & abi.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES):
            size = min(emulation.insn_size, 15)
            insn = bytes(emulation.insn_bytes[:size]).hex(" ")
            diagnostic(f"instruction bytes ({size}): {insn}")

    def _dump_registers(self) -> None:
        try:
            text = format_registers(self.vcpu.get_regs(), self.vcpu.get_sregs())
        except KvmError as e:
            text = f"(registers unavailable: {e})"
        for line in text.splitlines():
            diagnostic(line)

    def _pio(self, io: abi.kvm_run_io) -> None:
        data = self.vcpu.io_data(io.data_offset, io.size * io.count)
        try:
            handle_pio(self.devices, io.direction, io.port, io.size, io.count, data)
        finally:
            data.release()

    def _mmio(self, mmio: abi.kvm_run_mmio) -> None:
        """Nothing of ours is memory-mapped: reads float high, writes are dropped."""
        page = mmio.phys_addr & ~0xFFF
        if self.verbose and page not in self.mmio_unhandled and len(self.mmio_unhandled) < 16:
            what = "write" if mmio.is_write else "read"
            diagnostic(f"unhandled MMIO {what} at {mmio.phys_addr:#x} ({mmio.len} bytes)")
        self.mmio_unhandled[page] += 1
        if not mmio.is_write:
            ctypes.memset(ctypes.addressof(mmio.data), 0xFF, 8)

    def _summary(self) -> None:
        took = time.monotonic() - self.started
        exits = ", ".join(f"{r}:{n}" for r, n in sorted(self.exits.items()))
        diagnostic(f"{took:.2f} s, exits by reason {{{exits}}}, console {self.console.total} bytes")
        if self.devices.bus.unknown:
            top = ", ".join(f"{p:#x}:{n}" for p, n in self.devices.bus.unknown.most_common(8))
            diagnostic(f"unknown ports (accesses): {top}")


def handle_pio(devices: PcDevices, direction: int, port: int, size: int, count: int,
               data: memoryview) -> None:
    """All *count* items of one PIO exit (``rep outsb``/``rep insb`` arrive as one exit).

    *data* is the exit's buffer in the kvm_run page: read for OUT, filled for IN.
    Bytes for the UART's THR go out in one piece.
    """
    bus = devices.bus
    if direction == abi.KVM_EXIT_IO_OUT:
        if size == 1 and devices.uart.can_transmit_fast(port):
            devices.uart.transmit(data[:count])
            return
        for i in range(count):
            bus.write(port, size, int.from_bytes(data[i * size : (i + 1) * size], "little"))
    else:
        for i in range(count):
            data[i * size : (i + 1) * size] = bus.read(port, size).to_bytes(size, "little")


def run_manifest(path: Path, *, timeout: float | None, verbose: bool) -> int:
    try:
        text = path.read_text()
    except OSError as e:
        raise ManifestError(f"cannot read {path}: {e.strerror}") from None
    manifest = Manifest.from_json(text, str(path))
    machine = Machine(manifest, verbose=verbose)
    machine.load()
    return machine.run(timeout)
