"""Parsing a bzImage: the setup header, the protected-mode code and its payload.

The checks follow boot.rst in the order a loader meets them, so a foreign or
truncated file gets the first message that explains it (a text file: "not a
bzImage"; half a kernel: "truncated").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.abi.bootparam import (
    BOOT_FLAG_MAGIC,
    DEFAULT_SETUP_SECTS,
    HDRS_MAGIC,
    LEGACY_CMDLINE_SIZE,
    LEGACY_INITRD_ADDR_MAX,
    PROTO_2_03_INITRD_ADDR_MAX,
    PROTO_2_06_CMDLINE_SIZE,
    PROTO_2_10_PREF_ADDRESS,
    PROTO_2_12_XLOADFLAGS,
    SECTOR_SIZE,
    SETUP_HEADER,
    SETUP_HEADER_OFFSET,
    LoadFlags,
    XLoadFlags,
    header_end,
)
from bootfuzz.errors import ImageError

#: The header is read up to kernel_info_offset (2.15); shorter headers are padded
#: with zeros, exactly as a loader copying "0x1f1 .. header end" would see them.
_FULL_HEADER_END = SETUP_HEADER["kernel_info_offset"].end
#: A file shorter than this cannot even hold the magic fields.
_MIN_IMAGE_SIZE = SETUP_HEADER["version"].end


@dataclass(frozen=True)
class SetupHeader:
    """The setup header as it appears in the image, with every field decoded."""

    raw: bytes  # bytes 0x1f1 .. header end, as in the file
    fields: Mapping[str, int]

    @classmethod
    def parse(cls, image: bytes) -> SetupHeader:
        """Decode the header of *image* (a whole bzImage or at least its first sectors)."""
        jump = int.from_bytes(image[0x200:0x202], "little")
        end = min(max(header_end(jump), SETUP_HEADER["header"].end), _FULL_HEADER_END)
        raw = image[SETUP_HEADER_OFFSET:end]
        padded = bytearray(_FULL_HEADER_END)
        padded[SETUP_HEADER_OFFSET:end] = raw
        values = {f.name: f.decode(padded) for f in SETUP_HEADER}
        return cls(raw=bytes(raw), fields={k: int(v) for k, v in values.items()
                                            if isinstance(v, int)})

    def build(self) -> bytes:
        """Serialize back to the bytes 0x1f1 .. header end (the round trip of parse)."""
        buf = bytearray(_FULL_HEADER_END)
        SETUP_HEADER.pack_into(buf, self.fields)
        return bytes(buf[SETUP_HEADER_OFFSET : SETUP_HEADER_OFFSET + len(self.raw)])

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def present(self, name: str) -> bool:
        """Whether the image's protocol version defines *name* and its header holds it."""
        field = SETUP_HEADER[name]
        return (
            self.fields["version"] >= field.version
            and field.end <= SETUP_HEADER_OFFSET + len(self.raw)
        )


@dataclass(frozen=True)
class KernelImage:
    """A parsed bzImage; the bytes are kept so the loader can place them."""

    data: bytes
    header: SetupHeader
    source: str = "<memory>"

    @property
    def version(self) -> int:
        return self.header["version"]

    @property
    def setup_sects(self) -> int:
        return self.header["setup_sects"] or DEFAULT_SETUP_SECTS

    @property
    def protected_mode_offset(self) -> int:
        """File offset of the protected-mode code: the boot sector plus the setup sectors."""
        return (self.setup_sects + 1) * SECTOR_SIZE

    @functools.cached_property
    def protected_mode_code(self) -> bytes:
        """The bytes a loader places at the load address.  Sliced once per image: every
        plan places them, and a copy of a 10 MiB kernel per plan was most of planning."""
        return self.data[self.protected_mode_offset :]

    @property
    def cmdline_size(self) -> int:
        if self.header.present("cmdline_size") and self.version >= PROTO_2_06_CMDLINE_SIZE:
            return self.header["cmdline_size"]
        return LEGACY_CMDLINE_SIZE

    @property
    def initrd_addr_max(self) -> int:
        if self.version >= PROTO_2_03_INITRD_ADDR_MAX:
            return self.header["initrd_addr_max"]
        return LEGACY_INITRD_ADDR_MAX

    @property
    def xloadflags(self) -> XLoadFlags:
        if self.version >= PROTO_2_12_XLOADFLAGS:
            return XLoadFlags(self.header["xloadflags"])
        return XLoadFlags(0)

    @property
    def has_64bit_entry(self) -> bool:
        return XLoadFlags.XLF_KERNEL_64 in self.xloadflags

    @property
    def relocatable(self) -> bool:
        return bool(self.header["relocatable_kernel"])

    @property
    def pref_address(self) -> int:
        if self.version >= PROTO_2_10_PREF_ADDRESS:
            return self.header["pref_address"]
        return 0x100000  # source: boot.rst, bzImage protected-mode code at 1 MiB

    @property
    def init_size(self) -> int:
        return self.header["init_size"]

    @property
    def kernel_alignment(self) -> int:
        return self.header["kernel_alignment"]

    @property
    def kernel_version_string(self) -> str | None:
        """The "6.1.0-56-cloud-amd64 (...)" string the header points at, if any."""
        ptr = self.header["kernel_version"]
        if not ptr:
            return None
        start = ptr + 0x200  # source: boot.rst, kernel_version is the offset minus 0x200
        end = self.data.find(b"\0", start, start + 256)
        if start >= len(self.data) or end < 0:
            return None
        return self.data[start:end].decode("ascii", "replace")

    @property
    def payload(self) -> bytes:
        """The compressed vmlinux inside the protected-mode code."""
        start = self.protected_mode_offset + self.header["payload_offset"]
        return self.data[start : start + self.header["payload_length"]]

    @functools.cached_property
    def vmlinux(self) -> bytes:
        """The decompressed ELF vmlinux (slow for xz: seconds)."""
        from bootfuzz.kernel.payload import decompress_payload

        return decompress_payload(self.payload)


def parse_kernel_image(data: bytes, source: str = "<memory>") -> KernelImage:
    """Check *data* is a bzImage our loader can place, and parse it."""
    if len(data) < _MIN_IMAGE_SIZE:
        raise ImageError(
            f"{source}: too short to be a bzImage ({len(data)} bytes; "
            f"the setup header alone reaches offset {_MIN_IMAGE_SIZE:#x})"
        )
    header = SetupHeader.parse(data)
    if header["boot_flag"] != BOOT_FLAG_MAGIC:
        raise ImageError(
            f"{source}: not a bzImage: boot_flag at 0x1fe is {header['boot_flag']:#06x}, "
            f"not {BOOT_FLAG_MAGIC:#06x}"
        )
    if header["header"] != HDRS_MAGIC:
        raise ImageError(
            f"{source}: no 'HdrS' magic at 0x202: a pre-2.00 kernel or not a kernel at all"
        )
    image = KernelImage(data=data, header=header, source=source)
    if image.version < PROTO_2_10_PREF_ADDRESS:
        raise ImageError(
            f"{source}: boot protocol {image.version >> 8}.{image.version & 0xFF:02d} is too old; "
            "bootfuzz needs 2.10 or later (init_size, pref_address)"
        )
    if not LoadFlags.LOADED_HIGH & header["loadflags"]:
        raise ImageError(f"{source}: a zImage (LOADED_HIGH clear); only bzImages are supported")
    pm_size = header["syssize"] * 16  # source: boot.rst, syssize is in 16-byte paragraphs
    have = len(data) - image.protected_mode_offset
    if have < pm_size:
        raise ImageError(
            f"{source}: truncated: the header says the protected-mode code is {pm_size} bytes "
            f"(syssize), the file holds {max(have, 0)} after the {image.setup_sects} setup sectors"
        )
    payload_end = header["payload_offset"] + header["payload_length"]
    if header["payload_length"] == 0 or payload_end > have:
        raise ImageError(
            f"{source}: payload [{header['payload_offset']:#x}, {payload_end:#x}) lies outside "
            f"the protected-mode code ({have:#x} bytes)"
        )
    if image.init_size < pm_size:
        raise ImageError(
            f"{source}: init_size {image.init_size:#x} is smaller than the protected-mode code"
            f" ({pm_size:#x} bytes)"
        )
    return image


def load_kernel_image(path: Path) -> KernelImage:
    """Read and parse a bzImage file; unreadable paths are input errors too."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_kernel_image(data, source=str(path))
