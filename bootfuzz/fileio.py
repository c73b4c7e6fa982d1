"""Writing files so that a kill mid-write never leaves half a file behind.

Every file bootfuzz writes for a user (reproducers, summaries, the manifest, initrds
in the cache) goes through here: a temporary file in the target directory, renamed
over the target only once complete.  ``mkstemp`` creates files 0600; the result gets
the mode a plain ``open()`` would have given it (0666 masked by the user's umask), or
the old file's mode when one is replaced, so a reproducer can be shared like any file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    # The only portable way to read the umask is to set it; restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_output(path: Path, *, suffix: str = "") -> Iterator[BinaryIO]:
    """A binary file that becomes *path* only if the block finishes without an error.

    On any error (a full disk, a signal turned into an exception) the temporary file
    is removed and *path* is left as it was; an OSError that names no file (a write
    on a full disk) is given *path*'s name, so whoever reports it can say which.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace *path* with *data* in one step."""
    with atomic_output(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace *path* with *text* (UTF-8) in one step."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside *path* (``path.lock``): one writer of a cache file
    across processes (campaign workers learn and write the same caches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
