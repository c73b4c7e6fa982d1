"""How much guest RAM this machine can back, asked before a backend starts.

QEMU allocates guest RAM in one piece, and Linux refuses an allocation it cannot
back (mm/util.c, __vm_enough_memory): with ``vm.overcommit_memory`` 0 (the default)
one larger than all RAM plus swap, with 2 one beyond what is left of the commit
limit; with 1 it refuses nothing.  Our KVM VMM maps guest RAM without a reservation,
but the guest's kernel touches its memory map (64 bytes per 4 KiB page) and more, so
the same bound holds there.  A case over it is not wrong, it needs a bigger machine:
infrastructure trouble (exit 3), said in one line before anything starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootfuzz.errors import InfrastructureError

MEMINFO = Path("/proc/meminfo")
OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory")
_KIB = 1024
_GIB = 1 << 30


class HostMemoryError(InfrastructureError):
    """This machine cannot back the guest RAM a case asks for."""

    component = "host"


@dataclass(frozen=True)
class HostMemory:
    """What /proc says about this machine's memory (bytes)."""

    ram: int  # MemTotal
    swap: int  # SwapTotal
    overcommit: int  # vm.overcommit_memory: 0 heuristic, 1 always, 2 strict
    commit_left: int  # CommitLimit - Committed_AS (what mode 2 still grants)

    def limit(self) -> int | None:
        """The largest single allocation the kernel grants now; None: no limit."""
        if self.overcommit == 1:
            return None
        if self.overcommit == 2:
            return max(self.commit_left, 0)
        return self.ram + self.swap

    def describe(self) -> str:
        swap = f"{self.swap / _GIB:.1f} GiB of swap" if self.swap else "no swap"
        if self.overcommit == 2:
            return (f"vm.overcommit_memory=2 grants {max(self.commit_left, 0) / _GIB:.1f} GiB "
                    "more now")
        return (f"this machine has {self.ram / _GIB:.1f} GiB of RAM and {swap}, and its "
                "kernel refuses one allocation larger than that (vm.overcommit_memory=0)")


def read_host_memory(meminfo: Path = MEMINFO, overcommit: Path = OVERCOMMIT
                     ) -> HostMemory | None:
    """This machine's memory, or None where /proc does not tell (then nothing is refused)."""
    try:
        fields = {}
        for line in meminfo.read_text().splitlines():
            name, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                fields[name] = int(words[0]) * (_KIB if words[1:] == ["kB"] else 1)
        mode = int(overcommit.read_text().strip())
        return HostMemory(fields["MemTotal"], fields.get("SwapTotal", 0), mode,
                          fields.get("CommitLimit", 0) - fields.get("Committed_AS", 0))
    except (OSError, ValueError, KeyError):
        return None


def check_guest_memory(memory: int, host: HostMemory | None = None) -> None:
    """Refuse *memory* bytes of guest RAM that this machine cannot back."""
    host = read_host_memory() if host is None else host
    limit = None if host is None else host.limit()
    if host is not None and limit is not None and memory > limit:
        raise HostMemoryError(
            f"cannot back {memory / _GIB:g} GiB of guest RAM: {host.describe()}; "
            "run this case on a machine with more memory"
        )
