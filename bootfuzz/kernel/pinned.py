"""Pinned real Debian kernels: the manifest, the cache, apt-get and the snapshot archive.

A kernel is pinned by package name, exact version, the sha256 of the .deb and the
sha256 of the two files we use (vmlinuz and its config): the files are what a boot
case depends on, the .deb's hash is what lets us take the package from anywhere.
The manifest (kernels/manifest.toml) lives in the git tree; the kernels never do.

The cache (bootfuzz.cache: ``$BOOTFUZZ_CACHE`` or ``~/.cache/bootfuzz``) keeps each
kernel by the sha256 of its vmlinuz, ``kernels/by-sha256/SHA256/`` holding vmlinuz,
config and kernel.json (what they are): two pins of the same bytes share one entry,
a reproducer that names a sha256 finds its kernel whatever the manifest says today,
and ``export_kernels``/``import_kernels`` carry entries to a machine without network.
A verified file gets a stamp (its size, times and inode when hashed), so a boot does
not re-read 10 MB to check a file nobody touched; any change to the file re-hashes.

apt-get fetches first because it knows the host's configured archive, proxy and
signatures; we never name a mirror.  Debian drops old kernel versions (and bumps
the ABI number in the package name) with every security update, so "the pinned
version has gone" is an expected state: then the package is taken by its exact
version from the snapshot archive (bootfuzz.kernel.snapshot, configured by URL) and
kept only if its sha256 is the pinned one.  Without that URL the error says how to
set it, and how to re-pin.

Every subprocess goes through a ``runner`` callable so tests can fake apt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bootfuzz.cache import REPO_ROOT, cache_root
from bootfuzz.compression import Compression
from bootfuzz.errors import ImageError, KernelError, KernelFetchError
from bootfuzz.fileio import atomic_output, atomic_write_text
from bootfuzz.jsonread import JsonReader
from bootfuzz.kernel import snapshot
from bootfuzz.kernel.deb import DebError, extract_to_files, list_members
from bootfuzz.kernel.image import parse_kernel_image
from bootfuzz.kernel.payload import detect_compression

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_MANIFEST",
    "MANIFEST_ENV",
    "AptPolicy",
    "CommandResult",
    "FetchedKernel",
    "KernelStatus",
    "PinnedKernel",
    "Runner",
    "StoredKernel",
    "abi_search_pattern",
    "apt_download_argv",
    "cached_kernels",
    "export_kernels",
    "fetch",
    "fetch_pinned",
    "find_cached",
    "import_kernels",
    "kernel_cache_dir",
    "list_kernels",
    "load_manifest",
    "manifest_path",
    "parse_apt_policy",
    "render_manifest",
    "repin",
    "resolve_kernel",
    "run_command",
    "store_dir",
]

DEFAULT_MANIFEST = REPO_ROOT / "kernels" / "manifest.toml"
MANIFEST_ENV = "BOOTFUZZ_KERNEL_MANIFEST"

#: Cache entries and exports: kernels/by-sha256/<vmlinuz sha256>/{vmlinuz,config,kernel.json}.
STORE_DIR = "by-sha256"
VMLINUZ_FILE = "vmlinuz"
CONFIG_FILE = "config"
RECORD_FILE = "kernel.json"
#: Per entry, where each file was when last hashed (never exported).
STAMP_FILE = ".verified.json"
#: Hex digits of the vmlinuz sha256 that named a kernel's directory before the cache
#: was keyed by the whole sha256 (kernels/<name>/<digits>/); such entries are moved.
LEGACY_KEY_DIGITS = 16

#: The Debian architectures whose kernels bootfuzz boots; the host's own (amd64) comes
#: through the host's apt, the others through a private apt configuration
#: (bootfuzz.kernel.foreign_apt), never by changing the host's dpkg architectures.
ARCHES = ("amd64", "arm64", "riscv64")
HOST_ARCH = "amd64"

#: apt-get download of a 70 MB package on a slow link; beyond this, give up.
APT_TIMEOUT_S = 1800

#: Payload formats a manifest may name (bootfuzz.kernel.payload detects them).
COMPRESSIONS = tuple(c.value for c in Compression)

# Manifest value syntax.  Names become cache directory names, so no "/" and no
# leading dot.  Package and version syntax: Debian Policy 5.6.1 and 5.6.12.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._+-]*")
_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_VERSION_RE = re.compile(r"(?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PinnedKernel:
    """One manifest table: which package, which files in it, and their hashes."""

    name: str
    package: str
    version: str
    arch: str
    vmlinuz_member: str
    config_member: str
    vmlinuz_sha256: str
    config_sha256: str
    #: Of the .deb itself: how a package from the snapshot archive is verified.
    deb_sha256: str
    #: bzImage payload compression; documentation, the sha pins the bytes.
    compression: str
    description: str


#: Manifest keys in the order render_manifest writes them.
_KEYS = (
    "description",
    "package",
    "version",
    "arch",
    "vmlinuz_member",
    "config_member",
    "vmlinuz_sha256",
    "config_sha256",
    "deb_sha256",
    "compression",
)
assert set(_KEYS) == {f.name for f in dataclasses.fields(PinnedKernel)} - {"name"}


@dataclass(frozen=True)
class FetchedKernel:
    """A pinned kernel present and verified in the cache."""

    name: str
    vmlinuz: Path
    config: Path
    pinned: PinnedKernel
    #: False when the cache already held it.
    downloaded: bool = False


@dataclass(frozen=True)
class KernelStatus:
    """A manifest entry and where its files are (or would be) cached."""

    pinned: PinnedKernel
    #: Both files are present.  Not re-hashed here; fetch() verifies.
    cached: bool
    vmlinuz: Path
    config: Path


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs argv (never through a shell).  Raises FileNotFoundError if the program is missing."""

    def __call__(self, argv: Sequence[str], *, cwd: Path | None = None) -> CommandResult: ...


def run_command(argv: Sequence[str], *, cwd: Path | None = None) -> CommandResult:
    """The real runner.  LC_ALL=C because we match apt's English messages."""
    proc = subprocess.run(
        list(argv),
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, "LC_ALL": "C"},
        timeout=APT_TIMEOUT_S,
        check=False,
    )
    return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- manifest


def manifest_path(path: Path | None = None) -> Path:
    """The explicit path, else $BOOTFUZZ_KERNEL_MANIFEST, else the repo's kernels/manifest.toml."""
    if path is not None:
        return path
    env = os.environ.get(MANIFEST_ENV)
    return Path(env) if env else DEFAULT_MANIFEST


def _check_member(value: str) -> bool:
    rel = value.removeprefix("./")
    return (
        bool(rel)
        and not rel.startswith("/")
        and posixpath.normpath(rel) == rel
        and (".." not in rel.split("/"))
    )


#: key -> (check, what a valid value looks like), for the per-key error message.
_CHECKS: dict[str, tuple[re.Pattern[str], str]] = {
    "package": (_PACKAGE_RE, "a Debian package name"),
    "version": (_VERSION_RE, "a Debian version"),
    "vmlinuz_sha256": (_SHA256_RE, "64 lowercase hex digits"),
    "config_sha256": (_SHA256_RE, "64 lowercase hex digits"),
    "deb_sha256": (_SHA256_RE, "64 lowercase hex digits"),
}


def _pinned_from_table(where: str, name: str, table: object) -> PinnedKernel:
    """Validate one manifest table; ``where`` prefixes every message."""
    if not _NAME_RE.fullmatch(name):
        raise KernelError(
            f"{where}: kernel name {name!r} must be lowercase letters, digits and . _ + - "
            "(starting with a letter or digit)"
        )
    r = JsonReader(where, error=KernelError)
    at = f"[{name}]"
    if not isinstance(table, dict):
        raise r.fail(at, "must be a table, one per kernel")
    r.keys(table, _KEYS, at)
    values = {key: r.as_str(r.field(table, key, at), f"{at}.{key}") for key in _KEYS}
    for key, (pattern, what) in _CHECKS.items():
        if not pattern.fullmatch(values[key]):
            raise r.fail(f"{at}.{key}", f"must be {what}, got {values[key]!r}")
    r.as_choice(values["arch"], f"{at}.arch", ARCHES)
    r.as_choice(values["compression"], f"{at}.compression", COMPRESSIONS)
    for key in ("vmlinuz_member", "config_member"):
        if not _check_member(values[key]):
            raise r.fail(f"{at}.{key}",
                         f"must be a relative path inside the package, got {values[key]!r}")
    desc = values["description"]
    if not desc or not desc.isprintable():
        raise r.fail(f"{at}.description", "must be one non-empty line of printable text")
    return PinnedKernel(name=name, **values)


def load_manifest(path: Path | None = None) -> dict[str, PinnedKernel]:
    """Read and validate the manifest; keys are kernel names, sorted."""
    path = manifest_path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KernelError(f"kernel manifest {path} not found") from None
    except OSError as exc:
        raise KernelError(f"kernel manifest {path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KernelError(f"{path}: not valid TOML ({exc})") from None
    if not data:
        raise KernelError(f"{path}: no kernels (expected one table per kernel)")
    kernels = {name: _pinned_from_table(str(path), name, data[name]) for name in sorted(data)}
    # Pins of the same vmlinuz share one cache entry, so they must agree on its config.
    by_vmlinuz: dict[str, PinnedKernel] = {}
    for k in kernels.values():
        first = by_vmlinuz.setdefault(k.vmlinuz_sha256, k)
        if first.config_sha256 != k.config_sha256:
            raise KernelError(
                f"{path}: [{first.name}] and [{k.name}] pin the same vmlinuz_sha256 with "
                "different config_sha256 (one build has one config)"
            )
    return kernels


MANIFEST_HEADER = """\
# Pinned real kernels for bootfuzz: one table per kernel name.
#
# package/version: the Debian binary package, fetched with `apt-get download`
#   from whatever archive the host's apt is configured for, or, once that archive
#   has dropped the version, from the snapshot archive at $BOOTFUZZ_SNAPSHOT_URL.
# vmlinuz_member/config_member: paths inside the package's data.tar.
# vmlinuz_sha256/config_sha256: of the extracted files; the cache keeps kernels by
#   vmlinuz_sha256.
# deb_sha256: of the .deb itself; a package from anywhere is kept only if it matches.
# compression: the bzImage payload format (documentation; the sha pins the bytes).
#
# Generated by `bootfuzz kernels repin NAME`, which rewrites this whole file from
# the data: comments other than this header are not kept.  Kernels are cached under
# $BOOTFUZZ_CACHE or ~/.cache/bootfuzz, never in this tree.
"""


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string for printable text (validated).
    return json.dumps(value, ensure_ascii=False)


def render_manifest(kernels: Mapping[str, PinnedKernel]) -> str:
    """The manifest text for these kernels: deterministic, sorted by name."""
    parts = [MANIFEST_HEADER]
    for name in sorted(kernels):
        k = kernels[name]
        lines = [f"[{_toml_str(name)}]"]
        lines += [f"{key} = {_toml_str(getattr(k, key))}" for key in _KEYS]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class StoredKernel:
    """One cache (or export) entry: a vmlinuz, its config, and the package they came from."""

    directory: Path
    vmlinuz_sha256: str
    config_sha256: str
    #: The package, version and .deb sha256 the entry was last stored from.
    package: str
    version: str
    deb_sha256: str

    @property
    def vmlinuz(self) -> Path:
        return self.directory / VMLINUZ_FILE

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_FILE


def store_dir(vmlinuz_sha256: str, cache_dir: Path | None = None) -> Path:
    """The cache entry of the kernel whose vmlinuz has this sha256."""
    return cache_root(cache_dir) / "kernels" / STORE_DIR / vmlinuz_sha256


def kernel_cache_dir(pinned: PinnedKernel, cache_dir: Path | None = None) -> Path:
    """Where a pinned kernel is cached: one entry for every pin of the same vmlinuz."""
    return store_dir(pinned.vmlinuz_sha256, cache_dir)


def _sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


#: kernel.json: what an entry holds and where it came from.
_RECORD_KEYS = ("vmlinuz_sha256", "config_sha256", "package", "version", "deb_sha256")
_RECORD_CHECKS = {
    "vmlinuz_sha256": _CHECKS["vmlinuz_sha256"],
    "config_sha256": _CHECKS["config_sha256"],
    "deb_sha256": _CHECKS["deb_sha256"],
    "package": _CHECKS["package"],
    "version": _CHECKS["version"],
}


def _record_text(source: PinnedKernel | StoredKernel) -> str:
    return json.dumps({key: getattr(source, key) for key in _RECORD_KEYS}, indent=2) + "\n"


def _read_record(directory: Path) -> StoredKernel:
    """DIR/kernel.json, checked: one KernelError naming the file and field otherwise.

    Unknown keys are ignored, so an export from a newer bootfuzz still imports.
    """
    path = directory / RECORD_FILE
    r = JsonReader(str(path), error=KernelError)
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KernelError(f"{path}: missing") from None
    except OSError as exc:
        raise KernelError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise KernelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise KernelError(f"{path}: expected a JSON object")
    values = {key: r.as_str(r.field(doc, key, ""), key) for key in _RECORD_KEYS}
    for key, (pattern, what) in _RECORD_CHECKS.items():
        if not pattern.fullmatch(values[key]):
            raise r.fail(key, f"must be {what}, got {values[key]!r}")
    if values["vmlinuz_sha256"] != directory.name:
        raise r.fail("vmlinuz_sha256", f"is not the entry's name {directory.name!r}")
    return StoredKernel(directory, **values)


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _read_stamp(directory: Path) -> dict[str, Any]:
    try:
        doc = json.loads((directory / STAMP_FILE).read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _write_stamp(directory: Path, stamp: Mapping[str, Any]) -> None:
    """Best effort: in a read-only cache the files are simply hashed again next time."""
    with contextlib.suppress(OSError):
        atomic_write_text(directory / STAMP_FILE, json.dumps(stamp, sort_keys=True) + "\n")


def _verified(directory: Path, files: Mapping[str, str]) -> bool:
    """Whether each file (name -> sha256) in directory has its sha256.

    A file whose size, mtime, ctime, inode and device are those stamped when it last
    hashed right is not read again; any other file is hashed (and stamped if right).
    ctime is in the key because nobody can set it back: an edit that restores the
    mtime still re-hashes.  The key is taken before hashing, so a write during the
    hash leaves a stamp that no longer matches.
    """
    stamp = _read_stamp(directory)
    new = dict(stamp)
    for name, sha in files.items():
        key = _stat_key(directory / name)
        if key is None:
            return False
        if stamp.get(name) == [sha, *key]:
            continue
        if _sha256_file(directory / name) != sha:
            return False
        new[name] = [sha, *key]
    if new != stamp:
        _write_stamp(directory, new)
    return True


def _install(src: Path, dest: Path) -> None:
    """Move a verified file into the cache atomically.

    ``src`` lives in the cache root (its tmp/, see _scratch), so this is a rename on
    one filesystem: readers see the old file or the whole new one, never a part.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(src, 0o644)
    os.replace(src, dest)


def _store(
    source: PinnedKernel | StoredKernel, vmlinuz: Path, config: Path, cache_dir: Path | None
) -> StoredKernel:
    """Move a vmlinuz and config already verified against ``source`` into their entry."""
    dest = store_dir(source.vmlinuz_sha256, cache_dir)
    _install(config, dest / CONFIG_FILE)
    _install(vmlinuz, dest / VMLINUZ_FILE)
    atomic_write_text(dest / RECORD_FILE, _record_text(source))
    stamp: dict[str, Any] = {}
    for name, sha in ((VMLINUZ_FILE, source.vmlinuz_sha256), (CONFIG_FILE, source.config_sha256)):
        key = _stat_key(dest / name)
        if key is not None:
            stamp[name] = [sha, *key]
    _write_stamp(dest, stamp)
    return StoredKernel(dest, **{key: getattr(source, key) for key in _RECORD_KEYS})


def _files(pinned: PinnedKernel) -> dict[str, str]:
    return {VMLINUZ_FILE: pinned.vmlinuz_sha256, CONFIG_FILE: pinned.config_sha256}


def _adopt_legacy(pinned: PinnedKernel, cache_dir: Path | None) -> FetchedKernel | None:
    """A kernel cached under the old layout (kernels/NAME/DIGITS/), moved to its entry."""
    old = (cache_root(cache_dir) / "kernels" / pinned.name
           / pinned.vmlinuz_sha256[:LEGACY_KEY_DIGITS])
    if not (old / VMLINUZ_FILE).is_file():
        return None
    if any(_sha256_file(old / name) != sha for name, sha in _files(pinned).items()):
        return None
    try:
        stored = _store(pinned, old / VMLINUZ_FILE, old / CONFIG_FILE, cache_dir)
    except OSError:  # a read-only cache: use the files where they are
        return FetchedKernel(pinned.name, old / VMLINUZ_FILE, old / CONFIG_FILE, pinned)
    for d in (old, old.parent):
        with contextlib.suppress(OSError):
            d.rmdir()
    return FetchedKernel(pinned.name, stored.vmlinuz, stored.config, pinned)


def _cached(pinned: PinnedKernel, cache_dir: Path | None) -> FetchedKernel | None:
    d = kernel_cache_dir(pinned, cache_dir)
    if not _verified(d, _files(pinned)):
        return _adopt_legacy(pinned, cache_dir)
    if not (d / RECORD_FILE).is_file():
        with contextlib.suppress(OSError):
            atomic_write_text(d / RECORD_FILE, _record_text(pinned))
    return FetchedKernel(pinned.name, d / VMLINUZ_FILE, d / CONFIG_FILE, pinned)


def find_cached(vmlinuz_sha256: str, cache_dir: Path | None = None) -> StoredKernel | None:
    """The cached kernel whose vmlinuz has this sha256, verified; None if there is none."""
    d = store_dir(vmlinuz_sha256, cache_dir)
    if not _SHA256_RE.fullmatch(vmlinuz_sha256) or not (d / RECORD_FILE).is_file():
        return None
    try:
        stored = _read_record(d)
    except KernelError:
        return None
    files = {VMLINUZ_FILE: stored.vmlinuz_sha256, CONFIG_FILE: stored.config_sha256}
    return stored if _verified(d, files) else None


def cached_kernels(cache_dir: Path | None = None) -> list[StoredKernel]:
    """Every complete cache entry, verified, sorted by sha256.

    An entry without kernel.json (a fetch cut short) is skipped; one whose files do
    not match their sha256 is an error, so that nothing damaged is carried elsewhere.
    """
    root = cache_root(cache_dir) / "kernels" / STORE_DIR
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not _SHA256_RE.fullmatch(d.name) or not (d / RECORD_FILE).is_file():
            continue
        try:
            stored = _read_record(d)
        except KernelError as exc:
            raise KernelFetchError(f"cache entry {d} is damaged: {exc.args[0]}") from None
        if not _verified(d, {VMLINUZ_FILE: stored.vmlinuz_sha256,
                             CONFIG_FILE: stored.config_sha256}):
            raise KernelFetchError(
                f"cache entry {d} is damaged: its files do not match their sha256; remove it "
                "(`bootfuzz kernels fetch` brings a pinned kernel back)"
            )
        out.append(stored)
    return out


def list_kernels(
    cache_dir: Path | None = None, *, manifest: Path | None = None
) -> list[KernelStatus]:
    """Every pinned kernel, sorted by name, with its cache paths."""
    out = []
    for pinned in load_manifest(manifest).values():
        d = kernel_cache_dir(pinned, cache_dir)
        vmlinuz, config = d / VMLINUZ_FILE, d / CONFIG_FILE
        out.append(KernelStatus(pinned, vmlinuz.is_file() and config.is_file(), vmlinuz, config))
    return out


# --------------------------------------------------------------------------- apt


def _run(runner: Runner, argv: Sequence[str], cwd: Path | None = None) -> CommandResult:
    """Run one command, turning "no such program" and timeouts into KernelFetchError."""
    try:
        return runner(argv, cwd=cwd)
    except FileNotFoundError:
        raise KernelFetchError(
            f"{argv[0]} not found: fetching pinned kernels needs apt (a Debian or Ubuntu "
            "host); elsewhere pass a kernel image path instead of a pinned name"
        ) from None
    except subprocess.TimeoutExpired:
        raise KernelFetchError(
            f"{' '.join(argv)} did not finish within {APT_TIMEOUT_S} s"
        ) from None


def apt_download_argv(package: str, version: str, *, as_root: bool) -> list[str]:
    """apt-get download argv.  As root, apt drops to the _apt user to download and
    warns that it cannot write our temporary directory; tell it to stay root."""
    sandbox = ["-o", "APT::Sandbox::User=root"] if as_root else []
    return ["apt-get", *sandbox, "download", f"{package}={version}"]


@dataclass(frozen=True)
class AptPolicy:
    """What ``apt-cache policy PACKAGE`` says: the candidate and every listed version."""

    candidate: str | None
    versions: tuple[str, ...]


_POLICY_CANDIDATE_RE = re.compile(r"^\s+Candidate:\s+(\S+)\s*$", re.MULTILINE)
# Version table lines: 5 spaces, optional "*** " (installed), version, priority.
# Origin lines below them end in a word ("Packages", ".../status"), not a number.
_POLICY_VERSION_RE = re.compile(r"^ {5}(?:\*\*\* )?(\S+) (-?\d+)$", re.MULTILINE)


def parse_apt_policy(text: str) -> AptPolicy:
    m = _POLICY_CANDIDATE_RE.search(text)
    candidate = m.group(1) if m and m.group(1) != "(none)" else None
    return AptPolicy(candidate, tuple(v.group(1) for v in _POLICY_VERSION_RE.finditer(text)))


def _apt_policy(package: str, runner: Runner) -> AptPolicy:
    res = _run(runner, ["apt-cache", "policy", package])
    if res.returncode != 0:
        return AptPolicy(None, ())
    return parse_apt_policy(res.stdout)


# Debian kernel packages carry an ABI number (6.1: "6.1.0-56") or, since 6.12 in
# bookworm, the upstream version ("6.12.117+deb12") in the name; a security update
# replaces the package rather than adding a version.
_ABI_NUMBERED_RE = re.compile(r"linux-image-(\d+\.\d+\.\d+)-\d+-(.+)")
_VERSION_NAMED_RE = re.compile(r"linux-image-(\d+\.\d+)\.\d+(\+\w+)?-(.+)")


def _ere_escape(text: str) -> str:
    """Escape POSIX ERE metacharacters (apt's regex flavour; re.escape also escapes "-")."""
    return re.sub(r"([.+*?()\[\]{}|^$\\])", r"\\\1", text)


def abi_search_pattern(package: str) -> str | None:
    """An ``apt-cache search --names-only`` regex for this package's ABI successors."""
    esc = _ere_escape
    if m := _ABI_NUMBERED_RE.fullmatch(package):
        return f"^linux-image-{esc(m.group(1))}-[0-9]+-{esc(m.group(2))}$"
    if m := _VERSION_NAMED_RE.fullmatch(package):
        suffix = esc(m.group(2) or "")
        return f"^linux-image-{esc(m.group(1))}\\.[0-9]+{suffix}-{esc(m.group(3))}$"
    return None


_GONE_MARKERS = ("was not found", "Unable to locate package", "Can't select candidate")
_STALE_MARKERS = ("404", "Failed to fetch")


def _apt_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return (errors or lines or ["(no message)"])[0]


def _gone_message(pinned: PinnedKernel, apt_said: str, policy: AptPolicy) -> str:
    versions = ", ".join(
        f"{v} (candidate)" if v == policy.candidate else v for v in policy.versions
    )
    lines = [
        f"{pinned.name}: the pinned version {pinned.version} of {pinned.package} "
        f"has left the archive (apt-get: {apt_said})",
        f"  available now: {versions or 'no version of ' + pinned.package}",
    ]
    if policy.candidate:
        lines.append(
            f"  re-pin to the current candidate with: bootfuzz kernels repin {pinned.name}"
        )
    repin_new = f"bootfuzz kernels repin {pinned.name} --package NEW-PACKAGE"
    pattern = abi_search_pattern(pinned.package)
    if pattern:
        lines.append(
            "  if Debian bumped the ABI, find the new package with: "
            f"apt-cache search --names-only '{pattern}'"
        )
        lines.append(f"  and re-pin to it with: {repin_new}")
    else:
        lines.append(f"  if the package was renamed, re-pin to the new one with: {repin_new}")
    lines.append("  if the package lists are empty or stale, run `apt-get update` (as root) first")
    return "\n".join(lines)


def _foreign_download_argv(pinned: PinnedKernel, workdir: Path, runner: Runner) -> list[str]:
    """Set up a private apt for pinned.arch under workdir, update its lists, and give
    the download argv (bootfuzz.kernel.foreign_apt)."""
    from bootfuzz.kernel import foreign_apt

    listing = None
    if not os.environ.get(foreign_apt.ARCHIVE_ENV):
        res = _run(runner, ["apt-get", "indextargets", "--format",
                            "$(REPO_URI)|$(ORIGIN)|$(LABEL)"])
        listing = res.stdout
    apt = foreign_apt.ForeignApt(workdir / ".apt", pinned.arch,
                                 foreign_apt.foreign_suite(pinned.package),
                                 foreign_apt.archive_base(listing))
    apt.prepare()
    res = _run(runner, apt.update_argv(), cwd=workdir)
    if res.returncode != 0:
        raise KernelFetchError(
            f"{pinned.name}: updating a private {pinned.arch} package list failed "
            f"(apt-get: {_apt_error_line(res.stderr)})"
        )
    return apt.download_argv(pinned.package, pinned.version, as_root=os.geteuid() == 0)


def _apt_download(pinned: PinnedKernel, workdir: Path, runner: Runner) -> Path:
    """apt-get download pinned.package=pinned.version into workdir; the .deb it left."""
    package, version = pinned.package, pinned.version
    if pinned.arch != HOST_ARCH:
        argv = _foreign_download_argv(pinned, workdir, runner)
    else:
        argv = apt_download_argv(package, version, as_root=os.geteuid() == 0)
    res = _run(runner, argv, cwd=workdir)
    if res.returncode != 0:
        said = _apt_error_line(res.stderr)
        if any(m in res.stderr for m in _GONE_MARKERS):
            raise KernelFetchError(_gone_message(pinned, said, _apt_policy(package, runner)))
        if any(m in res.stderr for m in _STALE_MARKERS):
            raise KernelFetchError(
                f"{pinned.name}: apt-get could not download {package}={version} "
                f"(apt-get: {said}); the package lists are probably stale: "
                "run `apt-get update` (as root) and retry"
            )
        raise KernelFetchError(
            f"{pinned.name}: {' '.join(argv)} failed with exit status {res.returncode} "
            f"(apt-get: {said})"
        )
    debs = sorted(workdir.glob("*.deb"))
    if len(debs) != 1:
        raise KernelFetchError(
            f"{pinned.name}: {' '.join(argv)} succeeded but left {len(debs)} .deb files, expected 1"
        )
    return debs[0]


def _from_snapshot(
    pinned: PinnedKernel, workdir: Path, apt_failed: KernelFetchError, snapshot_url: str | None
) -> Path:
    """After apt-get failed: the pinned .deb from the snapshot archive, sha256 verified."""
    apt_said = str(apt_failed.args[0])
    spec = f"{pinned.package}={pinned.version}"
    base = snapshot.snapshot_base_url(snapshot_url)
    if base is None:
        raise KernelFetchError(
            f"{apt_said}\n  or take {spec} from Debian's snapshot archive: {snapshot.HOW_TO_SET}"
        ) from None
    try:
        return snapshot.fetch_deb(
            base, pinned.package, pinned.version, pinned.arch, pinned.deb_sha256, workdir
        )
    except snapshot.SnapshotError as exc:
        first = apt_said.splitlines()[0].removeprefix(f"{pinned.name}: ")
        raise KernelFetchError(
            f"{pinned.name}: neither apt-get nor the snapshot archive gave {spec}\n"
            f"  apt-get: {first}\n  snapshot archive: {exc.args[0]}"
        ) from None


def _obtain_deb(
    pinned: PinnedKernel, workdir: Path, runner: Runner, snapshot_url: str | None
) -> Path:
    """The pinned .deb in workdir, its sha256 the pinned one: from apt-get if it still
    has the version, else from the snapshot archive."""
    try:
        deb = _apt_download(pinned, workdir, runner)
    except KernelFetchError as exc:
        return _from_snapshot(pinned, workdir, exc, snapshot_url)
    got = _sha256_file(deb)
    if got != pinned.deb_sha256:
        raise KernelFetchError(
            f"{pinned.name}: {pinned.package}={pinned.version} from apt-get has sha256 {got}, "
            f"expected deb_sha256 {pinned.deb_sha256}; not kept"
        )
    return deb


@contextlib.contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=parent) as d:
        yield Path(d)


def _unpack(
    pinned: PinnedKernel, deb: Path, vmlinuz_member: str, config_member: str, workdir: Path
) -> tuple[Path, str, Path, str]:
    """Stream both members into workdir; (vmlinuz, sha, config, sha)."""
    targets = {vmlinuz_member: workdir / VMLINUZ_FILE, config_member: workdir / CONFIG_FILE}
    try:
        got = extract_to_files(deb, targets)
    except DebError as exc:
        raise KernelFetchError(f"{pinned.name}: the downloaded package is unusable: {exc}") from exc
    v, c = got[vmlinuz_member], got[config_member]
    return v.path, v.sha256, c.path, c.sha256


def fetch_pinned(
    pinned: PinnedKernel,
    *,
    cache_dir: Path | None = None,
    runner: Runner = run_command,
    snapshot_url: str | None = None,
) -> FetchedKernel:
    """Return the cached kernel if it verifies, else download, verify and cache it.

    ``snapshot_url``: the snapshot archive's base URL (default ``$BOOTFUZZ_SNAPSHOT_URL``),
    asked only when apt-get cannot give the pinned version.
    """
    hit = _cached(pinned, cache_dir)
    if hit is not None:
        return hit
    with _scratch(cache_root(cache_dir) / "tmp") as work:
        deb = _obtain_deb(pinned, work, runner, snapshot_url)
        vmlinuz, vsha, config, csha = _unpack(
            pinned, deb, pinned.vmlinuz_member, pinned.config_member, work
        )
        for what, expected, got in (
            (pinned.vmlinuz_member, pinned.vmlinuz_sha256, vsha),
            (pinned.config_member, pinned.config_sha256, csha),
        ):
            if got != expected:
                raise KernelFetchError(
                    f"{pinned.name}: {what} from {pinned.package}={pinned.version} has "
                    f"sha256 {got}, expected {expected}; not kept"
                )
        stored = _store(pinned, vmlinuz, config, cache_dir)
    return FetchedKernel(pinned.name, stored.vmlinuz, stored.config, pinned, True)


def _lookup(name: str, manifest: Mapping[str, PinnedKernel]) -> PinnedKernel:
    try:
        return manifest[name]
    except KeyError:
        raise KernelError(
            f"unknown kernel {name!r} (known: {', '.join(sorted(manifest))})"
        ) from None


def fetch(
    name: str,
    *,
    cache_dir: Path | None = None,
    manifest: Path | None = None,
    runner: Runner = run_command,
    snapshot_url: str | None = None,
) -> FetchedKernel:
    """Fetch the pinned kernel ``name`` (see :func:`fetch_pinned`)."""
    return fetch_pinned(_lookup(name, load_manifest(manifest)), cache_dir=cache_dir,
                        runner=runner, snapshot_url=snapshot_url)


def resolve_kernel(
    spec: str,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    manifest: Path | None = None,
    runner: Runner = run_command,
) -> Path:
    """A pinned name -> its fetched vmlinuz; otherwise an existing file path.

    A pinned name wins over a file of the same name in the working directory.  With
    ``sha256`` (a reproducer's record of its kernel), a pinned name whose pin has moved
    on resolves to the cached kernel of that sha256 instead.
    """
    pinned = load_manifest(manifest)
    pin = pinned.get(spec)
    if pin is not None and sha256 in (None, pin.vmlinuz_sha256):
        return fetch_pinned(pin, cache_dir=cache_dir, runner=runner).vmlinuz
    if pin is not None and sha256 is not None:
        stored = find_cached(sha256, cache_dir)
        if stored is not None:
            return stored.vmlinuz
        raise KernelError(
            f"kernel {spec!r} was recorded with sha256 {sha256}, but it is pinned to "
            f"{pin.vmlinuz_sha256} now and the cache has no kernel of that sha256: "
            "bring it with `bootfuzz kernels import DIR` from a machine that has it, or "
            "fetch it with the kernels/manifest.toml that pinned it"
        )
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise KernelError(f"kernel {spec!r} is not a regular file")
    raise KernelError(
        f"unknown kernel {spec!r}: not a pinned name (known: {', '.join(pinned)}) and no such file"
    )


# --------------------------------------------------------------------------- export / import


def _copy_verified(src: Path, dest: Path, sha256: str, what: str) -> None:
    """Copy src to dest (atomically), hashing on the way; refuse bytes of another sha256."""
    digest = hashlib.sha256()
    try:
        with open(src, "rb") as fin, atomic_output(dest) as fout:
            while chunk := fin.read(1 << 20):
                digest.update(chunk)
                fout.write(chunk)
            if digest.hexdigest() != sha256:
                raise KernelError(
                    f"{what} has sha256 {digest.hexdigest()}, expected {sha256}: refused"
                )
    except FileNotFoundError:
        raise KernelError(f"{what} is missing") from None


def export_kernels(
    dest: Path,
    names: Sequence[str] = (),
    *,
    cache_dir: Path | None = None,
    manifest: Path | None = None,
    runner: Runner = run_command,
) -> list[StoredKernel]:
    """Copy kernels from the cache to DEST/by-sha256/SHA256/, re-verified on the way.

    ``names``: these pinned kernels (fetched first if they are not cached); none:
    every entry of the cache, including kernels no longer pinned, which old
    reproducers may still name by sha256.
    """
    if names:
        kernels = load_manifest(manifest)
        pins = [_lookup(name, kernels) for name in names]
        entries = []
        for pin in pins:
            fetch_pinned(pin, cache_dir=cache_dir, runner=runner)
            stored = find_cached(pin.vmlinuz_sha256, cache_dir)
            if stored is None:
                raise KernelFetchError(f"{pin.name}: fetched but not found in the cache")
            entries.append(stored)
    else:
        entries = cached_kernels(cache_dir)
    out = []
    for e in entries:
        d = dest / STORE_DIR / e.vmlinuz_sha256
        for name, sha in ((VMLINUZ_FILE, e.vmlinuz_sha256), (CONFIG_FILE, e.config_sha256)):
            _copy_verified(e.directory / name, d / name, sha, f"cache entry {e.directory / name}")
        atomic_write_text(d / RECORD_FILE, _record_text(e))
        out.append(StoredKernel(d, **{key: getattr(e, key) for key in _RECORD_KEYS}))
    return out


def import_kernels(
    src: Path, *, cache_dir: Path | None = None, manifest: Path | None = None
) -> list[tuple[StoredKernel, bool]]:
    """Verify every entry of an export in SRC and add it to the cache.

    Each vmlinuz must hash to its entry's name and each config to the sha256 its
    kernel.json records (and, for a pinned vmlinuz, to the manifest's config_sha256).
    All entries are checked before any is kept: one bad file refuses the whole import.
    Returns each entry with whether it was new to the cache.
    """
    root = src / STORE_DIR
    dirs = sorted(root.iterdir()) if root.is_dir() else []
    if not dirs:
        raise KernelError(
            f"{src} holds no exported kernels (expected {root}/SHA256/ "
            "from `bootfuzz kernels export`)"
        )
    pinned_config = {k.vmlinuz_sha256: k for k in load_manifest(manifest).values()}
    out: list[tuple[StoredKernel, bool]] = []
    with _scratch(cache_root(cache_dir) / "tmp") as work:
        staged = []
        for d in dirs:
            if not _SHA256_RE.fullmatch(d.name):
                raise KernelError(f"{d}: not an exported kernel (its name must be a sha256)")
            record = _read_record(d)
            pin = pinned_config.get(record.vmlinuz_sha256)
            if pin is not None and pin.config_sha256 != record.config_sha256:
                raise KernelError(
                    f"{d / RECORD_FILE}: config_sha256 {record.config_sha256} is not the one "
                    f"pinned for {pin.name} ({pin.config_sha256}): refused"
                )
            have = find_cached(record.vmlinuz_sha256, cache_dir)
            if have is not None:
                out.append((have, False))
                continue
            stage = work / d.name
            for name, sha in ((VMLINUZ_FILE, record.vmlinuz_sha256),
                              (CONFIG_FILE, record.config_sha256)):
                _copy_verified(d / name, stage / name, sha, str(d / name))
            staged.append((stage, record))
        for stage, record in staged:
            stored = _store(record, stage / VMLINUZ_FILE, stage / CONFIG_FILE, cache_dir)
            out.append((stored, True))
    return sorted(out, key=lambda entry: entry[0].vmlinuz_sha256)


def _single(members: Sequence[str], prefix: str, package: str) -> str:
    found = [m for m in members if m.startswith(prefix)]
    if len(found) != 1:
        raise KernelFetchError(
            f"{package}: expected exactly one {prefix}* in the package, found {len(found)}"
        )
    return found[0]


def repin(
    name: str,
    *,
    package: str | None = None,
    manifest: Path | None = None,
    cache_dir: Path | None = None,
    runner: Runner = run_command,
) -> PinnedKernel:
    """Pin ``name`` to the current candidate of its package (or of ``package``).

    Downloads it, finds boot/vmlinuz-* and boot/config-*, records their sha256,
    the .deb's sha256 and the payload compression, rewrites the manifest and leaves
    the files cached.  A new name needs ``package``; its description then names the package.
    """
    path = manifest_path(manifest)
    kernels = load_manifest(path)
    if not _NAME_RE.fullmatch(name):
        raise KernelError(f"kernel name {name!r} must be lowercase letters, digits and . _ + -")
    old = kernels.get(name)
    if old is None and package is None:
        raise KernelError(
            f"unknown kernel {name!r} (known: {', '.join(kernels)}); "
            "to add a new one, give its package"
        )
    pkg = package or (old.package if old else "")
    if not _PACKAGE_RE.fullmatch(pkg):
        raise KernelError(f"{pkg!r} is not a Debian package name")
    policy = _apt_policy(pkg, runner)
    if policy.candidate is None:
        hint = abi_search_pattern(pkg)
        search = (
            f"; look for its successor with: apt-cache search --names-only '{hint}'" if hint else ""
        )
        raise KernelFetchError(
            f"{name}: apt has no candidate version of {pkg} (run `apt-get update` "
            f"(as root) if the package lists are empty or stale){search}"
        )
    draft = PinnedKernel(
        name=name,
        package=pkg,
        version=policy.candidate,
        arch=ARCHES[0],
        vmlinuz_member="",
        config_member="",
        vmlinuz_sha256="",
        config_sha256="",
        deb_sha256="",
        compression="",
        description=old.description if old else f"{pkg} (pinned by repin)",
    )
    with _scratch(cache_root(cache_dir) / "tmp") as work:
        deb = _apt_download(draft, work, runner)
        deb_sha256 = _sha256_file(deb) or ""
        try:
            members = list_members(deb)
        except DebError as exc:
            raise KernelFetchError(f"{name}: the downloaded package is unusable: {exc}") from exc
        vm_member = _single(members, "boot/vmlinuz-", pkg)
        cfg_member = _single(members, "boot/config-", pkg)
        vmlinuz, vsha, config, csha = _unpack(draft, deb, vm_member, cfg_member, work)
        try:
            image = parse_kernel_image(vmlinuz.read_bytes(), source=vm_member)
            compression = detect_compression(image.payload).value
        except ImageError as exc:
            raise KernelFetchError(f"{name}: {pkg}: {exc}") from exc
        # Validate exactly as load_manifest will when it reads the file back.
        table = dataclasses.asdict(
            dataclasses.replace(
                draft,
                vmlinuz_member=vm_member,
                config_member=cfg_member,
                vmlinuz_sha256=vsha,
                config_sha256=csha,
                deb_sha256=deb_sha256,
                compression=compression,
            )
        )
        del table["name"]
        new = _pinned_from_table(f"repin of {pkg}", name, table)
        _store(new, vmlinuz, config, cache_dir)
    kernels[name] = new
    atomic_write_text(path, render_manifest(kernels))
    return new
