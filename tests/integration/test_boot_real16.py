"""Real kernels through the 16-bit entry: their own setup code asks our BIOS.

The kernel's real-mode setup code probes memory with INT 15h E820h itself, so
the e820 oracle judges that probe (and our BIOS) against the plan's table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.abi.e820 import E820Entry, E820Type
from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec, Overrides
from bootfuzz.judge.e820_model import sanitize
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.layout import LOW_RAM_END, GiB, KiB, MiB
from bootfuzz.loader.placement import plan_e820
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.boot import BootResult, run_case
from tests.integration.conftest import PINNED

pytestmark = pytest.mark.qemu


def failures(result: BootResult, names: set[str] | None = None) -> list[str]:
    return [f"{r.name}: {r.verdict.value}: expected {r.expected!r}, observed {r.observed!r} "
            f"{r.detail}" for r in result.oracles
            if r.verdict is not Verdict.PASS and (names is None or r.name in names)]


@pytest.mark.parametrize("kernel", PINNED)
def test_boot16_pinned_kernel_all_oracles_pass(tmp_path: Path, kernel: str) -> None:
    """Each pinned kernel's setup code runs on our BIOS and reaches /init, every oracle passing."""
    case = BootCase(kernel=kernel, memory=256 * MiB, initrd=InitrdSpec(1 * MiB, seed=7),
                    entry=EntryProtocol.REAL16)
    result = run_case(case, run_dir=tmp_path)
    assert not failures(result), "\n".join(failures(result)) + f"\nlog: {tmp_path}/console.log"
    assert result.verdict is Verdict.PASS
    assert result.observation.linux_version_count == 1


def test_boot16_612_5g_reports_ram_above_4g(tmp_path: Path) -> None:
    """At 5 GiB the INT 15h probe returns the entry above 4 GiB (64-bit fields) too."""
    case = BootCase(kernel="debian-6.12-cloud", memory=5 * GiB, initrd=InitrdSpec(1 * MiB),
                    entry=EntryProtocol.REAL16)
    result = run_case(case, run_dir=tmp_path)
    assert not failures(result), "\n".join(failures(result))
    printed = [(ln.start, ln.end, ln.type_text) for ln in result.observation.bios_e820]
    assert (4 * GiB, 6 * GiB - 1, "usable") in printed


def alternating_table(memory: int, count: int) -> tuple[E820Entry, ...]:
    """The platform's table with 4 KiB pages alternating reserved/RAM inserted at 128 MiB,
    *count* entries in all, none of which the sanitizer merges."""
    low_end = qemu_pc(memory).low.end
    start = 128 * MiB
    base = plan_e820(qemu_pc(memory))
    head = (E820Entry(0, LOW_RAM_END, E820Type.RAM), base[1],
            E820Entry(MiB, start - MiB, E820Type.RAM))
    n_alt = count - len(head) - 2
    assert n_alt % 2 == 1  # starts and ends reserved, so no RAM neighbour merges
    alt = tuple(E820Entry(start + i * 4 * KiB, 4 * KiB,
                          E820Type.RESERVED if i % 2 == 0 else E820Type.RAM)
                for i in range(n_alt))
    rest = start + n_alt * 4 * KiB
    return (*head, *alt, E820Entry(rest, low_end - rest, E820Type.RAM), base[3])


def test_boot16_100_entry_table_read_back_exactly(tmp_path: Path) -> None:
    """A 100-entry table: the kernel's own INT 15h loop reads every entry, and what it
    prints (BIOS-e820) and keeps (/sys/firmware/memmap, boot_params) is that table."""
    table = alternating_table(256 * MiB, 100)
    assert len(table) == 100 and len(sanitize(table) or []) == 100
    case = BootCase(kernel="debian-6.1-cloud", memory=256 * MiB, initrd=InitrdSpec(1 * MiB),
                    entry=EntryProtocol.REAL16, overrides=Overrides(e820=table))
    result = run_case(case, run_dir=tmp_path)
    judged = {"boot", "e820", "firmware-memmap", "boot-params", "cmdline", "payload-digest"}
    assert not failures(result, judged), "\n".join(failures(result, judged))
    assert len(result.observation.bios_e820) == 100
    # Reserved pages carved out of RAM still describe it: no oracle fails at all.
    assert [r.name for r in result.oracles if r.verdict is Verdict.FAIL] == []
