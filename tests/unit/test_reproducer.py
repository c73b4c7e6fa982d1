"""Reproducer files: round trips, and one clear error naming the field for each defect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootfuzz.abi.e820 import E820Entry
from bootfuzz.case import BootCase, EntryProtocol, InitrdSpec, Overrides, SetupDataNode
from bootfuzz.compression import Compression
from bootfuzz.fuzz.reproducer import (
    Expectation,
    Reproducer,
    ReproducerError,
    load_reproducer,
    parse_reproducer,
    reproducer_json,
    write_reproducer,
)
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import Verdict

CORPUS = Path(__file__).resolve().parents[2] / "corpus" / "regressions"

FULL = Reproducer(
    case=BootCase(
        kernel="debian-6.1-cloud", memory=5 << 30, cmdline='console=ttyS0 x="a b"',
        initrd=InitrdSpec(12345, Compression.XZ, 99), entry=EntryProtocol.BOOT64,
        overrides=Overrides(
            fields=(("type_of_loader", 0), ("sentinel", 0xFF)),
            initrd_addr=0x1D83000, cmdline_addr=0x20000, cmdline_raw=b"abc",
            e820=(E820Entry(0, 0xA0000, 1), E820Entry(0x100000, 0x1000000, 1)),
            kernel_load=0x200000, setup_data=(SetupDataNode(9, b"\x01\x02", None),
                                              SetupDataNode(1, b"", 0x90000, length=0x40)),
            start_info=(("rsdp_paddr", 0xF0000), ("module0.size", 0x1000)),
        ),
    ),
    kernel_sha256="ab" * 32, until=StopPoint.RAMDISK,
    expect=Expectation(Verdict.FAIL, ("valid-zero-page",)), description="d", evidence="e",
)


def doc() -> dict[str, object]:
    return json.loads(json.dumps(reproducer_json(FULL)))  # type: ignore[no-any-return]


def test_reproducer_round_trip_every_field() -> None:
    assert parse_reproducer(doc()) == FULL


def test_reproducer_write_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.json"
    write_reproducer(FULL, path)
    assert load_reproducer(path) == FULL
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left


def test_reproducer_corpus_files_load() -> None:
    files = sorted(CORPUS.glob("*.json"))
    assert len(files) >= 3
    for path in files:
        rep = load_reproducer(path)
        assert rep.expect is not None and rep.kernel_sha256


def test_reproducer_initrd_formats_round_trip() -> None:
    import dataclasses

    for spec in (InitrdSpec(1, split=True), InitrdSpec(1, raw=True), InitrdSpec(1)):
        rep = dataclasses.replace(FULL, case=dataclasses.replace(FULL.case, initrd=spec))
        assert parse_reproducer(json.loads(json.dumps(reproducer_json(rep)))) == rep


def test_reproducer_minimal_document_defaults() -> None:
    rep = parse_reproducer({"bootfuzz_reproducer": 1, "kernel": {"name": "k"},
                            "memory": "0x10000000", "cmdline": ""})
    assert rep.case.memory == 256 << 20 and rep.case.initrd is None
    assert rep.case.overrides.empty and rep.expect is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("bootfuzz_reproducer"), "bootfuzz_reproducer: this is not a bootfuzz"),
        (lambda d: d.update(bootfuzz_reproducer=2), "format 1 (found 2)"),
        (lambda d: d.pop("memory"), "memory: missing"),
        (lambda d: d.update(memory="lots"), "memory: 'lots' is not an integer"),
        (lambda d: d.update(memory=True), "memory: expected an integer, got a boolean"),
        (lambda d: d.update(entry="99"), "entry: '99' is not one of"),
        (lambda d: d.update(colour="red"), "unknown key 'colour'"),
        (lambda d: d["kernel"].update(sha256="xyz"), "kernel.sha256: not a sha256"),
        (lambda d: d["initrd"].update(compression="rar"), "initrd.compression: 'rar' is not"),
        (lambda d: d["overrides"]["fields"].update(bogus=1),
         "overrides.fields.bogus: not a boot_params field"),
        (lambda d: d["overrides"]["fields"].update(type_of_loader=256),
         "overrides.fields.type_of_loader: 0x100 is out of range"),
        (lambda d: d["overrides"]["fields"].update(e820_table=1),
         "byte-array fields cannot be overridden"),
        (lambda d: d["overrides"]["e820"][1].pop("type"),
         "overrides.e820[1].type: expected an integer, got NoneType"),
        (lambda d: d["overrides"].update(cmdline_raw_hex="zz"),
         "overrides.cmdline_raw_hex: not a string of hex digits"),
        (lambda d: d["overrides"]["setup_data"][0].update(payload_hex=5),
         "overrides.setup_data[0].payload_hex: expected a string"),
        (lambda d: d["overrides"]["start_info"].update(bogus=1),
         "overrides.start_info.bogus: not an hvm_start_info field"),
        (lambda d: d["overrides"]["start_info"].update({"module0.size": 1 << 64}),
         "overrides.start_info.module0.size: 0x10000000000000000 is out of range"),
        (lambda d: d["overrides"]["setup_data"][1].update(len=1 << 32),
         "overrides.setup_data[1].len: 0x100000000 is out of range"),
        (lambda d: d.update(until="later"), "until: 'later' is not one of"),
        (lambda d: d["expect"].update(verdict="maybe"), "expect.verdict: 'maybe' is not one of"),
    ],
)
def test_reproducer_defect_gives_one_clear_error(mutate, message) -> None:  # type: ignore[no-untyped-def]
    d = doc()
    mutate(d)
    with pytest.raises(ReproducerError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        parse_reproducer(d, "r.json")


def test_reproducer_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"bootfuzz_reproducer": 1,')
    with pytest.raises(ReproducerError, match=r"bad.json: not valid JSON: .* line 1"):
        load_reproducer(path)


def test_reproducer_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ReproducerError, match="not UTF-8"):
        load_reproducer(path)


def test_reproducer_top_level_not_object() -> None:
    with pytest.raises(ReproducerError, match=r"\(top level\): expected an object, got list"):
        parse_reproducer([1, 2])


def test_reproducer_records_the_cpu_template() -> None:
    import dataclasses

    from bootfuzz.case import CpuTemplate

    assert reproducer_json(FULL)["cpu_template"] == "baseline"
    rep = dataclasses.replace(FULL, case=dataclasses.replace(FULL.case,
                                                             cpu_template=CpuTemplate.HOST))
    assert reproducer_json(rep)["cpu_template"] == "host"
    assert parse_reproducer(json.loads(json.dumps(reproducer_json(rep)))) == rep


def test_reproducer_without_cpu_template_loads_as_baseline() -> None:
    """A file written before the field existed still loads, with the default template."""
    from bootfuzz.case import CpuTemplate

    d = doc()
    del d["cpu_template"]
    assert parse_reproducer(d).case.cpu_template is CpuTemplate.BASELINE


def test_reproducer_unknown_cpu_template_names_the_field() -> None:
    d = doc()
    d["cpu_template"] = "t2"
    with pytest.raises(ReproducerError, match=r"r.json: cpu_template: 't2' is not one of"):
        parse_reproducer(d, "r.json")
