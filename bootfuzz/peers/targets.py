"""Targets: something that boots a BootCase through *some* loader and shows us the console.

``ours`` is our loader on one of our backends (every byte known, so the exact
oracles of bootfuzz.judge.oracles apply).  ``qemu-direct`` is QEMU's own ``-kernel``
loader (SeaBIOS + linuxboot option ROM on ``pc``, qboot on ``microvm``),
``command`` any VMM started from an argument-list template, and the real loaders
(``grub-bios``, ``grub-bios-linux16``, ``grub-efi``, ``syslinux``, ``efi-stub``,
``systemd-boot``: bootfuzz.peers.loaders) boot media built for the case.  For peers we do not
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
from bootfuzz.cmdline import cmdline_bytes
from bootfuzz.errors import BackendError, CmdlineError, ConfigError
from bootfuzz.guest.initrd import BuiltInitrd
from bootfuzz.guest.protocol import AGENT_EXIT_PORT, QEMU_AGENT_EXIT_STATUS
from bootfuzz.judge.observation import Observation, parse_transcript
from bootfuzz.judge.promises import TargetPromises
from bootfuzz.judge.validity import LoadRequest, ValidityEvidence, judge_validity
from bootfuzz.judge.verdict import OracleResult, Verdict, overall
from bootfuzz.kernel.image import KernelImage
from bootfuzz.peers.loaders import Loader, RealLoader, judge_kernel_started, parse_loader
from bootfuzz.peers.promises import KNOWN_PROMISES, OURS_QEMU_TCG, QEMU_MICROVM, QEMU_PC
from bootfuzz.run.backends.qemu_tcg import QEMU_EXIT_STATUSES
from bootfuzz.run.console import run_console
from bootfuzz.run.exits import ExitStatuses, classify_exit
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript

# --------------------------------------------------------------------------------------
# What every target boots: the same files, and what the kernel should therefore see
# --------------------------------------------------------------------------------------


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


def load_request(case: BootCase, image: KernelImage, initrd: BuiltInitrd | None) -> LoadRequest:
    """What every loader is asked to do for *case*, with the kernel's limits."""
    return LoadRequest(
        memory=case.memory,
        cmdline=cmdline_bytes(case.cmdline),
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
    request: LoadRequest
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


def refuse_long_cmdline(name: str, promises: TargetPromises, asked: bytes, given: bytes,
                        image: KernelImage) -> None:
    """Refuse a case whose line fits the kernel's cmdline_size as asked but not with what
    the loader adds (*given*: what it is handed, efi=debug on EFI; then its promises'
    own prefix and suffix): the kernel would cut it, and the target's cmdline oracle
    fail for a length, not for a loader's mistake."""
    line = promises.kernel_cmdline(given)
    over = len(line) - image.cmdline_size
    if over <= 0:
        return
    raise CmdlineError(
        f"{len(line)} bytes through {name} (the case's {len(asked)} and "
        f"{len(line) - len(asked)} the loader adds) is longer than the kernel's cmdline_size "
        f"of {image.cmdline_size}: shorten the line by {over} byte{'s' * (over != 1)} for "
        "this target")


def _judge(name: str, case: BootCase, argv: Sequence[str], transcript: Transcript,
           guest_exit: GuestExit, request: LoadRequest, promises: TargetPromises,
           run_dir: Path, started: float, exact: Sequence[OracleResult] = ()) -> TargetRun:
    observation = parse_transcript(transcript.raw)
    validity = judge_validity(ValidityEvidence(request, promises, observation, guest_exit,
                                               transcript.end_detail))
    if request.initrd_size is None:
        exact = [r for r in exact if r.name not in AGENT_ORACLES]
    results = [*validity, *exact]
    return TargetRun(
        target=name, case=case, argv=tuple(argv), transcript=transcript,
        observation=observation, guest_exit=guest_exit, request=request, promises=promises,
        validity=tuple(validity), exact=tuple(exact), verdict=overall(results),
        run_dir=run_dir, duration=time.monotonic() - started,
    )


def _run_argv(argv: Sequence[str], run_dir: Path, timeout: float, silence_timeout: float,
              what: str, stop_patterns: Sequence[str] = ()) -> Transcript:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "command.json").write_text(json.dumps(list(argv), indent=1) + "\n")
    transcript = run_console(argv, timeout=timeout, silence_timeout=silence_timeout,
                             log_path=run_dir / "console.log", stop_patterns=stop_patterns)
    if transcript.end is SessionEnd.EXITED and transcript.exit_status not in (
        0, QEMU_AGENT_EXIT_STATUS
    ) and transcript.first_output_after is None:
        raise BackendError(f"{what} failed to start: {transcript.end_detail}; "
                           f"command: {run_dir / 'command.json'}")
    return transcript


def refuse_unsupported(target: Target, case: BootCase) -> None:
    """Refuse, before anything starts, a case the target cannot boot as asked."""
    reason = target.unsupported(case)
    if reason:
        raise ConfigError(f"{target.name}: {reason}")


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
        if self.backend != "kvm":
            return None
        from bootfuzz.run.doctor import kvm_cannot_boot

        return kvm_cannot_boot()

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
        request = load_request(case, prepared.image, initrd)
        argv = json.loads((run_dir / "command.json").read_text())
        promises = self.promises
        if str(getattr(case, "initrd_placement", "top")) != "top":
            promises = replace(promises, initrd_rules=())  # the exact oracles judge it
        return _judge(self.name, case, argv, result.transcript, result.guest_exit, request,
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
        if self.accel is Accel.KVM:
            from bootfuzz.run.doctor import kvm_cannot_boot

            if slow := kvm_cannot_boot():
                return slow
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
        refuse_unsupported(self, case)
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
                      load_request(case, mats.image, mats.initrd), self.promises, run_dir,
                      started)


# --------------------------------------------------------------------------------------
# command: any VMM from an argument-list template
# --------------------------------------------------------------------------------------


class TemplateError(ConfigError):
    """A command template that cannot be expanded (unknown placeholder, bad file)."""

    component = "command template"


PLACEHOLDERS: tuple[str, ...] = ("kernel", "initrd", "cmdline", "mem_bytes", "mem_kib",
                                 "mem_mib", "media", "ovmf_vars")
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
    #: ``LOADER[:BUILD]`` (bootfuzz.peers.loaders): the template boots that loader's media
    #: for the case ({media}) with a fresh copy of OVMF's variable store ({ovmf_vars}), so
    #: a user's own QEMU, firmware or loader build runs the same configuration.
    media: str | None = None

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
        if self.media is not None and parse_loader(self.media) is None:
            raise TemplateError(f"media {self.media!r}: not a loader (known: "
                                f"{', '.join(Loader)}, each with an optional :BUILD)")
        if {"media", "ovmf_vars"} & self.fields and self.media is None:
            raise TemplateError("{media} and {ovmf_vars} need media = \"LOADER[:BUILD]\"")

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
    unknown = set(doc) - {"argv", "name", "promises", "poweroff_exit_status", "media"}
    if unknown:
        raise TemplateError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    status = doc.get("poweroff_exit_status", QEMU_AGENT_EXIT_STATUS)
    if not isinstance(status, int) or isinstance(status, bool):
        raise TemplateError(f"{path}: poweroff_exit_status must be an integer")
    media = doc.get("media")
    if media is not None and not isinstance(media, str):
        raise TemplateError(f"{path}: media must be a string (LOADER[:BUILD])")
    return CommandTemplate(tuple(doc["argv"]), name=str(doc.get("name", path.stem)),
                           promises=str(doc.get("promises", "none")),
                           poweroff_exit_status=status, media=media)


@dataclass(frozen=True)
class CommandTarget:
    template: CommandTemplate

    @property
    def name(self) -> str:
        return f"command:{self.template.name}"

    @property
    def promises(self) -> TargetPromises:
        return KNOWN_PROMISES[self.template.promises]

    def promises_for(self, initrd: bool) -> TargetPromises:
        """The promises for a case with or without an initrd: a real loader's own
        initrd option (OVMF's " initrd=initrd", ...) is not added without one."""
        loader = parse_loader(self.template.promises)
        return self.promises if loader is None else loader.promises(initrd)

    def unsupported(self, case: BootCase) -> str | None:
        if case.initrd is None and "initrd" in self.template.fields:
            return "the template passes {initrd} and the case has no initrd"
        if case.entry is not EntryProtocol.BOOT64:
            return f"entry {case.entry.value}: a command template boots the bzImage as given"
        loader = None if self.template.media is None else parse_loader(self.template.media)
        if loader is not None:
            try:
                loader.check_cmdline(cmdline_bytes(case.cmdline))
            except ConfigError as e:
                return str(e)
        return None

    def run(self, case: BootCase, run_dir: Path, *, timeout: float,
            silence_timeout: float) -> TargetRun:
        started = time.monotonic()
        refuse_unsupported(self, case)
        mats = materials(case)
        initrd = None if mats.initrd is None else mats.initrd.path
        values = placeholder_values(mats.kernel, initrd, case.cmdline, case.memory)
        scratch: list[Path] = []
        request = load_request(case, mats.image, mats.initrd)
        loader = None if self.template.media is None else parse_loader(self.template.media)
        asked = cmdline_bytes(case.cmdline)
        given = asked if loader is None else loader.loader_cmdline(asked)
        promises = self.promises_for(mats.initrd is not None)
        refuse_long_cmdline(self.name, promises, asked, given, mats.image)
        if loader is not None:
            request = replace(request, cmdline=given)
            values["cmdline"] = os.fsdecode(request.cmdline)
            media = loader.media(mats.kernel, initrd, asked)
            if media is not None:
                values["media"] = str(media)
            if "ovmf_vars" in self.template.fields:
                scratch.append(loader.ovmf_vars_copy(run_dir))
                values["ovmf_vars"] = str(scratch[-1])
        argv = self.template.expand(values)
        if shutil.which(argv[0]) is None:
            raise BackendError(f"{argv[0]} not found (the template's program)")
        try:
            transcript = _run_argv(argv, run_dir, timeout, silence_timeout, self.name)
        finally:
            for path in scratch:
                path.unlink(missing_ok=True)
        guest_exit = classify_exit(transcript, self.template.exit_statuses)
        return _judge(self.name, case, argv, transcript, guest_exit, request, promises,
                      run_dir, started)


# --------------------------------------------------------------------------------------
# A real loader (GRUB, SYSLINUX, the EFI stub under OVMF, systemd-boot): bootfuzz.peers.loaders
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoaderTarget:
    """A real boot loader on QEMU-TCG pc, booting media built for the case."""

    loader: RealLoader

    @property
    def name(self) -> str:
        return self.loader.name

    @property
    def promises(self) -> TargetPromises:
        return self.loader.promises(initrd=True)

    def unsupported(self, case: BootCase) -> str | None:
        if case.overrides != type(case.overrides)():
            return "a real loader takes no overrides of boot_params or addresses"
        if self.promises.entry_note(case.entry) is None:
            return (f"entry {case.entry.value}: {self.loader.loader.value} boots the bzImage "
                    "its own way (entry 64 stands for it)")
        try:
            self.loader.check_cmdline(cmdline_bytes(case.cmdline))
        except ConfigError as e:
            return str(e)
        return None

    def run(self, case: BootCase, run_dir: Path, *, timeout: float,
            silence_timeout: float) -> TargetRun:
        started = time.monotonic()
        refuse_unsupported(self, case)
        mats = materials(case)
        from bootfuzz.loader.placement import encode_cmdline

        encode_cmdline(case.cmdline, mats.image)
        asked = cmdline_bytes(case.cmdline)
        refuse_long_cmdline(self.name, self.loader.promises(mats.initrd is not None), asked,
                            self.loader.loader_cmdline(asked), mats.image)
        launch = self.loader.launch(mats.kernel, None if mats.initrd is None else
                                    mats.initrd.path, asked, case.memory, run_dir)
        try:
            transcript = _run_argv(launch.argv, run_dir, timeout, silence_timeout, self.name,
                                   launch.stop_patterns)
        finally:
            for path in launch.scratch:
                path.unlink(missing_ok=True)
        guest_exit = classify_exit(transcript, QEMU_EXIT_STATUSES)
        request = replace(load_request(case, mats.image, mats.initrd),
                          cmdline=self.loader.loader_cmdline(asked))
        run = _judge(self.name, case, launch.argv, transcript, guest_exit, request,
                     self.loader.promises(mats.initrd is not None), run_dir, started)
        started_kernel = judge_kernel_started(transcript.text,
                                              run.observation.linux_version_count)
        validity = (started_kernel, *run.validity)
        return replace(run, validity=validity, verdict=overall([*validity, *run.exact]))


class TargetSpecError(ConfigError):
    component = "target"


def parse_target(spec: str) -> Target:
    """``ours[:BACKEND]``, ``qemu-direct:MACHINE[:ACCEL]``, ``command:TEMPLATE-FILE``,
    or a real loader ``LOADER[:BUILD]`` (bootfuzz.peers.loaders)."""
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
    loader = parse_loader(spec)
    if loader is not None:
        return LoaderTarget(loader)
    if kind == "command":
        if not rest:
            raise TargetSpecError(f"{spec!r}: expected command:TEMPLATE-FILE (.toml or .json)")
        return CommandTarget(load_template(Path(rest)))
    raise TargetSpecError(
        f"unknown target {spec!r} (ours[:BACKEND], qemu-direct:pc|microvm[:tcg|kvm], "
        f"command:FILE, {'|'.join(Loader)}[:BUILD])"
    )
