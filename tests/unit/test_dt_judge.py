"""The device-tree judge (oracles over a console a correct kernel would print, and the
same console with one thing wrong), the agent's device-tree report through its host
self-test, the virt backend's command, exits and reproducers, and the foreign apt."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bootfuzz.arch import Arch
from bootfuzz.case import DtOverrides
from bootfuzz.errors import KernelFetchError, LayoutError
from bootfuzz.fuzz.reproducer import Reproducer, parse_reproducer, reproducer_json
from bootfuzz.guest.harness import AGENT_CFLAGS, HARNESS_SOURCE_DIR, agent_defines
from bootfuzz.guest.protocol import AGENT_LINE_PREFIX
from bootfuzz.judge.dt_observation import parse_dt_agent, parse_dt_transcript
from bootfuzz.judge.dt_oracles import DtEvidence, initrd_freed_kib, judge_dt, merged_ram
from bootfuzz.judge.verdict import Verdict
from bootfuzz.kernel import foreign_apt
from bootfuzz.loader.fdt_writer import find
from bootfuzz.run.backends.qemu_virt import POWER_DOWN_LINE, QemuVirtBackend, classify_virt_exit
from bootfuzz.transcript import GuestExit, SessionEnd, Transcript
from tests.dt_fakes import HOLES, GiB, MiB, plan

PAYLOAD_SHA = "ab" * 32


def _transcript(text: str, status: int | None = 0) -> Transcript:
    return Transcript(text=text, raw=text.encode(), end=SessionEnd.EXITED, exit_status=status,
                      signal=None, duration=1.0, first_output_after=0.1,
                      firmware_entered=False, end_detail="exited", killed=False)


def agent_line(p, *, chosen: dict[str, bytes] | None = None,  # type: ignore[no-untyped-def]
               iomem: str | None = None, payload_sha: str = PAYLOAD_SHA) -> str:
    """The agent's report for a kernel that kept our DTB as written."""
    root = p.fdt.root
    mem = {n.name: {**{k: v.hex() for k, v in n.props}, "name": "6d656d6f727900"}
           for n in root.children if n.name.startswith("memory")}
    kept = chosen if chosen is not None else {
        k: v for k, v in find(root, "/chosen").props if k != "rng-seed"}
    ram = iomem if iomem is not None else "".join(
        f"{a:08x}-{b:08x} : System RAM\n  {a:08x}-{a + 0xfff:08x} : reserved\n"
        for a, b in merged_ram(p.memory))
    doc = {"v": 1, "cmdline": p.cmdline.hex(),
           "payload": {"size": 4096, "sha256": payload_sha, "expected": payload_sha},
           "devicetree": {"root": {"#address-cells": "00000002", "#size-cells": "00000002"},
                          "memory": mem, "chosen": {k: v.hex() for k, v in kept.items()},
                          "reserved": []},
           "iomem": ram, "errors": []}
    return f"{AGENT_LINE_PREFIX} {json.dumps(doc)}"


def console(p, **agent: object) -> str:  # type: ignore[no-untyped-def]
    """What a correct kernel prints for plan *p* (the lines the oracles read)."""
    model = find(p.fdt.root, "/").prop("model").rstrip(b"\0").decode()  # type: ignore[union-attr]
    lines = ["[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x411fd070]",
             "[    0.000000] Linux version 6.12.0 (gcc) #1 SMP",
             f"[    0.000000] Machine model: {model}",
             "[    0.000000] Early memory node ranges"]
    lines += [f"[    0.000000]   node   0: [mem {a:#018x}-{b:#018x}]"
              for a, b in merged_ram(p.memory)]
    lines += [f"[    0.000000] Kernel command line: {p.cmdline.decode()}",
              "[    0.885692] Trying to unpack rootfs image as initramfs...",
              f"[    0.931481] Freeing initrd memory: "
              f"{initrd_freed_kib(p.initrd.addr, p.initrd.end)}K",
              "[    1.333070] Run /init as init process",
              agent_line(p, **agent),  # type: ignore[arg-type]
              f"[    1.406316] {POWER_DOWN_LINE}", ""]
    return "\n".join(lines)


def judge(p, text: str) -> dict[str, Verdict]:  # type: ignore[no-untyped-def]
    t = _transcript(text)
    results = judge_dt(DtEvidence(p, parse_dt_transcript(t.raw), classify_virt_exit(t),
                                  t.end_detail))
    return {r.name: r.verdict for r in results}


def _plan(arch: Arch, big: bool = False):  # type: ignore[no-untyped-def]
    p = plan(arch, 4 * GiB if big else 256 * MiB, mem_holes=HOLES[arch] if big else ())
    assert p.initrd is not None
    placed = dataclasses.replace(p.initrd, payload_sha256=PAYLOAD_SHA)
    return dataclasses.replace(p, initrd=placed)


@pytest.mark.parametrize("arch", [Arch.ARM64, Arch.RISCV64])
@pytest.mark.parametrize("big", [False, True])
def test_a_correct_kernel_passes_every_oracle(arch: Arch, big: bool) -> None:
    p = _plan(arch, big)
    verdicts = judge(p, console(p))
    assert set(verdicts.values()) == {Verdict.PASS}, verdicts
    assert {"dt-memory", "iomem-ram", "dt-memory-kept", "dt-chosen-kept", "dt-rng-seed",
            "initrd-unpacked", "initrd-range", "payload-digest", "cmdline", "agent-cmdline",
            "boot", "kernel-clean", "dt-machine-model"} == set(verdicts)


def test_each_wrong_view_fails_its_oracle() -> None:
    p = _plan(Arch.ARM64, big=True)
    good = console(p)
    cases = {
        "dt-memory": good.replace("node   0: [mem 0x00000000d0000000",
                                  "node   0: [mem 0x00000000d0001000"),
        "cmdline": good.replace("Kernel command line: console", "Kernel command line: consol"),
        "initrd-unpacked": good.replace("Freeing initrd memory: ", "Freeing initrd memory: 4"),
        "dt-machine-model": good.replace("Machine model: linux,dummy-virt", "Machine model: x"),
    }
    for oracle, text in cases.items():
        bad = [n for n, v in judge(p, text).items() if v is not Verdict.PASS]
        also = ["initrd-range"] if oracle == "initrd-unpacked" else []  # both count pages
        assert bad == [oracle, *also], (oracle, bad)
    moved = {k: v for k, v in find(p.fdt.root, "/chosen").props if k != "rng-seed"}
    moved["linux,initrd-end"] = (p.initrd.end + 4096).to_bytes(8, "big")  # type: ignore[union-attr]
    assert [n for n, v in judge(p, console(p, chosen=moved)).items()
            if v is not Verdict.PASS] == ["initrd-range", "dt-chosen-kept"]
    chosen = {k: v for k, v in find(p.fdt.root, "/chosen").props}  # rng-seed left in
    assert [n for n, v in judge(p, console(p, chosen=chosen)).items()
            if v is not Verdict.PASS] == ["dt-chosen-kept", "dt-rng-seed"]
    assert [n for n, v in judge(p, console(p, iomem="40000000-13fffffff : System RAM\n")).items()
            if v is not Verdict.PASS] == ["iomem-ram"]
    assert judge(p, console(p, payload_sha="cd" * 32))["payload-digest"] is Verdict.FAIL


def test_power_down_line_tells_power_off_from_reset() -> None:
    assert classify_virt_exit(_transcript(f"x\n{POWER_DOWN_LINE}\n")) is GuestExit.POWER_OFF
    assert classify_virt_exit(_transcript("Kernel panic - not syncing\n")) is GuestExit.RESET
    assert classify_virt_exit(_transcript("x", status=1)) is GuestExit.BACKEND_ERROR


def test_memblock_merges_touching_nodes_and_clips_pages() -> None:
    assert merged_ram([(0x1000, 0x1000), (0x2000, 0x1000), (0x5800, 0x1000)]) == [
        (0x1000, 0x2FFF)]
    assert initrd_freed_kib(0x1000, 0x4123) == 12 and initrd_freed_kib(0x1800, 0x2000) == 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_agent_reports_the_device_tree_it_finds(tmp_path: Path) -> None:
    """The agent's own code, built for the host with AGENT_DEVICETREE, over a fake root."""
    exe = tmp_path / "agent"
    subprocess.run(["gcc", *AGENT_CFLAGS, *agent_defines(), "-DAGENT_DEVICETREE",
                    "-DAGENT_SELFTEST", "-o", exe, HARNESS_SOURCE_DIR / "agent" / "init.c"],
                   check=True, capture_output=True)
    base = tmp_path / "root/sys/firmware/devicetree/base"
    (base / "memory@40000000").mkdir(parents=True)
    (base / "chosen").mkdir()
    (base / "reserved-memory/mmode_resv0@80000000").mkdir(parents=True)
    (base / "#address-cells").write_bytes(b"\0\0\0\2")
    (base / "memory@40000000/reg").write_bytes(bytes.fromhex("0000000040000000000000001000000"
                                                             "0"))
    (base / "chosen/bootargs").write_bytes(b"console=ttyAMA0\0")
    (tmp_path / "root/proc").mkdir()
    (tmp_path / "root/proc/iomem").write_text("40000000-4fffffff : System RAM\n")
    (tmp_path / "root/proc/cmdline").write_text("console=ttyAMA0\n")
    out = subprocess.run([exe, tmp_path / "root"], capture_output=True, text=True,
                         check=True).stdout
    generic, dt, error = parse_dt_agent(out.split(" ", 1)[1])
    assert error is None and generic is not None and dt is not None
    assert generic.cmdline == b"console=ttyAMA0"
    assert dt.memory["memory@40000000"]["reg"][4:8] == b"\x40\0\0\0"
    assert dt.chosen["bootargs"] == b"console=ttyAMA0\0"
    assert dt.root["#address-cells"] == b"\0\0\0\2"
    assert "mmode_resv0@80000000" in dt.reserved
    assert dt.system_ram() == [(0x40000000, 0x4FFFFFFF)]


@pytest.mark.parametrize("arch", [Arch.ARM64, Arch.RISCV64])
def test_backend_loads_every_blob_and_sets_the_pc(arch: Arch, tmp_path: Path) -> None:
    p = plan(arch)
    stub = tmp_path / "entry.bin"
    stub.write_bytes(b"\x13\0\0\0" * 8)
    harness = type("H", (), {"entry_stub": stub, "agent": stub})()
    initrd = tmp_path / "initrd"
    initrd.write_bytes(bytes(p.initrd.size))  # type: ignore[union-attr]
    p = dataclasses.replace(p, blobs=tuple(
        dataclasses.replace(b, path=initrd) if b.name == "initrd" else b for b in p.blobs))
    backend = QemuVirtBackend(arch)
    files = backend.files(p, harness, tmp_path)  # type: ignore[arg-type]
    names = [f.name for f in files]
    assert {"entry", "kernel", "dtb", "initrd"} <= set(names)
    params = (tmp_path / "entry.bin").read_bytes()[32:]
    values = [int.from_bytes(params[i:i + 8], "little") for i in range(0, len(params), 8)]
    if arch is Arch.ARM64:
        assert values == [p.dtb_addr, p.kernel_load]
    else:
        assert names[0] == "opensbi"
        assert values == [p.dtb_addr, p.blob("fw_dynamic_info").addr, 0x8000_0000]
    backend.check_files(p, files)
    clash = dataclasses.replace(files[-1], addr=p.machine.reserved()[-1].start)
    with pytest.raises(LayoutError, match="QEMU's own DTB"):
        backend.check_files(p, [*files[:-1], clash])


def test_dt_reproducer_round_trips() -> None:
    p = plan(Arch.RISCV64, 4 * GiB, mem_holes=HOLES[Arch.RISCV64])
    case = dataclasses.replace(p.case, dt=DtOverrides(
        initrd_end=0x9000_1000, memory=((0x8000_0000, 0x1000),), header=(("totalsize", 9),),
        reservations=((1, 2),), size_cells=1, bootargs_raw=b"x"))
    rep = Reproducer(case=case, kernel_sha256="0" * 64)
    doc = json.loads(json.dumps(reproducer_json(rep)))
    assert doc["arch"] == "riscv64" and doc["mem_holes"] == [["0x100000000", "0x10000000"]]
    assert parse_reproducer(doc) == rep
    x86 = json.loads(json.dumps(reproducer_json(dataclasses.replace(
        rep, case=dataclasses.replace(case, arch=Arch.X86_64, mem_holes=(),
                                      dt=DtOverrides())))))
    assert "arch" not in x86 and parse_reproducer(x86).case.arch is Arch.X86_64


def test_foreign_apt_never_touches_the_hosts_configuration(tmp_path: Path) -> None:
    apt = foreign_apt.ForeignApt(tmp_path, "riscv64", "trixie", "http://archive.invalid/debian")
    apt.prepare()
    argv = apt.download_argv("linux-image-x", "1-1", as_root=True)
    assert argv[-1] == "linux-image-x:riscv64=1-1"
    joined = " ".join(argv)
    for opt in ("Dir::Etc::SourceList=", "Dir::Etc::SourceParts=/dev/null", "Dir::State::Lists=",
                "Dir::Cache=", "Dir::State::status=/dev/null", "APT::Architectures=riscv64"):
        assert opt in joined
    assert all(str(tmp_path) in a for a in argv if a.startswith(("Dir::State::Lists",
                                                                  "Dir::Cache")))
    assert "trixie main" in apt.sources.read_text()
    assert foreign_apt.foreign_suite("linux-image-6.12.117+deb13-riscv64") == "trixie"
    listing = "u1|Debian|Debian-Security\nu2|Debian|Debian\n"
    assert foreign_apt.parse_indextargets(listing) == "u2"


def test_foreign_apt_archive_is_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(foreign_apt.ARCHIVE_ENV, raising=False)
    with pytest.raises(KernelFetchError, match=foreign_apt.ARCHIVE_ENV):
        foreign_apt.archive_base("")
    monkeypatch.setenv(foreign_apt.ARCHIVE_ENV, "http://mirror.invalid/")
    assert foreign_apt.archive_base(None) == "http://mirror.invalid/"


def test_matrix_arch_axis_has_its_own_dimensions(capsys: pytest.CaptureFixture[str]) -> None:
    from bootfuzz.cli.main import parse_args
    from bootfuzz.peers import matrix

    args = parse_args(["matrix", "--list", "--arches", "aarch64", "riscv64"])
    assert args.run(args) == 0
    lines = capsys.readouterr().out.splitlines()[:-1]
    assert lines and all(ln.split()[0] in ("aarch64", "riscv64") for ln in lines)
    assert {ln.split()[4] for ln in lines} == set(matrix.DT_INITRDS)
    cell = matrix.Cell("debian-6.12-riscv64", "dt", "4G/hole", "gzip", "ours:qemu-virt",
                       "riscv64")
    case = cell.case()
    assert case.arch is Arch.RISCV64 and case.memory == 4 * GiB
    assert case.mem_holes == ((0x1_0000_0000, 256 * MiB),)
    assert matrix.static_skip(cell) is None
    wrong = dataclasses.replace(cell, target="qemu-direct:pc:tcg")
    assert matrix.static_skip(wrong) == "qemu-direct:pc:tcg does not boot riscv64 kernels"
    x86 = parse_args(["matrix", "--list"])
    from bootfuzz.cli.matrix import dimensions

    assert not any("arm64" in k or "riscv" in k for k in dimensions(x86).kernels)
