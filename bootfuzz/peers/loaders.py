"""Real boot loaders as peers: how each one is started for a case on QEMU-TCG ``pc``.

A loader here is a program a machine really boots through (GRUB, SYSLINUX, the kernel's
EFI stub under OVMF, systemd-boot), run from its installed package or from a user's own
build (``grub-bios:DIR`` ...).  For each, this module knows which firmware it needs
(SeaBIOS, QEMU's default, or OVMF with a fresh copy of its variable store per run: a
loader may write variables, and a shared store would carry state from one boot to the
next), which boot media it reads (bootfuzz.peers.media) and how the case's command line
is written into its configuration.  The Target adapter that boots and judges it is
``LoaderTarget`` in bootfuzz.peers.targets; its promises are data in
bootfuzz.peers.promises.

Every loader is given the case's command line; the EFI ones get ``efi=debug`` first
(the kernel prints the UEFI memory map only then, and bootfuzz.judge.efi_map judges it).
"""

from __future__ import annotations

import enum
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from bootfuzz.errors import BackendError
from bootfuzz.guest.protocol import AGENT_EXIT_PORT
from bootfuzz.judge.promises import TargetPromises
from bootfuzz.judge.verdict import OracleResult, judged
from bootfuzz.peers.media import (
    INITRD_NAME,
    KERNEL_NAME,
    MediaFile,
    MediaKind,
    MediaRefusal,
    MediaSpec,
    cached_media,
)
from bootfuzz.peers.promises import (
    EFI_STUB_OVMF,
    GRUB_BIOS,
    GRUB_BIOS_LINUX16,
    GRUB_EFI,
    SYSLINUX_ISOLINUX,
    SYSTEMD_BOOT,
)

#: Put before the command line of EFI loaders: the kernel prints its UEFI memory map
#: (drivers/firmware/efi/memmap.c efi_print_memmap() runs under efi_enabled(EFI_DBG)).
#: First, not last: after a "--" token it would be an argument of init (found by a
#: campaign: a case ending in "--" lost the map and every EFI oracle said unknown).
EFI_DEBUG = b"efi=debug "
OVMF_DIR_ENV = "BOOTFUZZ_OVMF_DIR"
#: The installed packages' files (Debian paths; a user's build is given by the spec).
DEFAULT_OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = "OVMF_CODE_4M.fd"
OVMF_VARS = "OVMF_VARS_4M.fd"
GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")
ISOLINUX_DIR = Path("/usr/lib/ISOLINUX")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
SYSTEMD_BOOT_EFI = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")


class Loader(enum.StrEnum):
    GRUB_BIOS = "grub-bios"
    GRUB_BIOS_LINUX16 = "grub-bios-linux16"
    GRUB_EFI = "grub-efi"
    SYSLINUX = "syslinux"
    EFI_STUB = "efi-stub"
    SYSTEMD_BOOT = "systemd-boot"


EFI_LOADERS = frozenset({Loader.GRUB_EFI, Loader.EFI_STUB, Loader.SYSTEMD_BOOT})

PROMISES: dict[Loader, TargetPromises] = {
    Loader.GRUB_BIOS: GRUB_BIOS,
    Loader.GRUB_BIOS_LINUX16: GRUB_BIOS_LINUX16,
    Loader.GRUB_EFI: GRUB_EFI,
    Loader.SYSLINUX: SYSLINUX_ISOLINUX,
    Loader.EFI_STUB: EFI_STUB_OVMF,
    Loader.SYSTEMD_BOOT: SYSTEMD_BOOT,
}

#: What ``KIND:PATH`` names for each loader (a user's own build).
BUILD_HELP: dict[Loader, str] = {
    Loader.GRUB_BIOS: "a GRUB i386-pc platform directory (grub-mkrescue -d)",
    Loader.GRUB_BIOS_LINUX16: "a GRUB i386-pc platform directory (grub-mkrescue -d)",
    Loader.GRUB_EFI: "a GRUB x86_64-efi platform directory (grub-mkrescue -d)",
    Loader.SYSLINUX: "a directory holding isolinux.bin and ldlinux.c32",
    Loader.EFI_STUB: f"a directory holding {OVMF_CODE} and {OVMF_VARS} (the firmware)",
    Loader.SYSTEMD_BOOT: "a systemd-bootx64.efi file",
}


#: Console lines saying the loader gave up and the firmware waits for a person: the
#: session ends there instead of at the silence timeout (bootfuzz.run.console).
GAVE_UP: dict[Loader, tuple[str, ...]] = {
    # OVMF found nothing to boot and started its shell (QEMU's kernel loader failed).
    Loader.EFI_STUB: (r"Shell> ",),
    Loader.SYSTEMD_BOOT: (r"Shell> ",),
    Loader.GRUB_EFI: (r"Shell> ",),
    # SYSLINUX could not load the kernel or initrd: its prompt.
    Loader.SYSLINUX: (r"^boot: ",),
}


@dataclass(frozen=True)
class Launch:
    """One boot through a loader: QEMU's argument list, per-run files to remove, and the
    console lines that end the session (the loader gave up)."""

    argv: list[str]
    scratch: tuple[Path, ...] = ()
    stop_patterns: tuple[str, ...] = ()


def _no_controls(cmdline: bytes, who: str) -> None:
    bad = [b for b in cmdline if b < 0x20 or b == 0x7F]
    if bad:
        raise MediaRefusal(f"{who} cannot carry the control byte {bad[0]:#04x} of the "
                           "command line in its configuration")


#: The kernel's own tokens (spaces separate, double quotes group): GRUB is given one
#: word per token, so a quoted value keeps its spaces.
_TOKEN = re.compile(rb'(?:[^ "]|"[^"]*"?)+')


def grub_words(cmdline: bytes) -> bytes:
    """The command line as GRUB script words: one single-quoted word per kernel token
    (a quote inside as ``'\\''``); GRUB's ``linux`` joins its arguments with one space."""
    _no_controls(cmdline, "GRUB")
    if not cmdline:
        return b""
    words = _TOKEN.findall(cmdline)
    if b" ".join(words) != cmdline:
        raise MediaRefusal("GRUB joins its arguments with single spaces: a command line "
                           "with leading, trailing or repeated spaces between its words "
                           "cannot be passed as is")
    return b" ".join(b"'" + w.replace(b"'", b"'\\''") + b"'" for w in words)


def grub_cfg(cmdline: bytes, initrd: bool, linux16: bool) -> bytes:
    """GRUB's script: load, then boot only if every load succeeded (GRUB's script goes on
    after a failed command, so a failed ``initrd`` would boot without one); else say so
    and power off, leaving GRUB's own error line in the console."""
    suffix = b"16" if linux16 else b""
    words = grub_words(cmdline)
    linux = b"linux" + suffix + b" /" + KERNEL_NAME.encode() + (b" " + words if words else b"")
    boot = b"  if initrd" + suffix + b" /" + INITRD_NAME.encode() + b"; then boot; fi" \
        if initrd else b"  boot"
    lines = [b"serial --unit=0 --speed=115200", b"terminal_input serial",
             b"terminal_output serial", b"terminfo serial dumb",
             b"if " + linux + b"; then", boot, b"fi",
             b"echo 'bootfuzz: GRUB did not boot the kernel'", b"halt"]
    return b"\n".join(lines) + b"\n"


def isolinux_cfg(cmdline: bytes, initrd: bool) -> bytes:
    _no_controls(cmdline, "SYSLINUX")
    if cmdline[:1] == b" ":
        raise MediaRefusal("SYSLINUX drops the leading spaces of an APPEND line")
    lines = [b"SERIAL 0 115200", b"DEFAULT case", b"PROMPT 0", b"TIMEOUT 0", b"LABEL case",
             b"  KERNEL /" + KERNEL_NAME.encode()]
    if initrd:
        lines.append(b"  INITRD /" + INITRD_NAME.encode())
    lines.append(b"  APPEND " + cmdline)
    return b"\n".join(lines) + b"\n"


def systemd_boot_files(cmdline: bytes, initrd: bool) -> tuple[MediaFile, ...]:
    _no_controls(cmdline, "systemd-boot")
    if cmdline != cmdline.strip(b" "):
        raise MediaRefusal("systemd-boot strips the spaces around an 'options' value")
    entry = [b"title bootfuzz case", b"linux /" + KERNEL_NAME.encode()]
    if initrd:
        entry.append(b"initrd /" + INITRD_NAME.encode())
    if cmdline:
        entry.append(b"options " + cmdline)
    return (
        MediaFile("loader/loader.conf", data=b"timeout 0\ndefault case.conf\n"),
        MediaFile("loader/entries/case.conf", data=b"\n".join(entry) + b"\n"),
    )


@dataclass(frozen=True)
class RealLoader:
    """One loader from its installed package, or from the user's build at *build*."""

    loader: Loader
    build: Path | None = None
    binary: str = field(default_factory=lambda: os.environ.get("BOOTFUZZ_QEMU",
                                                               "qemu-system-x86_64"))

    @property
    def name(self) -> str:
        return self.loader.value if self.build is None else f"{self.loader.value}:{self.build}"

    @property
    def efi(self) -> bool:
        return self.loader in EFI_LOADERS

    def promises(self, initrd: bool) -> TargetPromises:
        """The loader's promises; its own command-line additions for the initrd go when
        there is none (OVMF's " initrd=initrd", SYSLINUX's " initrd=/initrd.img",
        systemd-boot's "initrd=\\initrd.img ")."""
        p = PROMISES[self.loader]
        if initrd:
            return p
        if self.loader in (Loader.EFI_STUB, Loader.SYSLINUX):
            return replace(p, cmdline_suffix=b"")
        if self.loader is Loader.SYSTEMD_BOOT:
            return replace(p, cmdline_prefix=b"")
        return p

    def loader_cmdline(self, cmdline: bytes) -> bytes:
        """What the loader is given: the case's command line (after efi=debug on EFI)."""
        return EFI_DEBUG + cmdline if self.efi else cmdline

    # ---- files ------------------------------------------------------------------------

    def _ovmf(self) -> tuple[Path, Path]:
        directory = Path(os.environ.get(OVMF_DIR_ENV, DEFAULT_OVMF_DIR))
        if self.loader is Loader.EFI_STUB and self.build is not None:
            directory = self.build
        code, vars_ = directory / OVMF_CODE, directory / OVMF_VARS
        for p in (code, vars_):
            if not p.is_file():
                raise BackendError(f"{p} is missing: {self.name} needs OVMF (install ovmf, "
                                   f"or set ${OVMF_DIR_ENV})")
        return code, vars_

    def _tool(self, default: Path) -> Path:
        path = self.build if self.build is not None else default
        if not path.exists():
            raise BackendError(f"{path} is missing: {self.name} needs "
                               f"{BUILD_HELP[self.loader]}")
        return path

    def ovmf_vars_copy(self, run_dir: Path) -> Path:
        """A fresh copy of OVMF's variable store for one boot, in *run_dir*."""
        _, vars_ = self._ovmf()
        run_dir.mkdir(parents=True, exist_ok=True)
        copy = run_dir / "OVMF_VARS.fd"
        shutil.copyfile(vars_, copy)
        return copy

    def check_cmdline(self, cmdline: bytes) -> None:
        """Refuse (MediaRefusal) a command line this loader's configuration cannot carry."""
        given = self.loader_cmdline(cmdline)
        if self.loader in (Loader.GRUB_BIOS, Loader.GRUB_BIOS_LINUX16, Loader.GRUB_EFI):
            grub_words(given)
        elif self.loader is Loader.SYSLINUX:
            isolinux_cfg(given, False)
        elif self.loader is Loader.SYSTEMD_BOOT:
            systemd_boot_files(given, False)
        elif b"\0" in given:
            raise MediaRefusal("QEMU's -append cannot carry a NUL byte")

    def media(self, kernel: Path, initrd: Path | None, cmdline: bytes) -> Path | None:
        """The boot media for a case (cached); None for the EFI stub (OVMF reads the
        kernel, initrd and command line from QEMU's fw_cfg)."""
        given = self.loader_cmdline(cmdline)
        files = [MediaFile(KERNEL_NAME, kernel)]
        if initrd is not None:
            files.append(MediaFile(INITRD_NAME, initrd))
        has_initrd = initrd is not None
        if self.loader in (Loader.GRUB_BIOS, Loader.GRUB_BIOS_LINUX16, Loader.GRUB_EFI):
            platform = GRUB_EFI_DIR if self.loader is Loader.GRUB_EFI else GRUB_PC_DIR
            cfg = grub_cfg(given, has_initrd, self.loader is Loader.GRUB_BIOS_LINUX16)
            files.append(MediaFile("boot/grub/grub.cfg", data=cfg))
            return cached_media(MediaSpec(MediaKind.GRUB_ISO, tuple(files),
                                          (self._tool(platform),)))
        if self.loader is Loader.SYSLINUX:
            base = self._tool(ISOLINUX_DIR)
            isolinux = base / "isolinux.bin"
            ldlinux = (base if self.build is not None else SYSLINUX_MODULES) / "ldlinux.c32"
            files.append(MediaFile("isolinux/isolinux.cfg", data=isolinux_cfg(given,
                                                                                has_initrd)))
            return cached_media(MediaSpec(MediaKind.ISOLINUX_ISO, tuple(files),
                                          (isolinux, ldlinux)))
        if self.loader is Loader.SYSTEMD_BOOT:
            boot = self._tool(SYSTEMD_BOOT_EFI)
            files.append(MediaFile("EFI/BOOT/BOOTX64.EFI", boot))
            files += systemd_boot_files(given, has_initrd)
            return cached_media(MediaSpec(MediaKind.ESP_FAT, tuple(files), (boot,)))
        return None

    # ---- the boot ---------------------------------------------------------------------

    def launch(self, kernel: Path, initrd: Path | None, cmdline: bytes, memory: int,
               run_dir: Path) -> Launch:
        """QEMU's arguments for one boot; the OVMF variable store is copied into *run_dir*."""
        if shutil.which(self.binary) is None:
            raise BackendError(f"{self.binary} not found: install qemu-system-x86")
        self.check_cmdline(cmdline)
        media = self.media(kernel, initrd, cmdline)
        argv = [
            self.binary, "-machine", "pc,accel=tcg", "-m", f"{memory // 1024}K", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-no-reboot",
            "-device", f"isa-debug-exit,iobase={AGENT_EXIT_PORT:#x},iosize=0x04",
        ]
        scratch: list[Path] = []
        if self.efi:
            code, _ = self._ovmf()
            copy = self.ovmf_vars_copy(run_dir)
            scratch.append(copy)
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={copy}"]
        if self.loader is Loader.EFI_STUB:
            argv += ["-kernel", str(kernel)]
            if initrd is not None:
                argv += ["-initrd", str(initrd)]
            argv += ["-append", os.fsdecode(self.loader_cmdline(cmdline))]
        elif media is not None and media.suffix == ".iso":
            argv += ["-drive", f"file={media},format=raw,if=ide,media=cdrom,readonly=on",
                     "-boot", "d"]
        elif media is not None:
            argv += ["-drive", f"file={media},format=raw,if=ide,media=disk,snapshot=on"]
        return Launch(argv, tuple(scratch), GAVE_UP.get(self.loader, ()))


#: Escape sequences firmware and loaders draw their screens with (cursor, colour).
_ESCAPES = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0b-\x1f]")
#: How many of the loader's lines the oracle quotes: its complaints (an error, a failed
#: load) first, else its last words.
GAVE_UP_LINES = 3
_COMPLAINT = re.compile(r"error|fail|not found", re.IGNORECASE)


def judge_kernel_started(text: str, banners: int) -> OracleResult:
    """The loader started the kernel (its "Linux version" banner is there); if not, the
    loader's last console lines say why (GRUB's "error: out of memory.", OVMF's
    "BdsDxe: failed to load ..."), so a matrix cell or a finding names the reason."""
    name = "loader-started-kernel"
    expected = "the kernel's 'Linux version' banner"
    if banners:
        return judged(name, True, expected, f"{banners} banner(s)")
    lines = [ln.strip() for ln in (_ESCAPES.sub("", raw) for raw in text.splitlines())]
    errors = [ln for ln in lines if _COMPLAINT.search(ln)]
    said = errors[:GAVE_UP_LINES] or [ln for ln in lines if ln][-GAVE_UP_LINES:]
    return judged(name, False, expected, " / ".join(said) or "(no console output)",
                  "the loader never started the kernel")


def parse_loader(spec: str) -> RealLoader | None:
    """``LOADER[:PATH]`` for a known loader, else None."""
    kind, _, rest = spec.partition(":")
    try:
        loader = Loader(kind)
    except ValueError:
        return None
    return RealLoader(loader, Path(rest).expanduser() if rest else None)


__all__ = ["EFI_LOADERS", "Launch", "Loader", "RealLoader", "parse_loader"]
