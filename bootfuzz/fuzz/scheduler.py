"""Which work a campaign starts next: shards, case order, and minimizations first.

Case *k* of a campaign belongs to shard ``k % n``, so ``--shard i/n`` on n machines
splits one seed's cases without overlap.  Within a shard cases run in index order,
skipping those a resumed state has already finished; a new failure's minimization
goes before any new case, so a campaign's findings get small even when its time
runs out.  ``max_cases`` bounds the case *numbers* (cases 0..N-1 of the seed), not
how many one run starts: a shard runs its share of them, shards together run them
all, and a resumed campaign finishes the same set.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bootfuzz.fuzz.state import CampaignState


def shard_indices(shard: tuple[int, int], start: int = 0) -> Iterator[int]:
    """Case numbers of *shard* from *start* on: every k with k % n == i."""
    i, n = shard
    k = start + (i - start) % n
    while True:
        yield k
        k += n


def pending_indices(state: CampaignState) -> Iterator[int]:
    """The shard's cases *state* has not finished, in order.

    The finished set is copied now: marking cases done moves them out of
    ``done_beyond`` (into ``next_index``), and a live view would then hand them out again.
    """
    finished = frozenset(state.done_beyond)
    return (k for k in shard_indices(state.shard, state.next_index) if k not in finished)


@dataclass(frozen=True)
class BootCaseNumber:
    """Generate and boot case *index*."""

    index: int


@dataclass(frozen=True)
class Minimize:
    """Minimize the finding with this signature key."""

    key: str


Work = BootCaseNumber | Minimize


class Scheduler:
    """Hands out work: queued minimizations first, then the shard's next unfinished
    case while its number is below *max_cases* (None: no limit)."""

    def __init__(self, state: CampaignState, *, max_cases: int | None = None,
                 minimize: Iterable[str] = ()) -> None:
        self._indices = pending_indices(state)
        self._minimize: deque[str] = deque(minimize)
        self.max_cases = max_cases
        self._exhausted = False

    def add_minimization(self, key: str) -> None:
        self._minimize.append(key)

    def next(self) -> Work | None:
        if self._minimize:
            return Minimize(self._minimize.popleft())
        if self._exhausted:
            return None
        index = next(self._indices)
        if self.max_cases is not None and index >= self.max_cases:
            self._exhausted = True  # numbers only grow: nothing more to hand out
            return None
        return BootCaseNumber(index)


__all__ = ["BootCaseNumber", "Minimize", "Scheduler", "Work", "pending_indices",
           "shard_indices"]
