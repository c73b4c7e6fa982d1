"""The case arguments, defined once for ``boot``, ``diff``, ``matrix`` and ``fuzz``.

A flag means the same thing in every subcommand that takes it: ``--kernel`` names a
pinned kernel or a bzImage, ``--mem`` and the initrd sizes are binary sizes, the
entry and compression choices are the enums' values.  ``boot`` and ``diff`` take one
whole case (:func:`add_case_arguments`, :func:`case_from_args`); ``matrix`` takes
lists of values and ``fuzz`` bounds, built from the same pieces.
"""

from __future__ import annotations

import argparse
import math

from bootfuzz.arch import Arch
from bootfuzz.case import (
    HARNESS_CMDLINE,
    NO_INITRD,
    SEED_LIMIT,
    BootCase,
    CpuTemplate,
    EntryProtocol,
    InitrdPlacement,
    InitrdSpec,
    Overrides,
    harness_cmdline,
)
from bootfuzz.cmdline import from_argv
from bootfuzz.compression import Compression
from bootfuzz.errors import ConfigError
from bootfuzz.units import parse_size

DEFAULT_MEMORY = "256M"
DEFAULT_INITRD_SIZE = "1M"

KERNEL_HELP = "a pinned kernel name (bootfuzz kernels list) or a bzImage path"
ENTRIES: tuple[str, ...] = tuple(e.value for e in EntryProtocol)
COMPRESSIONS: tuple[str, ...] = tuple(c.value for c in Compression)
ENTRY_HELP = ("entry protocol: 64 (long mode at load+0x200, RSI = zero page), 32 "
              "(protected mode, ESI = zero page), 16 (real mode through the kernel's "
              "setup code and our BIOS), pvh (hvm_start_info), vmlinux (the ELF's own "
              "64-bit entry, no decompressor)")


def size(text: str) -> int:
    """argparse type for sizes such as 256M, 5G (bootfuzz.units)."""
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    """argparse type for a duration: a finite number of seconds above zero (a zero or
    negative timeout would end every boot before it starts)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return value


def _integer_from(text: str, least: int, hint: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text!r}: {hint}")
    return value


def count_or_none(text: str) -> int:
    """argparse type for a budget that 0 turns off: a non-negative integer."""
    return _integer_from(text, 0, "give 0 (none) or more")


def count(text: str) -> int:
    """argparse type for how many times, boots or jobs: an integer of at least 1."""
    return _integer_from(text, 1, "give an integer of at least 1")


def seed(text: str) -> int:
    """argparse type for a payload seed: an integer in 0 .. 2**64-1."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0 .. 2**64-1")
    return value


def address(text: str) -> int:
    """argparse type for an address: decimal or 0x hex."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (decimal or 0x...)"
                                         ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: an address is not negative")
    return value


def mem_hole(text: str) -> tuple[int, int]:
    """argparse type for ADDR:SIZE (a memory hole)."""
    addr_text, sep, size_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: give ADDR:SIZE, e.g. 0xc0000000:256M")
    return address(addr_text), size(size_text)


def case_arch(args: argparse.Namespace) -> Arch:
    """--arch, else the pinned kernel's architecture, else the image header's."""
    if getattr(args, "arch", None):
        return Arch.parse(args.arch)
    from bootfuzz.kernel.pinned import load_manifest

    pinned = load_manifest().get(args.kernel)
    if pinned is not None:
        return Arch.parse(pinned.arch)
    from pathlib import Path

    from bootfuzz.kernel.dt_image import is_dt_image, load_dt_image

    path = Path(args.kernel)
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return Arch.X86_64  # the kernel resolver says what is wrong with the path
    return load_dt_image(path).arch if is_dt_image(head) else Arch.X86_64


def add_case_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of one boot case, in a "case" group."""
    g = parser.add_argument_group("case")
    g.add_argument("--kernel", required=True, metavar="NAME|PATH", help=KERNEL_HELP)
    g.add_argument("--mem", type=size, default=parse_size(DEFAULT_MEMORY), metavar="SIZE",
                   help=f"guest RAM, e.g. 256M, 5G (QEMU -m); default {DEFAULT_MEMORY}")
    g.add_argument("--initrd-size", type=size, default=parse_size(DEFAULT_INITRD_SIZE),
                   metavar="SIZE", help="size of the /payload file inside the initramfs; "
                   f"default {DEFAULT_INITRD_SIZE}")
    g.add_argument("--initrd-compression", default=Compression.GZIP.value, metavar="NAME",
                   choices=[*COMPRESSIONS, NO_INITRD],
                   help=f"initramfs compression: {', '.join(COMPRESSIONS)}; or {NO_INITRD} "
                   "to boot without an initrd; default gzip")
    g.add_argument("--initrd-seed", type=seed, default=0, metavar="N",
                   help="seed of the payload content; default 0")
    g.add_argument("--initrd-split", action="store_true",
                   help="two concatenated archives: /init uncompressed, then the payload "
                   "compressed (as distributions ship early microcode + main initramfs)")
    g.add_argument("--initrd-raw", action="store_true",
                   help="no cpio archive: the payload alone (the kernel rejects it, so no "
                   "/init runs and the boot must end in the no-root panic)")
    g.add_argument("--cmdline", default="", type=from_argv, metavar="TEXT",
                   help=f"arguments appended to the harness's {HARNESS_CMDLINE!r} after "
                   "one space, as the bytes given (UTF-8 or not, newlines too)")
    g.add_argument("--raw-cmdline", default=None, type=from_argv, metavar="TEXT",
                   help="the whole command line, exactly the bytes given (the console "
                   "and panic settings are then yours to give)")
    g.add_argument("--entry", default=EntryProtocol.BOOT64.value, choices=ENTRIES,
                   help=f"{ENTRY_HELP}; default 64")
    g.add_argument("--cpu-template", default=CpuTemplate.BASELINE.value,
                   choices=[t.value for t in CpuTemplate],
                   help="the CPU the kvm backend shows the guest: baseline (a fixed x86-64 "
                   "CPU, the same on every host) or host (all this host's KVM offers, not "
                   "reproducible elsewhere); docs/cpu-templates.md; default baseline")
    g.add_argument("--arch", default=None, metavar="ARCH",
                   help="guest architecture: x86_64 (amd64), aarch64 (arm64) or riscv64; "
                   "default: the pinned kernel's (its manifest arch) or the image's header")
    g.add_argument("--mem-hole", type=mem_hole, action="append", default=[],
                   metavar="ADDR:SIZE", help="device-tree machines: leave this RAM out of "
                   "the /memory nodes (repeatable), e.g. 0xc0000000:256M")
    d = parser.add_argument_group(
        "loader decisions", "taken out of the loader's hands (our loader only: a peer "
        "makes its own)")
    d.add_argument("--initrd-placement", default=InitrdPlacement.TOP.value,
                   choices=[p.value for p in InitrdPlacement],
                   help="top: highest page below initrd_addr_max (QEMU, GRUB); low: right "
                   "above the kernel; high: above 4 GiB through ext_ramdisk_image")
    d.add_argument("--cmdline-addr", type=address, default=None, metavar="ADDR",
                   help="put the command line at ADDR (above 4 GiB: through ext_cmd_line_ptr)")
    d.add_argument("--kernel-load", type=address, default=None, metavar="ADDR",
                   help="load the kernel at ADDR instead of pref_address (the decompressor "
                   "picks its run address by the protocol's rule; PVH needs 6.12's "
                   "PHYS32_RELOC)")


def initrd_from_args(args: argparse.Namespace) -> InitrdSpec | None:
    if args.initrd_compression == NO_INITRD:
        if args.initrd_split or args.initrd_raw:
            raise ConfigError(f"--initrd-compression {NO_INITRD}: there is no initrd to "
                              "split or leave raw")
        return None
    return InitrdSpec(args.initrd_size, Compression(args.initrd_compression), args.initrd_seed,
                      split=args.initrd_split, raw=args.initrd_raw)


def case_from_args(args: argparse.Namespace, backend: str = "qemu-tcg") -> BootCase:
    """The case :func:`add_case_arguments` describes, to be run on *backend*."""
    arch = case_arch(args)
    base = harness_cmdline(arch)
    if args.raw_cmdline is not None:
        cmdline = args.raw_cmdline
    else:  # the user's bytes exactly: a trailing space or newline is theirs to give
        cmdline = f"{base} {args.cmdline}" if args.cmdline else base
    return BootCase(
        kernel=args.kernel,
        memory=args.mem,
        cmdline=cmdline,
        initrd=initrd_from_args(args),
        entry=EntryProtocol(args.entry),
        backend=backend,
        overrides=Overrides(kernel_load=args.kernel_load, cmdline_addr=args.cmdline_addr),
        initrd_placement=InitrdPlacement(args.initrd_placement),
        cpu_template=CpuTemplate(args.cpu_template),
        arch=arch,
        mem_holes=tuple(getattr(args, "mem_hole", ())),
    )


def add_guest_timeouts(group: argparse._ArgumentGroup, timeout: float, silence: float,
                       *, learned: bool = False) -> None:
    """``--timeout`` and ``--silence-timeout`` with these defaults.  *learned*: the
    silence timeout defaults to one learned per kernel (bootfuzz.run.silence; the
    option's value is then None), *silence* only for a kernel never seen."""
    group.add_argument("--timeout", type=seconds, default=timeout, metavar="SECONDS",
                       help=f"give up on a guest after this long; default {timeout:.0f}")
    if learned:
        from bootfuzz.run.silence import FLOOR, GAP_FACTOR, MIN_BOOTS

        default = (f"learned per kernel: {GAP_FACTOR:g}x the longest gap between console "
                   f"lines of its passing boots, at least {FLOOR:g} s ({silence:.0f} until "
                   f"{MIN_BOOTS} have passed, and for an initrd heavier than any that "
                   "passed); a guest halted with interrupts off ends at once")
    else:
        default = f"{silence:.0f}"
    group.add_argument("--silence-timeout", type=seconds, default=None if learned else silence,
                       metavar="SECONDS",
                       help="give up after this long without console output (a hang); "
                       f"default {default}")
