"""Targets: command templates, target specs, QEMU argv, promised layouts and rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec, Overrides
from bootfuzz.errors import CmdlineError, ConfigError
from bootfuzz.judge.promises import InitrdRule, KernelLimit, TargetPromises
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.loader.layout import GiB, MiB
from bootfuzz.peers.differential import run_diff
from bootfuzz.peers.loaders import parse_loader
from bootfuzz.peers.matrix import Cell, CellResult, Outcome, run_cell
from bootfuzz.peers.promises import MICROVM_GAP, OURS_QEMU_TCG, PC_GAP, QEMU_MICROVM, QEMU_PC
from bootfuzz.peers.targets import (
    Accel,
    CommandTarget,
    CommandTemplate,
    LoaderTarget,
    OursTarget,
    QemuDirectTarget,
    QemuMachine,
    TargetSpecError,
    TemplateError,
    load_template,
    parse_target,
    placeholder_values,
    refuse_long_cmdline,
)
from tests.fakes import fake_bzimage

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "qemu-pc.toml"
VALUES = placeholder_values(Path("/k/vmlinuz"), Path("/i/initrd.gz"), "console=ttyS0 a=\"b c\"",
                            5 * GiB)


def test_template_expand_each_placeholder_one_argument() -> None:
    t = CommandTemplate(("vmm", "{kernel}", "{initrd}", "{cmdline}", "{mem_bytes}",
                         "m={mem_kib}K", "{mem_mib}M"))
    assert t.expand(VALUES) == ["vmm", "/k/vmlinuz", "/i/initrd.gz", 'console=ttyS0 a="b c"',
                                str(5 * GiB), f"m={5 * GiB // 1024}K", "5120M"]


def test_template_cmdline_with_spaces_stays_one_argument() -> None:
    assert CommandTemplate(("-append", "{cmdline}")).expand(VALUES)[1] == 'console=ttyS0 a="b c"'


def test_template_unknown_placeholder_clear_error() -> None:
    with pytest.raises(TemplateError) as e:
        CommandTemplate(("vmm", "-kernel", "{kernal}"))
    assert str(e.value) == (
        "command template: argument 2 '{kernal}': unknown placeholder {kernal} (known: "
        "{kernel}, {initrd}, {cmdline}, {mem_bytes}, {mem_kib}, {mem_mib}, {media}, "
        "{ovmf_vars})"
    )


def test_template_format_spec_refused() -> None:
    with pytest.raises(TemplateError, match=r"placeholder \{mem_mib\} takes no format spec"):
        CommandTemplate(("{mem_mib:x}",))


def test_template_unbalanced_brace_refused() -> None:
    with pytest.raises(TemplateError, match=re.escape("argument 0 'a{'")):
        CommandTemplate(("a{",))


def test_template_doubled_braces_are_literal() -> None:
    assert CommandTemplate(("{{kernel}}",)).expand(VALUES) == ["{kernel}"]


def test_template_empty_refused() -> None:
    with pytest.raises(TemplateError, match="empty"):
        CommandTemplate(())


def test_template_missing_initrd_value_is_error() -> None:
    values = placeholder_values(Path("/k"), None, "", 256 * MiB)
    with pytest.raises(TemplateError, match="no value for initrd"):
        CommandTemplate(("{initrd}",)).expand(values)


def test_load_template_example_is_qemu_argv() -> None:
    t = load_template(EXAMPLE)
    argv = t.expand(VALUES)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-kernel") + 1] == "/k/vmlinuz"
    assert argv[argv.index("-m") + 1] == f"{5 * GiB // 1024}K"
    assert t.promises == "qemu-pc" and t.poweroff_exit_status == 99
    assert CommandTarget(t).promises is QEMU_PC


def test_load_template_json(tmp_path: Path) -> None:
    p = tmp_path / "vmm.json"
    p.write_text(json.dumps({"argv": ["vmm", "{kernel}"], "name": "x"}))
    assert load_template(p) == CommandTemplate(("vmm", "{kernel}"), name="x")


def test_load_template_unknown_key_refused(tmp_path: Path) -> None:
    p = tmp_path / "vmm.toml"
    p.write_text('argv = ["vmm"]\nshell = "sh -c"\n')
    with pytest.raises(TemplateError, match="unknown keys shell"):
        load_template(p)


def test_load_template_argv_string_refused(tmp_path: Path) -> None:
    p = tmp_path / "vmm.toml"
    p.write_text('argv = "qemu -kernel {kernel}"\n')
    with pytest.raises(TemplateError, match="needs a list 'argv'"):
        load_template(p)


@pytest.mark.parametrize(("spec", "name"), [
    ("ours", "ours:qemu-tcg"), ("ours:qemu-tcg", "ours:qemu-tcg"),
    ("qemu-direct:pc", "qemu-direct:pc:tcg"), ("qemu-direct:microvm:kvm",
                                               "qemu-direct:microvm:kvm"),
])
def test_parse_target_known_specs(spec: str, name: str) -> None:
    assert parse_target(spec).name == name


@pytest.mark.parametrize("spec", ["qemu", "qemu-direct:q35", "qemu-direct:pc:hvf",
                                  "qemu-direct:pc:tcg:x", "command"])
def test_parse_target_bad_spec_config_error(spec: str) -> None:
    with pytest.raises(TargetSpecError):
        parse_target(spec)


def test_parse_target_unknown_backend_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        parse_target("ours:bochs")


def test_qemu_direct_microvm_argv_has_devices() -> None:
    argv = QemuDirectTarget(QemuMachine.MICROVM).argv(Path("/k"), Path("/i"), "c", 256 * MiB)
    machine = argv[argv.index("-machine") + 1]
    assert machine == "microvm,accel=tcg,pit=on,pic=on,isa-serial=on,rtc=on,acpi=off"
    assert argv[argv.index("-device") + 1] == "isa-debug-exit,iobase=0xf4,iosize=0x04"
    assert argv[-6:] == ["-kernel", "/k", "-initrd", "/i", "-append", "c"]


def test_qemu_direct_no_initrd_argv_has_no_initrd() -> None:
    argv = QemuDirectTarget().argv(Path("/k"), None, "c", 256 * MiB)
    assert "-initrd" not in argv


@pytest.mark.parametrize(("memory", "low"), [(3583 * MiB, 3583 * MiB), (3584 * MiB, 3 * GiB)])
def test_pc_gap_split_boundary_pair(memory: int, low: int) -> None:
    assert PC_GAP.low_end(memory) == low


@pytest.mark.parametrize(("memory", "low"), [(3 * GiB - 4096, 3 * GiB - 4096),
                                             (3 * GiB, 3 * GiB), (5 * GiB, 3 * GiB)])
def test_microvm_gap_is_min_memory_3g(memory: int, low: int) -> None:
    assert MICROVM_GAP.low_end(memory) == low


def test_promises_withheld_pc_256m() -> None:
    assert QEMU_PC.withheld_ranges(256 * MiB) == (
        ("EBDA + legacy VGA/ROM hole", 0x9FC00, 0x100000),
        ("ACPI/SeaBIOS tables at the top of low RAM", 0x0FFE0000, 0x10000000),
    )
    assert OURS_QEMU_TCG.exact and not QEMU_PC.exact


# Measured on QEMU 7.2 pc: a 1 MiB initrd at 0xfee0000, 1 MiB + 1 at 0xfedf000 (256M),
# 0xbfee0000 at 5G; qboot at 5G puts a 1055736-byte one at 0x7fefe000.
@pytest.mark.parametrize(("promises", "memory", "size", "addr"), [
    (QEMU_PC, 256 * MiB, 1 << 20, 0x0FEE0000),
    (QEMU_PC, 256 * MiB, (1 << 20) + 1, 0x0FEDF000),
    (QEMU_PC, 5 * GiB, 1 << 20, 0xBFEE0000),
    (QEMU_MICROVM, 5 * GiB, 1055736, 0x7FEFE000),
    (QEMU_MICROVM, 256 * MiB, 1055736, 0x0FEFE000),
])
def test_initrd_rule_matches_measured(promises: TargetPromises, memory: int, size: int,
                                      addr: int) -> None:
    rule = promises.initrd_rule(EntryProtocol.BOOT64)
    assert rule is not None and promises.gap is not None
    assert rule.address(promises.gap.low_end(memory), 0x7FFFFFFF, True, size) == addr


def test_initrd_rule_inclusive_limit_pair() -> None:
    exclusive = InitrdRule("x", kernel_limit=KernelLimit.NONE)
    inclusive = InitrdRule("x", kernel_limit=KernelLimit.NONE, inclusive_limit=True)
    assert exclusive.address(0x10000000, 0, False, 0x1000) == 0x0FFFF000
    assert inclusive.address(0x10000000, 0, False, 0x1000) == 0x0FFFE000


NO_OVERRIDES = Overrides()


def boot_case(entry: EntryProtocol = EntryProtocol.BOOT64, *, initrd: bool = True,
              overrides: Overrides = NO_OVERRIDES) -> BootCase:
    return BootCase(kernel="no-such-kernel", memory=256 * MiB,
                    initrd=InitrdSpec(1) if initrd else None, entry=entry, overrides=overrides)


QEMU_ENTRY_REASON = ("QEMU's -kernel boots a bzImage through its 16-bit setup or an ELF "
                     "vmlinux through PVH, nothing else")


@pytest.mark.parametrize(("case", "reason"), [
    (boot_case(), None),
    (boot_case(EntryProtocol.PVH), "entry pvh: a command template boots the bzImage as given"),
    (boot_case(EntryProtocol.REAL16), "entry 16: a command template boots the bzImage as given"),
    (boot_case(initrd=False), "the template passes {initrd} and the case has no initrd"),
], ids=["64", "pvh", "16", "no-initrd"])
def test_command_target_unsupported_names_the_reason(case: BootCase, reason: str | None) -> None:
    assert CommandTarget(load_template(EXAMPLE)).unsupported(case) == reason


@pytest.mark.parametrize(("case", "reason"), [
    (boot_case(), None),
    (boot_case(EntryProtocol.PVH), None),
    (boot_case(initrd=False), None),
    (boot_case(EntryProtocol.BOOT32), f"entry 32: {QEMU_ENTRY_REASON}"),
    (boot_case(EntryProtocol.VMLINUX), f"entry vmlinux: {QEMU_ENTRY_REASON}"),
    (boot_case(overrides=Overrides(initrd_addr=0x1000000)),
     "QEMU's loader takes no overrides of boot_params or addresses"),
], ids=["64", "pvh", "no-initrd", "32", "vmlinux", "overrides"])
def test_qemu_direct_unsupported_names_the_reason(case: BootCase, reason: str | None) -> None:
    assert QemuDirectTarget(QemuMachine.PC).unsupported(case) == reason


# What the callers do with the reason: refuse before any boot, and say why.


def test_command_target_run_refuses_unsupported_case_before_booting(tmp_path: Path) -> None:
    target = CommandTarget(load_template(EXAMPLE))
    with pytest.raises(ConfigError) as e:
        target.run(boot_case(EntryProtocol.PVH), tmp_path / "run", timeout=1, silence_timeout=1)
    assert str(e.value) == ("bootfuzz: command:qemu-pc: entry pvh: a command template "
                            "boots the bzImage as given")
    assert not (tmp_path / "run").exists()


def test_matrix_cell_its_target_cannot_run_is_a_skip_with_the_reason(tmp_path: Path) -> None:
    cell = Cell("no-such-kernel", "32", "256M", "gzip", "qemu-direct:pc:tcg")
    assert run_cell(cell, tmp_path) == CellResult(cell, Outcome.SKIP,
                                                  f"entry 32: {QEMU_ENTRY_REASON}")
    assert not (tmp_path / "runs").exists()


def test_diff_refuses_a_case_a_target_cannot_run_before_booting(tmp_path: Path) -> None:
    case = boot_case(EntryProtocol.VMLINUX)
    with pytest.raises(ConfigError) as e:
        run_diff(case, OursTarget(), QemuDirectTarget(), tmp_path / "diff", timeout=1,
                 silence_timeout=1)
    assert str(e.value) == ("bootfuzz: qemu-direct:pc:tcg cannot run this case: entry "
                            f"vmlinux: {QEMU_ENTRY_REASON}")
    assert not (tmp_path / "diff").exists()


def test_kvm_targets_skip_where_kvm_only_emulates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our VMM and QEMU -accel kvm on a /dev/kvm that emulates (measured) are a skip
    naming the measurement, never a hang judged as a failure; on hardware KVM they run."""
    from bootfuzz.run import doctor

    emulated = doctor.BackendStatus("kvm", True, "/dev/kvm runs guests at 1.7 M "
                                    "instructions/s", 1.7e6, False)
    monkeypatch.setattr(doctor, "kvm_status", lambda: emulated)
    monkeypatch.setattr("os.access", lambda path, mode: True)
    case = BootCase("debian-6.1-cloud", 256 * MiB)
    for target in (OursTarget("kvm"), QemuDirectTarget(accel=Accel.KVM)):
        reason = target.unsupported(case)
        assert reason is not None and "needs hardware KVM" in reason and "1.7 M" in reason
    assert OursTarget("qemu-tcg").unsupported(case) is None
    assert QemuDirectTarget().unsupported(case) is None
    hardware = doctor.BackendStatus("kvm", True, "fast", 3e9, True)
    monkeypatch.setattr(doctor, "kvm_status", lambda: hardware)
    assert OursTarget("kvm").unsupported(case) is None
    assert QemuDirectTarget(accel=Accel.KVM).unsupported(case) is None


@pytest.mark.parametrize(("spec", "added"), [
    ("efi-stub", len("efi=debug ") + len(" initrd=initrd")),
    ("syslinux", len("BOOT_IMAGE=/vmlinuz ") + len(" initrd=/initrd.img")),
    ("grub-bios", len("BOOT_IMAGE=/vmlinuz ")),
])
def test_a_line_the_loaders_additions_push_past_cmdline_size_is_refused(
        spec: str, added: int) -> None:
    """The case's line fits cmdline_size as asked; with what the loader adds the kernel
    would cut it, so the target refuses it instead of failing its cmdline oracle."""
    image = parse_kernel_image(fake_bzimage(cmdline_size=255))
    loader = parse_loader(spec)
    assert loader is not None
    promises = loader.promises(initrd=True)

    def check(n: int) -> None:
        asked = b"x" * n
        refuse_long_cmdline(spec, promises, asked, loader.loader_cmdline(asked), image)

    check(255 - added)  # exactly cmdline_size through the loader
    with pytest.raises(CmdlineError, match=rf"^command line: 256 bytes through {spec} "
                       rf"\(the case's {256 - added} and {added} the loader adds\).* "
                       r"cmdline_size of 255: shorten the line by 1 byte for"):
        check(256 - added)


def test_a_loader_target_refuses_such_a_line_before_it_boots(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(fake_bzimage(cmdline_size=255))
    case = BootCase(kernel=str(kernel), memory=256 * MiB, cmdline="x" * 250)
    loader = parse_loader("efi-stub")
    assert loader is not None
    with pytest.raises(CmdlineError, match=r"260 bytes through efi-stub \(the case's 250 and 10"):
        LoaderTarget(loader).run(case, tmp_path / "run", timeout=5, silence_timeout=5)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_command_templates_loader_promises_drop_the_initrd_option_without_an_initrd(
        ) -> None:
    """A template promising a real loader's layout expects that loader's own initrd
    option only when the case has an initrd (OVMF adds " initrd=initrd" only then)."""
    from bootfuzz.peers.promises import KNOWN_PROMISES

    for name, promised in KNOWN_PROMISES.items():
        target = CommandTarget(CommandTemplate(("vmm", "{kernel}"), promises=name))
        assert target.promises_for(True) == promised
    efi = CommandTarget(CommandTemplate(("vmm", "{kernel}"), promises="efi-stub"))
    assert efi.promises_for(True).cmdline_suffix == b" initrd=initrd"
    assert efi.promises_for(False).cmdline_suffix == b""
    pc = CommandTarget(CommandTemplate(("vmm", "{kernel}"), promises="qemu-pc"))
    assert pc.promises_for(False) is pc.promises_for(True) is QEMU_PC
