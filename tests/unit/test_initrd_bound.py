"""An initrd that cannot fit is refused before it is built (issue 13: a 4000M initrd
for a 256M guest was compressed for 116 s and left in the cache, then refused)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootfuzz.case import BootCase, InitrdSpec
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.cli.main import main
from bootfuzz.compression import Compression, lzop_available
from bootfuzz.errors import LayoutError
from bootfuzz.guest.initrd import build_initrd
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.platform import qemu_pc
from bootfuzz.run.boot import check_initrd_fits, initrd_size_floor
from tests.fakes import fake_bzimage

MIB = 1 << 20
IMAGE = parse_kernel_image(fake_bzimage(init_size=0x3378000))
COMPRESSIONS = [c for c in Compression if c is not Compression.LZO or lzop_available()]


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("form", ["cpio", "split", "raw"])
def test_bound_is_at_most_the_built_size(
    compression: Compression, form: str, agent: Path, tmp_path: Path
) -> None:
    """The bound never exceeds what build_initrd makes, in every form and compression."""
    for size in (0, 1, 4096, 300_000):
        spec = InitrdSpec(size, compression, seed=size, split=form == "split",
                          raw=form == "raw")
        built = build_initrd(spec, agent, tmp_path / f"{form}-{size}")
        assert initrd_size_floor(spec) <= built.size, (spec, built.size)


def test_only_an_uncompressed_raw_empty_payload_has_a_zero_floor() -> None:
    """A cpio archive of an empty payload still holds /init: planning it must not take it
    for an empty initrd (which the loader refuses)."""
    assert initrd_size_floor(InitrdSpec(0, Compression.GZIP)) >= 1
    assert initrd_size_floor(InitrdSpec(0, Compression.NONE)) >= 1
    assert initrd_size_floor(InitrdSpec(0, Compression.GZIP, raw=True)) >= 1
    assert initrd_size_floor(InitrdSpec(0, Compression.NONE, raw=True)) == 0
    check_initrd_fits(BootCase("k", 256 * MIB, initrd=InitrdSpec(0, Compression.XZ)), IMAGE,
                      qemu_pc(256 * MIB))


def test_bound_is_close_to_the_payload() -> None:
    assert initrd_size_floor(InitrdSpec(64 * MIB, Compression.NONE)) == 64 * MIB
    assert initrd_size_floor(InitrdSpec(64 * MIB, Compression.XZ)) == 63 * MIB


def test_check_refuses_an_initrd_bigger_than_ram_and_names_why() -> None:
    case = BootCase("k", 256 * MIB, initrd=InitrdSpec(4000 * MIB, Compression.GZIP))
    with pytest.raises(LayoutError, match=r"does not fit.*refused before building it: the "
                       r"initrd holds a 4000M payload of random bytes, so it is at least "
                       r"4128768000 bytes"):
        check_initrd_fits(case, IMAGE, qemu_pc(case.memory))
    check_initrd_fits(BootCase("k", 256 * MIB, initrd=InitrdSpec(64 * MIB)), IMAGE,
                      qemu_pc(256 * MIB))


def test_check_reports_the_kernels_own_fault_without_the_initrd_note() -> None:
    """A memory too small for the kernel is said as such, not blamed on the initrd."""
    case = BootCase("k", 64 * MIB, initrd=InitrdSpec(4000 * MIB))
    with pytest.raises(LayoutError) as exc:
        check_initrd_fits(case, IMAGE, qemu_pc(case.memory))
    assert "too small" in str(exc.value) and "initrd holds" not in str(exc.value)


def test_cli_oversized_initrd_is_refused_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage(init_size=0x3378000))
    code = main(["boot", "--kernel", str(kernel), "--initrd-size", "4000M",
                 "--run-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == ExitStatus.USAGE
    assert err.count("\n") == 1 and "does not fit" in err and "refused before building" in err
    assert not cache.exists() and not (tmp_path / "runs").exists()  # nothing built or run
