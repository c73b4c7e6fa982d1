"""The ``bootfuzz`` command.

Exit status: 0 every oracle passed, 1 an oracle failed or could not answer,
2 bad input or usage, 3 infrastructure trouble (backend missing, guest never
started, a kernel that cannot be fetched).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bootfuzz import __version__
from bootfuzz.case import HARNESS_CMDLINE, BootCase, EntryProtocol, InitrdPlacement, Overrides
from bootfuzz.errors import BootfuzzError, ConfigError, HarnessBug, InfrastructureError
from bootfuzz.guest.initramfs import Compression, InitrdSpec
from bootfuzz.judge.oracles import StopPoint, Verdict
from bootfuzz.run.boot import (
    DEFAULT_SILENCE_TIMEOUT,
    DEFAULT_TIMEOUT,
    execute,
    new_run_dir,
    prepare,
)
from bootfuzz.units import parse_size

EXIT_PASS = 0
EXIT_FINDING = 1
EXIT_USAGE = 2
EXIT_INFRASTRUCTURE = 3

_EPILOG = """\
exit status: 0 all oracles pass (replay: the reproducer's expectation is met),
1 an oracle failed or could not answer (replay: expectation not met, or verdicts differ),
2 bad input or usage, 3 infrastructure trouble (backend missing, guest never started)."""


class _ParserError(Exception):
    """argparse's error, caught so main() returns 2 instead of exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _ParserError(f"{self.prog}: error: {message}")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_boot(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "boot", help="boot one case through our loader and judge it",
        description="Lay out a kernel, an initrd and a command line with our own loader, run "
        "it on a backend, and judge what the kernel saw.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("case")
    g.add_argument("--kernel", required=True, metavar="NAME|PATH",
                   help="a pinned kernel name (bootfuzz kernels list) or a bzImage path")
    g.add_argument("--mem", type=_size, default=parse_size("256M"), metavar="SIZE",
                   help="guest RAM, e.g. 256M, 5G (QEMU -m); default 256M")
    g.add_argument("--initrd-size", type=_size, default=parse_size("1M"), metavar="SIZE",
                   help="size of the /payload file inside the initramfs; default 1M")
    g.add_argument("--initrd-compression", default=Compression.GZIP.value, metavar="NAME",
                   choices=[c.value for c in Compression],
                   help="initramfs compression: " + ", ".join(c.value for c in Compression))
    g.add_argument("--initrd-seed", type=int, default=0, metavar="N",
                   help="seed of the payload content; default 0")
    g.add_argument("--initrd-split", action="store_true",
                   help="two concatenated archives: /init uncompressed, then the payload "
                   "compressed (as distributions ship early microcode + main initramfs)")
    g.add_argument("--initrd-raw", action="store_true",
                   help="no cpio archive: the payload alone (the kernel rejects it, so no "
                   "/init runs and the boot must end in the no-root panic)")
    g.add_argument("--cmdline", default="", metavar="TEXT",
                   help=f"arguments appended to the harness's {HARNESS_CMDLINE!r}")
    g.add_argument("--raw-cmdline", default=None, metavar="TEXT",
                   help="the whole command line, exactly (the console and panic "
                   "settings are then yours to give)")
    g.add_argument("--entry", default=EntryProtocol.BOOT64.value,
                   choices=[e.value for e in EntryProtocol],
                   help="entry protocol: 64 (long mode at load+0x200, RSI = zero page), 32 "
                   "(protected mode, ESI = zero page), 16 (real mode through the kernel's "
                   "setup code and our BIOS), pvh (hvm_start_info), vmlinux (the ELF's own "
                   "64-bit entry, no decompressor); default 64")
    g.add_argument("--initrd-placement", default=InitrdPlacement.TOP.value,
                   choices=[p.value for p in InitrdPlacement],
                   help="top: highest page below initrd_addr_max (QEMU, GRUB); low: right "
                   "above the kernel; high: above 4 GiB through ext_ramdisk_image")
    g.add_argument("--cmdline-addr", type=lambda t: int(t, 0), default=None, metavar="ADDR",
                   help="put the command line at ADDR (above 4 GiB: through ext_cmd_line_ptr)")
    g.add_argument("--kernel-load", type=lambda t: int(t, 0), default=None, metavar="ADDR",
                   help="load the kernel at ADDR instead of pref_address (the decompressor "
                   "picks its run address by the protocol's rule; PVH needs 6.12's "
                   "PHYS32_RELOC)")
    r = p.add_argument_group("run")
    r.add_argument("--backend", default="qemu-tcg", metavar="NAME",
                   help="execution backend: qemu-tcg (QEMU -accel tcg runs our machine state), "
                   "kvm (our own VMM on /dev/kvm), auto (kvm where `bootfuzz doctor` measures "
                   "hardware KVM, else qemu-tcg); default qemu-tcg")
    r.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"give up on the guest after this long; default {DEFAULT_TIMEOUT:.0f}")
    r.add_argument("--silence-timeout", type=float, default=DEFAULT_SILENCE_TIMEOUT,
                   metavar="SECONDS", help="give up after this long without console output")
    r.add_argument("--until", default=None, choices=[p.value for p in StopPoint],
                   help="stop the guest as soon as the oracles of this point can answer "
                   "(ramdisk: e820, cmdline, initrd-placement); the rest report unknown")
    r.add_argument("--run-dir", default=None, metavar="DIR",
                   help="parent directory for the run's files (console.log, verdict.json)")
    r.add_argument("--keep-blobs", action="store_true",
                   help="keep the blob files the backend loaded, for inspection")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the result as JSON")
    o.add_argument("-v", "--verbose", action="store_true",
                   help="show expected and observed values for passing oracles too")


def _add_kernels(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("kernels", help="list, fetch or re-pin the pinned real kernels")
    ks = p.add_subparsers(dest="kernels_cmd", required=True, metavar="ACTION",
                          parser_class=_Parser)
    ks.add_parser("list", help="show the pinned kernels and whether they are cached")
    f = ks.add_parser("fetch", help="download, verify and cache pinned kernels")
    f.add_argument("names", nargs="*", metavar="NAME", help="default: all")
    sh = ks.add_parser("show", help="what a kernel supports, read from its image and config")
    sh.add_argument("name", metavar="NAME|PATH")
    rp = ks.add_parser("repin", help="pin a kernel to its package's current version")
    rp.add_argument("name", metavar="NAME")
    rp.add_argument("--package", default=None, metavar="PACKAGE",
                    help="pin to another package (a new ABI number)")


def _add_replay(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser(
        "replay", help="boot a reproducer file again and judge it",
        description="Replay a reproducer (corpus/*.json): the same kernel (sha256 checked), "
        "case and overrides.  With --times N it boots N times and checks every verdict is the "
        "same.", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="a reproducer JSON file")
    p.add_argument("--times", type=int, default=1, metavar="N",
                   help="replay N times; exit 1 if the verdicts differ")
    p.add_argument("--without-overrides", action="store_true",
                   help="replay the case with the loader's own decisions instead")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true")


def _add_doctor(sub: argparse._SubParsersAction[_Parser]) -> None:
    sub.add_parser(
        "doctor", help="report which backends can run here and how fast",
        description="Checks each backend; for kvm it runs a calibration guest and tells "
        "hardware KVM from an emulating one by the measured guest instructions per second.",
    )


def _doctor(args: argparse.Namespace) -> int:
    from bootfuzz.run.doctor import pick_backend, report

    for status in report():
        state = "usable" if status.usable else "NOT usable"
        print(f"{status.name:<9} {state}: {status.detail}")
    print(f"--backend auto picks: {pick_backend()}")
    return EXIT_PASS


def make_parser() -> _Parser:
    parser = _Parser(
        prog="bootfuzz", description="Test harness and fuzzer for the Linux x86 boot protocol.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bootfuzz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    _add_boot(sub)
    _add_replay(sub)
    _add_kernels(sub)
    _add_doctor(sub)
    from bootfuzz.fuzz import campaign, minimize
    from bootfuzz.peers import differential, matrix

    differential.add_parser(sub)
    matrix.add_parser(sub)
    campaign.add_parser(sub)
    minimize.add_parser(sub)
    return parser


def _boot(args: argparse.Namespace) -> int:
    from bootfuzz.cli.report import result_json, result_table

    cmdline = args.raw_cmdline if args.raw_cmdline is not None else (
        f"{HARNESS_CMDLINE} {args.cmdline}".strip()
    )
    case = BootCase(
        kernel=args.kernel,
        memory=args.mem,
        cmdline=cmdline,
        initrd=InitrdSpec(args.initrd_size, Compression(args.initrd_compression),
                          args.initrd_seed, split=args.initrd_split, raw=args.initrd_raw),
        entry=EntryProtocol(args.entry),
        backend=args.backend,
        overrides=Overrides(kernel_load=args.kernel_load, cmdline_addr=args.cmdline_addr),
        initrd_placement=InitrdPlacement(args.initrd_placement),
    )
    prepared = prepare(case)
    run_dir = new_run_dir(case, None if args.run_dir is None else Path(args.run_dir))
    result = execute(prepared, run_dir, timeout=args.timeout,
                     silence_timeout=args.silence_timeout, keep_blobs=args.keep_blobs,
                     until=StopPoint(args.until) if args.until else None)
    doc = result_json(result)
    (run_dir / "verdict.json").write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(result_table(result, verbose=args.verbose))
    return EXIT_PASS if result.verdict is Verdict.PASS else EXIT_FINDING


def _replay(args: argparse.Namespace) -> int:
    import dataclasses

    from bootfuzz.case import Overrides
    from bootfuzz.cli.report import result_json, result_table
    from bootfuzz.fuzz.replay import replay
    from bootfuzz.fuzz.reproducer import load_reproducer

    rep = load_reproducer(Path(args.file))
    if args.without_overrides:
        rep = dataclasses.replace(rep, case=dataclasses.replace(rep.case, overrides=Overrides()),
                                  expect=None)
    outcomes = [replay(rep, timeout=args.timeout) for _ in range(max(1, args.times))]
    signatures = {(o.result.verdict, o.failing) for o in outcomes}
    if args.json:
        print(json.dumps({
            "file": args.file,
            "runs": [{**result_json(o.result), "expectation_met": o.expectation_met,
                      "mismatch": o.mismatch} for o in outcomes],
            "identical": len(signatures) == 1,
        }, indent=2))
    else:
        for i, o in enumerate(outcomes):
            if len(outcomes) > 1:
                print(f"--- replay {i + 1}/{len(outcomes)}")
            print(result_table(o.result, verbose=args.verbose))
            if o.expectation_met is not None:
                print("expectation: " + ("met" if o.expectation_met else f"NOT met: {o.mismatch}"))
        if len(outcomes) > 1:
            print(f"{len(outcomes)} replays: " + (
                "identical verdicts" if len(signatures) == 1 else "VERDICTS DIFFER"))
    if len(signatures) != 1 or any(o.expectation_met is False for o in outcomes):
        return EXIT_FINDING
    if rep.expect is not None:
        return EXIT_PASS
    return EXIT_PASS if outcomes[0].result.verdict is Verdict.PASS else EXIT_FINDING


def _kernels(args: argparse.Namespace) -> int:
    from bootfuzz.kernel import pinned as kernels

    if args.kernels_cmd == "list":
        for status in kernels.list_kernels():
            k = status.pinned
            state = "cached" if status.cached else "not fetched"
            print(f"{k.name:<20} {k.package}={k.version} ({k.compression}) {state}")
            print(f"{'':<20} {k.description}")
        return EXIT_PASS
    if args.kernels_cmd == "fetch":
        names = args.names or list(kernels.load_manifest())
        for name in names:
            got = kernels.fetch(name)
            how = "downloaded" if got.downloaded else "cached"
            print(f"{name}: {got.vmlinuz} ({how}, sha256 verified)")
        return EXIT_PASS
    if args.kernels_cmd == "show":
        from bootfuzz.kernel.capabilities import find_config, read_capabilities
        from bootfuzz.kernel.image import load_kernel_image

        path = kernels.resolve_kernel(args.name)
        caps = read_capabilities(load_kernel_image(path), find_config(args.name, path))
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
        return EXIT_PASS
    pinned = kernels.repin(args.name, package=args.package)
    print(f"{pinned.name}: pinned to {pinned.package}={pinned.version} "
          f"(vmlinuz sha256 {pinned.vmlinuz_sha256})")
    return EXIT_PASS


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "boot":
            return _boot(args)
        if args.command == "replay":
            return _replay(args)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "diff":
            from bootfuzz.peers import differential

            return differential.run(args)
        if args.command == "matrix":
            from bootfuzz.peers import matrix

            return matrix.run(args)
        if args.command in ("fuzz", "minimize"):
            return int(args.func(args))
        return _kernels(args)
    except _ParserError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(f"bootfuzz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InfrastructureError as exc:
        print(f"bootfuzz: infrastructure: {exc}", file=sys.stderr)
        return EXIT_INFRASTRUCTURE
    except HarnessBug as exc:
        print(f"bootfuzz: internal error (a bug in bootfuzz): {exc}", file=sys.stderr)
        return EXIT_INFRASTRUCTURE
    except BootfuzzError as exc:
        print(f"bootfuzz: {exc}", file=sys.stderr)
        return EXIT_INFRASTRUCTURE
    except KeyboardInterrupt:
        print("bootfuzz: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    sys.exit(main())

