"""``bootfuzz kernels list|fetch|show|repin|export|import``: the pinned real kernels."""

from __future__ import annotations

import argparse
from pathlib import Path

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.kernel import pinned
from bootfuzz.kernel.capabilities import find_config, read_capabilities
from bootfuzz.kernel.image import load_kernel_image


def add_arguments(p: argparse.ArgumentParser) -> None:
    ks = p.add_subparsers(dest="kernels_cmd", required=True, metavar="ACTION",
                          parser_class=type(p))
    ks.add_parser("list", help="show the pinned kernels and whether they are cached")
    f = ks.add_parser("fetch", help="download, verify and cache pinned kernels")
    f.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    f.add_argument("--snapshot-url", default=None, metavar="URL",
                   help="when apt-get no longer has a pinned version, take it from Debian's "
                        "snapshot archive (or a mirror of it) at this base URL "
                        "(default: $BOOTFUZZ_SNAPSHOT_URL)")
    sh = ks.add_parser("show", help="what a kernel supports, read from its image and config")
    sh.add_argument("name", metavar="NAME|PATH")
    rp = ks.add_parser("repin", help="pin a kernel to its package's current version")
    rp.add_argument("name", metavar="NAME")
    rp.add_argument("--package", default=None, metavar="PACKAGE",
                    help="pin to another package (a new ABI number)")
    ex = ks.add_parser("export", help="copy cached kernels to DIR (e.g. a CI cache), verified")
    ex.add_argument("dir", metavar="DIR", type=Path)
    ex.add_argument("names", nargs="*", metavar="NAME",
                    help="pinned kernels to export, fetched if needed "
                         "(default: every kernel in the cache, pinned or not)")
    im = ks.add_parser("import", help="verify the kernels a `kernels export` left in DIR "
                                      "and add them to the cache (no network)")
    im.add_argument("dir", metavar="DIR", type=Path)


def _list() -> None:
    for status in pinned.list_kernels():
        k = status.pinned
        state = "cached" if status.cached else "not fetched"
        print(f"{k.name:<20} {k.package}={k.version} ({k.compression}) {state}")
        print(f"{'':<20} {k.description}")


def _fetch(names: list[str], snapshot_url: str | None) -> None:
    for name in names or list(pinned.load_manifest()):
        got = pinned.fetch(name, snapshot_url=snapshot_url)
        how = "downloaded" if got.downloaded else "cached"
        print(f"{name}: {got.vmlinuz} ({how}, sha256 verified)")


def _show_dt(name: str, path: Path) -> None:
    """An arm64 or RISC-V Image: its header and what its configuration enables."""
    from bootfuzz.kernel.dt_capabilities import dt_capabilities
    from bootfuzz.kernel.dt_image import load_dt_image

    caps = dt_capabilities(load_dt_image(path), find_config(name, path))
    rd = ("unknown (no config)" if caps.initrd_compressions is None
          else ", ".join(sorted(c.value for c in caps.initrd_compressions)))
    for label, value in (
        ("architecture", caps.arch), ("file", path), ("entry", "device tree (Image header)"),
        ("text_offset", f"{caps.text_offset:#x}"), ("image_size", f"{caps.image_size:#x}"),
        ("page size", caps.page_size or "unspecified"),
        ("placement", "anywhere in RAM" if caps.anywhere else "near the start of DRAM"),
        ("relocatable", caps.relocatable), ("KASLR", caps.kaslr),
        ("initrd compressions", rd),
        ("unpack message", caps.unpack_message.value if caps.unpack_message else "unknown"),
    ):
        print(f"{label:<20} {value}")


def _show(name: str) -> None:
    path = pinned.resolve_kernel(name)
    from bootfuzz.kernel.dt_image import is_dt_image

    with path.open("rb") as f:
        if is_dt_image(f.read(64)):
            _show_dt(name, path)
            return
    caps = read_capabilities(load_kernel_image(path), find_config(name, path))
    rd = ("unknown (no config)" if caps.initrd_compressions is None
          else ", ".join(sorted(c.value for c in caps.initrd_compressions)))
    for label, value in (
        ("kernel", caps.version), ("file", path),
        ("entries", ", ".join(sorted(e.value for e in caps.entries))),
        ("pvh relocation", caps.pvh_relocatable), ("relocatable", caps.relocatable),
        ("initrd above 4G", caps.initrd_above_4g), ("5-level paging", caps.five_level),
        ("cmdline_size", caps.cmdline_size), ("initrd compressions", rd),
        ("BLK_DEV_RAM", caps.blk_dev_ram or "unknown"),
        ("unpack message", caps.unpack_message.value if caps.unpack_message else "unknown"),
    ):
        print(f"{label:<20} {value}")


def _repin(name: str, package: str | None) -> None:
    got = pinned.repin(name, package=package)
    print(f"{got.name}: pinned to {got.package}={got.version} "
          f"(vmlinuz sha256 {got.vmlinuz_sha256})")


def _export(dest: Path, names: list[str]) -> None:
    for e in pinned.export_kernels(dest, names):
        print(f"{e.vmlinuz_sha256[:16]} {e.package}={e.version}: exported to {e.directory}")


def _import(src: Path) -> None:
    for e, new in pinned.import_kernels(src):
        how = "imported" if new else "already cached"
        print(f"{e.vmlinuz_sha256[:16]} {e.package}={e.version}: {how} (sha256 verified)")


def run(args: argparse.Namespace) -> int:
    if args.kernels_cmd == "list":
        _list()
    elif args.kernels_cmd == "fetch":
        _fetch(args.names, args.snapshot_url)
    elif args.kernels_cmd == "show":
        _show(args.name)
    elif args.kernels_cmd == "export":
        _export(args.dir, args.names)
    elif args.kernels_cmd == "import":
        _import(args.dir)
    else:
        _repin(args.name, args.package)
    return ExitStatus.PASS

