"""The campaign's seeded case generator: case *k* of a seed, the same on every machine.

What a case can be (edge tables, draw rules, every dimension) is defined once in
bootfuzz.fuzz.draws; this module draws case *k* from it with a :class:`random.Random`
seeded by the campaign's seed and *k* (so ``--seed`` and ``--shard`` are
deterministic and the campaign needs no test dependency).  The Hypothesis
strategies (bootfuzz.fuzz.strategies) and the mutator (bootfuzz.fuzz.mutate) draw
from the same rules.  Pure: no I/O.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from bootfuzz.case import BootCase
from bootfuzz.fuzz.draws import (
    ARCHIVE_OVERHEAD_BOUND,
    COMPRESSIONS,
    DEBIAN_CLOUD_LIMITS,
    DEFAULT_MAX_MEMORY,
    E820_GAPS,
    E820_TYPES,
    INITRD_SIZE_EDGES,
    MEMORY_EDGES,
    MEMORY_FLOOR_OFFSETS,
    MEMORY_GRANULE,
    MIN_GUEST_MEMORY,
    NON_ASCII_VALUES,
    QUOTED_VALUES,
    SAFE_KEYS,
    SAFE_SPECIAL_TOKENS,
    SAFE_VALUES,
    UNSAFE_TOKENS,
    WRITABLE_SETUP_HEADER_FIELDS,
    CaseSpace,
    KernelLimits,
    draw_case,
    field_max,
    header_value_edges,
    initrd_size_bound,
    min_memory,
)


@dataclass(frozen=True)
class GeneratorConfig(CaseSpace):
    """A campaign's case space (kernels, bounds, overrides, floors) and its seed: the
    generator's whole configuration."""

    seed: int = 0
    #: Whether cases may be mutants of corpus entries (a guided campaign), not only
    #: the seed's fresh cases.
    mutants: bool = False


def case_rng(seed: int, index: int) -> random.Random:
    """The generator for case *index*: independent of every other index (sharding)."""
    return random.Random(f"bootfuzz:{seed}:{index}")


def generate_case(config: GeneratorConfig, index: int) -> BootCase:
    """Case number *index* of the campaign *config*: the same on every machine
    (bootfuzz.fuzz.draws.draw_case)."""
    return draw_case(case_rng(config.seed, index), config)


# --------------------------------------------------------------------------------------
# Command lines as tokens (for the minimizer)
# --------------------------------------------------------------------------------------

_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*"?)+')


def split_cmdline(cmdline: str) -> list[str]:
    """Tokens as the kernel's next_arg sees them: spaces separate, double quotes group."""
    return _TOKEN.findall(cmdline)


__all__ = [
    "ARCHIVE_OVERHEAD_BOUND", "COMPRESSIONS", "DEBIAN_CLOUD_LIMITS", "DEFAULT_MAX_MEMORY",
    "E820_GAPS", "E820_TYPES", "INITRD_SIZE_EDGES", "MEMORY_EDGES", "MEMORY_FLOOR_OFFSETS",
    "MEMORY_GRANULE", "MIN_GUEST_MEMORY", "NON_ASCII_VALUES", "QUOTED_VALUES", "SAFE_KEYS",
    "SAFE_SPECIAL_TOKENS", "SAFE_VALUES", "UNSAFE_TOKENS", "WRITABLE_SETUP_HEADER_FIELDS",
    "GeneratorConfig", "KernelLimits", "case_rng", "field_max", "generate_case",
    "header_value_edges", "initrd_size_bound", "min_memory", "split_cmdline",
]
