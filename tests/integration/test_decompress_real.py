"""bootfuzz.kernel.payload on real things: the pinned Debian kernels, and payloads made by
the same compressor command lines Kbuild runs (scripts/Makefile.lib)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bootfuzz.compression import Compression
from bootfuzz.errors import ImageError
from bootfuzz.kernel.payload import decompress_payload, detect_compression
from bootfuzz.kernel.pinned import fetch, list_kernels
from bootfuzz.kernel.vmlinux import PvhReloc, read_vmlinux

# The slice of a bzImage that holds the payload, found by hand so this test does not
# depend on bootfuzz.kernel.image.  source: Documentation/arch/x86/boot.rst
SETUP_SECTS_OFFSET = 0x1F1  # u8; 0 means 4
SETUP_SECTS_DEFAULT = 4
SECTOR_SIZE = 512
PAYLOAD_FIELDS = struct.Struct("<II")  # payload_offset, payload_length
PAYLOAD_FIELDS_OFFSET = 0x248


def payload_of(image: bytes) -> bytes:
    setup_sects = image[SETUP_SECTS_OFFSET] or SETUP_SECTS_DEFAULT
    pm_start = (setup_sects + 1) * SECTOR_SIZE
    offset, length = PAYLOAD_FIELDS.unpack_from(image, PAYLOAD_FIELDS_OFFSET)
    return image[pm_start + offset : pm_start + offset + length]


@dataclass(frozen=True)
class Kernel:
    name: str  # in kernels/ manifest (bootfuzz.kernel.pinned)
    release: str
    compression: Compression
    entry: int
    paddrs: tuple[int, ...]
    pvh_entry: int
    pvh_reloc: PvhReloc | None


# Read off the kernels with readelf -lhn (binutils) when this test was written.
KERNELS = [
    Kernel(
        name="debian-6.1-amd64",
        release="6.1.0-56-amd64",
        compression=Compression.XZ,
        entry=0x1000000,
        paddrs=(0x1000000, 0x2A00000, 0x3044000, 0x3079000),
        pvh_entry=0x1000850,
        pvh_reloc=None,
    ),
    Kernel(
        name="debian-6.1-cloud",
        release="6.1.0-56-cloud-amd64",
        compression=Compression.LZ4,
        entry=0x1000000,
        paddrs=(0x1000000, 0x2A00000, 0x301A000, 0x304E000),
        pvh_entry=0x1000850,
        pvh_reloc=None,
    ),
    Kernel(
        name="debian-6.12-cloud",
        release="6.12.117+deb12-cloud-amd64",
        compression=Compression.ZSTD,
        entry=0x1000B53,
        paddrs=(0x1000000, 0x2C00000, 0x32DD000, 0x3316000),
        pvh_entry=0x1000A30,
        pvh_reloc=PvhReloc(align=0x200000, min_addr=0x1000000, max_addr=0x3FFFFFFF),
    ),
]


def vmlinuz(name: str) -> Path:
    """The pinned kernel: cached, else fetched.  Only a kernel that cannot be had here
    (not cached, no apt-get to fetch it) is a skip; a fetch that fails is a failure."""
    status = next(s for s in list_kernels() if s.pinned.name == name)
    if not status.cached and shutil.which("apt-get") is None:
        pytest.skip(f"{name} is not in the cache and apt-get is not installed to fetch it "
                    "(bootfuzz kernels fetch)")
    return fetch(name).vmlinuz


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS, ids=[k.name for k in KERNELS])
def test_decompress_payload_debian_kernel_gives_vmlinux(kernel: Kernel) -> None:
    payload = payload_of(vmlinuz(kernel.name).read_bytes())
    assert detect_compression(payload) is kernel.compression

    elf = decompress_payload(payload)

    # size_append: the trailer is the size of vmlinux.bin + vmlinux.relocs, all we return
    assert struct.unpack("<I", payload[-4:])[0] == len(elf)
    info = read_vmlinux(elf)
    assert (info.machine, info.elfclass) == ("EM_X86_64", 64)
    assert info.entry == kernel.entry
    assert tuple(s.p_paddr for s in info.segments) == kernel.paddrs
    assert info.pvh_entry == kernel.pvh_entry
    assert info.pvh_reloc == kernel.pvh_reloc
    assert info.linux_version == kernel.release


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS, ids=[k.name for k in KERNELS])
def test_decompress_payload_debian_kernel_cut_by_one_byte_raises(kernel: Kernel) -> None:
    payload = payload_of(vmlinuz(kernel.name).read_bytes())
    stream, trailer = payload[:-4], payload[-4:]
    with pytest.raises(ImageError) as excinfo:
        decompress_payload(stream[:-1] + trailer)
    assert str(excinfo.value).startswith(
        f"kernel image: payload ({kernel.compression.value}) does not decompress: "
    )


# --- the compressor command lines of scripts/Makefile.lib ------------------------------

TOOLS = {
    Compression.GZIP: ["gzip", "-n", "-f", "-9"],  # cmd_gzip: no size_append
    Compression.BZIP2: ["bzip2", "-9"],
    Compression.LZMA: ["lzma", "-9"],
    # scripts/xz_wrap.sh on x86: BCJ x86, CRC32 check, 32 MiB dictionary
    Compression.XZ: ["xz", "--check=crc32", "--x86", "--lzma2=,dict=32MiB"],
    # Kbuild spells it `lz4 -l -c1 stdin stdout`; lz4 1.9.4 wants a pipe instead
    Compression.LZ4: ["lz4", "-l", "-c1"],
    Compression.ZSTD: ["zstd", "-22", "--ultra"],
}


@pytest.mark.parametrize("compression", list(TOOLS), ids=[c.value for c in TOOLS])
def test_decompress_payload_kbuild_compressor_output_returns_elf(
    compression: Compression,
) -> None:
    argv = TOOLS[compression]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    true = shutil.which("true")
    assert true is not None
    elf = Path(true).resolve().read_bytes()
    stream = subprocess.run(argv, input=elf, capture_output=True, check=True).stdout
    if compression is not Compression.GZIP:
        stream += struct.pack("<I", len(elf))  # size_append
    assert detect_compression(stream) is compression
    assert decompress_payload(stream) == elf
