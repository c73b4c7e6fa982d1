"""plan_boot: a case, a kernel image and a platform become a BootPlan.  Pure: no I/O.

Each entry protocol has its own planner module; PLANNERS maps the case's
EntryProtocol to it, so a new entry path is one module and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from bootfuzz.case import BootCase, EntryProtocol
from bootfuzz.errors import HarnessBug, LayoutError
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader import bzimage, pvh, real16, vmlinux
from bootfuzz.loader.plan import BootPlan, InitrdImage
from bootfuzz.loader.platform import Platform

#: What every entry's planner takes and gives.
Planner = Callable[[BootCase, KernelImage, Platform, InitrdImage | None], BootPlan]

PLANNERS: Mapping[EntryProtocol, Planner] = MappingProxyType({
    EntryProtocol.BOOT64: bzimage.plan_boot64,
    EntryProtocol.BOOT32: bzimage.plan_boot32,
    EntryProtocol.PVH: pvh.plan_pvh,
    EntryProtocol.REAL16: real16.plan_boot16,
    EntryProtocol.VMLINUX: vmlinux.plan_vmlinux,
})


def plan_boot(
    case: BootCase, image: KernelImage, platform: Platform, initrd: InitrdImage | None = None
) -> BootPlan:
    """Lay out *case* on *platform* for its entry protocol."""
    if platform.memory != case.memory:
        raise HarnessBug("platform built for another memory size than the case")
    planner = PLANNERS.get(case.entry)
    if planner is None:
        raise LayoutError(f"entry protocol {case.entry.value} is not supported yet")
    return planner(case, image, platform, initrd)
