"""The files a backend loads into guest memory: one per piece the plan's blobs leave there.

bootfuzz.loader.memory decides which bytes memory holds (RAM only, a later blob
over an earlier one); this module puts each piece in a file, because QEMU's
``-device loader`` takes a whole file and refuses overlapping ones, and our KVM
VMM reads its manifest's files.  A whole blob keeps its own file (an initrd from
the cache) or gets ``<name>.bin``; a cut one gets ``<name>@<address>.bin``.  Every
file written here ends in ``.bin``, which run/boot.py removes after the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bootfuzz.errors import HarnessBug
from bootfuzz.loader.memory import Piece, memory_pieces
from bootfuzz.loader.plan import BootPlan

SUFFIX = ".bin"


@dataclass(frozen=True)
class MemoryFile:
    """*size* bytes of *path* go to guest address *addr* (*name* says whose they are)."""

    name: str
    addr: int
    size: int
    path: Path


def _copy_range(source: Path, offset: int, size: int, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        src.seek(offset)
        left = size
        while left:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                raise HarnessBug(f"{source} ends before byte {offset + size:#x}")
            dst.write(chunk)
            left -= len(chunk)


def _file(piece: Piece, run_dir: Path) -> Path:
    blob = piece.blob
    if piece.whole and blob.path is not None:
        return blob.path.resolve()
    stem = blob.name if piece.whole else f"{blob.name}@{piece.addr:x}"
    path = (run_dir / f"{stem}{SUFFIX}").resolve()
    if blob.data is not None:
        path.write_bytes(blob.data[piece.offset : piece.offset + piece.size])
    elif blob.path is not None:
        _copy_range(blob.path, piece.offset, piece.size, path)
    else:
        raise HarnessBug(f"blob {blob.name} has neither data nor a path")
    return path


def memory_files(plan: BootPlan, run_dir: Path) -> list[MemoryFile]:
    """The files that fill guest memory as *plan* says, written into *run_dir* where needed."""
    return [MemoryFile(p.blob.name, p.addr, p.size, _file(p, run_dir))
            for p in memory_pieces(plan.blobs, plan.platform)]

