"""The ELF vmlinux a bzImage carries: where its segments load, and what its notes say.

The loader needs the vmlinux for two things the setup header does not carry: the
PT_LOAD layout (direct 64-bit entry) and the Xen PVH notes (PVH entry); the kernel's
capabilities also read its version banner.  bootfuzz.kernel.payload gets the vmlinux
out of a bzImage.

A malformed ELF or note raises :class:`~bootfuzz.errors.ImageError`; no pyelftools
exception escapes.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from bootfuzz.errors import ImageError

__all__ = [
    "ELF_MAGIC",
    "XEN_ELFNOTE_PHYS32_ENTRY",
    "XEN_ELFNOTE_PHYS32_RELOC",
    "XEN_NOTE_NAME",
    "LoadSegment",
    "PvhReloc",
    "VmlinuxInfo",
    "read_vmlinux",
]

# source: include/uapi/linux/elf.h (ELFMAG)
ELF_MAGIC = b"\x7fELF"

# Xen ELF note types Linux emits (name "Xen").
# source: include/xen/interface/elfnote.h
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_GUEST_VERSION = 7
XEN_ELFNOTE_PHYS32_ENTRY = 18
XEN_ELFNOTE_PHYS32_RELOC = 19
XEN_NOTE_NAME = b"Xen"

# Defaults for the PHYS32_RELOC fields a note leaves out.
# source: include/xen/interface/elfnote.h (XEN_ELFNOTE_PHYS32_RELOC comment)
PVH_RELOC_DEFAULT_ALIGN = 0x200000
PVH_RELOC_DEFAULT_MIN = 0
PVH_RELOC_DEFAULT_MAX = 0xFFFFFFFF

# Elf32_Nhdr and Elf64_Nhdr are both three Elf_Word (u32): namesz, descsz, type;
# name and desc are each padded to the segment's alignment (4 on Linux).
# source: include/uapi/linux/elf.h
_NHDR_FIELDS = "III"

# init/version-timestamp.c linux_banner: "Linux version " UTS_RELEASE " (" ...
_BANNER = re.compile(rb"Linux version (\S+) \(")


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD program header: where the loader copies bytes to."""

    p_offset: int
    p_paddr: int
    p_vaddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int


@dataclass(frozen=True)
class PvhReloc:
    """XEN_ELFNOTE_PHYS32_RELOC: where a PVH loader may place a relocatable kernel."""

    align: int
    min_addr: int
    max_addr: int  # last byte of the image


@dataclass(frozen=True)
class VmlinuxInfo:
    """What the loader needs from a vmlinux for the direct and PVH entries."""

    entry: int
    machine: str
    elfclass: int
    segments: tuple[LoadSegment, ...]
    pvh_entry: int | None
    pvh_reloc: PvhReloc | None
    linux_version: str | None


@dataclass(frozen=True)
class _Note:
    name: bytes
    type: int
    desc: bytes


def read_vmlinux(elf: bytes) -> VmlinuxInfo:
    """Read the entry, PT_LOAD segments and Xen PVH notes of a vmlinux."""
    try:
        elffile = ELFFile(io.BytesIO(elf))
        endian = "<" if elffile.little_endian else ">"
        segments: list[LoadSegment] = []
        notes: list[_Note] = []
        for segment in elffile.iter_segments():
            if segment["p_type"] in ("PT_LOAD", "PT_NOTE"):
                _check_in_file(segment["p_type"], segment["p_offset"], segment["p_filesz"], elf)
            if segment["p_type"] == "PT_LOAD":
                segments.append(
                    LoadSegment(
                        p_offset=segment["p_offset"],
                        p_paddr=segment["p_paddr"],
                        p_vaddr=segment["p_vaddr"],
                        p_filesz=segment["p_filesz"],
                        p_memsz=segment["p_memsz"],
                        p_flags=segment["p_flags"],
                    )
                )
            elif segment["p_type"] == "PT_NOTE":
                notes.extend(_parse_notes(segment.data(), segment["p_align"], endian))
        entry = int(elffile.header["e_entry"])
        machine = str(elffile.header["e_machine"])
        elfclass = int(elffile.elfclass)
    except (ELFError, struct.error, ValueError, KeyError, IndexError) as exc:
        raise ImageError(f"vmlinux is not a readable ELF image: {exc}") from None

    pvh_entry: int | None = None
    pvh_reloc: PvhReloc | None = None
    for note in notes:
        if note.name != XEN_NOTE_NAME:
            continue
        if note.type == XEN_ELFNOTE_PHYS32_ENTRY and pvh_entry is None:
            pvh_entry = _phys32_entry(note.desc, endian)
        elif note.type == XEN_ELFNOTE_PHYS32_RELOC and pvh_reloc is None:
            pvh_reloc = _phys32_reloc(note.desc, endian)

    banner = _BANNER.search(elf)
    return VmlinuxInfo(
        entry=entry,
        machine=machine,
        elfclass=elfclass,
        segments=tuple(segments),
        pvh_entry=pvh_entry,
        pvh_reloc=pvh_reloc,
        linux_version=banner.group(1).decode("ascii", "replace") if banner else None,
    )


def _check_in_file(p_type: str, offset: int, filesz: int, elf: bytes) -> None:
    if offset + filesz > len(elf):
        raise ImageError(
            f"{p_type} segment at offset {offset:#x} ({filesz} bytes) runs past the end "
            f"of the {len(elf)}-byte file"
        )


def _parse_notes(data: bytes, p_align: int, endian: str) -> list[_Note]:
    """Split a PT_NOTE segment into notes.

    Done by hand: pyelftools 0.33 names note types by the GNU table whatever the
    owner, so Xen's type 3 comes back as "NT_GNU_BUILD_ID".
    """
    header = struct.Struct(endian + _NHDR_FIELDS)
    align = 8 if p_align == 8 else 4
    notes: list[_Note] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < header.size:
            raise ImageError(f"ELF note at segment offset {pos:#x} is cut short")
        namesz, descsz, n_type = header.unpack_from(data, pos)
        name_at = pos + header.size
        desc_at = name_at + _align_up(namesz, align)
        end = desc_at + _align_up(descsz, align)
        if desc_at + descsz > len(data):
            raise ImageError(f"ELF note at segment offset {pos:#x} overruns its PT_NOTE segment")
        name = data[name_at : name_at + namesz].rstrip(b"\x00")
        notes.append(_Note(name=name, type=n_type, desc=data[desc_at : desc_at + descsz]))
        pos = end
    return notes


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _phys32_entry(desc: bytes, endian: str) -> int:
    # ".quad" on x86_64 up to at least 6.1, ".long" on i386 and later kernels.
    if len(desc) == 4:
        return int(struct.unpack(endian + "I", desc)[0])
    if len(desc) == 8:
        return int(struct.unpack(endian + "Q", desc)[0])
    raise ImageError(f"Xen PHYS32_ENTRY note has a {len(desc)}-byte descriptor (expected 4 or 8)")


def _phys32_reloc(desc: bytes, endian: str) -> PvhReloc:
    # "up to three 32bit values": align, min, max; missing ones take defaults.
    if len(desc) % 4 or len(desc) > 12:
        raise ImageError(
            f"Xen PHYS32_RELOC note has a {len(desc)}-byte descriptor (expected up to three u32)"
        )
    values = list(struct.unpack(f"{endian}{len(desc) // 4}I", desc))
    defaults = [PVH_RELOC_DEFAULT_ALIGN, PVH_RELOC_DEFAULT_MIN, PVH_RELOC_DEFAULT_MAX]
    align, min_addr, max_addr = values + defaults[len(values) :]
    return PvhReloc(align=align, min_addr=min_addr, max_addr=max_addr)
