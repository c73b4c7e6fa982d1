"""What an arm64 or RISC-V kernel supports, from its Image header and build configuration:
the device-tree counterpart of bootfuzz.kernel.capabilities (``bootfuzz kernels show``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bootfuzz.compression import Compression
from bootfuzz.kernel.capabilities import RD_OPTIONS, UnpackStart, config_unpack_message
from bootfuzz.kernel.dt_image import DtKernelImage


@dataclass(frozen=True)
class DtCapabilities:
    arch: str
    text_offset: int
    image_size: int
    page_size: int | None
    #: arm64 flags bit 3: the Image may be placed anywhere in RAM.
    anywhere: bool
    relocatable: bool | None
    kaslr: bool | None
    initrd_compressions: frozenset[Compression] | None
    unpack_message: UnpackStart | None


def dt_capabilities(image: DtKernelImage, config: Mapping[str, str] | None = None
                    ) -> DtCapabilities:
    def opt(name: str) -> bool | None:
        return None if config is None else config.get(name, "n") == "y"

    rd = None if config is None else frozenset(
        {Compression.NONE} | {c for c, o in RD_OPTIONS.items() if config.get(o, "n") == "y"})
    return DtCapabilities(
        arch=image.arch.value, text_offset=image.text_offset, image_size=image.image_size,
        page_size=image.page_size, anywhere=image.anywhere, relocatable=opt("RELOCATABLE"),
        kaslr=opt("RANDOMIZE_BASE"), initrd_compressions=rd,
        unpack_message=None if config is None else config_unpack_message(config))
