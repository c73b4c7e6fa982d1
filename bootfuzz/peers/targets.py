"""Targets: something that boots a BootCase through *some* loader and shows us the console.

``ours`` is our loader on one of our backends (every byte known, so the exact
oracles of bootfuzz.judge.oracles apply).  ``qemu-direct`` is QEMU's own ``-kernel``
loader (SeaBIOS + linuxboot option ROM on ``pc``, qboot on ``microvm``) and
``command`` any VMM started from an argument-list template.  For peers we do not
know the bytes they wrote, only what they promise (:class:`TargetPromises`), so
they are judged by bootfuzz.judge.validity: what the protocol and the platform allow.

Every target boots the same kernel file, the same initrd file (our agent as
``/init``) and the same command line, and gives the guest the same
``isa-debug-exit`` port so the agent can end the run.
"""

from __future__ import annotations

import enum
import json
import os
import shutil
import string
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from bootfuzz.abi.bootparam import XLoadFlags
from bootfuzz.case import BootCase, EntryProtocol
from bootfuzz.errors import BackendError, ConfigError
from bootfuzz.guest.initrd import BuiltInitrd
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, QEMU_AGENT_EXIT_STATUS
from bootfuzz.judge.observation import Observation, parse_transcript
from bootfuzz.judge.verdict import OracleResult, Verdict, overall
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.layout import (
    FOUR_GIB,
    HIGH_MEMORY_START,
    LOW_RAM_END,
    PAGE_SIZE,
    GiB,
    align_down,
)
from bootfuzz.loader.platform import PC_LOWMEM_WHEN_SPLIT, PC_SPLIT_THRESHOLD, Platform, RamRange
from bootfuzz.run.backends.qemu_tcg import QEMU_EXIT_STATUSES
from bootfuzz.run.console import run_console
from bootfuzz.run.exits import ExitStatuses, classify_exit
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript

#: The largest 32-bit address (QEMU's initrd_max when the kernel may go above it).
U32_MAX = 0xFFFF_FFFF
#: SeaBIOS's extended BIOS data area: the top KiB below 640 KiB.  Measured on QEMU
#: 7.2 pc and microvm (qboot): "BIOS-e820: [mem 0x9fc00-0x9ffff] reserved".
EBDA_START = 0x9FC00
#: RAM QEMU 7.2's pc firmware keeps at the top of low RAM (ACPI tables and
#: SeaBIOS's high tables): "BIOS-e820: [mem 0xbffe0000-0xbfffffff] reserved" at 5G,
#: "[mem 0xffe0000-0xfffffff]" at 256M.  source: measured.
QEMU_PC_TOP_RESERVED = 0x20000
#: QEMU microvm: min(memory, 3 GiB) below 4 GiB.  source: qemu-tcg-backend.md.
MICROVM_LOWMEM_MAX = 3 * GiB


# --------------------------------------------------------------------------------------
# Promises: what a target tells us about the machine it builds, as data
# --------------------------------------------------------------------------------------


class MemoryMeaning(enum.StrEnum):
    """What "memory size N" means on a target."""

    #: N bytes of RAM in total, split around the 32-bit MMIO gap (QEMU -m).
    TOTAL_RAM = "total-ram"
    #: RAM up to guest address N; the part of [0, N) inside the gap is lost.
    ADDRESS_SPAN = "address-span"


class Anchor(enum.StrEnum):
    ABSOLUTE = "absolute"  # start/end are guest-physical addresses
    TOP_OF_LOW = "top-of-low"  # start/end are offsets below the top of low RAM


@dataclass(frozen=True)
class Withheld:
    """RAM the target's firmware keeps from the kernel (never printed as usable)."""

    name: str
    start: int
    end: int
    anchor: Anchor = Anchor.ABSOLUTE

    def resolve(self, low_end: int) -> tuple[int, int]:
        if self.anchor is Anchor.ABSOLUTE:
            return self.start, self.end
        return low_end - self.start, low_end - self.end

    @property
    def size(self) -> int:
        return abs(self.end - self.start)


@dataclass(frozen=True)
class GapRule:
    """Where RAM lies around the 32-bit MMIO gap for a memory size."""

    split_at: int  # from this size on, RAM is split: low part below, the rest from 4 GiB
    low_when_split: int

    def low_end(self, memory: int) -> int:
        return memory if memory < self.split_at else self.low_when_split

    def gap(self, memory: int) -> tuple[int, int]:
        """[start, end) of the hole below 4 GiB that is never RAM."""
        return self.low_end(memory), FOUR_GIB

    def platform(self, name: str, memory: int) -> Platform:
        low = self.low_end(memory)
        high = RamRange(FOUR_GIB, memory - low) if memory > low else None
        return Platform(name, memory, RamRange(0, low), high)


class KernelLimit(enum.StrEnum):
    """Which of the kernel's limits a loader's initrd placement consults."""

    ADDR_MAX = "initrd_addr_max"  # the header's initrd_addr_max
    ADDR_MAX_OR_4G = "initrd_addr_max, or 4 GiB - 1 with XLF_CAN_BE_LOADED_ABOVE_4G"
    NONE = "none"  # the PVH paths: no setup header is read


@dataclass(frozen=True)
class InitrdRule:
    """Where a loader puts the initrd: page aligned at the top of its allowed window.

    The window ends at the lower of the top of low RAM less ``reserve_top`` and the
    kernel limit the loader consults.  QEMU and qboot subtract the size from the
    *inclusive* limit (``(initrd_max - size) & ~4095``), one byte lower than from
    the exclusive end: ``inclusive_limit``.
    """

    description: str
    reserve_top: int = 0
    kernel_limit: KernelLimit = KernelLimit.ADDR_MAX
    inclusive_limit: bool = False

    def address(self, low_end: int, initrd_addr_max: int, high_ok: bool, size: int) -> int:
        limit = {
            KernelLimit.ADDR_MAX: initrd_addr_max,
            KernelLimit.ADDR_MAX_OR_4G: U32_MAX if high_ok else initrd_addr_max,
            KernelLimit.NONE: U32_MAX,
        }[self.kernel_limit]
        limit = min(limit, low_end - self.reserve_top - 1)  # inclusive
        top = limit if self.inclusive_limit else limit + 1
        return align_down(top - size, PAGE_SIZE)


@dataclass(frozen=True)
class TargetPromises:
    """What a target promises about the machine it gives the kernel; None: no promise."""

    description: str
    memory_meaning: MemoryMeaning = MemoryMeaning.TOTAL_RAM
    gap: GapRule | None = None
    withheld: tuple[Withheld, ...] | None = None
    #: Per entry protocol: the loader's initrd placement rule, where known.
    initrd_rules: tuple[tuple[EntryProtocol, InitrdRule], ...] = ()
    #: The plan (every byte written) is known: the exact oracles apply.
    exact: bool = False
    #: Entry protocols a case may ask for, and what the target really does for each.
    entries: tuple[tuple[EntryProtocol, str], ...] = ()

    def platform(self, memory: int) -> Platform | None:
        return None if self.gap is None else self.gap.platform(self.description, memory)

    def ram_promised(self, memory: int) -> int | None:
        """Bytes of RAM the kernel should see, before what the firmware withholds."""
        if self.gap is None:
            return None
        if self.memory_meaning is MemoryMeaning.TOTAL_RAM:
            return memory
        start, end = self.gap.gap(memory)
        return memory - max(0, min(memory, end) - start)

    def withheld_ranges(self, memory: int) -> tuple[tuple[str, int, int], ...] | None:
        if self.gap is None or self.withheld is None:
            return None
        low = self.gap.low_end(memory)
        return tuple((w.name, *w.resolve(low)) for w in self.withheld)

    def entry_note(self, entry: EntryProtocol) -> str | None:
        return dict(self.entries).get(entry)

    def initrd_rule(self, entry: EntryProtocol) -> InitrdRule | None:
        return dict(self.initrd_rules).get(entry)


LEGACY_HOLE = Withheld("legacy VGA/ROM hole", LOW_RAM_END, HIGH_MEMORY_START)
SEABIOS_LOW = Withheld("EBDA + legacy VGA/ROM hole", EBDA_START, HIGH_MEMORY_START)
PC_GAP = GapRule(PC_SPLIT_THRESHOLD, PC_LOWMEM_WHEN_SPLIT)
MICROVM_GAP = GapRule(MICROVM_LOWMEM_MAX, MICROVM_LOWMEM_MAX)

_OURS_RULE = InitrdRule("top of low RAM, below initrd_addr_max + 1 (bootfuzz.loader.plan)")

OURS_QEMU_TCG = TargetPromises(
    description=("our loader on QEMU-TCG pc "
                 "(bootfuzz.loader.plan, bootfuzz.loader.platform.qemu_pc)"),
    gap=PC_GAP,
    withheld=(LEGACY_HOLE,),
    # The default placement (InitrdPlacement.TOP) is the same for every entry path.
    initrd_rules=tuple((e, _OURS_RULE) for e in EntryProtocol),
    exact=True,
    entries=((EntryProtocol.BOOT64, "64-bit entry, zero page in RSI"),
             (EntryProtocol.BOOT32, "32-bit entry, zero page in ESI"),
             (EntryProtocol.REAL16, "16-bit entry through the kernel's setup code and our BIOS"),
             (EntryProtocol.PVH, "PVH entry of the vmlinux, hvm_start_info in EBX"),
             (EntryProtocol.VMLINUX, "the vmlinux's own 64-bit entry, zero page in RSI")),
)

_QEMU_ENTRIES = (
    (EntryProtocol.BOOT64, "bzImage through QEMU's linuxboot option ROM (16-bit real-mode "
     "setup entry): QEMU has no 64-bit entry, so this is its default bzImage path"),
    (EntryProtocol.PVH, "the decompressed ELF vmlinux given to -kernel: QEMU enters its "
     "XEN_ELFNOTE_PHYS32_ENTRY with hvm_start_info (pvh.bin option ROM / qboot)"),
)
#: QEMU pc's acpi_data_size (128 KiB ACPI + 32 KiB other BIOS data).
#: source: hw/i386/pc.c pc_machine_class_init, "acpi_data_size = 0x20000 + 0x8000".
QEMU_PC_ACPI_DATA_SIZE = 0x28000

QEMU_PC = TargetPromises(
    description="QEMU pc with SeaBIOS, -kernel/-initrd/-append",
    gap=PC_GAP,
    withheld=(SEABIOS_LOW, Withheld("ACPI/SeaBIOS tables at the top of low RAM",
                                    QEMU_PC_TOP_RESERVED, 0, Anchor.TOP_OF_LOW)),
    initrd_rules=(
        # Measured on QEMU 7.2 with 1 MiB and 1 MiB + 1 initrds at 256M and 5G: the
        # initrd ends at below_4g - 128 KiB (exclusive), above initrd_addr_max when
        # the kernel allows it.  hw/i386/x86.c would give below_4g - acpi_data_size.
        (EntryProtocol.BOOT64, InitrdRule(
            "QEMU 7.2 pc bzImage path: align_down(below_4g - 0x20000 - size), up to "
            "4 GiB - 1 with XLF_CAN_BE_LOADED_ABOVE_4G (measured)",
            reserve_top=QEMU_PC_TOP_RESERVED, kernel_limit=KernelLimit.ADDR_MAX_OR_4G)),
        # source: hw/i386/x86.c x86_load_linux(), PVH branch: initrd_max =
        # below_4g - acpi_data_size - 1; (initrd_max - size) & ~4095.
        (EntryProtocol.PVH, InitrdRule(
            "QEMU x86_load_linux PVH branch: (below_4g - acpi_data_size - 1 - size) & ~4095",
            reserve_top=QEMU_PC_ACPI_DATA_SIZE, kernel_limit=KernelLimit.NONE,
            inclusive_limit=True)),
    ),
    entries=_QEMU_ENTRIES,
)

QEMU_MICROVM = TargetPromises(
    description="QEMU microvm with qboot, -kernel/-initrd/-append",
    gap=MICROVM_GAP,
    withheld=(SEABIOS_LOW,),
    initrd_rules=(
        # qboot re-reads the header and places the initrd itself, ignoring QEMU's
        # ramdisk_image and XLF_CAN_BE_LOADED_ABOVE_4G: at 5G a 6.1 initrd ends below
        # 2 GiB, not 3 GiB (measured).  source: qboot linuxboot.c parse_bzimage().
        (EntryProtocol.BOOT64, InitrdRule(
            "qboot parse_bzimage: (min(initrd_addr_max, lowmem - 1) - size) & ~4095",
            kernel_limit=KernelLimit.ADDR_MAX, inclusive_limit=True)),
        # source: hw/i386/x86.c PVH branch with acpi_data_size 0 (hw/i386/microvm.c).
        (EntryProtocol.PVH, InitrdRule(
            "QEMU x86_load_linux PVH branch, acpi_data_size 0: (below_4g - 1 - size) & ~4095",
            kernel_limit=KernelLimit.NONE, inclusive_limit=True)),
    ),
    entries=_QEMU_ENTRIES,
)

#: Promises a command template may name (``promises = "qemu-pc"``).
KNOWN_PROMISES: dict[str, TargetPromises] = {
    "qemu-pc": QEMU_PC,
    "qemu-microvm": QEMU_MICROVM,
    "none": TargetPromises(description="no promises"),
}


# --------------------------------------------------------------------------------------
# What every target boots: the same files, and what the kernel should therefore see
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What any loader was asked to do, from the case and the files built for it."""

    memory: int
    cmdline: bytes
    initrd_size: int | None  # bytes of the initrd image
    payload_size: int | None
    payload_sha256: str | None
    initrd_addr_max: int
    initrd_high_ok: bool  # XLF_CAN_BE_LOADED_ABOVE_4G
    entry: EntryProtocol = EntryProtocol.BOOT64


@dataclass(frozen=True)
class Materials:
    kernel: Path
    image: KernelImage
    initrd: BuiltInitrd | None


def materials(case: BootCase) -> Materials:
    """Fetch the kernel and build the initrd for *case* (cached)."""
    from bootfuzz.guest.harness import build_harness
    from bootfuzz.guest.initrd import cached_initrd
    from bootfuzz.kernel.image import load_kernel_image
    from bootfuzz.kernel.pinned import resolve_kernel

    kernel = resolve_kernel(case.kernel)
    image = load_kernel_image(kernel)
    initrd = None
    if case.initrd is not None:
        initrd = cached_initrd(case.initrd, build_harness().agent)
    return Materials(kernel, image, initrd)


def expectation(case: BootCase, image: KernelImage, initrd: BuiltInitrd | None) -> Expectation:
    return Expectation(
        memory=case.memory,
        cmdline=case.cmdline.encode(),
        initrd_size=None if initrd is None else initrd.size,
        payload_size=None if case.initrd is None else case.initrd.size,
        payload_sha256=None if initrd is None else initrd.payload_sha256,
        initrd_addr_max=image.initrd_addr_max,
        initrd_high_ok=bool(image.xloadflags & XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G),
        entry=case.entry,
    )


# --------------------------------------------------------------------------------------
# A run on a target
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetRun:
    target: str
    case: BootCase
    argv: tuple[str, ...]
    transcript: Transcript
    observation: Observation
    guest_exit: GuestExit
    expectation: Expectation
    promises: TargetPromises
    validity: tuple[OracleResult, ...]
    exact: tuple[OracleResult, ...]  # empty unless the target is exact
    verdict: Verdict
    run_dir: Path
    duration: float

    @property
    def oracles(self) -> tuple[OracleResult, ...]:
        return self.validity + self.exact


class Target(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def promises(self) -> TargetPromises: ...

    def unsupported(self, case: BootCase) -> str | None:
        """Why this target cannot run *case*, or None."""

    def run(self, case: BootCase, run_dir: Path, *, timeout: float,
            silence_timeout: float) -> TargetRun:
        """Boot *case*, judge it, leave console.log and command.json in *run_dir*."""


#: Oracles of bootfuzz.judge.oracles that read the agent's report; without an initrd there
#: is no agent, so they do not apply (the validity "boot" oracle judges the panic).
AGENT_ORACLES = frozenset({"boot", "agent-cmdline", "payload-digest", "firmware-memmap",
                           "boot-params"})


def _judge(name: str, case: BootCase, argv: Sequence[str], transcript: Transcript,
           guest_exit: GuestExit, exp: Expectation, promises: TargetPromises,
           run_dir: Path, started: float, exact: Sequence[OracleResult] = ()) -> TargetRun:
    from bootfuzz.judge.validity import ValidityEvidence, judge_validity

    observation = parse_transcript(transcript.text)
    validity = judge_validity(ValidityEvidence(exp, promises, observation, guest_exit,
                                               transcript.end_detail))
    if exp.initrd_size is None:
        exact = [r for r in exact if r.name not in AGENT_ORACLES]
    results = [*validity, *exact]
    return TargetRun(
        target=name, case=case, argv=tuple(argv), transcript=transcript,
        observation=observation, guest_exit=guest_exit, expectation=exp, promises=promises,
        validity=tuple(validity), exact=tuple(exact), verdict=overall(results),
        run_dir=run_dir, duration=time.monotonic() - started,
    )


def _run_argv(argv: Sequence[str], run_dir: Path, timeout: float, silence_timeout: float,
              what: str) -> Transcript:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "command.json").write_text(json.dumps(list(argv), indent=1) + "\n")
    transcript = run_console(argv, timeout=timeout, silence_timeout=silence_timeout,
                             log_path=run_dir / "console.log")
    if transcript.end is SessionEnd.EXITED and transcript.exit_status not in (
        0, QEMU_AGENT_EXIT_STATUS
    ) and transcript.first_output_after is None:
        raise BackendError(f"{what} failed to start: {transcript.end_detail}; "
                           f"command: {run_dir / 'command.json'}")
    return transcript


@dataclass(frozen=True)
class OursTarget:
    """Our loader on one of our backends."""

    backend: str = "qemu-tcg"

    @property
    def name(self) -> str:
        return f"ours:{self.backend}"

    @property
    def promises(self) -> TargetPromises:
        return OURS_QEMU_TCG

    def unsupported(self, case: BootCase) -> str | None:
        return None

    def run(self, case: BootCase, run_dir: Path, *, timeout: float,
            silence_timeout: float) -> TargetRun:
        from bootfuzz.run.boot import execute, prepare

        started = time.monotonic()
        case = replace(case, backend=self.backend)
        prepared = prepare(case)
        result = execute(prepared, run_dir, timeout=timeout, silence_timeout=silence_timeout)
        initrd = None
        if prepared.plan.initrd is not None and case.initrd is not None:
            from bootfuzz.guest.initrd import cached_initrd

            initrd = cached_initrd(case.initrd, prepared.harness.agent)
        exp = expectation(case, prepared.image, initrd)
        argv = json.loads((run_dir / "command.json").read_text())
        promises = self.promises
        if str(getattr(case, "initrd_placement", "top")) != "top":
            promises = replace(promises, initrd_rules=())  # the exact oracles judge it
        return _judge(self.name, case, argv, result.transcript, result.guest_exit, exp,
                      promises, run_dir, started, result.oracles)


class QemuMachine(enum.StrEnum):
    PC = "pc"
    MICROVM = "microvm"


class Accel(enum.StrEnum):
    TCG = "tcg"
    KVM = "kvm"


#: microvm without ACPI tables needs the PIT (TSC calibration) and PIC (interrupts),
#: the ISA serial port for the console and the RTC (else a 1 s wait).  With its
#: default acpi=on the 6.1 kernel cannot calibrate the TSC against the PIT and hangs
#: ("tsc: Unable to calibrate against PIT"): measured.  source: qemu-tcg-backend.md.
MICROVM_OPTIONS = "pit=on,pic=on,isa-serial=on,rtc=on,acpi=off"


@dataclass(frozen=True)
class QemuDirectTarget:
    """QEMU's own loader: -kernel, -initrd, -append."""

    machine: QemuMachine = QemuMachine.PC
    accel: Accel = Accel.TCG
    binary: str = field(default_factory=lambda: os.environ.get("BOOTFUZZ_QEMU",
                                                               "qemu-system-x86_64"))

    @property
    def name(self) -> str:
        return f"qemu-direct:{self.machine.value}:{self.accel.value}"

    @property
    def promises(self) -> TargetPromises:
        return QEMU_PC if self.machine is QemuMachine.PC else QEMU_MICROVM

    def unsupported(self, case: BootCase) -> str | None:
        if self.accel is Accel.KVM and not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "accel kvm: /dev/kvm is missing or not accessible"
        if case.overrides != type(case.overrides)():
            return "QEMU's loader takes no overrides of boot_params or addresses"
        if self.promises.entry_note(case.entry) is None:
            return (f"entry {case.entry.value}: QEMU's -kernel boots a bzImage through its "
                    "16-bit setup or an ELF vmlinux through PVH, nothing else")
        return None

    def argv(self, kernel: Path, initrd: Path | None, cmdline: str, memory: int) -> list[str]:
        machine = f"{self.machine.value},accel={self.accel.value}"
        if self.machine is QemuMachine.MICROVM:
            machine += "," + MICROVM_OPTIONS
        argv = [
            self.binary, "-machine", machine, "-m", f"{memory // 1024}K", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot",
            "-device", f"isa-debug-exit,iobase={AGENT_EXIT_PORT:#x},iosize=0x04",
            "-kernel", str(kernel),
        ]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        return [*argv, "-append", cmdline]

    def run(self, case: BootCase, run_dir: Path, *, timeout: float,
            silence_timeout: float) -> TargetRun:
        started = time.monotonic()
        reason = self.unsupported(case)
        if reason:
            raise ConfigError(f"{self.name}: {reason}")
        if shutil.which(self.binary) is None:
            raise BackendError(f"{self.binary} not found: install qemu-system-x86")
        mats = materials(case)
        from bootfuzz.loader.placement import encode_cmdline

        encode_cmdline(case.cmdline, mats.image)
        run_dir.mkdir(parents=True, exist_ok=True)
        kernel = mats.kernel
        if case.entry is EntryProtocol.PVH:
            kernel = run_dir / "vmlinux.bin"  # removed after the run, like our blobs
            kernel.write_bytes(mats.image.vmlinux)
        argv = self.argv(kernel, None if mats.initrd is None else mats.initrd.path,
                         case.cmdline, case.memory)
        try:
            transcript = _run_argv(argv, run_dir, timeout, silence_timeout, self.name)
        finally:
            if case.entry is EntryProtocol.PVH:
                kernel.unlink(missing_ok=True)
        guest_exit = classify_exit(transcript, QEMU_EXIT_STATUSES)
        return _judge(self.name, case, argv, transcript, guest_exit,
                      expectation(case, mats.image, mats.initrd), self.promises, run_dir,
                      started)


# --------------------------------------------------------------------------------------
# command: any VMM from an argument-list template
# --------------------------------------------------------------------------------------


class TemplateError(ConfigError):
    """A command template that cannot be expanded (unknown placeholder, bad file)."""

    component = "command template"


PLACEHOLDERS: tuple[str, ...] = ("kernel", "initrd", "cmdline", "mem_bytes", "mem_kib",
                                 "mem_mib")
_FORMATTER = string.Formatter()


def template_fields(arg: str, index: int) -> set[str]:
    """The placeholders one argument uses; anything else is a TemplateError."""
    used: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(arg))
    except ValueError as e:
        raise TemplateError(f"argument {index} {arg!r}: {e} (write {{{{ and }}}} for "
                            "literal braces)") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            raise TemplateError(
                f"argument {index} {arg!r}: unknown placeholder {{{name}}} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
            )
        if spec or conversion:
            raise TemplateError(f"argument {index} {arg!r}: placeholder {{{name}}} takes no "
                                "format spec or conversion")
        used.add(name)
    return used


@dataclass(frozen=True)
class CommandTemplate:
    """An argument list (never a shell string) with {placeholders}."""

    argv: tuple[str, ...]
    name: str = "command"
    promises: str = "none"
    poweroff_exit_status: int = QEMU_AGENT_EXIT_STATUS

    def __post_init__(self) -> None:
        if not self.argv:
            raise TemplateError("the template's argument list is empty")
        if not all(isinstance(a, str) for a in self.argv):
            raise TemplateError("every template argument must be a string")
        for i, arg in enumerate(self.argv):
            template_fields(arg, i)
        if self.promises not in KNOWN_PROMISES:
            raise TemplateError(f"unknown promises {self.promises!r} "
                                f"(known: {', '.join(KNOWN_PROMISES)})")

    @property
    def fields(self) -> set[str]:
        return set().union(*(template_fields(a, i) for i, a in enumerate(self.argv)))

    @property
    def exit_statuses(self) -> ExitStatuses:
        """As QEMU's under -no-reboot (0: the guest reset), with the template's power-off."""
        return {0: GuestExit.RESET, self.poweroff_exit_status: GuestExit.POWER_OFF}

    def expand(self, values: Mapping[str, str]) -> list[str]:
        missing = self.fields - set(values)
        if missing:
            raise TemplateError(f"no value for {', '.join(sorted(missing))}")
        return [a.format_map(values) for a in self.argv]


def placeholder_values(kernel: Path, initrd: Path | None, cmdline: str, memory: int
                       ) -> dict[str, str]:
    values = {"kernel": str(kernel), "cmdline": cmdline, "mem_bytes": str(memory),
              "mem_kib": str(memory // 1024), "mem_mib": str(memory >> 20)}
    if initrd is not None:
        values["initrd"] = str(initrd)
    return values


def load_template(path: Path) -> CommandTemplate:
    """A template from TOML or JSON: ``argv = [...]`` and optional name, promises,
    poweroff_exit_status."""
    try:
        text = path.read_text()
    except OSError as e:
        raise TemplateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise TemplateError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {e}"
                            ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("argv"), list):
        raise TemplateError(f"{path}: needs a list 'argv'")
    unknown = set(doc) - {"argv", "name", "promises", "poweroff_exit_status"}
    if unknown:
        raise TemplateError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    status = doc.get("poweroff_exit_status", QEMU_AGENT_EXIT_STATUS)
    if not isinstance(status, int) or isinstance(status, bool):
        raise TemplateError(f"{path}: poweroff_exit_status must be an integer")
    return CommandTemplate(tuple(doc["argv"]), name=str(doc.get("name", path.stem)),
                           promises=str(doc.get("promises", "none")),
                           poweroff_exit_status=status)


@dataclass(frozen=True)
class CommandTarget:
    template: CommandTemplate

    @property
    def name(self) -> str:
        return f"command:{self.template.name}"

    @property
    def promises(self) -> TargetPromises:
        return KNOWN_PROMISES[self.template.promises]

    def unsupported(self, case: BootCase) -> str | None:
        if case.initrd is None and "initrd" in self.template.fields:
            return "the template passes {initrd} and the case has no initrd"
        if case.entry is not EntryProtocol.BOOT64:
            return f"entry {case.entry.value}: a command template boots the bzImage as given"
        return None

    def run(self, case: BootCase, run_dir: Path, *, timeout: float,
            silence_timeout: float) -> TargetRun:
        started = time.monotonic()
        reason = self.unsupported(case)
        if reason:
            raise ConfigError(f"{self.name}: {reason}")
        mats = materials(case)
        argv = self.template.expand(placeholder_values(
            mats.kernel, None if mats.initrd is None else mats.initrd.path, case.cmdline,
            case.memory))
        if shutil.which(argv[0]) is None:
            raise BackendError(f"{argv[0]} not found (the template's program)")
        transcript = _run_argv(argv, run_dir, timeout, silence_timeout, self.name)
        guest_exit = classify_exit(transcript, self.template.exit_statuses)
        return _judge(self.name, case, argv, transcript, guest_exit,
                      expectation(case, mats.image, mats.initrd), self.promises, run_dir,
                      started)


class TargetSpecError(ConfigError):
    component = "target"


def parse_target(spec: str) -> Target:
    """``ours[:BACKEND]``, ``qemu-direct:MACHINE[:ACCEL]``, ``command:TEMPLATE-FILE``."""
    kind, _, rest = spec.partition(":")
    if kind == "ours":
        from bootfuzz.run.backends import get_backend

        backend = rest or "qemu-tcg"
        get_backend(backend)  # an unknown name is a ConfigError naming the known ones
        return OursTarget(backend)
    if kind == "qemu-direct":
        parts = rest.split(":") if rest else ["pc"]
        if len(parts) > 2:
            raise TargetSpecError(f"{spec!r}: expected qemu-direct:MACHINE[:ACCEL]")
        try:
            machine = QemuMachine(parts[0])
            accel = Accel(parts[1]) if len(parts) == 2 else Accel.TCG
        except ValueError:
            raise TargetSpecError(
                f"{spec!r}: machine must be one of {', '.join(QemuMachine)} and accel one of "
                f"{', '.join(Accel)}"
            ) from None
        return QemuDirectTarget(machine, accel)
    if kind == "command":
        if not rest:
            raise TargetSpecError(f"{spec!r}: expected command:TEMPLATE-FILE (.toml or .json)")
        return CommandTarget(load_template(Path(rest)))
    raise TargetSpecError(
        f"unknown target {spec!r} (ours[:BACKEND], qemu-direct:pc|microvm[:tcg|kvm], "
        "command:FILE)"
    )
