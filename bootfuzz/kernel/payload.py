"""From a bzImage's compressed payload to the ELF vmlinux it holds.

Kbuild builds the payload as ``compress(vmlinux.bin + vmlinux.relocs)`` followed, for
every format but gzip, by a 4-byte little-endian uncompressed size (``size_append``
in scripts/Makefile.lib; arch/x86/boot/compressed/Makefile), and mkpiggy counts that
trailer in ``payload_length``.  The decoders of bootfuzz.compression stop at the end
of their first stream, so the trailer is ignored.  bootfuzz.kernel.vmlinux reads the
result.

Every failure caused by the bytes (unknown magic, corrupt or truncated stream, a
decompression bomb, an output that is not ELF) raises
:class:`~bootfuzz.errors.ImageError`.
"""

from __future__ import annotations

from bootfuzz.compression import DEFAULT_MAX_SIZE, Compression, DecompressError, decompress, detect
from bootfuzz.errors import ImageError
from bootfuzz.kernel.vmlinux import ELF_MAGIC

__all__ = ["DEFAULT_MAX_SIZE", "decompress_payload", "detect_compression"]


def detect_compression(payload: bytes) -> Compression:
    """Name the payload's format from its magic, as the decompressor stub would.

    An uncompressed payload is the ELF itself (CONFIG_KERNEL_UNCOMPRESSED).
    """
    if payload.startswith(ELF_MAGIC):
        return Compression.NONE
    compression = detect(payload)
    if compression is None:
        shown = " ".join(f"{b:02x}" for b in payload[:4]) or "<empty>"
        raise ImageError(f"unknown payload compression (magic {shown})")
    return compression


def decompress_payload(payload: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Return the ELF image (vmlinux.bin, plus vmlinux.relocs if built) the payload holds.

    Trailing bytes after the first stream (the size_append trailer) are ignored.
    """
    compression = detect_compression(payload)
    try:
        out = decompress(payload, compression, max_size)
    except DecompressError as exc:
        raise ImageError(f"payload ({compression.value}) {exc.reason}") from None
    if not out.startswith(ELF_MAGIC):
        raise ImageError("decompressed payload is not an ELF image")
    return out
