"""Reproducer files: one boot case, every loader decision it overrides, and what it showed.

A reproducer is JSON (so a person can read and edit it), versioned, and checked
field by field on load: a corrupt or hand-broken file gets one message naming
the field.  Integers may be written as numbers or as "0x..." strings (addresses
read better in hex).  Format version 1:

    {
      "bootfuzz_reproducer": 1,
      "kernel": {"name": "debian-6.1-cloud", "sha256": "<sha256 of the bzImage>"},
      "backend": "qemu-tcg", "entry": "64", "memory": "0x10000000",
      "initrd": {"size": 1048576, "compression": "gzip", "seed": 0, "format": "cpio"},
      "cmdline": "console=ttyS0 earlyprintk=serial panic=-1",
      "initrd_placement": "top", "cpu_template": "baseline",
      "overrides": {
        "fields": {"type_of_loader": 0},
        "initrd_addr": "0x1400000", "cmdline_addr": "0x4b000",
        "cmdline_raw_hex": "636f6e...", "kernel_load": "0x1000000",
        "e820": [{"addr": "0x0", "size": "0xa0000", "type": 1}],
        "setup_data": [{"type": 9, "payload_hex": "00ff", "addr": null, "len": "0x2"}],
        "start_info": {"rsdp_paddr": "0xf0000", "module0.size": "0x1000"}
      },
      "until": null,
      "expect": {"verdict": "fail", "failing": ["valid-initrd-outside-kernel"]},
      "description": "...", "evidence": "console lines that showed it"
    }

"cpu_template" is the CPU our KVM VMM showed the guest (docs/cpu-templates.md);
files from before it existed load as the default, "baseline" (they ran with the
host's CPUID: add "cpu_template": "host" to replay that).

"fields" names boot_params fields (the 32/64-bit, vmlinux and 16-bit entries),
"start_info" names hvm_start_info fields or "module0.<field>" (PVH only), and a
setup_data node's "len" writes a header len that contradicts its payload; what each
override may do is docs/platform-rules.md.

A corpus entry of a guided campaign carries a "corpus" object too: the features its
boot showed first, its case number and parent (bootfuzz.fuzz.corpus checks it);
replay ignores it.

Only "bootfuzz_reproducer", "kernel", "memory" and "cmdline" are required.  The
command line is text; a byte that is not UTF-8 is written as its escape "\\udc80" ..
"\\udcff" (bootfuzz.cmdline), as json.dumps writes Python's escaped bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootfuzz.abi.bootparam import BOOT_PARAMS
from bootfuzz.abi.e820 import E820Entry
from bootfuzz.case import (
    BootCase,
    CpuTemplate,
    EntryProtocol,
    InitrdPlacement,
    InitrdSpec,
    Overrides,
    SetupDataNode,
)
from bootfuzz.cmdline import cmdline_bytes
from bootfuzz.compression import Compression
from bootfuzz.errors import CmdlineError, ConfigError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.dt_reproducer import DT_TOP_KEYS, dt_case_fields, dt_json
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.oracles import StopPoint
from bootfuzz.judge.verdict import Verdict
from bootfuzz.loader.pvh import START_INFO_FIELDS

FORMAT_KEY = "bootfuzz_reproducer"
FORMAT_VERSION = 1
_TOP_KEYS = {FORMAT_KEY, "kernel", "backend", "entry", "memory", "initrd", "cmdline",
             "initrd_placement", "cpu_template", "overrides", "until", "expect", "description",
             "evidence", "corpus", "target"} | DT_TOP_KEYS
#: The peer target a campaign booted the case through (bootfuzz fuzz --target), if any.
TARGET_KEY = "target"
_OVERRIDE_KEYS = {"fields", "initrd_addr", "cmdline_addr", "cmdline_raw_hex", "kernel_load",
                  "e820", "setup_data", "start_info"}
#: Our cpio archive with the agent and payload, whole or split in two (uncompressed
#: early archive with /init, then the compressed payload archive), or "raw": the
#: payload alone, no archive (the kernel rejects it: no /init, the no-root panic).
INITRD_FORMATS = ("cpio", "cpio-split", "raw")


class ReproducerError(ConfigError):
    """A reproducer file that is not valid; the message names the field."""

    component = "reproducer"


@dataclass(frozen=True)
class Expectation:
    """What a regression reproducer must keep showing when replayed."""

    verdict: Verdict
    failing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reproducer:
    case: BootCase
    kernel_sha256: str | None = None
    until: StopPoint | None = None
    expect: Expectation | None = None
    description: str = ""
    evidence: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def _overrides(r: JsonReader, doc: dict[str, Any]) -> Overrides:
    r.keys(doc, _OVERRIDE_KEYS, "overrides")
    fields = []
    for name, value in r.as_obj(doc.get("fields", {}), "overrides.fields").items():
        try:
            f = BOOT_PARAMS[name]
        except KeyError:
            raise r.fail(f"overrides.fields.{name}", "not a boot_params field") from None
        if f.raw:
            raise r.fail(f"overrides.fields.{name}", "byte-array fields cannot be overridden")
        top = (1 << (8 * f.size)) - 1
        fields.append((name, r.as_int(value, f"overrides.fields.{name}", 0, top)))
    start_info = []
    for name, value in r.as_obj(doc.get("start_info", {}), "overrides.start_info").items():
        if name not in START_INFO_FIELDS:
            raise r.fail(f"overrides.start_info.{name}", "not an hvm_start_info field (or "
                         "module0.<field> of its first module entry)")
        top = (1 << (8 * START_INFO_FIELDS[name][0].size)) - 1
        start_info.append((name, r.as_int(value, f"overrides.start_info.{name}", 0, top)))
    e820 = None
    if "e820" in doc:
        e820 = []
        for i, entry in enumerate(r.as_list(doc["e820"], "overrides.e820")):
            path = f"overrides.e820[{i}]"
            e = r.as_obj(entry, path)
            r.keys(e, {"addr", "size", "type"}, path)
            e820.append(E820Entry(r.as_int(e.get("addr"), f"{path}.addr"),
                                  r.as_int(e.get("size"), f"{path}.size"),
                                  r.as_int(e.get("type"), f"{path}.type", 0, 0xFFFFFFFF)))
    nodes = []
    for i, node in enumerate(r.as_list(doc.get("setup_data", []), "overrides.setup_data")):
        path = f"overrides.setup_data[{i}]"
        n = r.as_obj(node, path)
        r.keys(n, {"type", "payload_hex", "addr", "len"}, path)
        addr, length = n.get("addr"), n.get("len")
        nodes.append(SetupDataNode(
            r.as_int(n.get("type"), f"{path}.type", 0, 0xFFFFFFFF),
            r.as_hex(n.get("payload_hex", ""), f"{path}.payload_hex"),
            None if addr is None else r.as_int(addr, f"{path}.addr"),
            None if length is None else r.as_int(length, f"{path}.len", 0, 0xFFFFFFFF),
        ))

    def opt(key: str) -> int | None:
        return None if doc.get(key) is None else r.as_int(doc[key], f"overrides.{key}")

    raw = doc.get("cmdline_raw_hex")
    return Overrides(
        fields=tuple(fields),
        initrd_addr=opt("initrd_addr"),
        cmdline_addr=opt("cmdline_addr"),
        cmdline_raw=None if raw is None else r.as_hex(raw, "overrides.cmdline_raw_hex"),
        e820=None if e820 is None else tuple(e820),
        kernel_load=opt("kernel_load"),
        setup_data=tuple(nodes),
        start_info=tuple(start_info),
    )


def _cmdline(r: JsonReader, value: object) -> str:
    """The command line: text, a byte that is not UTF-8 as its escape \\udc80..\\udcff
    (bootfuzz.cmdline); json.dumps writes it so."""
    text = r.as_str(value, "cmdline")
    try:
        cmdline_bytes(text)
    except CmdlineError as exc:
        raise r.fail("cmdline", str(exc.args[0])) from None
    return text


def parse_reproducer(doc: object, where: str = "<reproducer>") -> Reproducer:
    """Check and convert a decoded JSON document."""
    r = JsonReader(where, error=ReproducerError)
    top = r.as_obj(doc, "(top level)")
    if top.get(FORMAT_KEY) != FORMAT_VERSION:
        raise r.fail(FORMAT_KEY, f"this is not a bootfuzz reproducer of format {FORMAT_VERSION} "
                     f"(found {top.get(FORMAT_KEY)!r})")
    r.keys(top, _TOP_KEYS, "(top level)")
    for key in ("kernel", "memory", "cmdline"):
        if key not in top:
            raise r.fail(key, "missing")
    kernel = r.as_obj(top["kernel"], "kernel")
    r.keys(kernel, {"name", "sha256"}, "kernel")
    name = r.as_str(kernel.get("name"), "kernel.name")
    sha = kernel.get("sha256")
    if sha is not None:
        sha = r.as_str(sha, "kernel.sha256").lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise r.fail("kernel.sha256", "not a sha256 (64 hex digits)")
    initrd = None
    if top.get("initrd") is not None:
        i = r.as_obj(top["initrd"], "initrd")
        r.keys(i, {"size", "compression", "seed", "format"}, "initrd")
        fmt = r.as_choice(i.get("format", "cpio"), "initrd.format", list(INITRD_FORMATS))
        initrd = InitrdSpec(
            r.as_int(i.get("size"), "initrd.size", 0, 1 << 32),
            Compression(r.as_choice(i.get("compression", "gzip"), "initrd.compression",
                                 [c.value for c in Compression])),
            r.as_int(i.get("seed", 0), "initrd.seed"),
            split=fmt == "cpio-split",
            raw=fmt == "raw",
        )
    case = BootCase(
        kernel=name,
        memory=r.as_int(top["memory"], "memory", 1, 1 << 50),
        cmdline=_cmdline(r, top["cmdline"]),
        initrd=initrd,
        entry=EntryProtocol(r.as_choice(top.get("entry", "64"), "entry",
                                     [e.value for e in EntryProtocol])),
        backend=r.as_str(top.get("backend", "qemu-tcg"), "backend"),
        overrides=_overrides(r, r.as_obj(top.get("overrides", {}), "overrides")),
        initrd_placement=InitrdPlacement(r.as_choice(
            top.get("initrd_placement", "top"), "initrd_placement",
            [p.value for p in InitrdPlacement])),
        cpu_template=CpuTemplate(r.as_choice(
            top.get("cpu_template", CpuTemplate.BASELINE.value), "cpu_template",
            [t.value for t in CpuTemplate])),
        **dt_case_fields(r, top),
    )
    until = top.get("until")
    expect = None
    if top.get("expect") is not None:
        e = r.as_obj(top["expect"], "expect")
        r.keys(e, {"verdict", "failing"}, "expect")
        expect = Expectation(
            Verdict(r.as_choice(e.get("verdict"), "expect.verdict", [v.value for v in Verdict])),
            tuple(r.as_str(x, "expect.failing[]") for x in r.as_list(e.get("failing", []),
                                                               "expect.failing")),
        )
    return Reproducer(
        case=case,
        kernel_sha256=sha,
        until=None if until is None else StopPoint(
            r.as_choice(until, "until", [p.value for p in StopPoint])),
        expect=expect,
        description=r.as_str(top.get("description", ""), "description"),
        evidence=r.as_str(top.get("evidence", ""), "evidence"),
        extra={**({} if top.get("corpus") is None else {"corpus": top["corpus"]}),
               **({} if top.get(TARGET_KEY) is None else
                  {TARGET_KEY: r.as_str(top[TARGET_KEY], TARGET_KEY)})},
    )


def load_reproducer(path: Path) -> Reproducer:
    """Read and check a reproducer file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReproducerError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ReproducerError(f"{path}: not UTF-8 text") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReproducerError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}") from None
    except RecursionError:
        raise ReproducerError(f"{path}: not valid JSON: nested too deeply") from None
    return parse_reproducer(doc, str(path))


def _hexint(value: int) -> str:
    return f"{value:#x}"


def reproducer_json(rep: Reproducer) -> dict[str, Any]:
    """The document for *rep*; parse_reproducer(reproducer_json(r)) == r."""
    case, ov = rep.case, rep.case.overrides
    doc: dict[str, Any] = {
        FORMAT_KEY: FORMAT_VERSION,
        "kernel": {"name": case.kernel, **({"sha256": rep.kernel_sha256}
                                            if rep.kernel_sha256 else {})},
        "backend": case.backend,
        "entry": case.entry.value,
        "memory": _hexint(case.memory),
        "initrd": None if case.initrd is None else {
            "size": case.initrd.size, "compression": case.initrd.compression.value,
            "seed": case.initrd.seed,
            "format": ("raw" if case.initrd.raw else
                       "cpio-split" if case.initrd.split else "cpio"),
        },
        "cmdline": case.cmdline,
    }
    if case.initrd_placement is not InitrdPlacement.TOP:
        doc["initrd_placement"] = case.initrd_placement.value
    doc["cpu_template"] = case.cpu_template.value
    doc.update(dt_json(case))
    o: dict[str, Any] = {}
    if ov.fields:
        o["fields"] = dict(ov.fields)
    for key in ("initrd_addr", "cmdline_addr", "kernel_load"):
        if getattr(ov, key) is not None:
            o[key] = _hexint(getattr(ov, key))
    if ov.cmdline_raw is not None:
        o["cmdline_raw_hex"] = ov.cmdline_raw.hex()
    if ov.e820 is not None:
        o["e820"] = [{"addr": _hexint(e.addr), "size": _hexint(e.size), "type": e.type}
                     for e in ov.e820]
    if ov.setup_data:
        o["setup_data"] = [{"type": n.type, "payload_hex": n.payload.hex(), "addr":
                            None if n.addr is None else _hexint(n.addr),
                            **({} if n.length is None else {"len": _hexint(n.length)})}
                           for n in ov.setup_data]
    if ov.start_info:
        o["start_info"] = {name: _hexint(value) for name, value in ov.start_info}
    if o:
        doc["overrides"] = o
    if rep.until is not None:
        doc["until"] = rep.until.value
    if rep.expect is not None:
        doc["expect"] = {"verdict": rep.expect.verdict.value, "failing": list(rep.expect.failing)}
    if rep.description:
        doc["description"] = rep.description
    if rep.evidence:
        doc["evidence"] = rep.evidence
    if rep.extra.get("corpus") is not None:  # a corpus entry's part (bootfuzz.fuzz.corpus)
        doc["corpus"] = rep.extra["corpus"]
    if rep.extra.get(TARGET_KEY) is not None:
        doc[TARGET_KEY] = rep.extra[TARGET_KEY]
    return doc


def write_reproducer(rep: Reproducer, path: Path) -> None:
    """Write atomically: a crash mid-write never leaves half a reproducer."""
    atomic_write_text(path, json.dumps(reproducer_json(rep), indent=2) + "\n")


def check_kernel_sha256(rep: Reproducer, kernel_path: Path) -> None:
    """Refuse to replay on another kernel than the one the reproducer was recorded with."""
    if rep.kernel_sha256 is None:
        return
    got = hashlib.sha256(kernel_path.read_bytes()).hexdigest()
    if got != rep.kernel_sha256:
        raise ReproducerError(
            f"kernel {rep.case.kernel!r} is {got[:16]}..., the reproducer was recorded with "
            f"{rep.kernel_sha256[:16]}...: replaying on another kernel would prove nothing"
        )
