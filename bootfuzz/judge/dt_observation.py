"""What a device-tree kernel printed and what its agent reported, parsed.  Pure.

The generic kernel messages (panics, the initramfs unpack, "Freeing initrd memory")
are read by bootfuzz.judge.observation as for x86; this module adds what only the
device-tree boots print or report:
* ``Machine model: <model>`` (drivers/of/fdt.c, early_init_dt_scan: the root's model);
* ``Kernel command line: <text>`` (init/main.c, start_kernel);
* ``Early memory node ranges`` followed by ``  node   N: [mem A-B]`` lines
  (mm/mm_init.c, free_area_init: memblock's memory regions, inclusive ends);
* ``OF: reserved mem: ...`` lines (drivers/of/of_reserved_mem.c);
* the agent's JSON line built with AGENT_DEVICETREE: the device tree the kernel kept
  (/sys/firmware/devicetree/base: root properties, each memory node's properties,
  /chosen's properties, /reserved-memory's entries) and /proc/iomem.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bootfuzz.errors import BootfuzzError
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.observation import (
    AgentPayload,
    AgentReport,
    Observation,
    parse_transcript,
)
from bootfuzz.judge.patterns import AGENT_PREFIX, line_body

_MEM = r"\[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]"
_NODE_RANGE = re.compile(rf"^\s+node\s+(\d+): {_MEM}$")
_MACHINE_MODEL = re.compile(r"^Machine model: (.*)$")
_KERNEL_CMDLINE = re.compile(r"^Kernel command line: (.*)$")
_RESERVED_MEM = re.compile(r"^OF: reserved mem: (.*)$")
_IOMEM_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) : (.*)$")


@dataclass(frozen=True)
class DtAgentReport:
    """The device tree as the kernel kept it, and its resource map."""

    root: Mapping[str, bytes]
    memory: Mapping[str, Mapping[str, bytes]]  # node name -> property -> value
    chosen: Mapping[str, bytes]
    reserved: tuple[str, ...]
    iomem: str

    def system_ram(self) -> list[tuple[int, int]]:
        """Top-level "System RAM" lines of /proc/iomem, as [start, end] inclusive."""
        out = []
        for line in self.iomem.splitlines():
            m = _IOMEM_LINE.match(line)
            if m and m.group(3) == "System RAM":
                out.append((int(m.group(1), 16), int(m.group(2), 16)))
        return out


@dataclass(frozen=True)
class DtObservation:
    """The generic observation plus the device-tree parts."""

    base: Observation
    machine_model: str | None
    kernel_command_line: bytes | None
    #: "Early memory node ranges": (node, start, end inclusive), in printed order.
    memory_node_ranges: tuple[tuple[int, int, int], ...]
    reserved_mem: tuple[str, ...]
    dt_agent: DtAgentReport | None
    dt_agent_error: str | None


class _Corrupt(BootfuzzError):
    """The agent line is there but unreadable."""


def _props(r: JsonReader, value: object, at: str) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise r.fail(at, "expected an object of properties")
    out = {}
    for key, hexval in value.items():
        if not isinstance(hexval, str):
            raise r.fail(f"{at}.{key}", "expected a hex string")
        try:
            out[str(key)] = bytes.fromhex(hexval)
        except ValueError:
            raise r.fail(f"{at}.{key}", "not hex") from None
    return out


def parse_dt_agent(text: str) -> tuple[AgentReport | None, DtAgentReport | None, str | None]:
    """The agent's JSON (after the prefix): its generic part, its device-tree part, or why not."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return None, None, f"agent report is not JSON: {exc}"
    r = JsonReader("agent report", error=_Corrupt)
    try:
        if not isinstance(doc, dict):
            raise r.fail("", "expected an object")
        errors = tuple(str(e) for e in doc.get("errors", []))
        cmdline_hex = doc.get("cmdline")
        if not isinstance(cmdline_hex, str):
            raise r.fail("cmdline", f"the agent could not read it: {'; '.join(errors)}")
        payload = None
        p = doc.get("payload")
        if isinstance(p, dict):
            payload = AgentPayload(int(p["size"]), bytes.fromhex(p["sha256"]),
                                   bytes.fromhex(p.get("expected", "")) or None)
        generic = AgentReport(version=int(doc.get("v", 0)), cmdline=bytes.fromhex(cmdline_hex),
                              payload=payload, memmap=(), boot_params=b"", errors=errors)
        dt = doc.get("devicetree")
        if not isinstance(dt, dict):
            raise r.fail("devicetree", "missing: an agent built without AGENT_DEVICETREE?")
        memory = dt.get("memory", {})
        if not isinstance(memory, dict):
            raise r.fail("devicetree.memory", "expected an object of nodes")
        iomem = doc.get("iomem")
        report = DtAgentReport(
            root=_props(r, dt.get("root", {}), "devicetree.root"),
            memory={str(k): _props(r, v, f"devicetree.memory.{k}") for k, v in memory.items()},
            chosen=_props(r, dt.get("chosen", {}), "devicetree.chosen"),
            reserved=tuple(str(x) for x in dt.get("reserved", [])),
            iomem=iomem if isinstance(iomem, str) else "",
        )
    except _Corrupt as exc:
        return None, None, str(exc.args[0])
    except (KeyError, ValueError, TypeError) as exc:
        return None, None, f"agent report: malformed ({exc})"
    return generic, report, None


def parse_dt_transcript(console: str | bytes) -> DtObservation:
    """Parse a device-tree boot's console."""
    base = parse_transcript(console)
    raw_lines = console.split(b"\n") if isinstance(console, bytes) else [
        ln.encode("utf-8", "surrogateescape") for ln in console.split("\n")]
    model = None
    cmdline = None
    ranges: list[tuple[int, int, int]] = []
    reserved: list[str] = []
    agent = dt_agent = None
    agent_error = None
    for raw in raw_lines:
        raw = raw.rstrip(b"\r")
        text = raw.decode("utf-8", "replace")
        body = line_body(text)
        if text.startswith(AGENT_PREFIX) and agent is None and agent_error is None:
            agent, dt_agent, agent_error = parse_dt_agent(text[len(AGENT_PREFIX):])
            continue
        if model is None and (m := _MACHINE_MODEL.match(body)):
            model = m.group(1)
        elif cmdline is None and (m := _KERNEL_CMDLINE.match(body)):
            start = raw.find(b"Kernel command line: ") + len(b"Kernel command line: ")
            cmdline = raw[start:]
        elif m := _NODE_RANGE.match(body):
            ranges.append((int(m.group(1)), int(m.group(2), 16), int(m.group(3), 16)))
        elif m := _RESERVED_MEM.match(body):
            reserved.append(m.group(1))
    base = dataclasses.replace(base, agent=agent, agent_error=agent_error)
    return DtObservation(base, model, cmdline, tuple(ranges), tuple(reserved), dt_agent,
                         agent_error)
