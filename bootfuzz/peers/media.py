"""Boot media for real loaders: an ISO or FAT image holding the kernel, the initrd and a
loader configuration carrying the case's command line.

Built without root and without loop devices: GRUB's own ``grub-mkrescue`` (it drives
xorriso) for GRUB, ``xorriso -as mkisofs`` with ISOLINUX's El Torito image for SYSLINUX,
and a FAT image written by mtools (``mformat``/``mmd``/``mcopy``) for an EFI system
partition.  Each image is content-addressed in ``$BOOTFUZZ_CACHE/media``: the key is the
loader, its files (the user's own build or the installed package), the kernel's and the
initrd's SHA-256 and the configuration's bytes, so a campaign that changes only the
memory size boots the same image again.  Images are written next to their final name and
renamed into place, so concurrent workers never see half an image; the least recently
used go once the directory holds more than :func:`media_cache_limit` bytes.

A command line a configuration language cannot carry byte for byte is refused
(:class:`MediaRefusal`, a ConfigError naming the byte) instead of booted altered.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bootfuzz.cache import cache_root
from bootfuzz.errors import BackendError, ConfigError
from bootfuzz.units import parse_size

#: Bumped when the layout of an image or its configuration changes.
MEDIA_FORMAT_VERSION = 1
MEDIA_CACHE_ENV = "BOOTFUZZ_MEDIA_CACHE_MAX"
DEFAULT_MEDIA_CACHE_MAX = 4 << 30
#: A tool that takes longer than this to write one image is stuck.
TOOL_TIMEOUT = 120.0
#: Names on the media (the loaders' configurations refer to them).
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"
#: Slack in an ESP image beyond its files (FAT tables, directories), and its least size.
ESP_SLACK = 4 << 20
ESP_MIN = 8 << 20


class MediaKind(enum.StrEnum):
    GRUB_ISO = "grub-iso"
    ISOLINUX_ISO = "isolinux-iso"
    ESP_FAT = "esp-fat"


class MediaRefusal(ConfigError):
    """The case cannot be written into this loader's configuration as given."""

    component = "boot media"


@dataclass(frozen=True)
class MediaFile:
    """A file placed on the media: where it goes, and its bytes' source."""

    name: str  # path on the media, '/'-separated, no leading '/'
    source: Path | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class MediaSpec:
    """Everything that decides the bytes of an image (its cache key)."""

    kind: MediaKind
    files: tuple[MediaFile, ...]
    #: Loader files the builder reads (a GRUB platform directory, isolinux.bin ...):
    #: their paths, sizes and times go into the key.
    tools: tuple[Path, ...]

    def key(self) -> str:
        doc = {
            "format": MEDIA_FORMAT_VERSION, "kind": self.kind.value,
            "tools": [_fingerprint(p) for p in self.tools],
            "files": [[f.name, _sha256_file(f.source) if f.source is not None else
                       hashlib.sha256(f.data or b"").hexdigest()] for f in self.files],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _sha256_file(path: Path) -> str:
    """The file's SHA-256, remembered per (path, size, mtime) in this process."""
    try:
        st = path.stat()
    except OSError as e:
        raise BackendError(f"cannot read {path}: {e.strerror or e}") from None
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _SHA_MEMO:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        _SHA_MEMO[memo] = h.hexdigest()
    return _SHA_MEMO[memo]


def _fingerprint(path: Path) -> list[object]:
    try:
        st = path.stat()
    except OSError as e:
        raise BackendError(f"loader file {path} is missing: {e.strerror or e}") from None
    return [str(path), st.st_size, st.st_mtime_ns]


def media_cache_limit() -> int:
    """Bytes the media cache may hold: ``$BOOTFUZZ_MEDIA_CACHE_MAX`` or 4 GiB (0: no cap)."""
    env = os.environ.get(MEDIA_CACHE_ENV)
    if not env:
        return DEFAULT_MEDIA_CACHE_MAX
    try:
        return parse_size(env)
    except ConfigError:
        raise ConfigError(f"${MEDIA_CACHE_ENV}={env!r} is not a size") from None


def media_dir(cache_dir: Path | None = None) -> Path:
    return cache_root(cache_dir) / "media"


SUFFIX = {MediaKind.GRUB_ISO: ".iso", MediaKind.ISOLINUX_ISO: ".iso",
          MediaKind.ESP_FAT: ".img"}


def cached_media(spec: MediaSpec, cache_dir: Path | None = None) -> Path:
    """The image for *spec*, built into the cache if it is not there yet."""
    directory = media_dir(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.kind.value}-{spec.key()}{SUFFIX[spec.kind]}"
    if path.exists():
        os.utime(path)  # most recently used
        return path
    with tempfile.TemporaryDirectory(prefix=".build-", dir=directory) as tmp:
        out = Path(tmp) / path.name
        BUILDERS[spec.kind](spec, Path(tmp), out)
        os.replace(out, path)
    _evict(directory, keep=path)
    return path


def _evict(directory: Path, keep: Path) -> None:
    limit = media_cache_limit()
    if limit <= 0:
        return
    entries = []
    for p in directory.iterdir():
        if p.is_file() and p != keep:
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries) + keep.stat().st_size
    for _mtime, size, p in sorted(entries):
        if total <= limit:
            break
        p.unlink(missing_ok=True)
        total -= size


def _run(argv: Sequence[str], what: str) -> None:
    if shutil.which(argv[0]) is None:
        raise BackendError(f"{argv[0]} not found: it is needed to {what}")
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=TOOL_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{argv[0]} took over {TOOL_TIMEOUT:.0f} s to {what}") from None
    if done.returncode != 0:
        said = [ln.strip() for ln in done.stderr.decode(errors="replace").splitlines()
                if len(ln.strip()) > 1]
        first = next((ln for ln in said if "FAILURE" in ln or "error" in ln),
                     said[-1] if said else "(no output)")
        raise BackendError(f"{argv[0]} failed to {what} (exit {done.returncode}): {first}")


def _tree(spec: MediaSpec, root: Path) -> None:
    """The media's files under *root* (hard links where the file system allows)."""
    for f in spec.files:
        dest = root / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.source is None:
            dest.write_bytes(f.data or b"")
            continue
        try:
            os.link(f.source, dest)
        except OSError:
            shutil.copyfile(f.source, dest)


def _build_grub_iso(spec: MediaSpec, tmp: Path, out: Path) -> None:
    root = tmp / "tree"
    _tree(spec, root)
    platform_dir = spec.tools[0]
    _run(["grub-mkrescue", "-d", str(platform_dir), "-o", str(out), str(root)],
         f"write a GRUB ISO from {platform_dir}")


def _build_isolinux_iso(spec: MediaSpec, tmp: Path, out: Path) -> None:
    root = tmp / "tree"
    _tree(spec, root)
    isolinux_bin, ldlinux = spec.tools[0], spec.tools[1]
    (root / "isolinux").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(isolinux_bin, root / "isolinux" / "isolinux.bin")
    shutil.copyfile(ldlinux, root / "isolinux" / "ldlinux.c32")
    _run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-b", "isolinux/isolinux.bin",
          "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
          "-boot-info-table", str(root)], "write an ISOLINUX ISO")


def _build_esp(spec: MediaSpec, tmp: Path, out: Path) -> None:
    """A FAT image (mformat picks FAT12/16 for the size) with the files copied by mcopy."""
    sizes = [f.source.stat().st_size if f.source is not None else len(f.data or b"")
             for f in spec.files]
    size = max(ESP_MIN, sum(sizes) + ESP_SLACK)
    size = (size + (1 << 20) - 1) & ~((1 << 20) - 1)
    with out.open("wb") as fh:
        fh.truncate(size)
    image = str(out)
    _run(["mformat", "-i", image, "-v", "ESP", "::"], "format an EFI system partition")
    dirs = sorted({"/".join(f.name.split("/")[:i]) for f in spec.files
                   for i in range(1, f.name.count("/") + 1)}, key=lambda d: d.count("/"))
    if dirs:
        _run(["mmd", "-i", image, *(f"::/{d}" for d in dirs)], "make ESP directories")
    for f in spec.files:
        src = f.source
        if src is None:
            src = tmp / f"data-{len(f.name)}-{abs(hash(f.name))}"
            src.write_bytes(f.data or b"")
        _run(["mcopy", "-i", image, str(src), f"::/{f.name}"], f"copy {f.name} to the ESP")


BUILDERS = {
    MediaKind.GRUB_ISO: _build_grub_iso,
    MediaKind.ISOLINUX_ISO: _build_isolinux_iso,
    MediaKind.ESP_FAT: _build_esp,
}

__all__ = ["INITRD_NAME", "KERNEL_NAME", "MediaFile", "MediaKind", "MediaRefusal",
           "MediaSpec", "cached_media", "media_cache_limit"]
