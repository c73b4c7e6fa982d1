"""What a kernel supports, read from the kernel itself: its header, its vmlinux notes,
and its build configuration.  Strategies, the matrix and the oracles ask this
instead of assuming (PVH relocation exists in 6.12 only; the unpack message is
spelled after CONFIG_BLK_DEV_RAM; each RD_* option decides a compression).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi.bootparam import XLoadFlags
from bootfuzz.case import EntryProtocol
from bootfuzz.compression import Compression
from bootfuzz.kernel.image import KernelImage

#: CONFIG_RD_* option deciding each initramfs compression.  source: usr/Kconfig
RD_OPTIONS: dict[Compression, str] = {
    Compression.GZIP: "RD_GZIP",
    Compression.BZIP2: "RD_BZIP2",
    Compression.LZMA: "RD_LZMA",
    Compression.XZ: "RD_XZ",
    Compression.LZO: "RD_LZO",
    Compression.LZ4: "RD_LZ4",
    Compression.ZSTD: "RD_ZSTD",
}


class UnpackStart(enum.StrEnum):
    """The two spellings of the initramfs unpack message (BLK_DEV_RAM y/m vs n).

    The kernel's configuration decides which one it prints (see _unpack_for), so
    the observation parser and the oracles take them from here.
    """

    TRYING = "Trying to unpack rootfs image as initramfs..."
    UNPACKING = "Unpacking initramfs..."


_CONFIG_LINE = re.compile(r"^CONFIG_(\w+)=(.*)$|^# CONFIG_(\w+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as {option without CONFIG_: value}; 'n' for "is not set"."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _CONFIG_LINE.match(line.strip())
        if m:
            if m.group(1):
                out[m.group(1)] = m.group(2).strip('"')
            else:
                out[m.group(3)] = "n"
    return out


@dataclass(frozen=True)
class KernelCapabilities:
    version: str | None
    entries: frozenset[EntryProtocol]
    pvh_relocatable: bool
    relocatable: bool
    initrd_above_4g: bool
    five_level: bool
    cmdline_size: int
    #: None where the configuration is unknown (a user's bzImage without its config).
    initrd_compressions: frozenset[Compression] | None
    blk_dev_ram: str | None  # "y", "m" or "n"
    firmware_memmap: bool | None

    @property
    def unpack_message(self) -> UnpackStart | None:
        return None if self.blk_dev_ram is None else _unpack_for(self.blk_dev_ram)


def _unpack_for(blk_dev_ram: str) -> UnpackStart:
    """BLK_DEV_RAM y or m says "Trying to unpack ...", n "Unpacking initramfs...".

    source: init/initramfs.c, do_populate_rootfs (boot-protocol.md 4.2).
    """
    return UnpackStart.TRYING if blk_dev_ram in ("y", "m") else UnpackStart.UNPACKING


def config_unpack_message(config: Mapping[str, str]) -> UnpackStart:
    return _unpack_for(config.get("BLK_DEV_RAM", "n"))


def read_capabilities(image: KernelImage, config: Mapping[str, str] | None = None
                      ) -> KernelCapabilities:
    """Everything from *image* (and its vmlinux: decompressed here) and *config*."""
    from bootfuzz.kernel.vmlinux import read_vmlinux

    info = read_vmlinux(image.vmlinux)
    entries = {EntryProtocol.BOOT32, EntryProtocol.VMLINUX}
    if image.has_64bit_entry:
        entries.add(EntryProtocol.BOOT64)
    if info.pvh_entry is not None:
        entries.add(EntryProtocol.PVH)
    entries |= {e for e in EntryProtocol if e.value == "16"}
    rd = None
    if config is not None:
        rd = frozenset(c for c, opt in RD_OPTIONS.items() if config.get(opt) == "y")
        rd |= {Compression.NONE} if config.get("BLK_DEV_INITRD") == "y" else set()
    return KernelCapabilities(
        version=image.kernel_version_string,
        entries=frozenset(entries),
        pvh_relocatable=info.pvh_reloc is not None,
        relocatable=image.relocatable,
        initrd_above_4g=XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G in image.xloadflags,
        five_level=XLoadFlags.XLF_5LEVEL_ENABLED in image.xloadflags,
        cmdline_size=image.cmdline_size,
        initrd_compressions=rd,
        blk_dev_ram=None if config is None else config.get("BLK_DEV_RAM", "n"),
        firmware_memmap=None if config is None else config.get("FIRMWARE_MEMMAP") == "y",
    )


def find_config(kernel: str, kernel_path: Path) -> dict[str, str] | None:
    """The build configuration of *kernel*: the pinned one's, or a config-* beside the file."""
    from bootfuzz.kernel.pinned import fetch, load_manifest

    if kernel in load_manifest():
        return parse_config(fetch(kernel).config.read_text(errors="replace"))
    stem = kernel_path.name.replace("vmlinuz", "config", 1)
    for candidate in (kernel_path.with_name(stem), kernel_path.with_name("config"),
                      kernel_path.with_name(".config")):
        if candidate.is_file() and candidate != kernel_path:
            return parse_config(candidate.read_text(errors="replace"))
    return None
