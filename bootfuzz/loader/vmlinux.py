"""The direct vmlinux entry: the ELF's own 64-bit entry, no decompressor.  Pure: no I/O.

As Firecracker boots a kernel: the vmlinux's PT_LOADs at their physical addresses
(or shifted by a kernel_load override), the CPU in long mode on our identity map at
the ELF entry, RSI pointing at our zero page, which carries the image's setup header.
"""

from __future__ import annotations

from bootfuzz.abi.handoff import HandoffMode
from bootfuzz.case import BootCase
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.placement import cmdline_blob, place_vmlinux
from bootfuzz.loader.plan import BootPlan, InitrdImage
from bootfuzz.loader.platform import Platform
from bootfuzz.loader.zeropage import plan_with_zero_page


def plan_vmlinux(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None
) -> BootPlan:
    """The vmlinux at its p_paddr (or kernel_load), entered at e_entry in long mode."""
    cmdline, blob = cmdline_blob(case, image)
    kernel, _ = place_vmlinux(image, platform, case.overrides.kernel_load, lambda i: i.entry,
                              "the vmlinux has no entry point")
    return plan_with_zero_page(case, image, platform, initrd, cmdline=cmdline,
                               cmdline_blob=blob, kernel=kernel, mode=HandoffMode.LONG_64)
