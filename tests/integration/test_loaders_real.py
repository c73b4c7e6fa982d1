"""Real loaders booting a pinned kernel for real, judged by the validity oracles.

The default suite boots one case per loader family: GRUB on BIOS, SYSLINUX, and the
kernel's EFI stub under OVMF (the EFI map oracles).  Every loader at 256M and 5G and the
diff against ours run when ``BOOTFUZZ_LOADER_TESTS=all`` (``nox -s loaders``): each boot
takes 8-30 s of TCG, too much for every CI run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bootfuzz.judge.verdict import Verdict
from bootfuzz.peers.differential import compare
from bootfuzz.peers.loaders import (
    DEFAULT_OVMF_DIR,
    GRUB_EFI_DIR,
    GRUB_PC_DIR,
    ISOLINUX_DIR,
    OVMF_CODE,
    SYSTEMD_BOOT_EFI,
    Loader,
)
from bootfuzz.peers.targets import OursTarget, parse_target
from tests.target_runs import case, explain

pytestmark = pytest.mark.qemu
TIMEOUT = 240.0
ALL = os.environ.get("BOOTFUZZ_LOADER_TESTS") == "all"
#: What each loader needs installed (Debian packages), checked before booting.
NEEDS: dict[Loader, tuple[Path, str]] = {
    Loader.GRUB_BIOS: (GRUB_PC_DIR, "grub-pc-bin"),
    Loader.GRUB_BIOS_LINUX16: (GRUB_PC_DIR, "grub-pc-bin"),
    Loader.GRUB_EFI: (GRUB_EFI_DIR, "grub-efi-amd64-bin"),
    Loader.SYSLINUX: (ISOLINUX_DIR / "isolinux.bin", "isolinux and syslinux-common"),
    Loader.EFI_STUB: (DEFAULT_OVMF_DIR / OVMF_CODE, "ovmf"),
    Loader.SYSTEMD_BOOT: (SYSTEMD_BOOT_EFI, "systemd-boot-efi"),
}
TOOLS = {Loader.GRUB_BIOS: "grub-mkrescue", Loader.GRUB_BIOS_LINUX16: "grub-mkrescue",
         Loader.GRUB_EFI: "grub-mkrescue", Loader.SYSLINUX: "xorriso",
         Loader.SYSTEMD_BOOT: "mcopy"}
#: One per family in the default suite; the rest with BOOTFUZZ_LOADER_TESTS=all.
CI_LOADERS = (Loader.GRUB_BIOS, Loader.SYSLINUX, Loader.EFI_STUB)


def _installed(loader: Loader) -> None:
    path, package = NEEDS[loader]
    if not path.exists():
        pytest.skip(f"{path} is missing (Debian package {package}): {loader.value} cannot run")
    tool = TOOLS.get(loader)
    if tool and shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed: {loader.value}'s boot media cannot be built")


def _selected(loader: Loader, mem: str) -> None:
    if not ALL and (loader not in CI_LOADERS or mem != "256M"):
        pytest.skip("not in the default suite (one boot per loader family); "
                    "BOOTFUZZ_LOADER_TESTS=all runs it (nox -s loaders)")


@pytest.mark.parametrize("mem", ["256M", "5G"])
@pytest.mark.parametrize("loader", list(Loader), ids=[ld.value for ld in Loader])
def test_loader_boots_6_1_cloud_valid(loader: Loader, mem: str, tmp_path: Path) -> None:
    _selected(loader, mem)
    _installed(loader)
    run = parse_target(loader.value).run(case(mem), tmp_path, timeout=TIMEOUT,
                                         silence_timeout=90)
    assert run.verdict is Verdict.PASS, explain(run)
    names = {r.name for r in run.validity}
    if run.promises.memory_map.efi:
        # Judged on the UEFI map the kernel printed (efi=debug was put first).
        assert {"efi-ram", "efi-e820", "ramdisk-rule"} <= names
        assert "ram-total" not in names
        assert run.request.cmdline.startswith(b"efi=debug ")
    else:
        assert {"ram-total", "ramdisk-rule", "e820-gap"} <= names
    assert not (tmp_path / "OVMF_VARS.fd").exists()  # the per-run variable store is gone


@pytest.mark.parametrize("loader", [Loader.GRUB_BIOS, Loader.EFI_STUB],
                         ids=["grub-bios", "efi-stub"])
def test_diff_ours_vs_loader_5g(loader: Loader, tmp_path: Path) -> None:
    _selected(loader, "5G")
    _installed(loader)
    c = case("5G")
    ours = OursTarget().run(c, tmp_path / "ours", timeout=TIMEOUT, silence_timeout=90)
    peer = parse_target(loader.value).run(c, tmp_path / "peer", timeout=TIMEOUT,
                                          silence_timeout=90)
    assert peer.verdict is Verdict.PASS, explain(peer)
    rows = {r.field: r for r in compare(ours, peer).rows}
    cmd = rows["Command line"]
    assert cmd.differs  # each loader adds its own words (BOOT_IMAGE=, initrd=, efi=debug)
    assert "Command line: " in cmd.right_evidence[0].text
    assert rows["RAMDISK"].differs


def test_command_template_boots_grub_media(tmp_path: Path) -> None:
    """A user's QEMU command booting the GRUB ISO bootfuzz built for the case."""
    from bootfuzz.peers.targets import CommandTarget, load_template

    _selected(Loader.GRUB_BIOS, "5G")
    _installed(Loader.GRUB_BIOS)
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "grub-bios-own.toml"
    run = CommandTarget(load_template(example)).run(case("256M"), tmp_path, timeout=TIMEOUT,
                                                    silence_timeout=90)
    assert run.verdict is Verdict.PASS, explain(run)
    assert any(a.endswith(".iso,format=raw,if=ide,media=cdrom,readonly=on") for a in run.argv)
