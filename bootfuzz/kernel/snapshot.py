"""Debian's snapshot archive as the fetcher of last resort for a pinned package.

The regular archive drops a kernel version within weeks of the next security update;
the snapshot archive keeps every version ever published.  Its base URL is
configuration, never a name in this tree: ``$BOOTFUZZ_SNAPSHOT_URL`` (or
``bootfuzz kernels fetch --snapshot-url``), pointed at Debian's snapshot archive or a
mirror of it.

Two requests of its machine-readable API, read tolerantly (unknown keys ignored):

* ``mr/binary/PACKAGE/VERSION/binfiles``: JSON whose ``result`` lists the files built
  for that binary version, each ``{"hash": SHA1, "architecture": ARCH}``;
* ``file/SHA1``: the file itself.

The listing only says where to look.  What arrives is streamed to disk, hashed on
the way, and kept only if its sha256 is the one the manifest pins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from bootfuzz.errors import KernelError, KernelFetchError

__all__ = [
    "SNAPSHOT_ENV",
    "SnapshotError",
    "binfiles_url",
    "fetch_deb",
    "file_url",
    "parse_binfiles",
    "snapshot_base_url",
]

SNAPSHOT_ENV = "BOOTFUZZ_SNAPSHOT_URL"
#: Said wherever the base URL is missing: what to set and what to point it at.
HOW_TO_SET = (
    f"set {SNAPSHOT_ENV} (or pass --snapshot-url) to the base URL of Debian's snapshot "
    "archive or of a mirror of it"
)

#: Seconds without a byte from the server before we give up (per socket operation).
HTTP_TIMEOUT_S = 60
#: A listing is a few hundred bytes; anything far larger is not one.
MAX_LISTING_BYTES = 1 << 20
#: The largest Debian kernel image package is ~100 MB; refuse to fill a disk beyond this.
MAX_DEB_BYTES = 1 << 30
_CHUNK = 1 << 20

# The archive names files by sha1 today; accept any hex digest so a change of hash
# does not break the client (the sha256 check below is what we trust).
_HASH_RE = re.compile(r"[0-9a-f]{40,128}")


class SnapshotError(KernelFetchError):
    """The snapshot archive did not give us the pinned package."""


def snapshot_base_url(explicit: str | None = None) -> str | None:
    """The explicit URL, else ``$BOOTFUZZ_SNAPSHOT_URL``, else None; http(s) only."""
    url = explicit if explicit is not None else os.environ.get(SNAPSHOT_ENV, "")
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KernelError(
            f"snapshot archive URL {url!r} is not an http(s) URL; {HOW_TO_SET}"
        )
    return url.rstrip("/") + "/"


def binfiles_url(base: str, package: str, version: str) -> str:
    quote = urllib.parse.quote
    return f"{base}mr/binary/{quote(package, safe='')}/{quote(version, safe='')}/binfiles"


def file_url(base: str, digest: str) -> str:
    return f"{base}file/{digest}"


def parse_binfiles(data: bytes, arch: str, *, where: str) -> list[str]:
    """The file hashes a binfiles listing gives for ``arch``, in listed order.

    An entry without an architecture is kept (the sha256 check decides); one for
    another architecture is not.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{where} is not a JSON listing ({exc})") from None
    result = doc.get("result") if isinstance(doc, dict) else None
    if not isinstance(result, list):
        raise SnapshotError(f"{where} has no 'result' list of files")
    hashes = []
    for entry in result:
        if not isinstance(entry, Mapping):
            continue
        digest, entry_arch = entry.get("hash"), entry.get("architecture")
        if not isinstance(digest, str) or not _HASH_RE.fullmatch(digest.lower()):
            continue
        if entry_arch is None or entry_arch == arch:
            hashes.append(digest.lower())
    return hashes


def _open(url: str) -> HTTPResponse:
    """GET url; every way it can fail becomes one SnapshotError naming the URL."""
    request = urllib.request.Request(url, headers={"User-Agent": "bootfuzz"})
    try:
        response: HTTPResponse = urllib.request.urlopen(
            request, timeout=HTTP_TIMEOUT_S
        )
    except urllib.error.HTTPError as exc:
        exc.close()
        raise SnapshotError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise SnapshotError(f"cannot reach {url} ({reason})") from None
    except TimeoutError:
        raise SnapshotError(f"{url}: no answer within {HTTP_TIMEOUT_S} s") from None
    except (OSError, ValueError, HTTPException) as exc:
        raise SnapshotError(f"cannot fetch {url} ({exc!r})") from None
    return response


def _check_complete(url: str, response: HTTPResponse, size: int) -> None:
    """A body shorter than its Content-Length reads as an early end, not an error."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) != size:
        raise SnapshotError(f"{url}: transfer broke off after {size} of {declared} bytes")


def _read_listing(url: str) -> bytes:
    with _open(url) as response:
        try:
            data: bytes = response.read(MAX_LISTING_BYTES + 1)
        except (OSError, HTTPException) as exc:
            raise SnapshotError(f"{url}: transfer broke off ({exc!r})") from None
        if len(data) > MAX_LISTING_BYTES:
            raise SnapshotError(f"{url}: listing larger than {MAX_LISTING_BYTES} bytes")
        _check_complete(url, response, len(data))
    return data


def _download(url: str, dest: Path) -> str:
    """Stream url into dest; its sha256."""
    digest = hashlib.sha256()
    size = 0
    with _open(url) as response, open(dest, "wb") as out:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, ValueError, HTTPException) as exc:
                raise SnapshotError(f"{url}: transfer broke off ({exc!r})") from None
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_DEB_BYTES:
                raise SnapshotError(
                    f"{url}: larger than {MAX_DEB_BYTES} bytes, not a kernel package"
                )
            digest.update(chunk)
            out.write(chunk)
        _check_complete(url, response, size)
    return digest.hexdigest()


def deb_file_name(package: str, version: str, arch: str) -> str:
    """The name apt-get download gives the file (an epoch's ':' becomes '%3a')."""
    return f"{package}_{version.replace(':', '%3a')}_{arch}.deb"


def fetch_deb(
    base: str, package: str, version: str, arch: str, sha256: str, workdir: Path
) -> Path:
    """Download package=version for arch from the snapshot archive at ``base`` into
    workdir; the .deb, whose sha256 is ``sha256``.  Nothing else is left in workdir."""
    listing = binfiles_url(base, package, version)
    hashes = parse_binfiles(_read_listing(listing), arch, where=listing)
    if not hashes:
        raise SnapshotError(f"{listing} lists no {arch} file of {package}={version}")
    dest = workdir / deb_file_name(package, version, arch)
    got: list[str] = []
    for digest in hashes:
        url = file_url(base, digest)
        fd, part_name = tempfile.mkstemp(prefix=".snapshot-", suffix=".part", dir=workdir)
        os.close(fd)
        part = Path(part_name)
        try:
            got.append(_download(url, part))
            if got[-1] == sha256:
                os.replace(part, dest)
                return dest
        finally:
            part.unlink(missing_ok=True)
    raise SnapshotError(
        f"{package}={version} from {file_url(base, hashes[-1])} has sha256 {got[-1]}, "
        f"expected {sha256}; not kept"
        + (f" (nor any of the {len(hashes)} {arch} files listed)" if len(hashes) > 1 else "")
    )
