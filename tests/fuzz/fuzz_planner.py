"""atheris target: the pure planner (bootfuzz.loader.planner.plan_boot) on a kernel image.

Run: python -m tests.fuzz.fuzz_planner /tmp/new-corpus corpus/atheris/planner \
    -atheris_runs=100000
The image is a fake bzImage by default; BOOTFUZZ_FUZZ_KERNEL=NAME (a pinned kernel,
fetched if needed) or a path plans on a real one, whose header has the fields and
limits a fake can only imitate (init_size, pref_address, xloadflags, cmdline_size).
The bytes become a case through atheris.FuzzedDataProvider (without atheris, through
a small stand-in with the same methods, so the seeds still run in CI): memory, an
initrd size, a command line, and overrides with every value inside its field's
width (the domain the reproducer format accepts).  The planner must return a plan
or raise a ConfigError; anything else (HarnessBug included) is a crash.  A plan made
without overrides must pass every validity rule.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from tests.fuzz._common import atheris, instrumented, main

with instrumented(__name__ == "__main__"):
    from bootfuzz.abi.bootparam import BOOT_PARAMS
    from bootfuzz.abi.e820 import E820Entry
    from bootfuzz.case import BootCase, EntryProtocol, Overrides, SetupDataNode
    from bootfuzz.errors import ConfigError
    from bootfuzz.fuzz.generate import MEMORY_EDGES, field_max
    from bootfuzz.judge.layout_rules import check_layout
    from bootfuzz.judge.verdict import Verdict
    from bootfuzz.kernel.image import KernelImage, load_kernel_image, parse_kernel_image
    from bootfuzz.kernel.pinned import resolve_kernel
    from bootfuzz.loader import entry_cpu, x86
    from bootfuzz.loader.planner import plan_boot
    from bootfuzz.loader.platform import qemu_pc
    from tests.fakes import FakeInitrd, fake_bzimage

TARGET = "planner"
KERNEL_ENV = "BOOTFUZZ_FUZZ_KERNEL"


def _image() -> KernelImage:
    spec = os.environ.get(KERNEL_ENV)
    if not spec:
        return parse_kernel_image(fake_bzimage(init_size=0x3378000))
    return load_kernel_image(resolve_kernel(spec))


IMAGE = _image()
INT_FIELDS = tuple(f.name for f in BOOT_PARAMS if not f.raw)
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
# Pure and the slowest part of a plan: cache it for throughput.
vars(entry_cpu)["identity_page_tables"] = functools.lru_cache(maxsize=None)(
    x86.identity_page_tables)


class _Provider:
    """The part of atheris.FuzzedDataProvider this target uses, for runs without atheris."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def ConsumeIntInRange(self, lo: int, hi: int) -> int:
        span = hi - lo
        if span <= 0:
            return lo
        raw = int.from_bytes(self._take((span.bit_length() + 7) // 8), "little")
        return lo + raw % (span + 1)

    def ConsumeBool(self) -> bool:
        return bool(self.ConsumeIntInRange(0, 1))

    def ConsumeBytes(self, n: int) -> bytes:
        return self._take(n)


def provider(data: bytes) -> Any:
    return atheris.FuzzedDataProvider(data) if atheris is not None else _Provider(data)


def _memory(fdp: Any) -> int:
    how = fdp.ConsumeIntInRange(0, 2)
    if how == 0:
        return int(MEMORY_EDGES[fdp.ConsumeIntInRange(0, len(MEMORY_EDGES) - 1)])
    if how == 1:
        return int(fdp.ConsumeIntInRange(0, 1 << 22)) * 4096
    return int(fdp.ConsumeIntInRange(0, 1 << 41))


def _overrides(fdp: Any) -> Overrides:
    def maybe_u64() -> int | None:
        return int(fdp.ConsumeIntInRange(0, U64)) if fdp.ConsumeBool() else None

    fields = []
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        name = INT_FIELDS[fdp.ConsumeIntInRange(0, len(INT_FIELDS) - 1)]
        fields.append((name, int(fdp.ConsumeIntInRange(0, field_max(name)))))
    e820 = None
    if fdp.ConsumeBool():
        e820 = tuple(E820Entry(fdp.ConsumeIntInRange(0, U64), fdp.ConsumeIntInRange(0, U64),
                               fdp.ConsumeIntInRange(0, U32))
                     for _ in range(fdp.ConsumeIntInRange(0, 130)))
    nodes = tuple(SetupDataNode(fdp.ConsumeIntInRange(0, U32),
                                bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))),
                                maybe_u64())
                  for _ in range(fdp.ConsumeIntInRange(0, 2)))
    raw = bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))) if fdp.ConsumeBool() else None
    return Overrides(fields=tuple(fields), initrd_addr=maybe_u64(), cmdline_addr=maybe_u64(),
                     cmdline_raw=raw, e820=e820, kernel_load=maybe_u64(), setup_data=nodes)


def TestOneInput(data: bytes) -> None:
    fdp = provider(data)
    memory = _memory(fdp)
    initrd = FakeInitrd(fdp.ConsumeIntInRange(0, 1 << 33)) if fdp.ConsumeBool() else None
    cmdline = bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 2100))).decode("utf-8", "replace")
    overrides = _overrides(fdp) if fdp.ConsumeBool() else Overrides()
    case = BootCase(kernel="fake", memory=memory, cmdline=cmdline, overrides=overrides,
                    entry=EntryProtocol.BOOT64)
    try:
        platform = qemu_pc(memory)
        plan = plan_boot(case, IMAGE, platform, initrd)
    except ConfigError:
        return
    if overrides.empty:
        bad = [r.name for r in check_layout(plan) if r.verdict is Verdict.FAIL]
        assert not bad, f"the loader's own layout is flagged: {bad}"


if __name__ == "__main__":
    main(TestOneInput)
