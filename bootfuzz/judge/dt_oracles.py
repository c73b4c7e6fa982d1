"""Oracles for a device-tree boot: what the kernel saw and kept, against our plan.  Pure.

Each compares one thing the kernel printed or the agent read back with what our DTB
said, and answers pass, fail or unknown (the boot never got that far):
* memory: "Early memory node ranges" and /proc/iomem's System RAM equal our /memory
  nodes (merged where they touch, as memblock merges them; page clipped as
  early_init_dt_add_memory_arch clips them);
* the initrd: the kernel unpacked it (init/initramfs.c), freed exactly the whole pages
  inside the range (free_initrd_mem -> free_reserved_area, which rounds the start up
  and the end down), and the agent read the payload back (its digest);
* the command line: "Kernel command line:" and /proc/cmdline are our bootargs;
* the device tree round trip: /sys/firmware/devicetree/base's memory nodes and /chosen
  hold what we wrote, except rng-seed, which drivers/of/fdt.c wipes after use;
* "Machine model:" is the model we wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bootfuzz.judge.dt_observation import DtObservation
from bootfuzz.judge.oracles import (
    judge_agent_cmdline,
    judge_boot,
    judge_cmdline,
    judge_kernel_clean,
    judge_payload,
)
from bootfuzz.judge.verdict import OracleResult, judged, unknown
from bootfuzz.loader.dt_plan import PAGE, DtBootPlan, align_down, align_up
from bootfuzz.loader.fdt_writer import FdtNode
from bootfuzz.transcript import GuestExit

#: Properties the kernel adds to every node it exposes (drivers/of/kobj.c: "name").
KERNEL_ADDED_PROPS = frozenset({"name"})
#: Consumed and wiped from /chosen by the kernel (drivers/of/fdt.c, early_init_dt_scan_chosen).
WIPED_CHOSEN_PROPS = frozenset({"rng-seed"})
UNPACK_START = "Trying to unpack rootfs image as initramfs..."


@dataclass(frozen=True)
class DtEvidence:
    plan: DtBootPlan
    observation: DtObservation
    guest_exit: GuestExit
    end_detail: str


DtOracle = Callable[[DtEvidence], OracleResult | None]


def merged_ram(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Memory node (address, size) pairs as memblock keeps them: page clipped, sorted,
    touching or overlapping ranges merged; [start, end] inclusive as the kernel prints."""
    parts = sorted((align_up(a, PAGE), align_down(a + s, PAGE)) for a, s in ranges)
    out: list[list[int]] = []
    for a, b in parts:
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b - 1) for a, b in out]


def _fmt(ranges: Sequence[tuple[int, int]]) -> str:
    return "\n".join(f"[mem {a:#018x}-{b:#018x}]" for a, b in ranges) or "(none)"


def agent_expected(plan: DtBootPlan) -> bool:
    spec = plan.case.initrd
    return plan.initrd is not None and spec is not None and not spec.raw


def check_boot(ev: DtEvidence) -> OracleResult:
    """The guest reached our agent and powered off (or, with no agent, the no-root panic)."""
    return judge_boot(ev.observation.base, ev.guest_exit, ev.end_detail,
                      agent=agent_expected(ev.plan), firmware_marker=False)


def check_kernel_clean(ev: DtEvidence) -> OracleResult | None:
    """The kernel reported no bug of its own on the way to our agent."""
    return judge_kernel_clean(ev.observation.base)


def check_machine_model(ev: DtEvidence) -> OracleResult:
    """"Machine model:" is our root node's model: the kernel parsed our tree."""
    model = ev.plan.fdt.root.prop("model")
    want = model.rstrip(b"\0").decode() if model else "(none)"
    got = ev.observation.machine_model
    if got is None:
        return unknown("dt-machine-model", want, "no 'Machine model:' line")
    return judged("dt-machine-model", got == want, want, got)


def check_memory_nodes(ev: DtEvidence) -> OracleResult:
    """"Early memory node ranges" equal our memory nodes, as memblock merges them."""
    want = merged_ram(ev.plan.memory)
    got = [(a, b) for _, a, b in ev.observation.memory_node_ranges]
    if not got:
        return unknown("dt-memory", _fmt(want), "no 'Early memory node ranges' lines")
    return judged("dt-memory", got == want, _fmt(want), _fmt(got))


def check_iomem(ev: DtEvidence) -> OracleResult | None:
    """/proc/iomem's System RAM equals our memory nodes."""
    if not agent_expected(ev.plan):
        return None
    want = merged_ram(ev.plan.memory)
    agent = ev.observation.dt_agent
    if agent is None:
        return unknown("iomem-ram", _fmt(want), "no agent report")
    got = agent.system_ram()
    return judged("iomem-ram", got == want, _fmt(want), _fmt(got))


def check_cmdline(ev: DtEvidence) -> OracleResult:
    """"Kernel command line:" is the string we wrote into /chosen/bootargs (as printk
    shows a long or multi-line message: oracles.judge_cmdline)."""
    return judge_cmdline(ev.observation.base, ev.plan.cmdline, kernel_message=True)


def check_agent_cmdline(ev: DtEvidence) -> OracleResult | None:
    if not agent_expected(ev.plan):
        return None
    return judge_agent_cmdline(ev.observation.base, ev.plan.cmdline)


def initrd_freed_kib(start: int, end: int) -> int:
    """What "Freeing initrd memory: NK" says for [start, end): the whole pages inside."""
    return max(align_down(end, PAGE) - align_up(start, PAGE), 0) // 1024


def check_initrd_unpacked(ev: DtEvidence) -> OracleResult:
    """The kernel found our initrd, unpacked it without error and freed exactly the whole
    pages of the initrd we placed."""
    placed = ev.plan.initrd
    obs = ev.observation.base
    if placed is None:
        return judged("initrd-unpacked", obs.unpack_start is None, "no initramfs unpacked",
                      str(obs.unpack_start))
    kib = initrd_freed_kib(placed.addr, placed.end)
    expected = f"'{UNPACK_START}', no failure, 'Freeing initrd memory: {kib}K'"
    if obs.unpack_start is None and obs.initrd_freed_kib is None:
        if obs.agent is not None:
            return judged("initrd-unpacked", False, expected, "no unpack message")
        return unknown("initrd-unpacked", expected, "the log ends before the unpack")
    parts = ["unpacked" if obs.unpack_start else "no unpack message"]
    if obs.unpack_failure:
        parts.append(f"Initramfs unpacking failed: {obs.unpack_failure}")
    if obs.not_initramfs:
        parts.append(f"not initramfs: {obs.not_initramfs}")
    parts.append(f"Freeing initrd memory: {obs.initrd_freed_kib}K"
                 if obs.initrd_freed_kib is not None else "no 'Freeing initrd memory'")
    spec = ev.plan.case.initrd
    rejected_ok = spec is not None and spec.raw and bool(obs.unpack_failure or obs.not_initramfs)
    ok = (obs.unpack_start is not None and obs.initrd_freed_kib == kib
          and (rejected_ok or (obs.unpack_failure is None and obs.not_initramfs is None)))
    return judged("initrd-unpacked", ok, expected, ", ".join(parts))


def check_initrd_range(ev: DtEvidence) -> OracleResult | None:
    """The initrd is where we put it: the range the kernel kept in /chosen is our initrd's
    bytes, and the pages it freed after the unpack are that range's whole pages."""
    placed = ev.plan.initrd
    if placed is None or not agent_expected(ev.plan):
        return None
    kib = initrd_freed_kib(placed.addr, placed.end)
    expected = (f"chosen [{placed.addr:#x}, {placed.end:#x}) kept, "
                f"'Freeing initrd memory: {kib}K'")
    agent = ev.observation.dt_agent
    freed = ev.observation.base.initrd_freed_kib
    if agent is None:
        return unknown("initrd-range", expected, "no agent report")
    start, end = agent.chosen.get("linux,initrd-start"), agent.chosen.get("linux,initrd-end")
    if start is None or end is None:
        return judged("initrd-range", False, expected, "no initrd range in /chosen")
    got = (int.from_bytes(start, "big"), int.from_bytes(end, "big"))
    observed = f"chosen [{got[0]:#x}, {got[1]:#x}) kept, 'Freeing initrd memory: {freed}K'"
    return judged("initrd-range", got == (placed.addr, placed.end) and freed == kib,
                  expected, observed)


def check_payload(ev: DtEvidence) -> OracleResult | None:
    if not agent_expected(ev.plan):
        return None
    placed, spec = ev.plan.initrd, ev.plan.case.initrd
    assert placed is not None and spec is not None
    return judge_payload(ev.observation.base, spec.size, placed.payload_sha256)


def _node_props(node: FdtNode) -> dict[str, bytes]:
    return {k: v for k, v in node.props}


def _show_props(props: dict[str, bytes]) -> str:
    return "\n".join(f"{k} = {v.hex() if v else '(empty)'}" for k, v in sorted(props.items()))


def check_dt_memory_kept(ev: DtEvidence) -> OracleResult | None:
    """The memory nodes in /sys/firmware/devicetree/base are the ones we wrote, byte for byte."""
    if not agent_expected(ev.plan):
        return None
    want = {n.name: _node_props(n) for n in ev.plan.fdt.root.children
            if n.name.startswith("memory")}
    expected = "\n".join(f"{name}: {_show_props(p)}" for name, p in sorted(want.items()))
    agent = ev.observation.dt_agent
    if agent is None:
        return unknown("dt-memory-kept", expected, "no agent report")
    got = {name: {k: v for k, v in props.items() if k not in KERNEL_ADDED_PROPS}
           for name, props in agent.memory.items()}
    observed = "\n".join(f"{name}: {_show_props(p)}" for name, p in sorted(got.items()))
    return judged("dt-memory-kept", got == want, expected, observed)


def check_dt_chosen_kept(ev: DtEvidence) -> OracleResult | None:
    """/chosen as the kernel kept it: what we wrote, without the rng-seed it consumed."""
    if not agent_expected(ev.plan):
        return None
    chosen = ev.plan.fdt.root.child("chosen")
    want = {k: v for k, v in (chosen.props if chosen else ()) if k not in WIPED_CHOSEN_PROPS}
    agent = ev.observation.dt_agent
    if agent is None:
        return unknown("dt-chosen-kept", _show_props(want), "no agent report")
    got = {k: v for k, v in agent.chosen.items() if k not in KERNEL_ADDED_PROPS}
    return judged("dt-chosen-kept", got == want, _show_props(want), _show_props(got))


def check_rng_seed(ev: DtEvidence) -> OracleResult | None:
    """The kernel consumed our rng-seed and wiped it from /chosen (drivers/of/fdt.c)."""
    if not agent_expected(ev.plan):
        return None
    agent = ev.observation.dt_agent
    expected = "no rng-seed left in /chosen"
    if agent is None:
        return unknown("dt-rng-seed", expected, "no agent report")
    left = agent.chosen.get("rng-seed")
    return judged("dt-rng-seed", left is None, expected,
                  "as expected" if left is None else f"rng-seed still there: {left.hex()}")


DT_ORACLES: tuple[DtOracle, ...] = (
    check_boot,
    check_kernel_clean,
    check_machine_model,
    check_memory_nodes,
    check_iomem,
    check_cmdline,
    check_agent_cmdline,
    check_initrd_unpacked,
    check_initrd_range,
    check_payload,
    check_dt_memory_kept,
    check_dt_chosen_kept,
    check_rng_seed,
)


def judge_dt(ev: DtEvidence) -> list[OracleResult]:
    return [r for oracle in DT_ORACLES if (r := oracle(ev)) is not None]
