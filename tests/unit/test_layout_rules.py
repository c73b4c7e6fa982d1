"""Validity oracles: correct plans pass every rule; each classic loader bug trips its rule."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.case import BootCase, Overrides, SetupDataNode
from bootfuzz.errors import LayoutError
from bootfuzz.judge.layout_rules import check_layout
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import PAGE_SIZE, GiB, MiB, align_up
from bootfuzz.loader.plan import BootPlan
from bootfuzz.loader.planner import plan_boot
from bootfuzz.loader.platform import qemu_pc
from tests.fakes import FakeInitrd, fake_bzimage

IMAGE = parse_kernel_image(fake_bzimage(init_size=0x3378000))


NO_OVERRIDES = Overrides()


def plan(memory: int = 256 * MiB, overrides: Overrides = NO_OVERRIDES,
         initrd_size: int = 8 * MiB, cmdline: str = "console=ttyS0") -> BootPlan:
    case = BootCase(kernel="fake", memory=memory, cmdline=cmdline, overrides=overrides)
    return plan_boot(case, IMAGE, qemu_pc(memory), FakeInitrd(initrd_size))


def verdicts(p: BootPlan) -> dict[str, Verdict]:
    return {r.name: r.verdict for r in check_layout(p)}


def failing(p: BootPlan) -> set[str]:
    return {n for n, v in verdicts(p).items() if v is Verdict.FAIL}


def test_rules_correct_plan_passes_every_rule() -> None:
    v = verdicts(plan())
    assert v and all(x is Verdict.PASS for x in v.values()), v
    assert "valid-setup-data" not in v  # no setup_data: the rule does not answer


@settings(max_examples=300, deadline=None)
@given(memory=st.integers(96, 64 * 1024).map(lambda m: m * MiB),
       initrd_size=st.integers(1, 64 * MiB))
def test_rules_no_false_alarm_on_any_plan_the_loader_makes(memory: int, initrd_size: int) -> None:
    try:
        p = plan(memory, initrd_size=initrd_size)
    except LayoutError:
        return
    assert failing(p) == set()


def test_rules_initrd_right_after_compressed_kernel_is_flagged() -> None:
    """The bug: initrd placed right after the kernel image, inside the decompressor's window."""
    after_kernel = align_up(0x1000000 + len(IMAGE.protected_mode_code), PAGE_SIZE)
    p = plan(overrides=Overrides(initrd_addr=after_kernel))
    assert failing(p) == {"valid-initrd-outside-kernel"}


def test_rules_e820_without_gap_for_4g_guest_is_flagged() -> None:
    """The bug: a 4 GiB guest described as one RAM range from 1 MiB to 4 GiB."""
    no_gap = (E820Entry(0, 0xA0000, 1), E820Entry(0x100000, 4 * GiB - 0x100000, 1))
    p = plan(memory=4 * GiB, overrides=Overrides(e820=no_gap))
    assert "valid-e820-ram-real" in failing(p)


def test_rules_cmdline_without_nul_is_flagged() -> None:
    p = plan(overrides=Overrides(cmdline_raw=b"console=ttyS0 " + b"X" * 3000))
    assert failing(p) == {"valid-cmdline-terminated"}


def test_rules_cmdline_nul_exactly_at_cmdline_size_passes() -> None:
    ok = plan(overrides=Overrides(cmdline_raw=b"x" * 2047 + b"\0"))
    late = plan(overrides=Overrides(cmdline_raw=b"x" * 2048 + b"\0"))
    assert "valid-cmdline-terminated" not in failing(ok)
    assert "valid-cmdline-terminated" in failing(late)


def test_rules_sentinel_and_loader_type_flagged() -> None:
    p = plan(overrides=Overrides(fields=(("sentinel", 0xFF), ("type_of_loader", 0))))
    assert failing(p) == {"valid-zero-page"}


def test_rules_too_many_e820_entries_flagged() -> None:
    p = plan(overrides=Overrides(fields=(("e820_entries", 129),)))
    assert "valid-e820-entries" in failing(p)


def test_rules_initrd_unaligned_and_above_max() -> None:
    p = plan(memory=3 * GiB, overrides=Overrides(initrd_addr=0x80000800))
    assert {"valid-initrd-aligned"} <= failing(p)
    # This fake kernel allows initrds above initrd_addr_max (XLF_CAN_BE_LOADED_ABOVE_4G).
    assert "valid-initrd-addr-max" not in failing(p)


def test_rules_setup_data_chain_checked() -> None:
    good = plan(overrides=Overrides(setup_data=(SetupDataNode(9, b"\1" * 32),
                                                SetupDataNode(9, b"\2" * 8))))
    assert verdicts(good)["valid-setup-data"] is Verdict.PASS
    in_window = plan(overrides=Overrides(setup_data=(SetupDataNode(9, b"\1" * 32, 0x2000000),)))
    assert "valid-boot-data-outside-kernel" in failing(in_window)


def test_rules_ram_forgotten_above_4g_is_flagged() -> None:
    from bootfuzz.loader.placement import plan_e820

    low_only = tuple(e for e in plan_e820(qemu_pc(5 * GiB)) if e.addr < 4 * GiB)
    p = plan(memory=5 * GiB, overrides=Overrides(e820=low_only))
    assert failing(p) == {"valid-e820-total"}


def test_rules_reserved_holes_inside_ram_are_fine() -> None:
    from bootfuzz.loader.placement import plan_e820

    table = (*plan_e820(qemu_pc(256 * MiB)), E820Entry(0x8000000, 0x1000, 2))
    assert failing(plan(overrides=Overrides(e820=table))) == set()


def test_rules_data_above_4g_needs_a_64bit_entry() -> None:


    from bootfuzz.case import EntryProtocol

    high = Overrides(cmdline_addr=0x140000000)
    ok = plan(memory=6 * GiB, overrides=high)
    assert verdicts(ok)["valid-below-4g"] is Verdict.PASS
    case = BootCase(kernel="fake", memory=6 * GiB, cmdline="x", overrides=high,
                    entry=EntryProtocol.BOOT32)
    p32 = plan_boot(case, IMAGE, qemu_pc(6 * GiB), FakeInitrd(MiB))
    assert "valid-below-4g" in failing(p32)


def test_rules_kernel_load_alignment_and_pref_address() -> None:
    ok = plan(overrides=Overrides(kernel_load=0x200000))  # 2 MiB = 1 << min_alignment
    assert "valid-kernel-load" not in failing(ok)
    assert ok.kernel_window[0] == 0x1000000  # the decompressor runs at pref_address
    bad = plan(overrides=Overrides(kernel_load=0x300000 + 0x1000))
    assert "valid-kernel-load" in failing(bad)
    fixed = parse_kernel_image(fake_bzimage(init_size=0x3378000, relocatable_kernel=0))
    case = BootCase(kernel="fake", memory=256 * MiB, overrides=Overrides(kernel_load=0x2000000))
    p = plan_boot(case, fixed, qemu_pc(256 * MiB), FakeInitrd(MiB))
    assert "valid-kernel-load" in failing(p)
