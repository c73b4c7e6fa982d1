"""A kernel's function symbols as offsets from ``_text``, and where KASLR put them in one boot.

The pinned kernels carry no symbol table, but a running kernel lists its own in
``/proc/kallsyms`` (bootfuzz.run.kallsyms reads it once per kernel).  Addresses
there are shifted by that boot's KASLR slide, so the table keeps offsets from
``_text``: the same for every boot of the same kernel.  A later boot's slide is
found from its covered blocks alone (find_slide): every function a boot calls
starts a block, so the one slide that puts many blocks exactly on function
starts is the boot's.  Pure: text in, tables and numbers out.
"""

from __future__ import annotations

import bisect
import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from bootfuzz.errors import ConfigError

#: x86-64 KASLR moves the kernel's virtual and physical addresses by multiples of
#: CONFIG_PHYSICAL_ALIGN, which that architecture requires to be a multiple of 2 MiB
#: (arch/x86/Kconfig; arch/x86/boot/compressed/kaslr.c picks slot * PHYSICAL_ALIGN).
#: The device-tree kernels are placed at 2 MiB too (arm64 booting.rst; riscv64's
#: Image text_offset), but riscv64's ``_text`` sits past its head, not on the 2 MiB:
#: _text's own offset within 2 MiB (SymbolTable.text_address) is the residue a slide
#: keeps.
KASLR_ALIGN = 0x20_0000
#: kallsyms type letters of code: text (global/local) and weak text.
TEXT_TYPES = frozenset("tTwW")
#: Boundaries the kernel's linker script names (include/asm-generic/sections.h).
TEXT_START, TEXT_END = "_text", "_etext"
INIT_START, INIT_END = "_sinittext", "_einittext"
#: The fewest blocks that must land on function starts before a slide is believed.
MIN_SLIDE_VOTES = 8
#: How many of a boot's blocks vote on its slide (all of them, when fewer).
SLIDE_SAMPLE = 4096


@dataclass(frozen=True)
class Function:
    """One function of a SymbolTable: its name and where it starts (offset from _text)."""

    name: str
    start: int
    #: In .init.text: code the kernel runs while booting and frees after.
    init: bool


@dataclass(frozen=True)
class SymbolTable:
    """Function starts of one kernel, as sorted offsets from ``_text``."""

    starts: tuple[int, ...]
    names: tuple[str, ...]
    #: Offsets of the end of .text and of the .init.text range.
    text_end: int
    init_start: int
    init_end: int
    #: ``_text``'s address in the listing read (0: unknown, a cache from before it was
    #: kept); only its offset within KASLR_ALIGN matters, which no slide changes.
    text_address: int = 0

    @property
    def text_residue(self) -> int:
        return self.text_address % KASLR_ALIGN

    def __len__(self) -> int:
        return len(self.starts)

    def function_at(self, offset: int) -> Function | None:
        """The function holding *offset*, or None outside the kernel's code."""
        if not (0 <= offset < self.text_end or self.init_start <= offset < self.init_end):
            return None
        i = bisect.bisect_right(self.starts, offset) - 1
        if i < 0:
            return None
        return Function(self.names[i], self.starts[i],
                        self.init_start <= self.starts[i] < self.init_end)

    @functools.cached_property
    def by_residue(self) -> dict[int, tuple[int, ...]]:
        """Function starts by the residue modulo KASLR_ALIGN of their address in any
        boot (find_slide's index)."""
        index: dict[int, list[int]] = {}
        for start in self.starts:
            index.setdefault((start + self.text_residue) % KASLR_ALIGN, []).append(start)
        return {k: tuple(v) for k, v in index.items()}

    def in_code(self, offset: int) -> bool:
        return 0 <= offset < self.text_end or self.init_start <= offset < self.init_end

    def dumps(self) -> str:
        """The cache form: ranges on the first line, then ``offset name`` per function."""
        head = (f"#bootfuzz-symbols {self.text_end:x} {self.init_start:x} {self.init_end:x} "
                f"{self.text_address:x}\n")
        return head + "".join(f"{s:x} {n}\n" for s, n in zip(self.starts, self.names, strict=True))

    @classmethod
    def loads(cls, text: str) -> SymbolTable:
        """Reads what dumps() wrote; anything else is a ConfigError naming the line."""
        lines = text.splitlines()
        try:
            tag, *ranges = lines[0].split()
            if tag != "#bootfuzz-symbols" or len(ranges) not in (3, 4):
                raise ValueError(lines[0])
            text_end, init_start, init_end, *address = (int(r, 16) for r in ranges)
            pairs = [(int(a, 16), n) for a, n in (line.split(" ", 1) for line in lines[1:])]
        except (IndexError, ValueError) as exc:
            raise ConfigError(f"not a bootfuzz symbol table ({exc})") from None
        return cls(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs),
                   text_end, init_start, init_end, address[0] if address else 0)


def parse_kallsyms(text: str) -> SymbolTable:
    """The function symbols of a ``/proc/kallsyms`` listing, relative to its ``_text``.

    Only built-in code is kept (a ``[module]`` suffix or an address below ``_text``
    is skipped); a listing without ``_text``, ``_etext`` or real addresses (all
    zero: read without the right to see them) is a ConfigError.
    """
    marks: dict[str, int] = {}
    funcs: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or len(parts) > 3:
            continue  # a module's symbol carries a fourth column
        addr_text, kind, name = parts
        try:
            addr = int(addr_text, 16)
        except ValueError:
            continue
        if name in (TEXT_START, TEXT_END, INIT_START, INIT_END):
            marks[name] = addr
        if kind in TEXT_TYPES:
            funcs.setdefault(addr, name)
    missing = [m for m in (TEXT_START, TEXT_END, INIT_START, INIT_END) if m not in marks]
    if missing:
        raise ConfigError(f"kallsyms listing lacks {', '.join(missing)}")
    base = marks[TEXT_START]
    if base == 0:
        raise ConfigError("kallsyms listing shows zero addresses (read without CAP_SYSLOG)")
    items = sorted((a - base, n) for a, n in funcs.items() if a >= base)
    return SymbolTable(
        tuple(a for a, _ in items), tuple(n for _, n in items),
        marks[TEXT_END] - base, marks[INIT_START] - base, marks[INIT_END] - base, base,
    )


@dataclass(frozen=True)
class Slide:
    """Where this boot's ``_text`` was, found from its blocks, and how sure that is."""

    base: int
    #: Blocks that landed exactly on a function start at this base, and at the runner-up.
    votes: int
    runner_up: int


def find_slide(addresses: Iterable[int], table: SymbolTable,
               *, entered_at_base: bool = False) -> Slide | None:
    """The ``_text`` address that puts the most of *addresses* on function starts.

    A KASLR slide is a multiple of KASLR_ALIGN, so a block and the function it
    starts agree modulo that (``_text``'s own residue included): each block votes for
    ``block - start`` over the few functions with its residue.  SLIDE_SAMPLE blocks,
    evenly spread, vote: a boot's tens of thousands agree on one base by hundreds of
    votes from a few thousand.
    None when no base gets MIN_SLIDE_VOTES or the best does not beat the
    runner-up twice over (the blocks do not decide it).
    With *entered_at_base* only a base whose image start is a block counts: the kernel
    proper is entered at the start of its image at its physical address (x86's
    startup_64 and arm64's header at ``_text``; riscv64's ``_start``, the head before
    ``_text``), and a few dozen physical blocks are too few to outvote dense thunk
    arrays (or the firmware's blocks) alone.
    """
    addresses = frozenset(addresses)
    ordered = sorted(addresses)
    step = max(1, len(ordered) // SLIDE_SAMPLE)
    by_residue = table.by_residue
    votes: Counter[int] = Counter()
    for addr in ordered[::step]:
        for start in by_residue.get(addr % KASLR_ALIGN, ()):
            votes[addr - start] += 1
    if entered_at_base:  # the image starts aligned, text_residue before _text
        head = table.text_residue
        votes = Counter({base: n for base, n in votes.items() if base - head in addresses})
    ranked = votes.most_common(2)
    if not ranked or ranked[0][1] < MIN_SLIDE_VOTES:
        return None
    runner_up = ranked[1][1] if len(ranked) > 1 else 0
    if ranked[0][1] < 2 * runner_up:
        return None
    return Slide(ranked[0][0], ranked[0][1], runner_up)
