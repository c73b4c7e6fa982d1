"""Real loaders as targets without booting: configuration writers, refusals, promises,
target specs, and the content-addressed media cache (mtools, when installed)."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bootfuzz.case import HARNESS_CMDLINE, BootCase, EntryProtocol, InitrdSpec, Overrides
from bootfuzz.errors import BackendError
from bootfuzz.judge.promises import MemoryMapSource
from bootfuzz.peers.loaders import (
    Loader,
    RealLoader,
    grub_cfg,
    grub_words,
    isolinux_cfg,
    parse_loader,
    systemd_boot_files,
)
from bootfuzz.peers.media import (
    MEDIA_CACHE_ENV,
    MediaFile,
    MediaKind,
    MediaRefusal,
    MediaSpec,
    cached_media,
)
from bootfuzz.peers.targets import LoaderTarget, TargetSpecError, parse_target


def test_every_loader_is_a_target_spec_with_its_promises() -> None:
    for loader in Loader:
        target = parse_target(loader.value)
        assert isinstance(target, LoaderTarget)
        assert target.name == loader.value
        assert target.promises.entry_note(EntryProtocol.BOOT64)
        assert target.promises.gap is not None
    assert parse_target("grub-bios:/opt/grub/i386-pc").name == "grub-bios:/opt/grub/i386-pc"
    with pytest.raises(TargetSpecError, match="grub-bios"):
        parse_target("lilo")


def test_efi_loaders_read_the_uefi_map() -> None:
    sources = {loader: RealLoader(loader).promises(True).memory_map for loader in Loader}
    assert sources == {
        Loader.GRUB_BIOS: MemoryMapSource.FIRMWARE_E820,
        Loader.GRUB_BIOS_LINUX16: MemoryMapSource.FIRMWARE_E820,
        Loader.SYSLINUX: MemoryMapSource.FIRMWARE_E820,
        Loader.GRUB_EFI: MemoryMapSource.EFI_LOADER,
        Loader.EFI_STUB: MemoryMapSource.EFI_STUB,
        Loader.SYSTEMD_BOOT: MemoryMapSource.EFI_STUB,
    }


def test_efi_loaders_get_efi_debug_appended() -> None:
    assert RealLoader(Loader.EFI_STUB).loader_cmdline(b"a=1") == b"efi=debug a=1"
    # First, so that a "--" (init's arguments follow) cannot swallow it.
    assert RealLoader(Loader.SYSTEMD_BOOT).loader_cmdline(b"a=1 --") == b"efi=debug a=1 --"
    assert RealLoader(Loader.GRUB_BIOS).loader_cmdline(b"a=1") == b"a=1"


def test_cmdline_additions_follow_the_initrd() -> None:
    stub, sdboot = RealLoader(Loader.EFI_STUB), RealLoader(Loader.SYSTEMD_BOOT)
    assert stub.promises(True).kernel_cmdline(b"x") == b"x initrd=initrd"
    assert stub.promises(False).kernel_cmdline(b"x") == b"x"
    assert sdboot.promises(True).kernel_cmdline(b"x") == b"initrd=\\initrd.img x"
    assert sdboot.promises(False).kernel_cmdline(b"x") == b"x"
    assert RealLoader(Loader.GRUB_BIOS).promises(False).kernel_cmdline(b"x") == (
        b"BOOT_IMAGE=/vmlinuz x")
    syslinux = RealLoader(Loader.SYSLINUX)
    assert syslinux.promises(True).kernel_cmdline(b"x") == (
        b"BOOT_IMAGE=/vmlinuz x initrd=/initrd.img")
    # Found by bootfuzz matrix --loaders: without INITRD, SYSLINUX adds no initrd= word.
    assert syslinux.promises(False).kernel_cmdline(b"x") == b"BOOT_IMAGE=/vmlinuz x"


def test_grub_words_one_quoted_word_per_kernel_token() -> None:
    assert grub_words(b'a=1 b="x  y" c') == b"'a=1' 'b=\"x  y\"' 'c'"
    assert grub_words(b"q='1'") == b"'q='\\''1'\\'''"
    assert grub_words(b"") == b""
    for bad in (b"a  b", b" a", b"a ", b"a\nb", b"a\x00b"):
        with pytest.raises(MediaRefusal):
            grub_words(bad)


def test_grub_cfg_linux16_and_no_initrd() -> None:
    cfg = grub_cfg(b"a=1", initrd=False, linux16=True)
    assert b"\nif linux16 /vmlinuz 'a=1'; then\n  boot\nfi\n" in cfg
    assert b"initrd" not in cfg
    cfg = grub_cfg(b"a=1", initrd=True, linux16=False)
    assert b"\nif linux /vmlinuz 'a=1'; then\n  if initrd /initrd.img; then boot; fi\nfi\n" in cfg
    assert cfg.endswith(b"\nhalt\n")


def test_isolinux_and_systemd_boot_configs_carry_the_line_verbatim() -> None:
    cfg = isolinux_cfg(b'a="x  y"', initrd=True)
    assert b"  INITRD /initrd.img\n  APPEND a=\"x  y\"\n" in cfg
    with pytest.raises(MediaRefusal):
        isolinux_cfg(b" a", initrd=False)
    files = {f.name: f.data for f in systemd_boot_files(b"a=1  b", initrd=True)}
    assert files["loader/entries/case.conf"] == (
        b"title bootfuzz case\nlinux /vmlinuz\ninitrd /initrd.img\noptions a=1  b\n")
    assert files["loader/loader.conf"] == b"timeout 0\ndefault case.conf\n"
    with pytest.raises(MediaRefusal):
        systemd_boot_files(b"a ", initrd=False)


def _case(**kw: object) -> BootCase:
    base = BootCase(kernel="debian-6.1-cloud", memory=256 << 20, cmdline=HARNESS_CMDLINE,
                    initrd=InitrdSpec(1 << 20))
    return replace(base, **kw)  # type: ignore[arg-type]


def test_unsupported_says_why() -> None:
    grub = parse_target("grub-bios")
    assert grub.unsupported(_case()) is None
    assert "entry pvh" in (grub.unsupported(_case(entry=EntryProtocol.PVH)) or "")
    ov = Overrides(initrd_addr=0x1000000)
    assert "overrides" in (grub.unsupported(_case(overrides=ov)) or "")
    assert "control byte 0x0a" in (grub.unsupported(_case(cmdline="a\nb")) or "")
    # SYSLINUX takes repeated spaces; GRUB cannot.
    assert parse_target("syslinux").unsupported(_case(cmdline="a  b")) is None
    assert "single spaces" in (grub.unsupported(_case(cmdline="a  b")) or "")


def test_missing_user_build_is_one_clear_error(tmp_path: Path) -> None:
    loader = parse_loader(f"grub-bios:{tmp_path / 'nope'}")
    assert loader is not None
    with pytest.raises(BackendError, match="nope is missing"):
        loader.media(tmp_path / "k", None, b"a")


def test_media_key_ignores_nothing_that_matters(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 100)
    tool = tmp_path / "tool"
    tool.write_bytes(b"T")

    def spec(cfg: bytes) -> MediaSpec:
        return MediaSpec(MediaKind.ESP_FAT, (MediaFile("vmlinuz", kernel),
                                             MediaFile("c.conf", data=cfg)), (tool,))

    assert spec(b"a").key() == spec(b"a").key()
    assert spec(b"a").key() != spec(b"b").key()
    before = spec(b"a").key()
    kernel.write_bytes(b"L" * 101)
    assert spec(b"a").key() != before


@pytest.mark.skipif(shutil.which("mformat") is None or shutil.which("mcopy") is None,
                    reason="mtools is not installed (Debian package mtools): no ESP image")
def test_esp_image_built_once_then_reused_and_evicted(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(4096))
    tool = tmp_path / "BOOTX64.EFI"
    tool.write_bytes(b"MZ" + bytes(510))

    def spec(cfg: bytes) -> MediaSpec:
        return MediaSpec(MediaKind.ESP_FAT, (
            MediaFile("vmlinuz", kernel), MediaFile("EFI/BOOT/BOOTX64.EFI", tool),
            MediaFile("loader/entries/case.conf", data=cfg)), (tool,))

    cache = tmp_path / "cache"
    first = cached_media(spec(b"options a"), cache)
    inode = first.stat().st_ino
    assert cached_media(spec(b"options a"), cache) == first
    assert first.stat().st_ino == inode  # not rebuilt
    out = shutil.which("mtype")
    if out:
        import subprocess

        shown = subprocess.run([out, "-i", str(first), "::/loader/entries/case.conf"],
                               capture_output=True, check=True).stdout
        assert shown == b"options a"
    monkeypatch.setenv(MEDIA_CACHE_ENV, str(first.stat().st_size + 1))
    second = cached_media(spec(b"options b"), cache)
    assert second != first and second.exists()
    assert not first.exists()  # the least recently used went over the cap


EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_command_template_media_names_a_loader(tmp_path: Path) -> None:
    from bootfuzz.peers.targets import CommandTarget, CommandTemplate, TemplateError, load_template

    own = load_template(EXAMPLES / "grub-bios-own.toml")
    assert own.media == "grub-bios:/usr/lib/grub/i386-pc"
    assert "media" in own.fields
    target = CommandTarget(own)
    assert target.promises.cmdline_prefix == b"BOOT_IMAGE=/vmlinuz "
    assert "single spaces" in (target.unsupported(_case(cmdline="a  b")) or "")
    with pytest.raises(TemplateError, match="need media"):
        CommandTemplate(("qemu", "{media}"))
    with pytest.raises(TemplateError, match="not a loader"):
        CommandTemplate(("qemu", "{media}"), media="lilo")
    bad = tmp_path / "t.toml"
    bad.write_text('argv = ["q"]\nmedia = 3\n')
    with pytest.raises(TemplateError, match="media must be a string"):
        load_template(bad)


def test_kernel_started_quotes_the_loaders_complaint() -> None:
    from bootfuzz.judge.verdict import Verdict
    from bootfuzz.peers.loaders import judge_kernel_started

    grub = "\x1b[0m\x1b[30mWelcome to GRUB!\r\n\x1b[H\x1b[Jerror: out of memory.\r\nbootfuzz: x\n"
    r = judge_kernel_started(grub, 0)
    assert r.verdict is Verdict.FAIL and r.observed == "error: out of memory."
    quiet = judge_kernel_started("a\nb\nc\nd\n", 0)
    assert quiet.observed == "b / c / d"  # no complaint: the last words
    assert judge_kernel_started("[ 0.0] Linux version 6.1\n", 1).verdict is Verdict.PASS
