"""Sizes as typed on the command line (bootfuzz.units)."""

from __future__ import annotations

import pytest

from bootfuzz.errors import ConfigError
from bootfuzz.units import SizeError, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("4K", 4096),
        ("4k", 4096),
        ("8M", 8 << 20),
        ("1G", 1 << 30),
        ("1g", 1 << 30),
        ("2T", 2 << 40),
        ("0010", 10),
        ("4294967296", 1 << 32),
    ],
)
def test_parse_size_integer_with_optional_suffix_returns_bytes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_fraction_is_refused_with_hint() -> None:
    with pytest.raises(SizeError) as info:
        parse_size("1.5G")
    assert str(info.value) == (
        "size: '1.5G' is not a size: fractions are not accepted; write an integer with an "
        "optional K, M, G or T suffix (binary units), e.g. 512, 4K, 8M, 1G"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "G",
        "-1",
        "+1",
        " 8M",
        "8M ",
        "8 M",
        "8MB",
        "8MiB",
        "8P",
        "0x10",
        "1_000",
        "1e3",
        "\u0661",
    ],
)
def test_parse_size_malformed_is_refused(text: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(text)
    assert str(info.value) == (
        f"size: {text!r} is not a size: write an integer with an optional K, M, G or T "
        "suffix (binary units), e.g. 512, 4K, 8M, 1G"
    )


def test_size_error_is_a_config_error() -> None:
    assert issubclass(SizeError, ConfigError)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (1, "1"), (1023, "1023"), (1024, "1K"), (1025, "1025"), (3 << 20, "3M"),
     ((1 << 30) + (1 << 20), "1025M"), (1 << 40, "1T"), (1 << 50, "1024T")],
)  # fmt: skip
def test_format_size_uses_largest_exact_unit_and_round_trips(value: int, text: str) -> None:
    assert format_size(value) == text
    assert parse_size(text) == value


def test_format_size_negative_is_refused() -> None:
    with pytest.raises(SizeError, match=r"^size: -1 is negative; sizes are byte counts$"):
        format_size(-1)
