"""The 64-bit and 32-bit boot protocols of a bzImage.  Pure: no I/O.

Our firmware (or our VMM) skips the kernel's real-mode setup code: the protected-mode
code goes at pref_address, the CPU enters it in long mode at startup_64 (load + 0x200)
or with paging off at its start, RSI pointing at our zero page.
source: boot.rst, "32-bit Boot Protocol" and "64-bit Boot Protocol".
"""

from __future__ import annotations

from bootfuzz.abi.bootparam import STARTUP_64_OFFSET
from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import BootCase
from bootfuzz.errors import ImageError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.placement import cmdline_blob, place_bzimage
from bootfuzz.loader.plan import BootPlan, InitrdImage
from bootfuzz.loader.platform import Platform
from bootfuzz.loader.zeropage import plan_with_zero_page


def plan_boot64(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """Long mode on our identity map, at startup_64; needs XLF_KERNEL_64."""
    if not image.has_64bit_entry:
        raise ImageError(
            f"{image.source}: the 64-bit entry needs XLF_KERNEL_64 in xloadflags "
            f"({int(image.xloadflags):#x})"
        )
    cmdline, blob = cmdline_blob(case, image)
    kernel = place_bzimage(case, image, platform, STARTUP_64_OFFSET)
    return plan_with_zero_page(case, image, platform, initrd, cmdline=cmdline,
                               cmdline_blob=blob, kernel=kernel, mode=HandoffMode.LONG_64)


def plan_boot32(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """Protected mode with paging off, at the start of the protected-mode code."""
    cmdline, blob = cmdline_blob(case, image)
    kernel = place_bzimage(case, image, platform, 0)
    return plan_with_zero_page(case, image, platform, initrd, cmdline=cmdline,
                               cmdline_blob=blob, kernel=kernel,
                               mode=HandoffMode.PROTECTED_32)
