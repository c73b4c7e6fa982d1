"""What the kernel shows of our setup_data chain: the model behind the setup-data oracle.

Given the plan (the nodes we wrote and where hdr.setup_data points), predicts what
/sys/kernel/boot_params/setup_data/<n> shows once the kernel has run, or says why the
chain cannot be modelled.  Pure, like the E820 sanitizer and mem=/memmap= models
beside it.
"""

from __future__ import annotations

from bootfuzz.abi.bootparam import BOOT_PARAMS
from bootfuzz.abi.setup_data import SETUP_DATA_HEADER, SETUP_INDIRECT_PAYLOAD, SetupType
from bootfuzz.judge.observation import AgentSetupData
from bootfuzz.loader.plan import BootPlan


def _setup_data_head(plan: BootPlan) -> int | None:
    """hdr.setup_data as the kernel reads it: from our zero page, or the predicted fields."""
    if plan.zero_page:
        return int(BOOT_PARAMS["setup_data"].decode(plan.zero_page))
    head = dict(plan.boot_params_fields).get("setup_data")
    return head if isinstance(head, int) else None


def expected_setup_data(plan: BootPlan) -> tuple[AgentSetupData, ...] | str:
    """What /sys/kernel/boot_params/setup_data/<n> shows, or why it cannot be modelled.

    Memory is what our setup_data blobs hold.  setup_arch's parse_setup_data
    zeroes each SETUP_RNG_SEED payload and its ``len`` in place (so sysfs shows
    type 0x9 and no data); other nodes stay as written.  ksysfs.c (6.1 = 6.12)
    shows a SETUP_INDIRECT node as its setup_indirect's type with the target
    [addr, addr + len) as data, or, when that type is bare SETUP_INDIRECT (a
    nested indirect), as the node's own payload.  source: arch/x86/kernel/setup.c,
    arch/x86/kernel/ksysfs.c; boot-protocol.md 2.3.
    """
    memory = [(b.addr, bytearray(b.data)) for b in plan.blobs
              if b.name.startswith("setup_data") and b.data is not None]

    def at(addr: int, size: int) -> tuple[bytearray, int] | None:
        for base, buf in memory:
            if base <= addr and addr + size <= base + len(buf):
                return buf, addr - base
        return None

    head = _setup_data_head(plan)
    if head is None:
        return "the plan does not say what hdr.setup_data holds"
    chain: list[tuple[int, bytearray, int]] = []  # each node's address, blob bytes, offset
    addr = head
    while addr:
        node = at(addr, SETUP_DATA_HEADER.size)
        if node is None:
            return f"the chain reaches {addr:#x}, which is not a node we wrote"
        if any(addr == a for a, _, _ in chain):
            return f"the chain loops at {addr:#x}"
        size = int(SETUP_DATA_HEADER["len"].decode(*node))
        if at(addr + SETUP_DATA_HEADER.size, size) is None:
            return f"the node at {addr:#x} claims {size} bytes, more than we wrote"
        chain.append((addr, *node))
        addr = int(SETUP_DATA_HEADER["next"].decode(*node))
    for _, buf, off in chain:
        if SETUP_DATA_HEADER["type"].decode(buf, off) == SetupType.SETUP_RNG_SEED:
            size = int(SETUP_DATA_HEADER["len"].decode(buf, off))
            start = off + SETUP_DATA_HEADER.size
            buf[start : start + size] = bytes(size)
            SETUP_DATA_HEADER.pack_into(buf, {"len": 0}, base=off)
    shown = []
    for addr, buf, off in chain:
        kind = int(SETUP_DATA_HEADER["type"].decode(buf, off))
        start = off + SETUP_DATA_HEADER.size
        data = bytes(buf[start : start + int(SETUP_DATA_HEADER["len"].decode(buf, off))])
        if kind == SetupType.SETUP_INDIRECT:
            payload = at(addr + SETUP_DATA_HEADER.size, SETUP_INDIRECT_PAYLOAD.size)
            if payload is None:
                return f"the indirect node at {addr:#x} has no whole setup_indirect"
            indirect = SETUP_INDIRECT_PAYLOAD.parse(*payload)
            kind = int(indirect["type"])
            if kind != SetupType.SETUP_INDIRECT:
                target, size = int(indirect["addr"]), int(indirect["len"])
                where = at(target, size)
                if where is None:
                    return f"the indirect target [{target:#x}, +{size:#x}) is not memory we wrote"
                data = bytes(where[0][where[1] : where[1] + size])
        shown.append(AgentSetupData(kind, data))
    return tuple(shown)
