from __future__ import annotations

from bootfuzz.kernel.capabilities import UnpackStart, config_unpack_message, parse_config

CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
# CONFIG_RD_LZO is not set
CONFIG_BLK_DEV_RAM=m
CONFIG_CMDLINE="console=ttyS0"
"""


def test_parse_config_values_and_not_set() -> None:
    cfg = parse_config(CONFIG)
    assert cfg["RD_GZIP"] == "y" and cfg["RD_LZO"] == "n" and cfg["BLK_DEV_RAM"] == "m"
    assert cfg["CMDLINE"] == "console=ttyS0"
    assert "Automatically" not in "".join(cfg)


def test_unpack_message_follows_blk_dev_ram() -> None:
    assert config_unpack_message({"BLK_DEV_RAM": "m"}) is UnpackStart.TRYING
    assert config_unpack_message({"BLK_DEV_RAM": "y"}) is UnpackStart.TRYING
    assert config_unpack_message({"BLK_DEV_RAM": "n"}) is UnpackStart.UNPACKING
    assert config_unpack_message({}) is UnpackStart.UNPACKING
