"""The initrd our guests boot with: a cpio "newc" archive, compressed the kernel's way.

What an initrd holds is an InitrdSpec (bootfuzz.case); this module turns one into
bytes, through the newc writer (bootfuzz.guest.cpio) and a streaming encoder of
the spec's compression, and caches the result.

Contents (in archive order; names are relative, the kernel unpacks them into /):

==================  ===========================  ==========================================
``dev``             directory 0755
``dev/console``     char device 5,1, mode 0600   so /init has a console before devtmpfs
``proc``, ``sys``   directories 0755             mount points for the agent
``init``            regular 0755                 the static guest agent (built elsewhere)
``payload``         regular 0644                 :func:`payload_bytes` (seed, size)
``payload.sha256``  regular 0644                 SHA-256 of ``payload``, 64 lower-case hex
                                                 digits, no newline
==================  ===========================  ==========================================

``payload.sha256`` follows ``payload`` so the digest is computed while the payload
streams past: nothing is held in memory beyond one payload chunk and the
compressor's state, whatever the size.

The archive is deterministic: inodes numbered 1.. in order, uid/gid 0, mtime 0,
so a spec and an agent give the same bytes on every machine (up to the compression
library's version).  The format follows the kernel's reader, init/initramfs.c, and
Documentation/driver-api/early-userspace/buffer-format.rst.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import hashlib
import io
import json
import lzma
import os
import queue
import subprocess
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import lz4.block
import zstandard

from bootfuzz import compression as codecs
from bootfuzz.cache import cache_root
from bootfuzz.case import (
    MAX_PAYLOAD_SIZE,
    InitrdSpec,
    check_payload_seed,
    check_payload_size,
)
from bootfuzz.compression import (
    LZ4_LEGACY_CHUNK_SIZE,
    LZ4_LEGACY_MAGIC,
    Compression,
    lzo_unsupported,
    lzop_available,
)
from bootfuzz.errors import ConfigError, HarnessBug, InfrastructureError, InitramfsError
from bootfuzz.fileio import atomic_output
from bootfuzz.guest.cpio import NEWC_FIELD_MAX, BinarySink, NewcWriter, newc_archive_size
from bootfuzz.units import format_size, parse_size

# The spec's size limit is the cpio field's (case.py may not import the writer).
assert MAX_PAYLOAD_SIZE == NEWC_FIELD_MAX

# --- payload ----------------------------------------------------------------------

#: Domain-separation prefix of the payload generator.  Never change it:
#: reproducers record (seed, size) and expect the same bytes.
PAYLOAD_DOMAIN = b"bootfuzz-payload\0"
PAYLOAD_CHUNK = 1 << 20


def payload_bytes(seed: int, size: int) -> Iterator[bytes]:
    """Yield the *size* bytes of the payload for *seed*, in chunks of at most 1 MiB.

    Exactly: chunk i (i = 0, 1, ...) is the first min(1 MiB, bytes left) bytes of
    ``SHAKE256(b"bootfuzz-payload\\0" || le64(seed) || le64(i))``; the payload is
    the chunks concatenated, so it is the same bytes whatever size is asked for, up
    to that size.  Reproducers depend on this; a unit test pins a digest.
    """
    check_payload_seed(seed)
    check_payload_size(size)
    seed_bytes = seed.to_bytes(8, "little")
    index = 0
    left = size
    while left:
        n = min(PAYLOAD_CHUNK, left)
        yield hashlib.shake_256(PAYLOAD_DOMAIN + seed_bytes + index.to_bytes(8, "little")).digest(n)
        left -= n
        index += 1


# --- encoders ---------------------------------------------------------------------

# Levels: our initrds are mostly random bytes, so compression is there for the
# format (to exercise the kernel's decompressor), not for the ratio.  Always the
# fastest setting the format has.
#: zlib level 1; gzip header with mtime 0 and no FNAME (decompress_inflate.c skips
#: FNAME only: no FEXTRA/FCOMMENT/FHCRC, which zlib's gzip header never sets).
GZIP_LEVEL = 1
#: source: zlib.h deflateInit2, windowBits 16 + 15 selects the gzip wrapper.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
#: 100 kB blocks: the least memory for the kernel's bunzip2 (decompress_bunzip2.c).
BZIP2_LEVEL = 1
#: Preset 0 (dictionary 256 KiB: unlzma allocates a buffer of the dictionary size,
#: decompress_unlzma.c) with the cheapest match finder settings; incompressible data
#: goes ~1.6x faster than plain preset 0.
_LZMA_FAST: Mapping[str, int] = {
    "preset": 0,
    "mode": lzma.MODE_FAST,
    "mf": lzma.MF_HC4,
    "nice_len": 8,
    "depth": 1,
}
#: The kernel's XZ decoder (lib/xz, XZ_DEC_ANY_CHECK unset) knows only the NONE and
#: CRC32 checks; xz(1)'s default CRC64 would make it fail "unsupported check".
XZ_CHECK = lzma.CHECK_CRC32
ZSTD_LEVEL = 1
#: 1 MiB window.  The kernel's unzstd allocates the whole window for initramfs
#: (multi-call mode) and refuses windows over 128 MiB (ZSTD_WINDOWSIZE_MAX).
ZSTD_WINDOW_LOG = 20


class _Encoder(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes, /) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Lz4LegacyEncoder:
    """lz4's legacy frame: magic, then [le32 compressed size][raw lz4 block] per 8 MiB.

    Holds at most one 8 MiB chunk plus the write that filled it, as lz4 -l does.
    """

    def __init__(self) -> None:
        self._magic = LZ4_LEGACY_MAGIC.to_bytes(4, "little")
        self._buffer = bytearray()

    def _block(self, size: int) -> bytes:
        with memoryview(self._buffer) as view, view[:size] as chunk:
            block: bytes = lz4.block.compress(chunk, store_size=False)
        del self._buffer[:size]
        head, self._magic = self._magic, b""
        return head + len(block).to_bytes(4, "little") + block

    def compress(self, data: bytes, /) -> bytes:
        self._buffer += data
        out = b""
        while len(self._buffer) >= LZ4_LEGACY_CHUNK_SIZE:
            out += self._block(LZ4_LEGACY_CHUNK_SIZE)
        return out

    def flush(self) -> bytes:
        out = self._block(len(self._buffer)) if self._buffer else b""
        return self._magic + out


#: lzop at level 1, the fastest (bootfuzz.compression.LZOP says why a command).
LZOP_ARGS = ("-1", "-c", "-")


class _LzopEncoder:
    """Streams through an lzop process; a reader thread drains its output so the
    pipes never fill up, and compress() hands back what has arrived."""

    def __init__(self) -> None:
        if not lzop_available():
            raise lzo_unsupported()
        self._proc = subprocess.Popen(
            (codecs.LZOP, *LZOP_ARGS), stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._chunks: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for chunk in iter(lambda: self._proc.stdout.read(1 << 16), b""):  # type: ignore[union-attr]
            self._chunks.put(chunk)

    def _drain(self) -> bytes:
        out = bytearray()
        while not self._chunks.empty():
            out += self._chunks.get()
        return bytes(out)

    def compress(self, data: bytes, /) -> bytes:
        assert self._proc.stdin is not None
        self._proc.stdin.write(data)
        return self._drain()

    def flush(self) -> bytes:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._reader.join()
        if self._proc.wait() != 0:
            raise InitramfsError(f"{codecs.LZOP} failed with exit status {self._proc.returncode}")
        return self._drain()


def _encoder(compression: Compression, total: int) -> _Encoder:
    """A streaming compressor for *compression*; *total* is the uncompressed size."""
    if compression is Compression.NONE:
        return _Identity()
    if compression is Compression.GZIP:
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    if compression is Compression.BZIP2:
        return bz2.BZ2Compressor(BZIP2_LEVEL)
    if compression is Compression.LZMA:
        # FORMAT_ALONE writes the 13-byte header with size -1 (unknown) and an end
        # marker; unlzma accepts that (it stops at the marker).
        lzma1: dict[str, Any] = {"id": lzma.FILTER_LZMA1, **_LZMA_FAST}
        return lzma.LZMACompressor(format=lzma.FORMAT_ALONE, filters=[lzma1])
    if compression is Compression.XZ:
        lzma2: dict[str, Any] = {"id": lzma.FILTER_LZMA2, **_LZMA_FAST}
        return lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=XZ_CHECK, filters=[lzma2])
    if compression is Compression.LZ4:
        return _Lz4LegacyEncoder()
    if compression is Compression.ZSTD:
        params = zstandard.ZstdCompressionParameters.from_level(
            ZSTD_LEVEL, window_log=ZSTD_WINDOW_LOG, write_content_size=True, write_checksum=True
        )
        cobj: _Encoder = zstandard.ZstdCompressor(compression_params=params).compressobj(size=total)
        return cobj
    return _LzopEncoder()


class CompressingSink:
    """A sink that compresses what it is given into *out*; call close() to end the stream."""

    def __init__(self, out: BinarySink, compression: Compression, total: int = -1) -> None:
        self._out = out
        self._encoder = _encoder(compression, total)

    def write(self, data: bytes, /) -> int:
        out = self._encoder.compress(data)
        if out:
            self._out.write(out)
        return len(data)

    def close(self) -> None:
        self._out.write(self._encoder.flush())


def compress(data: bytes, compression: Compression) -> bytes:
    """*data* compressed as build_initrd would (for tests and small archives)."""
    encoder = _encoder(compression, len(data))
    return encoder.compress(data) + encoder.flush()


# --- archives, build and cache ----------------------------------------------------

#: Bump whenever the archive's bytes for a given spec and agent change (layout,
#: payload, compressor settings): it is part of the cache key.
FORMAT_VERSION = 1

PAYLOAD_NAME = "payload"
PAYLOAD_SHA256_NAME = "payload.sha256"
INIT_NAME = "init"
#: source: Documentation/admin-guide/devices.txt, 5 = alternate tty, minor 1 = /dev/console.
CONSOLE_RDEV = (5, 1)


@dataclass(frozen=True)
class BuiltInitrd:
    """A finished initrd image on disk."""

    path: Path  # the finished (compressed) initrd image
    size: int  # bytes of that image
    payload_sha256: str
    spec: InitrdSpec


class InitrdWriteError(InfrastructureError):
    """The initrd could not be written (disk full, no permission)."""

    component = "initramfs"


def _read_agent(agent: Path) -> bytes:
    try:
        data = agent.read_bytes()
    except OSError as exc:
        raise InitramfsError(f"agent {agent}: {exc.strerror or exc}") from None
    if not data:
        raise InitramfsError(f"agent {agent} is empty")
    return data


def _members(agent: bytes) -> tuple[tuple[str, int], ...]:
    """(name, filesize) of every entry write_initrd_archive writes, in order."""
    return (("dev", 0), ("dev/console", 0), ("proc", 0), ("sys", 0), (INIT_NAME, len(agent)))


def archive_size(spec: InitrdSpec, agent: bytes) -> int:
    """Size of the uncompressed archive build_initrd writes for *spec* and *agent*."""
    return newc_archive_size(
        (*_members(agent), (PAYLOAD_NAME, spec.size), (PAYLOAD_SHA256_NAME, 64))
    )


def _hashing(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _write_skeleton(writer: NewcWriter, agent: bytes) -> None:
    writer.add_directory("dev")
    writer.add_char_device("dev/console", *CONSOLE_RDEV, perm=0o600)
    writer.add_directory("proc")
    writer.add_directory("sys")
    writer.add_file(INIT_NAME, len(agent), (agent,), perm=0o755)


def early_archive(agent: bytes) -> bytes:
    """The first, uncompressed archive of a split initrd: /dev, /proc, /sys and /init."""
    buf = io.BytesIO()
    writer = NewcWriter(buf)
    _write_skeleton(writer, agent)
    writer.finish()
    return buf.getvalue()


def payload_archive_size(spec: InitrdSpec) -> int:
    return newc_archive_size(((PAYLOAD_NAME, spec.size), (PAYLOAD_SHA256_NAME, 64)))


def write_payload_archive(sink: BinarySink, spec: InitrdSpec) -> str:
    """The second archive of a split initrd; returns the payload's SHA-256 (hex)."""
    writer = NewcWriter(sink)
    digest = hashlib.sha256()
    writer.add_file(PAYLOAD_NAME, spec.size, _hashing(payload_bytes(spec.seed, spec.size), digest))
    hexdigest = digest.hexdigest()
    writer.add_file(PAYLOAD_SHA256_NAME, len(hexdigest), (hexdigest.encode("ascii"),))
    writer.finish()
    return hexdigest


def write_initrd_archive(sink: BinarySink, spec: InitrdSpec, agent: bytes) -> str:
    """Stream the uncompressed archive into *sink*; return the payload's SHA-256 (hex)."""
    writer = NewcWriter(sink)
    _write_skeleton(writer, agent)
    digest = hashlib.sha256()
    writer.add_file(PAYLOAD_NAME, spec.size, _hashing(payload_bytes(spec.seed, spec.size), digest))
    hexdigest = digest.hexdigest()
    writer.add_file(PAYLOAD_SHA256_NAME, len(hexdigest), (hexdigest.encode("ascii"),))
    total = writer.finish()
    if total != archive_size(spec, agent):
        raise HarnessBug(
            f"archive is {total} bytes, archive_size() said {archive_size(spec, agent)}"
        )
    return hexdigest


@contextlib.contextmanager
def _writing(out: Path) -> Iterator[BinaryIO]:
    """bootfuzz.fileio.atomic_output, with a failing disk reported as the machine's fault."""
    try:
        with atomic_output(out, suffix=".tmp") as fh:
            yield fh
    except OSError as exc:
        raise InitrdWriteError(f"cannot write {out}: {exc.strerror or exc}") from None


def _build(spec: InitrdSpec, agent: bytes, out: Path) -> BuiltInitrd:
    with _writing(out) as fh:
        if spec.raw:
            sink = CompressingSink(fh, spec.compression, spec.size)
            digest = hashlib.sha256()
            for chunk in payload_bytes(spec.seed, spec.size):
                digest.update(chunk)
                sink.write(chunk)
            payload_sha256 = digest.hexdigest()
        elif spec.split:
            fh.write(early_archive(agent))  # 512-aligned: the next archive starts on its own
            sink = CompressingSink(fh, spec.compression, payload_archive_size(spec))
            payload_sha256 = write_payload_archive(sink, spec)
        else:
            sink = CompressingSink(fh, spec.compression, archive_size(spec, agent))
            payload_sha256 = write_initrd_archive(sink, spec, agent)
        sink.close()
    return BuiltInitrd(path=out, size=out.stat().st_size, payload_sha256=payload_sha256, spec=spec)


def build_initrd(spec: InitrdSpec, agent: Path, out: Path) -> BuiltInitrd:
    """Build the initrd for *spec* with *agent* as /init into *out* (replaced atomically)."""
    return _build(spec, _read_agent(agent), out)


def cache_name(spec: InitrdSpec, agent_sha256: str) -> str:
    """The cache file name: readable, and unique per (format, spec, agent)."""
    return (
        f"v{FORMAT_VERSION}-{spec.compression.value}-{spec.size}-{spec.seed:016x}-"
        f"{agent_sha256[:16]}{'-split' if spec.split else ''}"
        f"{'.raw' if spec.raw else '.cpio'}{spec.compression.suffix}"
    )


def _metadata(spec: InitrdSpec, agent_sha256: str) -> dict[str, object]:
    return {
        "format_version": FORMAT_VERSION,
        "size": spec.size,
        "compression": spec.compression.value,
        "seed": spec.seed,
        "split": spec.split,
        "raw": spec.raw,
        "agent_sha256": agent_sha256,
    }


def _cached(path: Path, meta_path: Path, expected: Mapping[str, object]) -> tuple[int, str] | None:
    """(image size, payload sha256) of a complete cache entry, or None to rebuild."""
    try:
        meta = json.loads(meta_path.read_text())
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
        return None
    digest = meta.get("payload_sha256")
    if meta.get("image_size") != size or not isinstance(digest, str):
        return None
    return size, digest


# --- the cache's size cap ---------------------------------------------------------

#: The most the initrd cache may hold, as a size ("512M", "2G"; "0": no cap).  A
#: campaign adds an image per case (about 2 MiB each), so without a cap it only grows.
CACHE_MAX_ENV = "BOOTFUZZ_INITRD_CACHE_MAX"
DEFAULT_CACHE_MAX = 1 << 30
#: An entry used this recently is never evicted: a boot holds its path and its backend
#: may not have opened the file yet (QEMU opens it when it starts).  So the cap is soft:
#: the cache may exceed it by what was used within this time.
IN_USE_SECONDS = 15 * 60
#: Taken shared to mark an entry used, exclusive to evict: no entry goes between the
#: moment a boot is handed its path and the moment its use is recorded.
_LOCK_NAME = ".lock"


class CacheLimitError(ConfigError):
    """The initrd cache cap in the environment is not a size."""

    component = "initramfs"


def cache_limit() -> int | None:
    """The cap from ``$BOOTFUZZ_INITRD_CACHE_MAX`` (default 1 GiB); None: no cap."""
    text = os.environ.get(CACHE_MAX_ENV, "").strip()
    if not text:
        return DEFAULT_CACHE_MAX
    try:
        limit = parse_size(text)
    except ConfigError as exc:
        raise CacheLimitError(f"{CACHE_MAX_ENV}={text!r}: {exc}") from None
    return limit or None


@contextlib.contextmanager
def _cache_lock(directory: Path, mode: int) -> Iterator[None]:
    with (directory / _LOCK_NAME).open("a") as fh:
        fcntl.flock(fh, mode)
        yield


def _touch(path: Path) -> bool:
    """Record a use of the entry *path* (its access time: LRU order, and what eviction
    spares); False when it is gone (evicted meanwhile: rebuild it)."""
    try:
        with _cache_lock(path.parent, fcntl.LOCK_SH):
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))  # mtime kept
    except FileNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class _Entry:
    image: Path
    size: int  # image and sidecar
    used: float  # the image's access time


def _entries(directory: Path, now: float) -> tuple[list[_Entry], int]:
    """The cache's entries, and the bytes of everything in it.  Leftovers of killed
    builds (temporary files, sidecars without their image) older than IN_USE_SECONDS
    are removed on the way."""
    entries, total = [], 0
    names = {p.name: p for p in directory.iterdir()}
    for name, path in names.items():
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        orphan_sidecar = name.endswith(".json") and name.removesuffix(".json") not in names
        if name == _LOCK_NAME or not path.is_file():
            continue
        if (name.startswith(".") or orphan_sidecar) and st.st_mtime < now - IN_USE_SECONDS:
            path.unlink(missing_ok=True)
            continue
        total += st.st_size
        if name.startswith(".") or name.endswith(".json"):
            continue
        sidecar = names.get(name + ".json")
        extra = 0
        if sidecar is not None:
            with contextlib.suppress(FileNotFoundError):
                extra = sidecar.stat().st_size
        entries.append(_Entry(path, st.st_size + extra, st.st_atime))
    return entries, total


def evict(directory: Path, limit: int | None, now: float | None = None) -> list[Path]:
    """Remove least recently used entries of the initrd cache *directory* until it holds
    at most *limit* bytes, sparing entries used within IN_USE_SECONDS; returns the
    images removed.  Safe against other processes using or evicting the same cache."""
    return _evict(directory, limit, now)[0]


def _evict(directory: Path, limit: int | None, now: float | None = None,
           ) -> tuple[list[Path], int]:
    """evict(), and the bytes the cache holds afterwards."""
    if limit is None or not directory.is_dir():
        return [], 0
    now = time.time() if now is None else now
    removed: list[Path] = []
    with _cache_lock(directory, fcntl.LOCK_EX):
        entries, total = _entries(directory, now)
        for entry in sorted(entries, key=lambda e: e.used):
            if total <= limit:
                break
            try:
                used = entry.image.stat().st_atime  # under the lock: the latest use
            except FileNotFoundError:
                continue
            if used >= now - IN_USE_SECONDS:
                continue
            entry.image.unlink(missing_ok=True)  # the image first: a lone sidecar is a miss
            entry.image.with_name(entry.image.name + ".json").unlink(missing_ok=True)
            total -= entry.size
            removed.append(entry.image)
    return removed, total


#: Scanning the cache stats every entry: ~60 ms with a thousand of them, about a tenth
#: of the CPU time a campaign case spends in Python here.  So after a build this
#: process adds what it wrote to what the last scan found, and scans again only when
#: that passes the cap or the scan is older than this (other processes write to the
#: same cache meanwhile: the cap may be passed by what they built within this time).
RESCAN_SECONDS = 60.0


@dataclass
class _Tally:
    total: int  # bytes: the last scan's, plus what this process built since
    scanned: float  # time.monotonic() of that scan


_TALLIES: dict[Path, _Tally] = {}


def _evict_after_build(directory: Path, limit: int | None, added: int) -> None:
    if limit is None:
        return
    now = time.monotonic()
    tally = _TALLIES.get(directory)
    if tally is not None and now - tally.scanned < RESCAN_SECONDS and tally.total + added <= limit:
        tally.total += added
        return
    _TALLIES[directory] = _Tally(_evict(directory, limit)[1], now)


def cache_usage(cache_dir: Path | None = None) -> str:
    """The initrd cache's size and cap, for people (bootfuzz fuzz prints it)."""
    directory = cache_root(cache_dir) / "initrd"
    total = _entries(directory, time.time())[1] if directory.is_dir() else 0
    limit = cache_limit()
    cap = "no cap" if limit is None else f"cap {format_size(limit)}"
    return f"initrd cache {directory}: {total / (1 << 20):.0f} MiB, {cap} (${CACHE_MAX_ENV})"


def cached_initrd(
    spec: InitrdSpec,
    agent: Path,
    cache_dir: Path | None = None,
) -> BuiltInitrd:
    """The initrd for (*spec*, *agent*) from ``<cache>/initrd/``, built there if missing.

    *cache_dir* is the bootfuzz cache root (default: bootfuzz.cache.cache_root()).  The
    key is the spec, the agent's SHA-256 and FORMAT_VERSION.  The image is written
    first and its JSON sidecar last, so an interrupted build is rebuilt next time.
    After a build, least recently used entries go while the cache is over its cap
    (:func:`cache_limit`; looked at as RESCAN_SECONDS says); each use is recorded, and
    an entry used within IN_USE_SECONDS stays (its boot may not have opened it yet).
    """
    agent_bytes = _read_agent(agent)  # read once: the key and the image see the same bytes
    agent_sha256 = hashlib.sha256(agent_bytes).hexdigest()
    directory = cache_root(cache_dir) / "initrd"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InitrdWriteError(f"cannot create {directory}: {exc.strerror or exc}") from None
    path = directory / cache_name(spec, agent_sha256)
    meta_path = path.with_name(path.name + ".json")
    expected = _metadata(spec, agent_sha256)
    limit = cache_limit()
    hit = _cached(path, meta_path, expected)
    if hit is not None and _touch(path):
        return BuiltInitrd(path=path, size=hit[0], payload_sha256=hit[1], spec=spec)
    built = _build(spec, agent_bytes, path)
    meta = {**expected, "image_size": built.size, "payload_sha256": built.payload_sha256}
    sidecar = json.dumps(meta, indent=1, sort_keys=True).encode() + b"\n"
    with _writing(meta_path) as fh:
        fh.write(sidecar)
    _evict_after_build(directory, limit, built.size + len(sidecar))
    return built
