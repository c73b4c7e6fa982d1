"""Pinned real Debian kernels: the manifest, the cache and apt-get as the fetcher.

A kernel is pinned by package name, exact version and the sha256 of the two files
we use (vmlinuz and its config), not of the .deb: the files are what a boot case
depends on.  The manifest (kernels/manifest.toml) lives in the git tree; the
kernels never do.  They go to the cache root (bootfuzz.cache: ``$BOOTFUZZ_CACHE``
or ``~/.cache/bootfuzz``).

apt-get fetches because it already knows the host's configured archive, proxy and
signatures; we never name a mirror.  Debian drops old kernel versions (and bumps
the ABI number in the package name) with every security update, so "the pinned
version has gone" is an expected state, and its error says how to re-pin.

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
from typing import Protocol

from bootfuzz.cache import REPO_ROOT, cache_root
from bootfuzz.compression import Compression
from bootfuzz.errors import ImageError, KernelError, KernelFetchError
from bootfuzz.fileio import atomic_write_text
from bootfuzz.jsonread import JsonReader
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
    "abi_search_pattern",
    "apt_download_argv",
    "fetch",
    "fetch_pinned",
    "kernel_cache_dir",
    "list_kernels",
    "load_manifest",
    "manifest_path",
    "parse_apt_policy",
    "render_manifest",
    "repin",
    "resolve_kernel",
    "run_command",
]

DEFAULT_MANIFEST = REPO_ROOT / "kernels" / "manifest.toml"
MANIFEST_ENV = "BOOTFUZZ_KERNEL_MANIFEST"

#: Hex digits of the vmlinuz sha256 that name its cache directory.
CACHE_KEY_DIGITS = 16
VMLINUZ_FILE = "vmlinuz"
CONFIG_FILE = "config"

#: The only Debian architecture whose kernels bootfuzz boots.
ARCHES = ("amd64",)

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
    return {name: _pinned_from_table(str(path), name, data[name]) for name in sorted(data)}


MANIFEST_HEADER = """\
# Pinned real kernels for bootfuzz: one table per kernel name.
#
# package/version: the Debian binary package, fetched with `apt-get download`
#   from whatever archive the host's apt is configured for.
# vmlinuz_member/config_member: paths inside the package's data.tar.
# vmlinuz_sha256/config_sha256: of the extracted files (not of the .deb).
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


def kernel_cache_dir(pinned: PinnedKernel, cache_dir: Path | None = None) -> Path:
    return (
        cache_root(cache_dir) / "kernels" / pinned.name / pinned.vmlinuz_sha256[:CACHE_KEY_DIGITS]
    )


def _sha256_file(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _cached(pinned: PinnedKernel, cache_dir: Path | None) -> FetchedKernel | None:
    d = kernel_cache_dir(pinned, cache_dir)
    vmlinuz, config = d / VMLINUZ_FILE, d / CONFIG_FILE
    if (
        _sha256_file(vmlinuz) == pinned.vmlinuz_sha256
        and _sha256_file(config) == pinned.config_sha256
    ):
        return FetchedKernel(pinned.name, vmlinuz, config, pinned)
    return None


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


def _download(pinned: PinnedKernel, workdir: Path, runner: Runner) -> Path:
    """apt-get download pinned.package=pinned.version into workdir; the .deb it left."""
    package, version = pinned.package, pinned.version
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


def _install(src: Path, dest: Path) -> None:
    """Move a verified file into the cache atomically.

    ``src`` lives in the cache root's tmp/ (see _scratch), so this is a rename on
    one filesystem: readers see the old file or the whole new one, never a part.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(src, 0o644)
    os.replace(src, dest)


def fetch_pinned(
    pinned: PinnedKernel, *, cache_dir: Path | None = None, runner: Runner = run_command
) -> FetchedKernel:
    """Return the cached kernel if it verifies, else download, verify and cache it."""
    hit = _cached(pinned, cache_dir)
    if hit is not None:
        return hit
    dest = kernel_cache_dir(pinned, cache_dir)
    with _scratch(cache_root(cache_dir) / "tmp") as work:
        deb = _download(pinned, work, runner)
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
        _install(config, dest / CONFIG_FILE)
        _install(vmlinuz, dest / VMLINUZ_FILE)
    return FetchedKernel(pinned.name, dest / VMLINUZ_FILE, dest / CONFIG_FILE, pinned, True)


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
) -> FetchedKernel:
    """Fetch the pinned kernel ``name`` (see :func:`fetch_pinned`)."""
    return fetch_pinned(_lookup(name, load_manifest(manifest)), cache_dir=cache_dir, runner=runner)


def resolve_kernel(
    spec: str,
    *,
    cache_dir: Path | None = None,
    manifest: Path | None = None,
    runner: Runner = run_command,
) -> Path:
    """A pinned name -> its fetched vmlinuz; otherwise an existing file path.

    A pinned name wins over a file of the same name in the working directory.
    """
    pinned = load_manifest(manifest)
    if spec in pinned:
        return fetch_pinned(pinned[spec], cache_dir=cache_dir, runner=runner).vmlinuz
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise KernelError(f"kernel {spec!r} is not a regular file")
    raise KernelError(
        f"unknown kernel {spec!r}: not a pinned name (known: {', '.join(pinned)}) and no such file"
    )


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

    Downloads it, finds boot/vmlinuz-* and boot/config-*, records their sha256
    and payload compression, rewrites the manifest and leaves the files cached.
    A new name needs ``package``; its description then names the package.
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
        compression="",
        description=old.description if old else f"{pkg} (pinned by repin)",
    )
    with _scratch(cache_root(cache_dir) / "tmp") as work:
        deb = _download(draft, work, runner)
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
                compression=compression,
            )
        )
        del table["name"]
        new = _pinned_from_table(f"repin of {pkg}", name, table)
        dest = kernel_cache_dir(new, cache_dir)
        _install(config, dest / CONFIG_FILE)
        _install(vmlinuz, dest / VMLINUZ_FILE)
    kernels[name] = new
    atomic_write_text(path, render_manifest(kernels))
    return new
