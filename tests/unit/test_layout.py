from __future__ import annotations

import itertools

from bootfuzz.loader import layout


def test_fixed_regions_do_not_overlap_and_stay_in_low_ram() -> None:
    regions = sorted(layout.FIXED_REGIONS, key=lambda r: r[1])
    for (name_a, _, end_a), (name_b, start_b, _) in itertools.pairwise(regions):
        assert end_a <= start_b, f"{name_a} overlaps {name_b}"
    assert all(end <= layout.LOW_RAM_END for _, _, end in regions)
    assert regions[0][1] >= 0x500  # the real-mode IVT and BDA stay untouched


def test_align_helpers() -> None:
    assert layout.align_up(0x1001, 0x1000) == 0x2000
    assert layout.align_up(0x1000, 0x1000) == 0x1000
    assert layout.align_down(0x1FFF, 0x1000) == 0x1000


def test_bios_data_block_takes_the_zero_pages_place_below_64k() -> None:
    """Our BIOS reads the block with DS = 0: all of it must lie below 64 KiB."""
    from bootfuzz.abi.handoff import BIOS_DATA_SIZE

    _, start, end = next(r for r in layout.FIXED_REGIONS if r[0] == "zero_page")
    block_end = layout.BIOS_DATA_ADDR + BIOS_DATA_SIZE
    assert (start, end) == (layout.BIOS_DATA_ADDR, block_end)
    assert block_end <= 0x10000
