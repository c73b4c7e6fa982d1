"""Hypothesis strategies for device-tree boot cases, drawn by the campaign's own rules
(bootfuzz.fuzz.dt_draws) through strategies.DrawSource, so Hypothesis shrinks them:
memory layouts with holes, cell sizes, initrd placements, bootargs, and the malformed
DTBs a faulty loader writes.

``dt_boot_cases(arch)`` gives cases our loader must accept and whose layout passes every
``dt-valid-*`` rule (bootfuzz.judge.dt_rules); ``dt_faults(plan)`` gives, for a plan of
ours, a fault and its overrides, which its rule (``fault.rule``) must flag.  Needs the
``hypothesis`` package (the ``dev`` extra), as bootfuzz.fuzz.strategies does.
"""

from __future__ import annotations

from hypothesis import strategies as st

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase, DtOverrides
from bootfuzz.fuzz.dt_draws import DtFault, draw_dt_case, draw_fault, fault_override
from bootfuzz.fuzz.strategies import DrawSource
from bootfuzz.loader.dt_plan import DtBootPlan

__all__ = ["DtFault", "dt_boot_cases", "dt_faults", "fault_override"]


@st.composite
def dt_boot_cases(draw: st.DrawFn, arch: Arch, kernel: str = "k") -> BootCase:
    """A case our loader accepts for *arch*."""
    return draw_dt_case(DrawSource(draw), arch, kernel)


@st.composite
def dt_faults(draw: st.DrawFn, plan: DtBootPlan) -> tuple[DtFault, DtOverrides]:
    """A fault a faulty loader makes of *plan*, and its overrides."""
    return draw_fault(DrawSource(draw), plan)
