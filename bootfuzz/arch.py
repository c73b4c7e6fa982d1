"""The guest architecture a case boots: x86 (the zero page) or a device-tree machine.

One enum shared by cases, reproducers, the kernel manifest (its Debian names) and the
matrix, so "which architecture" is decided once per case.  x86_64 is the default:
every case recorded before the device-tree boots existed is an x86 case.
"""

from __future__ import annotations

import enum

from bootfuzz.errors import ConfigError


class Arch(enum.StrEnum):
    """A guest architecture, by the name QEMU's system emulator uses for it."""

    X86_64 = "x86_64"
    ARM64 = "aarch64"
    RISCV64 = "riscv64"

    @property
    def device_tree(self) -> bool:
        """Whether the loader hands the kernel a flattened device tree (not a zero page)."""
        return self is not Arch.X86_64

    @property
    def command_line_size(self) -> int | None:
        """A device-tree kernel's COMMAND_LINE_SIZE: bootargs longer than this less one
        byte are cut by the kernel (early_init_dt_scan_chosen()).  None on x86, where the
        bzImage header says (cmdline_size).  arch/arm64 and arch/riscv uapi asm/setup.h
        as of the pinned 6.12 kernels, measured: /proc/cmdline kept 2047 and 1023 bytes of
        longer lines.  A kernel built with a larger value (some vendors patch it) is
        refused lines it would take, never given one it would cut."""
        return _COMMAND_LINE_SIZE.get(self)

    @property
    def debian(self) -> str:
        """The Debian architecture name of its kernel packages."""
        return _DEBIAN[self]

    @classmethod
    def parse(cls, text: str) -> Arch:
        """An architecture by its QEMU or Debian name; one error line naming the choices."""
        for arch in cls:
            if text in (arch.value, arch.debian):
                return arch
        known = ", ".join(f"{a.value} ({a.debian})" for a in cls)
        raise ConfigError(f"unknown architecture {text!r} (known: {known})")


_DEBIAN = {Arch.X86_64: "amd64", Arch.ARM64: "arm64", Arch.RISCV64: "riscv64"}
_COMMAND_LINE_SIZE = {Arch.ARM64: 2048, Arch.RISCV64: 1024}


def arch_of_debian(name: str) -> Arch:
    """The Arch of a Debian architecture name (a manifest's ``arch``)."""
    return Arch.parse(name)
