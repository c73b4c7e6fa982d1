"""Header parsing: round trips, and one clear error per kind of bad image."""

from __future__ import annotations

import pytest

from bootfuzz.abi.bootparam import SETUP_HEADER, SETUP_HEADER_SIZE, XLoadFlags
from bootfuzz.errors import ImageError
from bootfuzz.kernel.image import SetupHeader, parse_kernel_image
from tests.fakes import DEBIAN_LIKE, fake_bzimage


def test_setup_header_declaration_matches_boot_rst() -> None:
    assert SETUP_HEADER_SIZE == 123
    assert SETUP_HEADER["setup_sects"].offset == 0x1F1
    assert SETUP_HEADER["type_of_loader"].offset == 0x210
    assert SETUP_HEADER["cmd_line_ptr"].offset == 0x228
    assert SETUP_HEADER["init_size"].offset == 0x260
    assert SETUP_HEADER["kernel_info_offset"].end == 0x26C


def test_setup_header_parse_build_round_trip() -> None:
    image = fake_bzimage()
    header = SetupHeader.parse(image)
    assert header.build() == header.raw == image[0x1F1:0x26C]
    for name, value in DEBIAN_LIKE.items():
        assert header[name] == value, name


def test_setup_header_round_trip_changed_fields() -> None:
    header = SetupHeader.parse(fake_bzimage())
    changed = SetupHeader(header.raw, {**header.fields, "init_size": 0x1234000, "ram_size": 7})
    again = SetupHeader.parse(bytes(0x1F1) + changed.build() + bytes(16))
    assert again["init_size"] == 0x1234000 and again["ram_size"] == 7


def test_setup_header_short_header_pads_later_fields_with_zero() -> None:
    # jump EB 62 -> header ends at 0x264: handover_offset and kernel_info_offset absent.
    image = fake_bzimage(jump=0x62EB, handover_offset=5, kernel_info_offset=9)
    header = SetupHeader.parse(image)
    assert len(header.raw) == 0x264 - 0x1F1
    assert header["handover_offset"] == 0 and header["kernel_info_offset"] == 0
    assert not header.present("kernel_info_offset") and header.present("init_size")


def test_field_encode_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit in 1 bytes"):
        SETUP_HEADER["type_of_loader"].encode(0x100)


def test_parse_kernel_image_good_fake() -> None:
    k = parse_kernel_image(fake_bzimage())
    assert k.setup_sects == 3
    assert k.protected_mode_offset == 4 * 512
    assert k.has_64bit_entry and k.relocatable
    assert k.cmdline_size == 2047 and k.initrd_addr_max == 0x7FFFFFFF
    assert XLoadFlags.XLF_CAN_BE_LOADED_ABOVE_4G in k.xloadflags


def test_parse_kernel_image_setup_sects_zero_means_four() -> None:
    k = parse_kernel_image(fake_bzimage(setup_sects=0))
    assert k.setup_sects == 4 and k.protected_mode_offset == 5 * 512


def test_parse_kernel_image_text_file_is_not_a_bzimage() -> None:
    text = b"#!/bin/sh\necho this is not a kernel\n" * 40
    with pytest.raises(ImageError, match=r"not a bzImage: boot_flag at 0x1fe is 0x"):
        parse_kernel_image(text, "notes.txt")


def test_parse_kernel_image_tiny_file_is_too_short() -> None:
    with pytest.raises(ImageError, match=r"x: too short to be a bzImage \(10 bytes"):
        parse_kernel_image(b"0123456789", "x")


def test_parse_kernel_image_bad_hdrs_magic() -> None:
    with pytest.raises(ImageError, match="no 'HdrS' magic"):
        parse_kernel_image(fake_bzimage(header=0x53726449))


def test_parse_kernel_image_truncated() -> None:
    image = fake_bzimage()
    with pytest.raises(ImageError, match="truncated: the header says the protected-mode code"):
        parse_kernel_image(image[: len(image) - 1])


def test_parse_kernel_image_exact_size_is_not_truncated() -> None:
    image = fake_bzimage(pm_size=0x4000)
    assert parse_kernel_image(image).protected_mode_code == image[4 * 512 :]


def test_parse_kernel_image_old_protocol_rejected() -> None:
    with pytest.raises(ImageError, match=r"boot protocol 2.09 is too old"):
        parse_kernel_image(fake_bzimage(version=0x0209))


def test_parse_kernel_image_zimage_rejected() -> None:
    with pytest.raises(ImageError, match="a zImage"):
        parse_kernel_image(fake_bzimage(loadflags=0))


def test_parse_kernel_image_payload_outside_code() -> None:
    with pytest.raises(ImageError, match=r"payload \[0x100, 0x10100\) lies outside"):
        parse_kernel_image(fake_bzimage(payload_length=0x10000))
