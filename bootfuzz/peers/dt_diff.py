"""Differential runs on the device-tree machines: our loader against QEMU's own
``-kernel/-initrd/-append`` on ``virt`` (target ``qemu-kernel:virt``).

QEMU's loader writes its own DTB (every virt device, its own memory node, rng-seed,
kaslr-seed on arm64), puts the Image, the initrd and the DTB where hw/arm/boot.c or
hw/riscv/boot.c decide, and on riscv64 runs its bundled OpenSBI (``-bios default``).
We do not know its bytes, so the peer is judged by what any correct loader must give:
the kernel reached our agent; its command line is the one asked for; the initrd was
unpacked and the payload digest is ours; and the kernel's memory (Early memory node
ranges, /proc/iomem) is what the DTB the kernel kept says.  Our side is judged by
every exact oracle as in ``bootfuzz boot``.  Each difference between the two kernels'
views is listed with the value each side showed.

    bootfuzz diff --kernel debian-6.12-cloud-arm64 --peer qemu-kernel:virt

``qemu-kernel:virt:dtb`` hands QEMU's loader our DTB (``-dtb``) instead: QEMU then
edits it (/chosen, and on arm64 the memory nodes), and the differences say what it
rewrote.

``efi-stub:virt`` (arm64) boots the same files through UEFI: edk2's ArmVirtQemu
firmware (Debian's qemu-efi-aarch64) starts the kernel's EFI stub from QEMU's
``-kernel``, hands it the initrd through LoadFile2 and the command line (after
``efi=debug``, so the kernel prints the UEFI memory map); the stub exits boot services
and enters the kernel with a DTB holding no memory nodes, and the kernel takes its
memory from the UEFI map (and its devices from ACPI).  That peer is judged by the same
boot, command-line and payload oracles, and its memory against the map it printed:
every RAM descriptor inside the machine's RAM and all of it described, the kernel's
memory ranges and System RAM as efi-init.c derives them, and the initrd freed in whole
pages of the file.

``u-boot:virt`` boots them through U-Boot's booti (Debian's u-boot-qemu) with the DT
QEMU generated: on arm64 its autoboot loads the kernel and initrd from QEMU's fw_cfg and
writes bootargs, the initrd range (it moves the initrd up), a kaslr-seed and its version
into /chosen; on riscv64 it runs behind OpenSBI as QEMU's -kernel, so the Image is put
at its kernel_addr_r and booti is typed at its prompt (QEMU's /chosen holds the command
line and initrd).  Judged as QEMU's own loader is.  riscv64 has no UEFI peer: Debian 12
ships no UEFI firmware for its virt machine.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootfuzz.arch import Arch
from bootfuzz.case import BootCase
from bootfuzz.errors import BackendError, CmdlineError, ConfigError
from bootfuzz.judge.dt_observation import DtObservation, parse_dt_transcript
from bootfuzz.judge.dt_oracles import initrd_freed_kib, merged_ram
from bootfuzz.judge.efi_map import judge_efi_memblock, judge_efi_ram_range, judge_efi_system_ram
from bootfuzz.judge.oracles import judge_agent_cmdline, judge_boot, judge_cmdline, judge_payload
from bootfuzz.judge.verdict import OracleResult, Verdict, judged, oracle_json, overall
from bootfuzz.loader.fdt_writer import decode_cells
from bootfuzz.loader.virt import OPENSBI_SIZE, RAM_BASE
from bootfuzz.peers.loaders import EFI_DEBUG
from bootfuzz.peers.promises import EDK2_INITRD_OPTION
from bootfuzz.run.backends.qemu_virt import (
    QEMU_BINARIES,
    classify_virt_exit,
    loader_path,
    machine_args,
)
from bootfuzz.run.console import ConsoleReply, Replies, run_console
from bootfuzz.run.dt_boot import execute_dt, prepare_dt
from bootfuzz.transcript import GuestExit, Transcript

PEER_NAME = "qemu-kernel:virt"
#: The same with our DTB handed to QEMU's loader (-dtb): what QEMU rewrites in it.
PEER_DTB_NAME = "qemu-kernel:virt:dtb"
#: The kernel's EFI stub started by edk2 (arm64).
PEER_EFI_NAME = "efi-stub:virt"
#: U-Boot's booti: on arm64 the kernel and initrd loaded from QEMU's fw_cfg; on riscv64
#: (behind OpenSBI) the Image put at its kernel_addr_r and booti typed at its prompt.
PEER_UBOOT_NAME = "u-boot:virt"
PEERS = (PEER_NAME, PEER_DTB_NAME, PEER_EFI_NAME, PEER_UBOOT_NAME)


@dataclass(frozen=True)
class PeerFirmware:
    """Firmware a peer boots through."""

    path: Path
    package: str  # the Debian package that installs it
    #: It starts the kernel's EFI stub (efi=debug first; memory from the UEFI map).
    efi: bool = False
    #: QEMU's -kernel behind OpenSBI (riscv64's S-mode U-Boot): the Image is loaded at
    #: UBOOT_KERNEL_ADDR with -device loader, and booti is typed at U-Boot's prompt with
    #: QEMU's DT (its /chosen holds our -append and -initrd).  Else the firmware is
    #: -bios and takes QEMU's -kernel, -initrd and -append through fw_cfg.
    console_booti: bool = False


#: The firmware peers.  riscv64 has no UEFI peer: Debian 12 ships no UEFI firmware for
#: its virt machine.
FIRMWARE_PEERS: dict[tuple[str, Arch], PeerFirmware] = {
    (PEER_EFI_NAME, Arch.ARM64): PeerFirmware(
        Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"), "qemu-efi-aarch64", efi=True),
    (PEER_UBOOT_NAME, Arch.ARM64): PeerFirmware(
        Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin"), "u-boot-qemu"),
    (PEER_UBOOT_NAME, Arch.RISCV64): PeerFirmware(
        Path("/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin"), "u-boot-qemu",
        console_booti=True),
}
#: riscv64 U-Boot's kernel_addr_r (its default environment, printed by printenv).
UBOOT_KERNEL_ADDR = 0x8400_0000
#: Where QEMU 7.2 puts -initrd on riscv64 virt (hw/riscv/boot.c riscv_load_initrd()):
#: past the -kernel entry by half the RAM, at most 128 MiB.
RISCV_INITRD_MAX_OFFSET = 128 << 20
#: Typed at riscv64 U-Boot: stop its autoboot, then boot the Image with the DT it runs
#: on (QEMU's); "-": no initrd of booti's own, so /chosen keeps QEMU's range.
UBOOT_REPLIES = Replies(
    (ConsoleReply(re.compile(rb"Hit any key to stop autoboot"), b"\r"),
     ConsoleReply(re.compile(rb"=> "), b"booti ${kernel_addr_r} - ${fdtcontroladdr}\r")),
    again=re.compile(rb"\n=> "))
OURS_NAME = "ours:qemu-virt"
JSON_FORMAT_VERSION = 1


@dataclass(frozen=True)
class DtSide:
    """One target's boot of the case, judged."""

    target: str
    argv: tuple[str, ...]
    transcript: Transcript
    observation: DtObservation
    guest_exit: GuestExit
    oracles: tuple[OracleResult, ...]
    verdict: Verdict
    run_dir: Path
    duration: float


@dataclass(frozen=True)
class DtDiffRow:
    field: str
    left: str
    right: str

    @property
    def differs(self) -> bool:
        return self.left != self.right


@dataclass(frozen=True)
class DtDiffReport:
    case: BootCase
    left: DtSide
    right: DtSide
    rows: tuple[DtDiffRow, ...]

    @property
    def differences(self) -> tuple[DtDiffRow, ...]:
        return tuple(r for r in self.rows if r.differs)


def qemu_kernel_argv(case: BootCase, kernel: Path, initrd: Path | None,
                     dtb: Path | None = None, firmware: PeerFirmware | None = None
                     ) -> list[str]:
    """QEMU's own loader on the same machine our backend starts (with *dtb*: ours; with
    *firmware*: that firmware, which takes the kernel from QEMU's fw_cfg)."""
    argv = [QEMU_BINARIES[case.arch], *machine_args(case.arch, case.memory)]
    if firmware is not None and firmware.console_booti:
        argv += ["-bios", "default", "-kernel", str(firmware.path), "-device",
                 f"loader,file={loader_path(kernel)},addr={UBOOT_KERNEL_ADDR:#x},force-raw=on"]
    else:
        if firmware is not None:
            argv += ["-bios", str(firmware.path)]
        elif case.arch is Arch.RISCV64:
            argv += ["-bios", "default"]
        argv += ["-kernel", str(kernel)]
    efi = firmware is not None and firmware.efi
    argv += ["-append", peer_cmdline(case, efi)]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    if dtb is not None:
        argv += ["-dtb", str(dtb)]
    return argv


def peer_cmdline(case: BootCase, efi: bool) -> str:
    """What a peer is given: the case's command line, after efi=debug through UEFI."""
    return EFI_DEBUG.decode() + case.cmdline if efi else case.cmdline


def expected_cmdline(case: BootCase, efi: bool) -> str:
    """What the kernel must see: the line given, with edk2's initrd= option after it."""
    suffix = EDK2_INITRD_OPTION.decode() if efi and case.initrd is not None else ""
    return peer_cmdline(case, efi) + suffix


def peer_unsupported(peer: str, arch: Arch) -> str | None:
    """Why *peer* cannot boot *arch*'s kernels (None: it can, or it is not a firmware peer)."""
    if peer in {name for name, _ in FIRMWARE_PEERS} and (peer, arch) not in FIRMWARE_PEERS:
        return (f"{peer} boots arm64 kernels only: Debian 12 has no UEFI firmware for "
                f"{arch.value}'s virt machine")
    return None


def peer_firmware(peer: str, arch: Arch) -> PeerFirmware | None:
    """The firmware *peer* boots through on *arch* (None: QEMU's own loader); refused
    where there is none and when it is not installed."""
    reason = peer_unsupported(peer, arch)
    if reason is not None:
        raise ConfigError(reason)
    firmware = FIRMWARE_PEERS.get((peer, arch))
    if firmware is None:
        return None
    if not firmware.path.is_file():
        raise BackendError(f"{firmware.path} not found: install {firmware.package}")
    return firmware


def check_peer_case(case: BootCase, firmware: PeerFirmware | None) -> None:
    """Refuse, before anything boots, a case *firmware* could not be judged on."""
    if firmware is None:
        return
    if firmware.console_booti:
        from bootfuzz.kernel.pinned import resolve_kernel

        check_console_booti(case, resolve_kernel(case.kernel))
    if firmware.efi:
        check_efi_cmdline(case)


def check_efi_cmdline(case: BootCase) -> None:
    """Through UEFI the kernel gets the case's line with edk2's and our additions: a line
    our loader may give whole would be cut there, and the peer's cmdline oracle fail for
    a length, not for a loader's mistake."""
    limit = case.arch.command_line_size
    line = expected_cmdline(case, True).encode("utf-8", "surrogateescape")
    if limit is None or len(line) < limit:
        return
    added = len(line) - len(case.cmdline.encode("utf-8", "surrogateescape"))
    over = len(line) - limit + 1
    raise CmdlineError(
        f"{len(line)} bytes through {PEER_EFI_NAME} (the case's line with "
        f"{EFI_DEBUG.decode()!r} before it"
        + (f" and edk2's {EDK2_INITRD_OPTION.decode()!r} after it" if case.initrd else "")
        + f": {added} bytes more) is longer than the {case.arch.value} kernel's "
        f"COMMAND_LINE_SIZE of {limit} allows ({limit - 1} without the NUL): shorten the "
        f"line by {over} byte{'s' * (over != 1)} for this peer")


def check_console_booti(case: BootCase, kernel: Path) -> None:
    """riscv64 U-Boot's Image at UBOOT_KERNEL_ADDR must end below the initrd QEMU puts
    half the RAM (at most 128 MiB) past U-Boot's own entry: in a smaller guest they
    would overlap before U-Boot starts."""
    entry = RAM_BASE[case.arch] + OPENSBI_SIZE
    initrd_at = entry + min(case.memory // 2, RISCV_INITRD_MAX_OFFSET)
    end = UBOOT_KERNEL_ADDR + kernel.stat().st_size
    limit = initrd_at if case.initrd is not None else RAM_BASE[case.arch] + case.memory
    if end > limit:
        raise ConfigError(f"{PEER_UBOOT_NAME} on riscv64: the Image at U-Boot's kernel_addr_r "
                          f"{UBOOT_KERNEL_ADDR:#x} would end at {end:#x}, past "
                          f"{limit:#x} (QEMU's initrd, or the end of RAM): give more memory")


def _kept_memory(obs: DtObservation) -> list[tuple[int, int]] | None:
    """The memory nodes of the DTB the kernel kept, as (address, size)."""
    agent = obs.dt_agent
    if agent is None:
        return None
    ac = int.from_bytes(agent.root.get("#address-cells", b"\0\0\0\2"), "big")
    sc = int.from_bytes(agent.root.get("#size-cells", b"\0\0\0\2"), "big")
    out = []
    for props in agent.memory.values():
        out += decode_cells(props.get("reg", b""), ac, sc)
    return sorted(out)


def _kept_initrd(obs: DtObservation) -> tuple[int, int] | None:
    agent = obs.dt_agent
    if agent is None:
        return None
    s, e = agent.chosen.get("linux,initrd-start"), agent.chosen.get("linux,initrd-end")
    if s is None or e is None:
        return None
    return int.from_bytes(s, "big"), int.from_bytes(e, "big")


def _fmt(ranges: Sequence[tuple[int, int]]) -> str:
    return "\n".join(f"[mem {a:#018x}-{b:#018x}]" for a, b in ranges) or "(none)"


def validity_oracles(case: BootCase, obs: DtObservation, guest_exit: GuestExit,
                     end_detail: str, payload_sha256: str | None, *, efi: bool = False,
                     initrd_size: int | None = None) -> list[OracleResult]:
    """What any loader must give, judged without knowing its bytes; with *efi*, the
    memory against the UEFI map (efi_oracles)."""
    agent = case.initrd is not None and not case.initrd.raw
    out = [judge_boot(obs.base, guest_exit, end_detail, agent=agent, firmware_marker=False)]
    cmdline = expected_cmdline(case, efi).encode("utf-8", "surrogateescape")
    out.append(judge_cmdline(obs.base, cmdline, kernel_message=True))
    if agent:
        out.append(judge_agent_cmdline(obs.base, cmdline))
        assert case.initrd is not None and payload_sha256 is not None
        out.append(judge_payload(obs.base, case.initrd.size, payload_sha256))
    if efi:
        return out + efi_oracles(case, obs, initrd_size)
    kept = _kept_memory(obs)
    if kept is not None:
        want = merged_ram(kept)
        ranges = [(a, b) for _, a, b in obs.memory_node_ranges]
        out.append(judged("dt-memory", ranges == want, _fmt(want), _fmt(ranges),
                          "against the memory nodes of the DTB the kernel kept"))
        if obs.dt_agent is not None:
            out.append(judged("iomem-ram", obs.dt_agent.system_ram() == want, _fmt(want),
                              _fmt(obs.dt_agent.system_ram())))
    rng = _kept_initrd(obs)
    if rng is not None:
        out.append(_initrd_unpacked(obs, initrd_freed_kib(*rng),
                                    f"for the kept range [{rng[0]:#x}, {rng[1]:#x})"))
    return out


def _initrd_unpacked(obs: DtObservation, kib: int, which: str) -> OracleResult:
    """The kernel unpacked the initrd and freed *kib* KiB of it (*which*: whose size)."""
    freed = obs.base.initrd_freed_kib
    failure = obs.base.unpack_failure
    return judged("initrd-unpacked", freed == kib and failure is None,
                  f"unpacked, 'Freeing initrd memory: {kib}K' {which}",
                  f"Freeing initrd memory: {freed}K" + (f", failed: {failure}" if failure else ""))


def efi_oracles(case: BootCase, obs: DtObservation, initrd_size: int | None
                ) -> list[OracleResult]:
    """An EFI boot's memory, judged against the UEFI map the kernel printed: the map
    against the machine, the kernel's memory and System RAM against the map, and the
    initrd (loaded by the stub at the start of pages of its own) freed in whole pages."""
    descriptors = obs.base.efi_memmap
    out = [judge_efi_ram_range(descriptors, RAM_BASE[case.arch], case.memory),
           judge_efi_memblock(descriptors, [(a, b) for _, a, b in obs.memory_node_ranges])]
    agent = case.initrd is not None and not case.initrd.raw
    if agent:  # /proc/iomem comes from the agent
        out.append(judge_efi_system_ram(descriptors, None if obs.dt_agent is None
                                        else obs.dt_agent.system_ram()))
    if initrd_size is not None and agent:
        out.append(_initrd_unpacked(obs, initrd_freed_kib(0, initrd_size),
                                    f"(the whole pages of the {initrd_size}-byte initrd)"))
    return out


def run_peer(case: BootCase, run_dir: Path, *, timeout: float, silence_timeout: float,
             peer: str = PEER_NAME) -> DtSide:
    """Boot *case* with QEMU's own -kernel loader on virt (PEER_DTB_NAME: given our DTB;
    PEER_EFI_NAME: through UEFI and the kernel's EFI stub)."""
    binary = QEMU_BINARIES[case.arch]
    if shutil.which(binary) is None:
        raise BackendError(f"{binary} not found")
    firmware = peer_firmware(peer, case.arch)
    check_peer_case(case, firmware)
    prepared = prepare_dt(case)  # the same kernel file and initrd our side boots
    from bootfuzz.kernel.pinned import resolve_kernel

    kernel = resolve_kernel(case.kernel)
    initrd = next((b.path for b in prepared.plan.blobs if b.name == "initrd"), None)
    run_dir.mkdir(parents=True, exist_ok=True)
    dtb = None
    if peer == PEER_DTB_NAME:
        dtb = run_dir / "ours.dtb"
        dtb.write_bytes(prepared.plan.dtb)
    argv = qemu_kernel_argv(case, kernel, initrd, dtb, firmware)
    started = time.monotonic()
    transcript = run_console(argv, timeout=timeout, silence_timeout=silence_timeout,
                             log_path=run_dir / "console.log",
                             replies=UBOOT_REPLIES if firmware is not None
                             and firmware.console_booti else None)
    guest_exit = classify_virt_exit(transcript)
    obs = parse_dt_transcript(transcript.raw)
    sha = None if prepared.plan.initrd is None else prepared.plan.initrd.payload_sha256
    oracles = validity_oracles(case, obs, guest_exit, transcript.end_detail, sha,
                               efi=firmware is not None and firmware.efi,
                               initrd_size=None if initrd is None else initrd.stat().st_size)
    return DtSide(peer, tuple(argv), transcript, obs, guest_exit, tuple(oracles),
                  overall(oracles), run_dir, time.monotonic() - started)


def run_ours(case: BootCase, run_dir: Path, *, timeout: float, silence_timeout: float
             ) -> DtSide:
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = execute_dt(prepare_dt(case), run_dir, timeout=timeout,
                        silence_timeout=silence_timeout)
    return DtSide(OURS_NAME, (), result.transcript, result.observation, result.guest_exit,
                  result.oracles, result.verdict, run_dir, time.monotonic() - started)


def _chosen(obs: DtObservation) -> str:
    agent = obs.dt_agent
    if agent is None:
        return "(no agent report)"
    return "\n".join(f"{k} = {v.hex()}" for k, v in sorted(agent.chosen.items())
                     if k not in ("name",))


def compare(left: DtObservation, right: DtObservation) -> list[DtDiffRow]:
    """Each field both kernels show, side by side."""

    def row(name: str, f: Any) -> DtDiffRow:
        return DtDiffRow(name, str(f(left)), str(f(right)))

    def ranges(o: DtObservation) -> str:
        return _fmt([(a, b) for _, a, b in o.memory_node_ranges])

    def kept(o: DtObservation) -> str:
        m = _kept_memory(o)
        return "(no agent report)" if m is None else ", ".join(
            f"[{a:#x}, {a + s:#x})" for a, s in m)

    def initrd(o: DtObservation) -> str:
        r = _kept_initrd(o)
        return "(none)" if r is None else f"[{r[0]:#x}, {r[1]:#x}) {r[1] - r[0]} bytes"

    def iomem(o: DtObservation) -> str:
        return "(no agent report)" if o.dt_agent is None else _fmt(o.dt_agent.system_ram())

    def reserved(o: DtObservation) -> str:
        return "\n".join(o.reserved_mem) or "(none)"

    def reserved_nodes(o: DtObservation) -> str:
        if o.dt_agent is None:
            return "(no agent report)"
        return ", ".join(n for n in o.dt_agent.reserved if "@" in n) or "(none)"

    def payload(o: DtObservation) -> str:
        a = o.base.agent
        return "(no agent report)" if a is None or a.payload is None else (
            f"{a.payload.size} bytes, sha256 {a.payload.sha256.hex()}")

    return [
        row("machine model", lambda o: o.machine_model),
        row("kernel command line", lambda o: (o.kernel_command_line or b"").decode(
            "utf-8", "replace")),
        row("memory nodes kept", kept),
        row("early memory node ranges", ranges),
        row("iomem System RAM", iomem),
        row("OF reserved mem", reserved),
        row("reserved-memory nodes", reserved_nodes),
        row("chosen initrd range", initrd),
        row("Freeing initrd memory", lambda o: f"{o.base.initrd_freed_kib}K"),
        row("chosen (kept)", _chosen),
        row("payload", payload),
    ]


def run_dt_diff(case: BootCase, parent: Path, *, timeout: float, silence_timeout: float,
                parallel: bool = True, peer: str = PEER_NAME) -> DtDiffReport:
    """Our loader and QEMU's -kernel on the same case; both judged, views compared."""
    if not case.arch.device_tree:
        raise ConfigError("qemu-kernel:virt boots arm64 and riscv64 kernels only")
    check_peer_case(case, peer_firmware(peer, case.arch))  # refused before anything boots
    prepare_dt(case)  # build everything once before the two boots start
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-dtdiff-",
                                 dir=parent))
    kw = {"timeout": timeout, "silence_timeout": silence_timeout}
    if parallel:
        with ThreadPoolExecutor(2) as pool:
            fl = pool.submit(run_ours, case, root / "ours", **kw)
            fr = pool.submit(run_peer, case, root / "peer", peer=peer, **kw)
            left, right = fl.result(), fr.result()
    else:
        left = run_ours(case, root / "ours", timeout=timeout, silence_timeout=silence_timeout)
        right = run_peer(case, root / "peer", timeout=timeout, silence_timeout=silence_timeout,
                         peer=peer)
    return DtDiffReport(case, left, right, tuple(compare(left.observation, right.observation)))


def side_json(side: DtSide) -> dict[str, Any]:
    return {"target": side.target, "verdict": side.verdict.value,
            "guest_exit": side.guest_exit.value, "run_dir": str(side.run_dir),
            "duration": round(side.duration, 3),
            "oracles": [oracle_json(r) for r in side.oracles]}


def report_json(report: DtDiffReport) -> dict[str, Any]:
    return {
        "format": JSON_FORMAT_VERSION,
        "arch": report.case.arch.value,
        "left": side_json(report.left),
        "right": side_json(report.right),
        "differences": [dataclasses.asdict(r) for r in report.differences],
        "equal": [r.field for r in report.rows if not r.differs],
    }


def report_table(report: DtDiffReport, show_all: bool = False) -> str:
    lines = [f"{report.case.kernel} ({report.case.arch.value}), "
             f"{report.case.memory >> 20} MiB: {report.left.target} vs {report.right.target}"]
    for side in (report.left, report.right):
        bad = [r.name for r in side.oracles if r.verdict is not Verdict.PASS]
        lines.append(f"  {side.target}: {side.verdict.value.upper()}"
                     + (f" ({', '.join(bad)})" if bad else "")
                     + f"  log {side.run_dir / 'console.log'}")
    lines.append("")
    w = max(len(report.left.target), len(report.right.target))
    for r in report.rows:
        if not r.differs and not show_all:
            continue
        lines.append(f"{'DIFFERS' if r.differs else 'same   '} {r.field}")
        for label, value in ((report.left.target, r.left), (report.right.target, r.right)):
            vals = value.splitlines() or [""]
            lines.append(f"    {label:<{w}} {vals[0]}")
            lines += [f"    {'':<{w}} {v}" for v in vals[1:]]
    lines.append(f"\n{len(report.differences)} of {len(report.rows)} items differ")
    return "\n".join(lines)
