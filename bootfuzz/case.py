"""A boot case: everything a user varies, and nothing derived from it.

The loader turns a case into a BootPlan (bootfuzz.loader.plan); everything else about a
boot (addresses, tables, registers) follows from the case and the kernel image.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.arch import Arch
from bootfuzz.compression import Compression, lzo_unsupported, lzop_available
from bootfuzz.errors import InitramfsError

#: What every harness boot needs on the command line: the console our session
#: reads; the polled early console, so setup_arch's lines (Command line, BIOS-e820,
#: RAMDISK) reach the port as they are printed, which a slow backend or a guest that
#: hangs early needs (the kernel hands over to ttyS0 without repeating them); and an
#: immediate reboot on panic so a panicking guest ends the run (the backend turns
#: the reboot into an exit).  Then boot work no oracle looks at, skipped: the crypto
#: self-tests (cryptomgr.notests) and the CPU vulnerability mitigations
#: (mitigations=off: no retpoline patching, no RSB filling), together about a fifth
#: of a TCG boot of the 6.1 cloud kernel (bench/campaign_throughput.py), and the
#: rewrite of every lock prefix for one CPU (noreplace-smp: each write into kernel
#: text makes TCG drop what it translated of that page; 0.92x the boot's CPU time
#: on both cloud kernels, bench/harness_options.py).  ``quiet`` or a lower
#: ``loglevel`` would hide the lines the oracles read.
#:
#: A case records its whole command line (reproducers and case logs too), so a case
#: made with an earlier harness command line replays exactly as it was made.
HARNESS_CMDLINE_BASE = ("console=ttyS0 earlyprintk=serial panic=-1 cryptomgr.notests"
                        " mitigations=off noreplace-smp")
#: Built-in initcalls skipped (initcall_blacklist): those of the pinned kernels that
#: cost the most guest instructions (initcall_debug under QEMU -icount, where time is
#: instructions) and touch nothing a loader gives the kernel or an oracle reads:
#: tracing's set-up (kprobe events, trace eval maps, tracefs); the BPF kfunc sets,
#: whose first registration parses the kernel's whole BTF (~45 M instructions: skip
#: one and the next pays, so every one of them the pinned kernels run at boot), TCP
#: cubic's among them; the KDF and jitter-entropy self-tests; the built-in
#: certificate list; the CMOS RTC driver.  Instructions to "Run /init" without and
#: with them: 6.1 cloud 384 M -> 258 M, 6.12 cloud 797 M -> 467 M, 6.1 generic
#: 511 M -> 392 M, every oracle passing (bench/harness_options.py --icount).
#: Not skipped although costly: inet_init and inet6_init (a boot without them fails
#: an oracle), IMA's init (it reads a SETUP_IMA setup_data's log), PCI (setup_data's
#: SETUP_PCI, BARs against our E820).  A name a kernel lacks is ignored by it.
SKIPPED_INITCALLS: tuple[str, ...] = (
    "init_kprobe_trace", "trace_eval_init", "tracer_init_tracefs",
    "cubictcp_register", "bpf_tcp_ca_kfunc_init", "bpf_dummy_struct_ops_init",
    "bpf_rstat_kfunc_init", "bpf_key_sig_kfuncs_init", "kfunc_init", "bpf_prog_test_run_init",
    "crypto_kdf108_init", "jent_mod_init", "load_system_certificate_list", "cmos_init",
)
HARNESS_CMDLINE = f"{HARNESS_CMDLINE_BASE} initcall_blacklist={','.join(SKIPPED_INITCALLS)}"
#: The harness command lines of earlier versions, newest first: the minimizer keeps
#: any of them whole as it keeps HARNESS_CMDLINE.
EARLIER_HARNESS_CMDLINES: tuple[str, ...] = (
    HARNESS_CMDLINE_BASE,
    "console=ttyS0 earlyprintk=serial panic=-1 cryptomgr.notests mitigations=off",
    "console=ttyS0 earlyprintk=serial panic=-1",
)
#: The same for the device-tree machines (QEMU virt): the console is the board's UART
#: (arm64 PL011 ttyAMA0, riscv64 NS16550A ttyS0) and ``earlycon`` with no argument
#: takes the UART from /chosen/stdout-path, which our DTB sets.  The same initcalls are
#: skipped (those names the arm64 and riscv64 kernels have): a 1 GiB boot with a 2 MiB
#: initrd to our agent, 3 alternating pairs each, every oracle passing: arm64 guest time
#: 2.0 s -> 1.37 s, CPU 0.74x; riscv64 2.27 s -> 2.0 s, CPU ~0.9x.  The bases alone are
#: the lines of the version before.
DT_HARNESS_CMDLINE_BASES = {
    Arch.ARM64: "console=ttyAMA0 earlycon panic=-1 cryptomgr.notests mitigations=off",
    Arch.RISCV64: "console=ttyS0 earlycon panic=-1 cryptomgr.notests mitigations=off",
}
DT_HARNESS_CMDLINES = {
    arch: f"{base} initcall_blacklist={','.join(SKIPPED_INITCALLS)}"
    for arch, base in DT_HARNESS_CMDLINE_BASES.items()
}


def harness_cmdline(arch: Arch) -> str:
    """The harness command line a case of *arch* starts from."""
    return DT_HARNESS_CMDLINES.get(arch, HARNESS_CMDLINE)


def harness_cmdlines(arch: Arch) -> tuple[str, ...]:
    """Every harness command line a case of *arch* may start with, today's first: a case
    made by an earlier version keeps the line it was made with."""
    if arch in DT_HARNESS_CMDLINES:
        return DT_HARNESS_CMDLINES[arch], DT_HARNESS_CMDLINE_BASES[arch]
    return HARNESS_CMDLINE, *EARLIER_HARNESS_CMDLINES


class EntryProtocol(enum.StrEnum):
    """How the loader enters the kernel (boot.rst, "The 64-bit boot protocol" ...)."""

    BOOT64 = "64"  # long mode, paging on, jump to load address + 0x200, RSI = zero page
    BOOT32 = "32"  # protected mode, paging off, jump to the load address, ESI = zero page
    PVH = "pvh"  # the vmlinux's PHYS32_ENTRY note, 32-bit, EBX = hvm_start_info
    REAL16 = "16"  # real mode at the setup code, our BIOS answers its INT calls
    VMLINUX = "vmlinux"  # the ELF's own 64-bit entry, no decompressor (Firecracker style)


class CpuTemplate(enum.StrEnum):
    """The CPU our KVM VMM shows the guest (CPUID), recorded with every case.

    The qemu-tcg backend ignores it: TCG's CPU is QEMU's default model.  What each
    template contains is bootfuzz.run.kvm.cputemplate's to say (docs/cpu-templates.md).
    """

    BASELINE = "baseline"  # a fixed x86-64 CPU: the same guest CPUID on every host
    HOST = "host"  # all this host's KVM supports: faster paths, not reproducible elsewhere


class InitrdPlacement(enum.StrEnum):
    """Where the loader puts the initrd (all page aligned, all outside the kernel)."""

    TOP = "top"  # top of RAM below initrd_addr_max, as QEMU and GRUB do
    LOW = "low"  # right above the kernel's window
    HIGH = "high"  # top of RAM above 4 GiB (ext_ramdisk_*; needs XLF_CAN_BE_LOADED_ABOVE_4G)


#: The largest file a cpio newc header can describe: c_filesize is 8 hex digits
#: (Documentation/driver-api/early-userspace/buffer-format.rst).
MAX_PAYLOAD_SIZE = (1 << 32) - 1
SEED_LIMIT = 1 << 64


def check_payload_seed(seed: object) -> None:
    """Refuse a payload seed that is not an integer in 0 .. 2**64-1."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InitramfsError(f"payload seed {seed!r} is not an integer")
    if not 0 <= seed < SEED_LIMIT:
        raise InitramfsError(f"payload seed {seed} is outside 0 .. 2**64-1")


def check_payload_size(size: object) -> None:
    """Refuse a payload size that is not an integer in 0 .. MAX_PAYLOAD_SIZE."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise InitramfsError(f"payload size {size!r} is not an integer")
    if size < 0:
        raise InitramfsError(f"payload size {size} is negative")
    if size > MAX_PAYLOAD_SIZE:
        raise InitramfsError(
            f"payload size {size} is over {MAX_PAYLOAD_SIZE}, the largest file a cpio "
            "newc header can describe"
        )


#: Where a list of initrd compressions is asked for (``boot --initrd-compression``,
#: ``matrix --initrds``), the word for a boot without an initrd: "none" is an
#: uncompressed cpio archive.
NO_INITRD = "none-initrd"


@dataclass(frozen=True)
class InitrdSpec:
    """What an initrd holds: a payload of *size* bytes made from *seed*, compressed.

    bootfuzz.guest.initrd builds it (the archive's contents are listed there).
    """

    size: int  # exact size of /payload in bytes (0: an empty payload file)
    compression: Compression = Compression.GZIP
    seed: int = 0  # 0 <= seed < 2**64
    #: Two concatenated archives, as distributions ship them (an uncompressed early
    #: cpio, then the compressed main one): /init and /dev in the first, the payload
    #: in the second, compressed.  The kernel must unpack both.
    split: bool = False
    #: Not a cpio archive at all: the payload alone, compressed.  The kernel's unpacker
    #: rejects it (the "looks like an initrd" path), so there is no /init and the
    #: boot must end in the no-root panic.
    raw: bool = False

    def __post_init__(self) -> None:
        check_payload_size(self.size)
        check_payload_seed(self.seed)
        if not isinstance(self.compression, Compression):
            object.__setattr__(self, "compression", Compression.parse(str(self.compression)))
        if self.compression is Compression.LZO and not lzop_available():
            raise lzo_unsupported()
        if self.split and self.raw:
            raise InitramfsError("an initrd is either split cpio archives or raw, not both")


@dataclass(frozen=True)
class SetupDataNode:
    """One ``struct setup_data`` node; the loader places it unless *addr* is given.

    *length* is the header's ``len`` when it is to contradict the payload (a faulty
    loader's node); None writes the payload's size.
    """

    type: int
    payload: bytes
    addr: int | None = None
    length: int | None = None


@dataclass(frozen=True)
class Overrides:
    """Decisions taken out of the loader's hands, to replay another loader's layout.

    Every field left at its default means "the loader decides, by the protocol".
    With overrides the loader writes what it is told, even where the protocol says
    otherwise, and the case runs (bytes where the machine has no RAM are not stored);
    the validity oracles (bootfuzz.judge.layout_rules) then say what is wrong.  Only
    what cannot be represented is refused (docs/platform-rules.md).
    """

    #: boot_params / setup_header fields written last, by their declared names.
    fields: tuple[tuple[str, int], ...] = ()
    initrd_addr: int | None = None
    cmdline_addr: int | None = None
    #: The exact bytes written at the command line's address (a missing NUL included).
    cmdline_raw: bytes | None = None
    #: The E820 table written to the zero page / PVH memory map instead of ours.
    e820: tuple[E820Entry, ...] | None = None
    #: Where the protected-mode code is loaded (the decompressor then picks its run
    #: address from it by the boot protocol's rule).
    kernel_load: int | None = None
    setup_data: tuple[SetupDataNode, ...] = ()
    #: PVH: hvm_start_info fields, and "module0.<field>" of its first module entry,
    #: written last by their declared names (bootfuzz.loader.pvh.START_INFO_FIELDS).
    start_info: tuple[tuple[str, int], ...] = ()

    @property
    def empty(self) -> bool:
        return self == Overrides()


@dataclass(frozen=True)
class DtOverrides:
    """Device-tree decisions taken out of the loader's hands (a faulty loader's DTB).

    Defaults mean "the loader decides"; bootfuzz.judge.dt_rules says what is wrong with
    the result.  Addresses are guest-physical; ranges are (address, size).
    """

    #: /chosen linux,initrd-start / -end as written (the initrd's bytes stay where the
    #: loader put them): a range one page past the initrd, inverted, over the DTB.
    initrd_start: int | None = None
    initrd_end: int | None = None
    #: The /memory nodes written instead of the machine's RAM (one node per range).
    memory: tuple[tuple[int, int], ...] | None = None
    dtb_addr: int | None = None
    #: FDT header fields written last, by their names in bootfuzz.abi.fdt.FDT_HEADER.
    header: tuple[tuple[str, int], ...] = ()
    #: Keep only this many bytes of the DTB (a truncated copy).
    truncate: int | None = None
    #: /memreserve/ entries added to the reservation block.
    reservations: tuple[tuple[int, int], ...] = ()
    #: The root's #address-cells / #size-cells (memory reg is written in them).
    address_cells: int | None = None
    size_cells: int | None = None
    #: /chosen bootargs written exactly (a missing NUL included).
    bootargs_raw: bytes | None = None

    @property
    def empty(self) -> bool:
        return self == DtOverrides()


@dataclass(frozen=True)
class BootCase:
    """One boot: kernel, memory, initrd, command line (the exact string written)."""

    kernel: str  # a pinned kernel name or a path to a bzImage
    memory: int  # bytes of guest RAM
    cmdline: str = HARNESS_CMDLINE
    initrd: InitrdSpec | None = None
    entry: EntryProtocol = EntryProtocol.BOOT64
    backend: str = "qemu-tcg"
    overrides: Overrides = Overrides()
    initrd_placement: InitrdPlacement = InitrdPlacement.TOP
    cpu_template: CpuTemplate = CpuTemplate.BASELINE
    #: The guest architecture; every other than x86_64 boots with a device tree.
    arch: Arch = Arch.X86_64
    #: Device-tree machines: RAM left out of the /memory nodes, as (address, size):
    #: the kernel is told of the machine's RAM around these holes, one node per part.
    mem_holes: tuple[tuple[int, int], ...] = ()
    dt: DtOverrides = DtOverrides()
