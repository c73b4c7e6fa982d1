"""Hypothesis strategies for boot cases: memory sizes, initrds, command lines, header
values, E820 tables, loader overrides, and whole :class:`~bootfuzz.case.BootCase`\\ s.

Every strategy takes keyword-only arguments, checks them before generating
anything, and accepts strategies for its parts (xarray style), so a caller can
narrow one part: ``boot_cases(memory=st.just(256 * MiB))``.  Draws mix uniform
values with the boot protocol's edge values (shared with the campaign's seeded
generator: :mod:`bootfuzz.fuzz.draws`), and rare nasty values sit behind a boolean
so the shrinker can drop them.  :func:`campaign_cases` draws the campaign's own
rules (every dimension, as the generator and the mutator do) through
:class:`DrawSource`, a draws.Source over Hypothesis.

What is valid: ``boot_cases(valid_only=True)`` (the default) gives cases our loader
must accept (plan_boot returns a plan) whose layout every validity rule passes.
Everything else documents what it deliberately breaks.  Needs the ``hypothesis``
package (the ``dev`` extra); nothing else in bootfuzz imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.strategies import SearchStrategy

from bootfuzz.abi.bootparam import E820_MAX_ENTRIES_ZEROPAGE
from bootfuzz.abi.e820 import E820Entry
from bootfuzz.case import (
    HARNESS_CMDLINE,
    MAX_PAYLOAD_SIZE,
    BootCase,
    EntryProtocol,
    InitrdSpec,
    Overrides,
    SetupDataNode,
)
from bootfuzz.compression import Compression
from bootfuzz.fuzz.draws import CaseSpace, draw_case
from bootfuzz.fuzz.generate import (
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
    KernelLimits,
    field_max,
    header_value_edges,
    min_memory,
)
from bootfuzz.kernel.image import KernelImage
from bootfuzz.loader.layout import FOUR_GIB, PAGE_SIZE, GiB, MiB

__all__ = [
    "DEFAULT_CMDLINE_SIZE",
    "DrawSource",
    "addresses",
    "boot_cases",
    "campaign_cases",
    "cmdline_tokens",
    "cmdlines",
    "e820_entries",
    "e820_tables",
    "initrd_specs",
    "kernel_limits",
    "memory_sizes",
    "overrides",
    "setup_data_nodes",
    "setup_header_values",
]

T = TypeVar("T")

#: The x86 COMMAND_LINE_SIZE - 1 of every 6.x kernel (boot-protocol.md, cmdline_size).
DEFAULT_CMDLINE_SIZE = 2047
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
#: Known setup_data types (SETUP_E820_EXT = 1 .. SETUP_IMA = 11).
#: source: arch/x86/include/uapi/asm/setup_data.h
_SETUP_DATA_TYPES = tuple(range(1, 12))
_FILLER_KEY = "bootfuzz.pad="


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _strategy(value: SearchStrategy[T] | None, name: str, default: SearchStrategy[T]
              ) -> SearchStrategy[T]:
    if value is None:
        return default
    if not isinstance(value, SearchStrategy):
        raise TypeError(
            f"{name}={value!r} is not a strategy.  To specify a fixed value, use "
            f"hypothesis.strategies.just({value!r})"
        )
    return value


def _int(value: object, name: str, lo: int = 0, hi: int = _U64_MAX) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name}={value!r} must be an integer")
    if not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value:#x} must lie in [{lo:#x}, {hi:#x}]")
    return value


def _range(min_value: int, max_value: int, what: str) -> None:
    if min_value > max_value:
        raise InvalidArgument(f"min_{what}={min_value:#x} is larger than max_{what}="
                              f"{max_value:#x}")


def _edges_or_uniform(edges: Iterable[int], uniform: SearchStrategy[int]) -> SearchStrategy[int]:
    """Edge values (smallest first, so shrinking goes there) or a uniform draw."""
    chosen = sorted(set(edges))
    return st.one_of(st.sampled_from(chosen), uniform) if chosen else uniform


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def kernel_limits(image: KernelImage | None = None) -> KernelLimits:
    """The numbers generation needs of *image* (Debian 6.1 cloud's without one)."""
    return DEBIAN_CLOUD_LIMITS if image is None else KernelLimits.of(image)


def memory_sizes(
    *, min_size: int = MIN_GUEST_MEMORY, max_size: int = DEFAULT_MAX_MEMORY,
    floor: int | None = None, aligned: bool = True,
) -> SearchStrategy[int]:
    """Guest memory sizes in [min_size, max_size], weighted to the edges.

    Edges: *floor* (the smallest the loader accepts for a kernel: see
    bootfuzz.fuzz.generate.min_memory) and a page, 2 MiB, 16 MiB, 64 MiB above it; where
    QEMU pc splits RAM (0xE0000000 +- a page, 3 GiB +- a page); 4 GiB +- a page; 5 GiB.
    Always a multiple of 8 KiB (QEMU's -m granule) unless ``aligned=False``, which adds
    a remainder behind a boolean (deliberately invalid: the platform rejects it).
    """
    _int(min_size, "min_size", 1)
    _int(max_size, "max_size", 1)
    _range(min_size, max_size, "size")
    if floor is not None:
        _int(floor, "floor", 0)
    lo_page = -(-min_size // MEMORY_GRANULE)
    hi_page = max_size // MEMORY_GRANULE
    if aligned and lo_page > hi_page:
        raise InvalidArgument(f"no 8 KiB-aligned size lies in [{min_size:#x}, {max_size:#x}]")
    edges = list(MEMORY_EDGES)
    if floor is not None:
        edges += [floor + off for off in MEMORY_FLOOR_OFFSETS]
    base = _edges_or_uniform(
        (e for e in edges if min_size <= e <= max_size and e % MEMORY_GRANULE == 0),
        st.integers(lo_page, hi_page).map(lambda p: p * MEMORY_GRANULE),
    )
    if aligned:
        return base
    return st.tuples(base, st.booleans(), st.integers(1, MEMORY_GRANULE - 1)).map(
        lambda t: t[0] + t[2] if t[1] and t[0] + t[2] <= max_size else t[0]
    )


def initrd_specs(
    *, sizes: SearchStrategy[int] | None = None,
    compressions: SearchStrategy[Compression] | None = None,
    seeds: SearchStrategy[int] | None = None,
    min_size: int = 0, max_size: int = 64 * MiB,
) -> SearchStrategy[InitrdSpec]:
    """Initrd specs: payload sizes 0, 1, either side of 4 KiB and 2 MiB, whole MiBs, or
    uniform in [min_size, max_size]; every compression bootfuzz can build
    (bootfuzz.compression.SUPPORTED).  Always buildable.
    """
    _int(min_size, "min_size", 0, MAX_PAYLOAD_SIZE)
    _int(max_size, "max_size", 0, MAX_PAYLOAD_SIZE)
    _range(min_size, max_size, "size")
    sizes = _strategy(sizes, "sizes", _edges_or_uniform(
        (e for e in INITRD_SIZE_EDGES if min_size <= e <= max_size),
        st.integers(min_size, max_size)))
    compressions = _strategy(compressions, "compressions", st.sampled_from(COMPRESSIONS))
    seeds = _strategy(seeds, "seeds", st.integers(0, _U64_MAX))
    return st.builds(InitrdSpec, sizes, compressions, seeds)


_SAFE_TEXT = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_.,/:"), max_size=24
)
_NON_ASCII_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x80, categories=("L", "N", "S")), min_size=1,
    max_size=8,
)


def cmdline_tokens(*, boot_safe: bool = True, non_ascii: bool = False) -> SearchStrategy[str]:
    """One command-line token: ``key=value``, a quoted value with spaces, or a bare word.

    ``boot_safe=True`` gives only module-style dotted keys (the kernel ignores them
    and passes nothing to init) and ``rdinit=/init``: a boot with them reaches our
    agent.  ``boot_safe=False`` adds ``init=``/``rdinit=`` elsewhere, ``quiet``,
    ``loglevel=0``, ``mem=`` and the like (deliberately disruptive).  ``non_ascii``
    adds UTF-8 letters and symbols in values.  Never a space outside quotes, never NUL.
    """
    values = st.one_of(st.sampled_from(SAFE_VALUES), _SAFE_TEXT)
    if non_ascii:
        values = values | st.sampled_from(NON_ASCII_VALUES) | _NON_ASCII_TEXT
    plain = st.builds(lambda k, n, v: f"{k}{n}={v}", st.sampled_from(SAFE_KEYS),
                      st.integers(0, 999), values)
    quoted = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SAFE_KEYS),
                       st.sampled_from(QUOTED_VALUES))
    special = st.sampled_from(tuple(t for t in SAFE_SPECIAL_TOKENS if not t.startswith("--")))
    tokens = st.one_of(plain, quoted, special)
    if not boot_safe:
        tokens = tokens | st.sampled_from(UNSAFE_TOKENS)
    return tokens


@st.composite
def _cmdline(draw: st.DrawFn, prefix: str, max_size: int, tokens: SearchStrategy[str],
             over_limit: bool) -> str:
    parts = [prefix] if prefix else []
    for tok in draw(st.lists(tokens, max_size=12)):
        if len(" ".join([*parts, tok]).encode()) <= max_size:
            parts.append(tok)
    if draw(st.booleans()):  # init's arguments: after "--", at the very end
        end = draw(st.sampled_from(tuple(t for t in SAFE_SPECIAL_TOKENS if t.startswith("--"))))
        if len(" ".join([*parts, end]).encode()) <= max_size:
            parts.append(end)
    text = " ".join(parts)
    if draw(st.booleans()):  # fill up to the limit: exactly, or a byte or two short
        short = draw(st.sampled_from((0, 1, 2)))
        room = max_size - short - len(text.encode()) - (1 if text else 0)
        if room > len(_FILLER_KEY):
            filler = _FILLER_KEY + "x" * (room - len(_FILLER_KEY))
            text = f"{text} {filler}" if text else filler
    if over_limit and draw(st.booleans()):  # deliberately past cmdline_size
        extra = draw(st.sampled_from((1, 2, 100)))
        pad = max_size + extra - len(text.encode())
        text += " " * min(pad, 1) + "y" * max(pad - 1, 0)
    return text


def cmdlines(
    *, prefix: str = HARNESS_CMDLINE, max_size: int = DEFAULT_CMDLINE_SIZE,
    tokens: SearchStrategy[str] | None = None, over_limit: bool = False,
    boot_safe: bool = True, non_ascii: bool = False,
) -> SearchStrategy[str]:
    """Command lines: *prefix*, then tokens (cmdline_tokens), sometimes ``--`` and init
    arguments at the end, sometimes filled to exactly *max_size* bytes or a byte short.

    Always at most *max_size* bytes of UTF-8 without NUL (what the loader accepts
    for a kernel whose cmdline_size is *max_size*), unless ``over_limit=True``, which
    sometimes goes 1, 2 or 100 bytes past it (deliberately invalid: CmdlineError).
    """
    if not isinstance(prefix, str) or "\0" in prefix:
        raise InvalidArgument(f"prefix={prefix!r} must be a string without NUL")
    _int(max_size, "max_size", 0, 1 << 20)
    if len(prefix.encode()) > max_size:
        raise InvalidArgument(f"prefix={prefix!r} is longer than max_size={max_size}")
    tokens = _strategy(tokens, "tokens", cmdline_tokens(boot_safe=boot_safe, non_ascii=non_ascii))
    return _cmdline(prefix, max_size, tokens, over_limit)


def _header_value(name: str, initrd_addr_max: int) -> SearchStrategy[int]:
    return _edges_or_uniform(header_value_edges(name, initrd_addr_max),
                             st.integers(0, field_max(name)))


@st.composite
def _header_values(draw: st.DrawFn, names: SearchStrategy[str], min_fields: int,
                   max_fields: int, initrd_addr_max: int) -> dict[str, int]:
    chosen = draw(st.lists(names, min_size=min_fields, max_size=max_fields, unique=True))
    return {name: draw(_header_value(name, initrd_addr_max)) for name in chosen}


def setup_header_values(
    *, names: SearchStrategy[str] | None = None, min_fields: int = 0, max_fields: int = 3,
    initrd_addr_max: int = DEBIAN_CLOUD_LIMITS.initrd_addr_max,
) -> SearchStrategy[dict[str, int]]:
    """A mapping of writable setup_header field names (boot.rst W/M fields) to values.

    Each value is uniform over the field's width or an edge: 0, 1, max, max - 1,
    initrd_addr_max +- 1, 4 KiB and 2 MiB boundaries +- 1.  Always fits the field,
    so the loader writes it; most values are deliberately wrong for a real boot
    (ramdisk_image, type_of_loader = 0, hardware_subarch != 0 ...).
    """
    _int(min_fields, "min_fields", 0, len(WRITABLE_SETUP_HEADER_FIELDS))
    _int(max_fields, "max_fields", 0, len(WRITABLE_SETUP_HEADER_FIELDS))
    _range(min_fields, max_fields, "fields")
    _int(initrd_addr_max, "initrd_addr_max", 0, _U32_MAX)
    names = _strategy(names, "names", st.sampled_from(WRITABLE_SETUP_HEADER_FIELDS))
    return _header_values(names, min_fields, max_fields, initrd_addr_max)


def addresses(*, limits: KernelLimits = DEBIAN_CLOUD_LIMITS, max_addr: int = _U64_MAX
              ) -> SearchStrategy[int]:
    """Guest-physical addresses: uniform in [0, max_addr] or an edge (0, a page, the
    kernel's pref_address and window end +- a page, initrd_addr_max +- 1, 3 GiB, 4 GiB
    +- a page).  Deliberately anywhere: the loader writes what it is told."""
    _int(max_addr, "max_addr", 0, _U64_MAX)
    edges = (0, PAGE_SIZE, limits.pref_address, limits.window_end - PAGE_SIZE,
             limits.window_end, limits.window_end + PAGE_SIZE, limits.initrd_addr_max,
             limits.initrd_addr_max + 1, 3 * GiB, FOUR_GIB - PAGE_SIZE, FOUR_GIB,
             FOUR_GIB + PAGE_SIZE)
    return _edges_or_uniform((e for e in edges if e <= max_addr), st.integers(0, max_addr))


def e820_entries(*, types: SearchStrategy[int] | None = None,
                 max_addr: int = 64 * GiB) -> SearchStrategy[E820Entry]:
    """One E820 entry anywhere below *max_addr*, of any type (unknown ones included)."""
    _int(max_addr, "max_addr", 0, _U64_MAX)
    types = _strategy(types, "types", st.sampled_from(E820_TYPES))
    return st.builds(E820Entry, st.integers(0, max_addr), st.integers(0, max_addr), types)


_E820_SIZES = (0, PAGE_SIZE, 0x9F000, 2 * MiB, 64 * MiB, 1 * GiB)


@st.composite
def _e820_table(draw: st.DrawFn, min_entries: int, max_entries: int,
                types: SearchStrategy[int]) -> tuple[E820Entry, ...]:
    gap = _edges_or_uniform(E820_GAPS, st.integers(0, 4 * GiB))
    size = _edges_or_uniform(_E820_SIZES, st.integers(0, 4 * GiB))
    steps = draw(st.lists(st.tuples(gap, size, types, st.booleans()),
                          min_size=min_entries, max_size=max_entries))
    entries: list[E820Entry] = []
    addr = 0
    for g, s, t, overlap in steps:
        start = entries[-1].addr + entries[-1].size // 2 if overlap and entries else addr + g
        entries.append(E820Entry(start, s, t))
        addr = start + s
    if draw(st.booleans()):  # unsorted
        entries = draw(st.permutations(entries))
    return tuple(entries)


def e820_tables(
    *, min_entries: int = 0, max_entries: int = 8, types: SearchStrategy[int] | None = None,
) -> SearchStrategy[tuple[E820Entry, ...]]:
    """E820 tables of every shape: ascending runs of entries separated by holes
    (0 = adjacent, a page, 2 MiB, uniform), sometimes overlapping the one before,
    zero-sized, of RAM / reserved / ACPI / NVS / unusable / unknown types, and
    sometimes shuffled.  Addresses stay below 2**64.  Deliberately invalid tables
    included (fewer than 2 entries: the kernel ignores them; more than 128: the
    loader refuses them; RAM in the MMIO gap: the validity rules flag it).
    """
    _int(min_entries, "min_entries", 0, 4 * E820_MAX_ENTRIES_ZEROPAGE)
    _int(max_entries, "max_entries", 0, 4 * E820_MAX_ENTRIES_ZEROPAGE)
    _range(min_entries, max_entries, "entries")
    types = _strategy(types, "types", _edges_or_uniform(E820_TYPES, st.integers(0, _U32_MAX)))
    return _e820_table(min_entries, max_entries, types)


def setup_data_nodes(*, max_payload: int = 64, limits: KernelLimits = DEBIAN_CLOUD_LIMITS
                     ) -> SearchStrategy[SetupDataNode]:
    """A setup_data node of a known (or, rarely, any u32) type; placed by the loader, or
    behind a boolean at an address of its own (deliberately anywhere)."""
    _int(max_payload, "max_payload", 0, 1 << 16)
    node_type = _edges_or_uniform(_SETUP_DATA_TYPES, st.integers(0, _U32_MAX))
    addr = st.none() | addresses(limits=limits, max_addr=_U64_MAX - (1 << 20))
    return st.builds(SetupDataNode, node_type, st.binary(max_size=max_payload), addr)


@st.composite
def _overrides(draw: st.DrawFn, fields: SearchStrategy[dict[str, int]],
               e820: SearchStrategy[tuple[E820Entry, ...]], addrs: SearchStrategy[int],
               cmdline_raw: SearchStrategy[bytes], nodes: SearchStrategy[SetupDataNode]
               ) -> Overrides:
    def maybe(strategy: SearchStrategy[Any]) -> Any:
        return draw(strategy) if draw(st.booleans()) else None

    return Overrides(
        fields=tuple(sorted((maybe(fields) or {}).items())),
        initrd_addr=maybe(addrs),
        cmdline_addr=maybe(addrs),
        cmdline_raw=maybe(cmdline_raw),
        e820=maybe(e820),
        kernel_load=maybe(addrs),
        setup_data=tuple(draw(st.lists(nodes, max_size=3)) if draw(st.booleans()) else ()),
    )


def overrides(
    *, fields: SearchStrategy[dict[str, int]] | None = None,
    e820: SearchStrategy[tuple[E820Entry, ...]] | None = None,
    addrs: SearchStrategy[int] | None = None,
    cmdline_raw: SearchStrategy[bytes] | None = None,
    setup_data: SearchStrategy[SetupDataNode] | None = None,
    limits: KernelLimits = DEBIAN_CLOUD_LIMITS,
) -> SearchStrategy[Overrides]:
    """Loader overrides, each part present behind its own boolean (so shrinking drops
    them): header field values, initrd / command line / kernel addresses, raw command
    line bytes (possibly without NUL), an E820 table, setup_data nodes.

    Deliberately invalid: the loader writes them as told, or refuses with a
    ConfigError (overlapping blobs, memory that is not RAM); the validity rules
    say what is wrong.  Every value fits its field, so nothing else is raised.
    """
    fields = _strategy(fields, "fields", setup_header_values(
        min_fields=1, initrd_addr_max=limits.initrd_addr_max))
    e820 = _strategy(e820, "e820", e820_tables())
    addrs = _strategy(addrs, "addrs", addresses(limits=limits))
    cmdline_raw = _strategy(cmdline_raw, "cmdline_raw", st.one_of(
        cmdlines().map(lambda s: s.encode() + b"\0"),  # well terminated
        st.binary(max_size=64),
        cmdlines().map(lambda s: s.encode() + b" stale" * 600),  # no NUL, past the limit
    ))
    setup_data = _strategy(setup_data, "setup_data", setup_data_nodes(limits=limits))
    return _overrides(fields, e820, addrs, cmdline_raw, setup_data)


_any_overrides = overrides  # boot_cases' parameter of the same name hides it


@st.composite
def _boot_case(draw: st.DrawFn, kernel: str, limits: KernelLimits,
               memory: SearchStrategy[int], initrd: SearchStrategy[InitrdSpec | None],
               cmdline: SearchStrategy[str], ovr: SearchStrategy[Overrides] | None,
               valid_only: bool) -> BootCase:
    spec = draw(initrd)
    mem = draw(memory)
    text = draw(cmdline)
    if valid_only:
        mem = max(mem, min_memory(limits, spec))  # repair, not filter: shrinks to the floor
        raw = text.encode()
        if len(raw) > limits.cmdline_size or b"\0" in raw:
            raise InvalidArgument(
                f"the cmdline strategy gave {len(raw)} bytes (NUL: {raw.find(0) >= 0}); with "
                f"valid_only=True it must stay within cmdline_size {limits.cmdline_size}, no NUL"
            )
    chosen = draw(ovr) if ovr is not None and draw(st.booleans()) else Overrides()
    return BootCase(kernel=kernel, memory=mem, cmdline=text, initrd=spec,
                    entry=EntryProtocol.BOOT64, overrides=chosen)


def boot_cases(
    *, kernel: str = "fake", image: KernelImage | None = None,
    limits: KernelLimits | None = None,
    memory: SearchStrategy[int] | None = None,
    initrd: SearchStrategy[InitrdSpec | None] | None = None,
    cmdline: SearchStrategy[str] | None = None,
    overrides: SearchStrategy[Overrides] | None = None,
    valid_only: bool = True,
) -> SearchStrategy[BootCase]:
    """Whole boot cases for *kernel* (a pinned name or a path), 64-bit entry.

    The kernel's numbers come from *image*, or *limits*, or default to Debian 6.1
    cloud.  ``valid_only=True`` (default): cases the loader must accept, with no
    overrides; memory is raised to the smallest the loader accepts for the drawn
    initrd (bootfuzz.fuzz.generate.min_memory), the command line stays within
    cmdline_size.  The layout the loader makes for them passes every validity rule.
    ``valid_only=False``: memory may be unaligned or too small, the command line
    may run past cmdline_size, and half the cases carry overrides
    (deliberately invalid: the loader refuses with a ConfigError, or the validity
    rules flag the layout).
    """
    if not isinstance(kernel, str) or not kernel:
        raise InvalidArgument(f"kernel={kernel!r} must be a non-empty string")
    if image is not None and limits is not None:
        raise InvalidArgument("give image or limits, not both")
    lim = limits if limits is not None else kernel_limits(image)
    memory = _strategy(memory, "memory", memory_sizes(
        floor=min_memory(lim), aligned=valid_only, max_size=DEFAULT_MAX_MEMORY))
    initrd = _strategy(initrd, "initrd", st.none() | initrd_specs(max_size=16 * MiB))
    cmdline = _strategy(cmdline, "cmdline", cmdlines(
        max_size=lim.cmdline_size, over_limit=not valid_only))
    if valid_only and overrides is not None:
        raise InvalidArgument("overrides with valid_only=True: overridden cases are not "
                              "guaranteed to be accepted; pass valid_only=False")
    ovr = None if valid_only else _strategy(overrides, "overrides", _any_overrides(limits=lim))
    return _boot_case(kernel, lim, memory, initrd, cmdline, ovr, valid_only)



# --------------------------------------------------------------------------------------
# The campaign's own draw rules, through Hypothesis
# --------------------------------------------------------------------------------------

_RANDOM_STEPS = 1 << 53


class DrawSource:
    """A bootfuzz.fuzz.draws.Source over a Hypothesis draw (``st.composite``'s *draw*
    or ``st.data().draw``): the campaign's generator and mutator rules, drawn so that
    Hypothesis shrinks them.  ``random()`` shrinks towards 1, so a rare branch
    (``chance(src, 0.1)``) shrinks away; ``randrange`` to its start; ``choice`` to the
    first element."""

    def __init__(self, draw: Callable[[SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def random(self) -> float:
        n: int = self._draw(st.integers(0, _RANDOM_STEPS - 1))
        return (_RANDOM_STEPS - 1 - n) / _RANDOM_STEPS

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if stop is None:
            start, stop = 0, start
        count = (stop - start + step - 1) // step
        if count <= 0:
            raise ValueError(f"empty range for randrange({start}, {stop}, {step})")
        k: int = self._draw(st.integers(0, count - 1))
        return start + step * k

    def choice(self, seq: Sequence[T]) -> T:
        if not seq:
            raise IndexError("cannot choose from an empty sequence")
        value: T = self._draw(st.sampled_from(seq))
        return value


@st.composite
def _campaign_case(draw: st.DrawFn, space: CaseSpace) -> BootCase:
    return draw_case(DrawSource(draw), space)


def campaign_cases(
    *, kernel: str = "fake", limits: KernelLimits = DEBIAN_CLOUD_LIMITS,
    max_memory: int = DEFAULT_MAX_MEMORY, max_initrd: int = 16 * MiB,
    overrides: bool = False,
) -> SearchStrategy[BootCase]:
    """The campaign's cases (bootfuzz.fuzz.draws.draw_case: every dimension, entry
    paths as *limits* allow, initrd placement and format, a correct loader's
    relocation, high command line, setup_data and E820 shapes), drawn through
    Hypothesis.  Without *overrides* each is a case our loader must accept and lay
    out so that every validity rule passes; with them, deliberately invalid layouts
    too (bootfuzz.fuzz.draws.draw_overrides)."""
    _int(max_memory, "max_memory", MIN_GUEST_MEMORY)
    _int(max_initrd, "max_initrd", 0, MAX_PAYLOAD_SIZE)
    if not isinstance(kernel, str) or not kernel:
        raise InvalidArgument(f"kernel={kernel!r} must be a non-empty string")
    return _campaign_case(CaseSpace(kernels=((kernel, limits),), max_memory=max_memory,
                                    max_initrd=max_initrd, overrides=overrides))
