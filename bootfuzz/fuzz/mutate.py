"""The mutator of a guided campaign: a corpus entry with one dimension drawn again.

Which dimension, and its new value, come from the same draw rules as a fresh case
(bootfuzz.fuzz.draws.redraw): the later dimensions that no longer fit are drawn
again, the rest kept, so a mutant of a sound case is sound.  Besides whole
redraws the command line is also mutated a token at a time (one added, one
dropped), which keeps the rest of a long line.  Which entry: a third of the time
one of the newest (what was just found is explored first), a third by what it
added, else any.  Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from bootfuzz.case import HARNESS_CMDLINE, BootCase
from bootfuzz.fuzz.draws import (
    DIMENSION_NAMES,
    CaseSpace,
    Source,
    draw_cmdline_token,
    misfits,
    redraw,
)
from bootfuzz.fuzz.generate import split_cmdline

#: The newest entries a mutation picks from a third of the time.
RECENT = 16
#: An entry's weight is what it added first, at most this (plus one).
WEIGHT_CAP = 200
#: Share of a guided campaign's cases that are mutants once the corpus has entries.
MUTANT_SHARE = 0.5
#: Draws of the chosen dimension until the case changes (rare values need a few).
REDRAWS = 16
#: Dimensions tried before a mutation gives up on an entry (one no dimension changes).
DIMENSION_TRIES = 4
#: Pseudo-dimensions: a command-line token added or dropped.
CMDLINE_ADD = "cmdline-token-added"
CMDLINE_DROP = "cmdline-token-dropped"


@dataclass(frozen=True)
class Mutant:
    case: BootCase
    parent: str  # the corpus entry's name
    dimension: str


def mutable_dimensions(space: CaseSpace) -> tuple[str, ...]:
    """What a mutation may change: every dimension (overrides only with --overrides)."""
    dims = tuple(d for d in DIMENSION_NAMES if space.overrides or d != "overrides")
    return (*dims, CMDLINE_ADD, CMDLINE_DROP)


def _tokens_changed(src: Source, space: CaseSpace, case: BootCase, add: bool) -> BootCase:
    harness = HARNESS_CMDLINE.split()
    tokens = split_cmdline(case.cmdline)
    own = [i for i, t in enumerate(tokens) if t not in harness]
    if add:  # before "--": what follows it goes to init, not to the kernel
        end = next((i for i, t in enumerate(tokens) if t.startswith("--")), len(tokens))
        tokens.insert(src.randrange(end + 1), draw_cmdline_token(src, space.non_ascii))
    elif own:
        del tokens[src.choice(own)]
    return dataclasses.replace(case, cmdline=" ".join(tokens))


def mutate(src: Source, space: CaseSpace, parent: BootCase, dimension: str) -> BootCase:
    """*parent* with *dimension* changed, still a case of *space* (dimensions after it
    drawn again where they no longer fit)."""
    if dimension in (CMDLINE_ADD, CMDLINE_DROP):
        child = _tokens_changed(src, space, parent, dimension == CMDLINE_ADD)
        if misfits(space, child):  # over the length limit: a whole new line instead
            child = redraw(src, space, parent, "cmdline")
        return child
    child = parent
    for _ in range(REDRAWS):  # a rare value (a relocation, say) takes a few draws
        child = redraw(src, space, parent, dimension)
        if child != parent:
            break
    return child


def pick(src: Source, weighted: Sequence[tuple[str, BootCase, int]]
         ) -> tuple[str, BootCase]:
    """An entry: a third of the time one of the newest, a third by weight (what it
    added first, capped: the first entry adds every block of a boot), else any."""
    kind = src.random()
    if kind < 1 / 3:
        name, case, _ = src.choice(weighted[-RECENT:])
        return name, case
    if kind < 2 / 3:
        total = sum(min(w, WEIGHT_CAP) + 1 for _, _, w in weighted)
        point = src.random() * total
        for name, case, w in weighted:
            point -= min(w, WEIGHT_CAP) + 1
            if point < 0:
                return name, case
    name, case, _ = src.choice(weighted)
    return name, case


def pick_and_mutate(src: Source, space: CaseSpace,
                    entries: Sequence[tuple[str, BootCase, int]]) -> Mutant | None:
    """A mutant of one of *entries* (name, case, weight: what it added), never equal to
    it (bootfuzz.fuzz.mutate.pick chooses which); None when none is
    of *space*'s kernels (a seed corpus of other kernels) or no dimension changed."""
    kernels = {name for name, _ in space.kernels}
    usable = [e for e in entries if e[1].kernel in kernels]
    if not usable:
        return None
    name, case = pick(src, usable)
    for _ in range(DIMENSION_TRIES):  # PVH has no setup_data to change, say: another one
        dimension = src.choice(mutable_dimensions(space))
        child = mutate(src, space, case, dimension)
        if misfits(space, child):  # a parent made under other bounds: settle the rest
            for dim in DIMENSION_NAMES:
                if dim in misfits(space, child):
                    child = redraw(src, space, child, dim)
        if child != case:
            return Mutant(child, name, dimension)
    return None


__all__ = ["CMDLINE_ADD", "CMDLINE_DROP", "MUTANT_SHARE", "RECENT", "WEIGHT_CAP", "Mutant",
           "mutable_dimensions", "mutate", "pick", "pick_and_mutate"]
