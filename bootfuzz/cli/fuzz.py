"""``bootfuzz fuzz``: a boot campaign from the command line."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from bootfuzz.case import HARNESS_CMDLINE, CpuTemplate
from bootfuzz.cli.case_args import KERNEL_HELP, add_guest_timeouts, count, count_or_none, size
from bootfuzz.cli.exits import ExitStatus
from bootfuzz.fuzz.campaign import (
    DEFAULT_BOOT_TIMEOUT,
    DEFAULT_MAX_INITRD,
    DEFAULT_OUT,
    DEFAULT_SILENCE,
    CampaignOptions,
    Runtime,
    run_campaign,
)
from bootfuzz.fuzz.depth import Depth
from bootfuzz.fuzz.generate import DEFAULT_MAX_MEMORY
from bootfuzz.fuzz.minimize import DEFAULT_MAX_BOOTS
from bootfuzz.fuzz.state import CampaignError, load_state
from bootfuzz.fuzz.summary import summary_markdown
from bootfuzz.guest.initrd import CACHE_MAX_ENV, DEFAULT_CACHE_MAX, cache_usage
from bootfuzz.units import format_size

EPILOG = """\
exit status: 0 no failure, 1 failures found (reproducers written under --out),
2 bad options, a state file that does not match them, or another campaign running on
--out, 3 aborted for infrastructure reasons (boots in a row that could not run),
128+N stopped by signal N (SIGINT 130, SIGTERM 143: state saved, --resume continues)."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([hms]?)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "30m", "2h", "1h30m"."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION.match(text, pos)
        if m is None or m.end() == pos:
            raise CampaignError(f"--time {text!r}: use a duration like 90s, 30m, 2h or 1h30m")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if total <= 0:
        raise CampaignError(f"--time {text!r}: must be longer than zero")
    return total


def cmdline_bound(text: str) -> int:
    """argparse type for --max-cmdline: every case's line starts with the harness's, so
    a bound below its length could only be broken."""
    value = count(text)
    least = len(HARNESS_CMDLINE.encode())
    if value < least:
        raise argparse.ArgumentTypeError(
            f"{text!r}: every case's command line starts with the harness's {least} bytes "
            f"({HARNESS_CMDLINE!r}); give at least {least}")
    return value


def parse_shard(text: str) -> tuple[int, int]:
    """``i/n`` with 0 <= i < n."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if m is None or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise CampaignError(f"--shard {text!r}: use i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as a CI runner's cgroup sets)."""
    return len(os.sched_getaffinity(0)) or 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Generate boot cases from the boot protocol's edge values (seeded: --seed and "
        "--shard choose exactly which cases run), boot each in its own QEMU, judge it, "
        "de-duplicate failures by signature, minimize each new one and write it as a "
        "reproducer.  Resumable with --resume; summaries in OUT/campaign/.  A failure "
        "is booted again before it counts: one that does not repeat is flaky, one "
        "short of memory below the kernel's memory floor is below-floor; both have "
        "their own sections in the summary and are never findings.  A case without "
        "overrides that the loader refuses is a finding (loader-refused); with "
        "--overrides, what the loader cannot represent is counted as rejected.  Cases "
        "vary every dimension the loader has: the entry path (64, 32, 16, pvh, vmlinux, "
        "as the kernel allows), initrd placement (top, low, above 4 GiB) and form "
        "(split, raw), a relocated kernel, the command line above 4 GiB, setup_data "
        "chains and E820 shapes, all layouts a correct loader could make.")
    p.epilog = EPILOG
    g = p.add_argument_group("campaign")
    g.add_argument("--target", default=None, metavar="TARGET",
                   help="boot every case through this peer instead of our loader (a real "
                   "loader: grub-bios, grub-bios-linux16, grub-efi, syslinux, efi-stub, "
                   "systemd-boot, or any `bootfuzz diff` target spec), judged by the "
                   "validity oracles its promises allow")
    g.add_argument("--kernel", action="append", required=True, metavar="NAME",
                   help=f"{KERNEL_HELP}; repeat for several")
    g.add_argument("--time", default="30m", metavar="DURATION",
                   help="how long to generate new cases, e.g. 90s, 30m, 2h; default 30m")
    g.add_argument("--jobs", type=count, default=usable_cpus(), metavar="N",
                   help="boots at once (one QEMU process each); default the CPUs this "
                   f"process may use ({usable_cpus()} here)")
    g.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                   help=f"reproducers go here, state and summaries in DIR/campaign; "
                   f"default {DEFAULT_OUT}")
    g.add_argument("--seed", type=int, default=None, metavar="S",
                   help="generator seed; default a random one (printed, and kept for --resume)")
    g.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run only cases k with k %% N == I; default 0/1")
    g.add_argument("--resume", action="store_true",
                   help="continue the campaign whose state is in DIR/campaign")
    g.add_argument("--depth", default=Depth.FULL.value, choices=[d.value for d in Depth],
                   help="how far each case is booted: early (to the RAMDISK line: e820, "
                   "cmdline and initrd-placement answer), unpack (through the initramfs "
                   "unpack), full (to the agent); a shallow case that fails, or passes "
                   "with a verdict vector not seen yet, is booted to the end too; "
                   "default full")
    g.add_argument("--backend", default="qemu-tcg", metavar="NAME",
                   help="what runs our loader's boots: qemu-tcg, kvm (our VMM; hardware "
                   "KVM only, measured at the start) or auto (kvm where /dev/kvm is "
                   "hardware-backed, else qemu-tcg); default qemu-tcg")
    g.add_argument("--cpu-template", default=CpuTemplate.BASELINE.value,
                   choices=[t.value for t in CpuTemplate],
                   help="with --backend kvm: the CPU our VMM shows every guest "
                   "(docs/cpu-templates.md); default baseline")
    g.add_argument("--max-cases", type=count, default=None, metavar="N",
                   help="run only the seed's cases 0..N-1 (with --shard, this shard's share "
                   "of them), even if time is left; a resumed campaign finishes the same set")
    c = p.add_argument_group("cases")
    c.add_argument("--mem-min", type=size, default=0, metavar="SIZE",
                   help="smallest guest RAM (QEMU -m); a case also gets at least what the "
                   "loader accepts and, unless --below-floor, the kernel's memory floor "
                   "for its initrd (measured once per kernel by bisection over real "
                   "boots, cached)")
    c.add_argument("--below-floor", action="store_true",
                   help="generate from the least memory the loader accepts, below the "
                   "kernels' memory floors too (a boot there that runs short of memory "
                   "is counted below-floor, never a finding)")
    c.add_argument("--mem-max", type=size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                   help=f"largest guest RAM; default {format_size(DEFAULT_MAX_MEMORY)}")
    c.add_argument("--max-initrd", type=size, default=DEFAULT_MAX_INITRD, metavar="SIZE",
                   help=f"largest initrd payload; default {format_size(DEFAULT_MAX_INITRD)}")
    c.add_argument("--max-cmdline", type=cmdline_bound, default=None, metavar="BYTES",
                   help="longest command line; default each kernel's cmdline_size")
    c.add_argument("--overrides", action="store_true",
                   help="also take loader decisions over (deliberately invalid layouts)")
    c.add_argument("--coverage", action="store_true",
                   help="guided: boot with guest block coverage (QEMU-TCG plugin) and keep "
                   "every case that reached a new kernel block, verdict vector or console "
                   "line in DIR/campaign/corpus as a reproducer; half the cases are then "
                   "mutants of corpus entries, one dimension changed")
    c.add_argument("--corpus", action="append", default=[], metavar="CORPUS",
                   help="with --coverage: seed the corpus from an earlier campaign's "
                   "corpus directory (OUT/campaign/corpus); repeat for several")
    r = p.add_argument_group("boots")
    add_guest_timeouts(r, DEFAULT_BOOT_TIMEOUT, DEFAULT_SILENCE, learned=True)
    r.add_argument("--minimize-boots", type=count_or_none, default=DEFAULT_MAX_BOOTS, metavar="N",
                   help=f"boots per minimization, 0 to skip it; default {DEFAULT_MAX_BOOTS}")
    r.add_argument("--initrd-cache", type=size, default=None, metavar="SIZE",
                   help="cap the initrd cache at SIZE, least recently used images evicted "
                   f"(0: no cap); default ${CACHE_MAX_ENV}, else "
                   f"{format_size(DEFAULT_CACHE_MAX)}")


def options_from_args(args: argparse.Namespace) -> CampaignOptions:
    out = Path(args.out)
    seed = args.seed
    if seed is None:
        state_path = out / "campaign" / "state.json"
        seed = (load_state(state_path).seed if args.resume and state_path.exists()
                else int.from_bytes(os.urandom(4), "little"))
    return CampaignOptions(
        kernels=tuple(args.kernel), seconds=parse_duration(args.time), jobs=args.jobs,
        out=out, seed=seed, shard=parse_shard(args.shard), resume=args.resume,
        min_memory=args.mem_min, max_memory=args.mem_max, max_initrd=args.max_initrd,
        max_cmdline=args.max_cmdline, overrides=args.overrides, timeout=args.timeout,
        silence_timeout=args.silence_timeout, max_boots=args.minimize_boots,
        depth=Depth(args.depth),
        max_cases=args.max_cases, below_floor=args.below_floor,
        guided=args.coverage, coverage=args.coverage,
        corpus=tuple(Path(c) for c in args.corpus), target=args.target,
        backend=campaign_backend(args.backend), cpu_template=CpuTemplate(args.cpu_template),
    )


def campaign_backend(name: str) -> str:
    """The backend every case records: ``auto`` decided once, here (by measuring KVM)."""
    if name != "auto":
        return name
    from bootfuzz.run.doctor import pick_backend

    return pick_backend()


def _target_runtime(args: argparse.Namespace, opts: CampaignOptions) -> Runtime | None:
    """With --target: boots through the peer (floors still from our loader's cache)."""
    from bootfuzz.fuzz.target_boot import (
        TargetBoot,
        TargetKernels,
        check_campaign_target,
        harness_overhead,
        learn_floors_with_ours,
    )

    target = getattr(args, "target", None)
    check_campaign_target(opts.work_dir, target, opts.resume)
    if target is None:
        return None
    if getattr(args, "coverage", False):
        raise CampaignError("--coverage measures our boots; a --target campaign has none")
    return Runtime(boot=TargetBoot(target), floors=learn_floors_with_ours,
                   kernels=TargetKernels(harness_overhead(target)))


#: The options a device-tree campaign does not have, at their defaults (a value other
#: than these is refused rather than ignored).
X86_ONLY_DEFAULTS: dict[str, object] = {
    "depth": Depth.FULL.value, "coverage": False, "corpus": [],
    "target": None, "below_floor": False, "mem_min": 0, "max_initrd": DEFAULT_MAX_INITRD,
    "max_cmdline": None,
}


def _run_dt(args: argparse.Namespace) -> int:
    """arm64/riscv64 kernels: the device-tree campaign (bootfuzz.fuzz.dt_campaign)."""
    from bootfuzz.fuzz.dt_campaign import read_seed, run_dt_campaign
    from bootfuzz.fuzz.dt_campaign import summary_markdown as dt_summary

    if args.backend not in ("qemu-tcg", "auto") or args.cpu_template != CpuTemplate.BASELINE:
        raise CampaignError("--backend and --cpu-template choose how x86 cases run; "
                            "device-tree kernels run on qemu-virt (QEMU-TCG's virt board)")
    x86_only = [f"--{name.replace('_', '-')}" for name, default in X86_ONLY_DEFAULTS.items()
                if getattr(args, name) != default]
    if x86_only:
        raise CampaignError(f"{', '.join(x86_only)}: not (yet) for a device-tree campaign, "
                            "which has no depths, coverage, targets or memory floors; "
                            "leave them out")
    seed = args.seed if args.seed is not None else (
        read_seed(Path(args.out)) if args.resume else None)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    print(f"bootfuzz fuzz (device tree): seed {seed}, {args.jobs} job(s), out {args.out}",
          file=sys.stderr)
    summary = run_dt_campaign(
        args.kernel, seconds=parse_duration(args.time), seed=seed, out=Path(args.out),
        overrides=args.overrides, jobs=args.jobs, max_cases=args.max_cases,
        max_memory=args.mem_max, resume=args.resume, timeout=args.timeout,
        minimize_boots=args.minimize_boots, shard=parse_shard(args.shard),
        silence=args.silence_timeout if args.silence_timeout is not None else 30.0)
    print(dt_summary(summary))
    if summary.stop_signal:
        return 128 + summary.stop_signal
    return ExitStatus.FINDING if summary.findings else ExitStatus.PASS


def run(args: argparse.Namespace) -> int:
    from bootfuzz.fuzz.dt_campaign import dt_kernels

    if dt_kernels(args.kernel):
        return _run_dt(args)
    opts = options_from_args(args)
    if args.initrd_cache is not None:  # the workers (forked) and their boots read it
        os.environ[CACHE_MAX_ENV] = str(args.initrd_cache)
    print(f"bootfuzz fuzz: seed {opts.seed}, shard {opts.shard[0]}/{opts.shard[1]}, "
          f"{opts.jobs} job(s), {opts.seconds:.0f} s, out {opts.out}; {cache_usage()}",
          file=sys.stderr)
    summary = run_campaign(opts, runtime=_target_runtime(args, opts))
    print(summary_markdown(summary))
    if summary.stop_signal:
        return 128 + summary.stop_signal
    if summary.findings:
        return ExitStatus.FINDING
    return ExitStatus.INFRASTRUCTURE if summary.aborted else ExitStatus.PASS
