"""A campaign's state file: which cases are done and which failures are known.

Rewritten atomically after every case, so ``bootfuzz fuzz --resume`` continues
after a kill without redoing a finished case or writing a second reproducer for a
known signature, and with the kernels' memory floors it began with (a resumed run
generates from the same floors, whatever the cache holds by then).  ``cases_bytes``
says how much of the case log (bootfuzz.fuzz.caselog) the state has counted: lines
past it were booted by a campaign killed before it saved, and a resume counts them.
Read back through the typed JSON reader: a hand-edited or truncated file is one
error naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bootfuzz.errors import ConfigError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.fuzz.generate import GeneratorConfig
from bootfuzz.jsonread import JsonReader
from bootfuzz.judge.memory_floor import FloorPoint, MemoryFloor

STATE_VERSION = 2
#: How each finished case ended (the keys of CampaignState.counts): passed; failed
#: and failed again the same way when booted again (a finding, or a loader that
#: refused a case without overrides); failed once and not again (flaky, never a
#: finding); failed short of memory below the kernel's floor (below-floor, never a
#: finding); with overrides the loader cannot represent (rejected); could not run
#: (infra).  bootfuzz.fuzz.campaign decides which.
STATUSES = ("pass", "fail", "flaky", "below-floor", "rejected", "infra")


class CampaignError(ConfigError):
    """Bad campaign options or a state file that does not match them."""

    component = "fuzz"


@dataclass
class Finding:
    """One failure signature: where its reproducer is and how far it was minimized."""

    key: str
    file: str
    first_index: int
    count: int = 1
    minimized: bool = False
    boots: int = 0
    steps: tuple[str, ...] = ()


_FINDING_KEYS = tuple(f.name for f in dataclasses.fields(Finding))


@dataclass
class CampaignState:
    """Everything --resume needs: which cases are done and which failures are known."""

    seed: int
    shard: tuple[int, int]
    generator: str  # a digest of the generator's configuration
    next_index: int  # every case of the shard below this is done
    done_beyond: set[int] = field(default_factory=set)
    findings: dict[str, Finding] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    elapsed: float = 0.0  # seconds spent before this run
    rejections: list[str] = field(default_factory=list)  # first few messages
    cases_bytes: int = 0  # how much of the case log these counts include
    kernels: tuple[str, ...] = ()  # as given (--kernel), for reports and merge
    #: Each kernel's memory floor, by kernel name (bootfuzz.fuzz.floors); absent: none.
    floors: dict[str, MemoryFloor] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "seed": self.seed, "shard": list(self.shard),
            "generator": self.generator, "next_index": self.next_index,
            "done_beyond": sorted(self.done_beyond), "counts": self.counts,
            "elapsed": self.elapsed, "rejections": self.rejections,
            "findings": [dataclasses.asdict(f) for f in self.findings.values()],
            "cases_bytes": self.cases_bytes, "kernels": list(self.kernels),
            "floors": [{"kernel": name, "kernel_sha256": f.kernel_sha256,
                        "points": [dataclasses.asdict(p) for p in f.points]}
                       for name, f in self.floors.items()],
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> CampaignState:
        r = JsonReader(f"{where}: not a campaign state file", error=CampaignError)
        top = r.as_obj(doc, "(top level)")
        version = r.field(top, "version", "")
        if version != STATE_VERSION:
            raise CampaignError(f"{where}: state version {version!r}, this bootfuzz reads "
                                f"{STATE_VERSION}")
        r.keys(top, ("version", "seed", "shard", "generator", "next_index", "done_beyond",
                     "counts", "elapsed", "rejections", "findings", "cases_bytes",
                     "kernels", "floors"),
               "(top level)")
        shard = r.as_list(r.field(top, "shard", ""), "shard")
        if len(shard) != 2:
            raise r.fail("shard", f"expected [i, n], got {len(shard)} numbers")
        counts = r.as_obj(r.field(top, "counts", ""), "counts")
        r.keys(counts, STATUSES, "counts")
        return cls(
            seed=r.as_int(r.field(top, "seed", ""), "seed"),
            shard=(r.as_int(shard[0], "shard[0]"), r.as_int(shard[1], "shard[1]")),
            generator=r.as_str(r.field(top, "generator", ""), "generator"),
            next_index=r.as_int(r.field(top, "next_index", ""), "next_index"),
            done_beyond={r.as_int(k, f"done_beyond[{i}]") for i, k in enumerate(
                r.as_list(r.field(top, "done_beyond", ""), "done_beyond"))},
            findings={f.key: f for f in (
                _finding(r, f, f"findings[{i}]") for i, f in enumerate(
                    r.as_list(r.field(top, "findings", ""), "findings")))},
            counts={**dict.fromkeys(STATUSES, 0),
                    **{k: r.as_int(v, f"counts.{k}") for k, v in counts.items()}},
            elapsed=r.as_float(r.field(top, "elapsed", ""), "elapsed"),
            rejections=[r.as_str(m, f"rejections[{i}]") for i, m in enumerate(
                r.as_list(top.get("rejections", []), "rejections"))],
            cases_bytes=r.as_int(r.field(top, "cases_bytes", ""), "cases_bytes"),
            kernels=tuple(r.as_str(k, f"kernels[{i}]") for i, k in enumerate(
                r.as_list(r.field(top, "kernels", ""), "kernels"))),
            floors=dict(_floor(r, f, f"floors[{i}]") for i, f in enumerate(
                r.as_list(top.get("floors", []), "floors"))),
        )

    def is_done(self, index: int) -> bool:
        """Whether case *index* of this shard is finished."""
        i, n = self.shard
        return index % n == i and (index < self.next_index or index in self.done_beyond)

    def mark_done(self, index: int) -> None:
        """Record case *index* and move next_index past every finished case."""
        self.done_beyond.add(index)
        n = self.shard[1]
        while self.next_index in self.done_beyond:
            self.done_beyond.discard(self.next_index)
            self.next_index += n


def _finding(r: JsonReader, value: object, path: str) -> Finding:
    f = r.as_obj(value, path)
    r.keys(f, _FINDING_KEYS, path)
    return Finding(
        key=r.as_str(r.field(f, "key", path), f"{path}.key"),
        file=r.as_str(r.field(f, "file", path), f"{path}.file"),
        first_index=r.as_int(r.field(f, "first_index", path), f"{path}.first_index"),
        count=r.as_int(f.get("count", 1), f"{path}.count"),
        minimized=r.as_bool(f.get("minimized", False), f"{path}.minimized"),
        boots=r.as_int(f.get("boots", 0), f"{path}.boots"),
        steps=tuple(r.as_str(s, f"{path}.steps[{i}]")
                    for i, s in enumerate(r.as_list(f.get("steps", []), f"{path}.steps"))),
    )


def _floor(r: JsonReader, value: object, path: str) -> tuple[str, MemoryFloor]:
    f = r.as_obj(value, path)
    r.keys(f, ("kernel", "kernel_sha256", "points"), path)
    points = []
    for i, p in enumerate(r.as_list(r.field(f, "points", path), f"{path}.points")):
        where = f"{path}.points[{i}]"
        doc = r.as_obj(p, where)
        r.keys(doc, ("payload", "memory", "failed"), where)
        failed = r.field(doc, "failed", where)
        points.append(FloorPoint(
            r.as_int(r.field(doc, "payload", where), f"{where}.payload"),
            r.as_int(r.field(doc, "memory", where), f"{where}.memory"),
            None if failed is None else r.as_int(failed, f"{where}.failed")))
    if not points:
        raise r.fail(f"{path}.points", "no measured point")
    return (r.as_str(r.field(f, "kernel", path), f"{path}.kernel"),
            MemoryFloor(r.as_str(r.field(f, "kernel_sha256", path), f"{path}.kernel_sha256"),
                        tuple(points)))


def save_state(state: CampaignState, path: Path) -> None:
    atomic_write_text(path, json.dumps(state.to_json(), indent=1) + "\n")


def load_state(path: Path) -> CampaignState:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read the state file: {exc.strerror}") from None
    except ValueError as exc:
        raise CampaignError(f"{path}: the state file is not JSON: {exc}") from None
    return CampaignState.from_json(doc, str(path))


def generator_digest(config: GeneratorConfig) -> str:
    """Identifies what the generator produces; --resume refuses a different one."""
    doc = dataclasses.asdict(config)
    doc.pop("seed")
    # Added later: left out at their defaults, so a campaign begun before them resumes.
    for name, default in (("backend", "qemu-tcg"), ("cpu_template", "baseline")):
        if doc.get(name) == default:
            doc.pop(name)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


__all__ = ["STATE_VERSION", "CampaignError", "CampaignState", "Finding", "generator_digest",
           "load_state", "save_state"]
