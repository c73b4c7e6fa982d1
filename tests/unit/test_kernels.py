"""bootfuzz.kernel.pinned with a fake apt (no network, no root): manifest, cache, fetch, repin."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import pytest
from fake_apt import (
    CONFIG,
    CONFIG_MEMBER,
    DEB,
    OTHER,
    OTHER_VMLINUZ,
    PINNED,
    PKG,
    VERSION,
    VMLINUZ,
    VMLINUZ_MEMBER,
    FakeApt,
    fake_deb,
    policy_text,
    sha,
)

from bootfuzz.cache import REPO_ROOT, CacheDirError, cache_root
from bootfuzz.cli.main import main as bootfuzz_main
from bootfuzz.errors import KernelError, KernelFetchError
from bootfuzz.kernel.pinned import (
    DEFAULT_MANIFEST,
    abi_search_pattern,
    apt_download_argv,
    fetch,
    kernel_cache_dir,
    list_kernels,
    load_manifest,
    parse_apt_policy,
    render_manifest,
    repin,
    resolve_kernel,
)
from tests.fakes import fake_bzimage

AS_ROOT = os.geteuid() == 0
#: Said after every apt failure while no snapshot archive is configured.
SNAPSHOT_HINT = (
    f"\n  or take {PKG}={VERSION} from Debian's snapshot archive: set BOOTFUZZ_SNAPSHOT_URL "
    "(or pass --snapshot-url) to the base URL of Debian's snapshot archive or of a mirror of it"
)


@pytest.fixture
def apt() -> FakeApt:
    fake = FakeApt()
    fake.offer(PKG, VERSION, DEB)
    return fake


@pytest.fixture(autouse=True)
def no_snapshot_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests never reach a snapshot archive configured in the caller's environment."""
    monkeypatch.delenv("BOOTFUZZ_SNAPSHOT_URL", raising=False)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(render_manifest({PINNED.name: PINNED, OTHER.name: OTHER}))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def pin_deb(manifest: Path, deb: bytes) -> None:
    """Re-pin fake-9.9's deb_sha256 to this .deb, to reach the checks after the .deb's."""
    kernels = load_manifest(manifest)
    kernels["fake-9.9"] = dataclasses.replace(kernels["fake-9.9"], deb_sha256=sha(deb))
    manifest.write_text(render_manifest(kernels))


def leftovers(cache: Path) -> list[Path]:
    tmp = cache / "tmp"
    return list(tmp.iterdir()) if tmp.exists() else []


# ----------------------------------------------------------------------------- manifest


def test_load_manifest_default_pins_the_three_debian_kernels() -> None:
    m = load_manifest(DEFAULT_MANIFEST)
    got = {n: (k.package, k.version, k.compression) for n, k in m.items()}
    assert got["debian-6.1-amd64"] == ("linux-image-6.1.0-56-amd64-unsigned", "6.1.192-2", "xz")
    assert got["debian-6.1-cloud"] == (
        "linux-image-6.1.0-56-cloud-amd64-unsigned",
        "6.1.192-2",
        "lz4",
    )
    assert got["debian-6.12-cloud"] == (
        "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
        "6.12.117-1~deb12u1",
        "zstd",
    )
    assert m["debian-6.1-cloud"].vmlinuz_member == "boot/vmlinuz-6.1.0-56-cloud-amd64"


def test_render_manifest_default_file_round_trips() -> None:
    """repin rewrites the file with render_manifest: the checked-in file must be its output."""
    assert render_manifest(load_manifest(DEFAULT_MANIFEST)) == DEFAULT_MANIFEST.read_text()


def test_load_manifest_env_override_used(monkeypatch: pytest.MonkeyPatch, manifest: Path) -> None:
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    assert list(load_manifest()) == ["fake-9.9", "other-1.0"]


def test_load_manifest_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == f"kernels: kernel manifest {path} not found"


def test_load_manifest_invalid_toml_raises(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("[a\n")
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value).startswith(f"kernels: {path}: not valid TOML (")


def test_load_manifest_empty_raises(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text("# nothing\n")
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == f"kernels: {path}: no kernels (expected one table per kernel)"


def write_one(tmp_path: Path, **change: str | None) -> Path:
    """A one-kernel manifest from PINNED with the given keys replaced (None: deleted)."""
    text = render_manifest({PINNED.name: PINNED})
    for key, value in change.items():
        pattern = re.compile(rf"^{key} = .*\n", re.MULTILINE)
        m = pattern.search(text)
        assert m, key
        line = "" if value is None else f"{key} = {value}\n"
        text = text[: m.start()] + line + text[m.end() :]
    path = tmp_path / "m.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"package": None}, ".package: missing"),
        ({"version": "7"}, ".version: expected a string, got int"),
        ({"arch": '"i386"'}, ".arch: 'i386' is not one of amd64, arm64, riscv64"),
        (
            {"compression": '"brotli"'},
            ".compression: 'brotli' is not one of none, gzip, bzip2, lzma, xz, lzo, lz4, zstd",
        ),
        (
            {"vmlinuz_sha256": '"' + "a" * 63 + '"'},
            f".vmlinuz_sha256: must be 64 lowercase hex digits, got '{'a' * 63}'",
        ),
        (
            {"config_sha256": '"' + "A" * 64 + '"'},
            f".config_sha256: must be 64 lowercase hex digits, got '{'A' * 64}'",
        ),
        (
            {"package": '"Linux_Image"'},
            ".package: must be a Debian package name, got 'Linux_Image'",
        ),
        ({"version": '"6.1 beta"'}, ".version: must be a Debian version, got '6.1 beta'"),
        (
            {"vmlinuz_member": '"../boot/vmlinuz"'},
            ".vmlinuz_member: must be a relative path inside the package, got '../boot/vmlinuz'",
        ),
        (
            {"config_member": '"/boot/config"'},
            ".config_member: must be a relative path inside the package, got '/boot/config'",
        ),
        (
            {"description": '"two\\nlines"'},
            ".description: must be one non-empty line of printable text",
        ),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_load_manifest_bad_field_raises(
    tmp_path: Path, change: dict[str, str | None], problem: str
) -> None:
    path = write_one(tmp_path, **change)
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == f"kernels: {path}: [fake-9.9]{problem}"


def test_load_manifest_sha_64_hex_digits_accepted(tmp_path: Path) -> None:
    """The pair of the 63-digit case above."""
    path = write_one(tmp_path, vmlinuz_sha256='"' + "a" * 64 + '"')
    assert load_manifest(path)["fake-9.9"].vmlinuz_sha256 == "a" * 64


def test_load_manifest_dot_slash_member_accepted(tmp_path: Path) -> None:
    path = write_one(tmp_path, config_member='"./boot/config-x"')
    assert load_manifest(path)["fake-9.9"].config_member == "./boot/config-x"


def test_load_manifest_unknown_key_raises(tmp_path: Path) -> None:
    path = write_one(tmp_path)
    path.write_text(path.read_text() + 'sha512 = "x"\n')
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == (
        f"kernels: {path}: [fake-9.9]: unknown key 'sha512' (known: arch, compression, "
        "config_member, config_sha256, deb_sha256, description, package, version, "
        "vmlinuz_member, vmlinuz_sha256)"
    )


def test_load_manifest_top_level_value_raises(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('schema = "1"\n')
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == f"kernels: {path}: [schema]: must be a table, one per kernel"


def test_load_manifest_name_with_slash_raises(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(render_manifest({"a/b": dataclasses.replace(PINNED, name="a/b")}))
    with pytest.raises(KernelError) as exc:
        load_manifest(path)
    assert str(exc.value) == (
        f"kernels: {path}: kernel name 'a/b' must be lowercase letters, digits and . _ + - "
        "(starting with a letter or digit)"
    )


# ----------------------------------------------------------------------------- cache paths


def test_cache_root_env_then_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("BOOTFUZZ_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "bootfuzz"


def test_cache_root_inside_git_tree_raises() -> None:
    repo = REPO_ROOT
    with pytest.raises(CacheDirError) as exc:
        cache_root(repo / "kernels" / "cache")
    assert str(exc.value) == (
        f"bootfuzz: cache directory {repo / 'kernels' / 'cache'} is inside the git tree {repo}; "
        "set BOOTFUZZ_CACHE to a directory outside it"
    )


def test_kernel_cache_dir_named_by_vmlinuz_sha256(cache: Path) -> None:
    assert kernel_cache_dir(PINNED, cache) == (
        cache / "kernels" / "by-sha256" / PINNED.vmlinuz_sha256
    )


# ----------------------------------------------------------------------------- fetch


def test_fetch_downloads_verifies_and_caches(apt: FakeApt, manifest: Path, cache: Path) -> None:
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    d = kernel_cache_dir(PINNED, cache)
    assert (got.vmlinuz, got.config, got.downloaded) == (d / "vmlinuz", d / "config", True)
    assert got.vmlinuz.read_bytes() == VMLINUZ
    assert got.config.read_bytes() == CONFIG
    assert apt.downloads == [tuple(apt_download_argv(PKG, VERSION, as_root=AS_ROOT))]
    assert leftovers(cache) == []


def test_fetch_cache_hit_runs_no_command(apt: FakeApt, manifest: Path, cache: Path) -> None:
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    apt.calls.clear()
    got = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert apt.calls == []
    assert got.downloaded is False
    assert got.vmlinuz.read_bytes() == VMLINUZ


def test_fetch_damaged_cache_file_refetched(apt: FakeApt, manifest: Path, cache: Path) -> None:
    first = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    first.config.write_bytes(b"CONFIG_FAKE=n\n")
    again = fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert again.downloaded is True
    assert again.config.read_bytes() == CONFIG


@pytest.mark.parametrize("which", ["vmlinuz", "config"])
def test_fetch_sha_mismatch_rejected_and_not_cached(
    apt: FakeApt, manifest: Path, cache: Path, which: str
) -> None:
    bad_vmlinuz = OTHER_VMLINUZ if which == "vmlinuz" else VMLINUZ
    bad_config = b"CONFIG_FAKE=m\n" if which == "config" else CONFIG
    bad_deb = fake_deb(bad_vmlinuz, bad_config)
    apt.offer(PKG, VERSION, bad_deb)
    pin_deb(manifest, bad_deb)
    member, expected, got = {
        "vmlinuz": (VMLINUZ_MEMBER, PINNED.vmlinuz_sha256, sha(bad_vmlinuz)),
        "config": (CONFIG_MEMBER, PINNED.config_sha256, sha(bad_config)),
    }[which]
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert str(exc.value) == (
        f"kernels: fake-9.9: {member} from {PKG}={VERSION} has sha256 {got}, "
        f"expected {expected}; not kept"
    )
    assert not kernel_cache_dir(PINNED, cache).exists()
    assert leftovers(cache) == []


def test_fetch_version_gone_names_available_and_repin_command(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    apt.debs.clear()
    apt.offer(PKG, "9.9.2-1", fake_deb())
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    pattern = r"^linux-image-9\.9\.0-[0-9]+-fake-amd64-unsigned$"
    assert str(exc.value) == (
        f"kernels: fake-9.9: the pinned version {VERSION} of {PKG} has left the archive "
        f"(apt-get: E: Version '{VERSION}' for '{PKG}' was not found)\n"
        "  available now: 9.9.2-1 (candidate)\n"
        "  re-pin to the current candidate with: bootfuzz kernels repin fake-9.9\n"
        f"  if Debian bumped the ABI, find the new package with: "
        f"apt-cache search --names-only '{pattern}'\n"
        "  and re-pin to it with: bootfuzz kernels repin fake-9.9 --package NEW-PACKAGE\n"
        "  if the package lists are empty or stale, run `apt-get update` (as root) first"
        + SNAPSHOT_HINT
    )
    assert ("apt-cache", "policy", PKG) in apt.calls
    assert leftovers(cache) == []


def test_fetch_package_gone_suggests_abi_search_and_update(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    apt.debs.clear()
    apt.policy.clear()
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    msg = str(exc.value)
    assert f"(apt-get: E: Unable to locate package {PKG})" in msg
    assert f"  available now: no version of {PKG}\n" in msg
    assert "re-pin to the current candidate" not in msg
    assert "apt-cache search --names-only '^linux-image-9\\.9\\.0-[0-9]+-fake-amd64-unsigned$'" in (
        msg
    )
    assert "bootfuzz kernels repin fake-9.9 --package NEW-PACKAGE" in msg
    assert "run `apt-get update` (as root)" in msg


def test_fetch_apt_get_missing_raises(apt: FakeApt, manifest: Path, cache: Path) -> None:
    apt.missing = True
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert str(exc.value) == (
        "kernels: apt-get not found: fetching pinned kernels needs apt (a Debian or Ubuntu "
        "host); elsewhere pass a kernel image path instead of a pinned name" + SNAPSHOT_HINT
    )


def test_fetch_stale_lists_404_suggests_update(apt: FakeApt, manifest: Path, cache: Path) -> None:
    said = "E: Failed to fetch file:/srv/archive/pool/x.deb  404  Not Found"
    apt.download_failure = (100, f"Err:1 fake\n{said}\n")
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert str(exc.value) == (
        f"kernels: fake-9.9: apt-get could not download {PKG}={VERSION} (apt-get: {said}); "
        "the package lists are probably stale: run `apt-get update` (as root) and retry"
        + SNAPSHOT_HINT
    )


def test_fetch_other_apt_failure_reports_exit_status(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    apt.download_failure = (100, "E: Could not open lock file\n")
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    argv = " ".join(apt_download_argv(PKG, VERSION, as_root=AS_ROOT))
    assert str(exc.value) == (
        f"kernels: fake-9.9: {argv} failed with exit status 100 "
        "(apt-get: E: Could not open lock file)" + SNAPSHOT_HINT
    )


def test_fetch_member_missing_from_package_raises(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    other_abi = fake_deb(abi="9.9.0-2")
    apt.offer(PKG, VERSION, other_abi)
    pin_deb(manifest, other_abi)
    with pytest.raises(KernelFetchError) as exc:
        fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    msg = str(exc.value)
    assert msg.startswith("kernels: fake-9.9: the downloaded package is unusable: deb: ")
    assert msg.endswith(f"no member '{VMLINUZ_MEMBER}', '{CONFIG_MEMBER}' in data.tar.xz")
    assert leftovers(cache) == []


def test_fetch_unknown_name_raises(apt: FakeApt, manifest: Path, cache: Path) -> None:
    with pytest.raises(KernelError) as exc:
        fetch("debian-9", cache_dir=cache, manifest=manifest, runner=apt)
    assert str(exc.value) == "kernels: unknown kernel 'debian-9' (known: fake-9.9, other-1.0)"
    assert apt.calls == []


@pytest.mark.parametrize("as_root", [True, False])
def test_apt_download_argv_sandbox_option_only_as_root(as_root: bool) -> None:
    argv = apt_download_argv("p", "1-1", as_root=as_root)
    sandbox = ["-o", "APT::Sandbox::User=root"] if as_root else []
    assert argv == ["apt-get", *sandbox, "download", "p=1-1"]


# ----------------------------------------------------------------------------- apt helpers


@pytest.mark.parametrize(
    ("package", "successor", "pattern"),
    [
        (
            "linux-image-6.1.0-56-cloud-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
        ),
        (
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-unsigned",
            r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        ),
        (
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.120+deb12-cloud-amd64-unsigned",
            r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
        ),
    ],
)
def test_abi_search_pattern_matches_successor_not_other_flavour(
    package: str, successor: str, pattern: str
) -> None:
    assert abi_search_pattern(package) == pattern
    assert re.fullmatch(pattern, successor)
    assert not re.fullmatch(pattern, successor.replace("amd64-unsigned", "amd64-dbg"))


def test_abi_search_pattern_other_package_none() -> None:
    assert abi_search_pattern("hello") is None


def test_parse_apt_policy_installed_marker_and_status_line() -> None:
    text = (
        "linux-image-x:\n"
        "  Installed: 2.0-1\n"
        "  Candidate: 2.1-1\n"
        "  Version table:\n"
        "     2.1-1 500\n"
        "        500 file:/srv/archive stable/main amd64 Packages\n"
        " *** 2.0-1 100\n"
        "        100 /var/lib/dpkg/status\n"
    )
    # apt prints " *** " in the 5-space column for the installed version.
    got = parse_apt_policy(text.replace(" *** 2.0-1", "     *** 2.0-1"))
    assert (got.candidate, got.versions) == ("2.1-1", ("2.1-1", "2.0-1"))


def test_parse_apt_policy_no_candidate() -> None:
    got = parse_apt_policy(policy_text("p", None, []))
    assert (got.candidate, got.versions) == (None, ())


# ----------------------------------------------------------------------------- resolve / list


def test_resolve_kernel_pinned_name_returns_fetched_vmlinuz(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    path = resolve_kernel("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    assert path == kernel_cache_dir(PINNED, cache) / "vmlinuz"
    assert path.read_bytes() == VMLINUZ


def test_resolve_kernel_file_path_returned_without_fetching(
    apt: FakeApt, manifest: Path, tmp_path: Path
) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(VMLINUZ)
    assert resolve_kernel(str(image), manifest=manifest, runner=apt) == image
    assert apt.calls == []


def test_resolve_kernel_unknown_raises(apt: FakeApt, manifest: Path) -> None:
    with pytest.raises(KernelError) as exc:
        resolve_kernel("debian-9", manifest=manifest, runner=apt)
    assert str(exc.value) == (
        "kernels: unknown kernel 'debian-9': not a pinned name (known: fake-9.9, other-1.0) "
        "and no such file"
    )


def test_resolve_kernel_directory_raises(apt: FakeApt, manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(KernelError) as exc:
        resolve_kernel(str(tmp_path), manifest=manifest, runner=apt)
    assert str(exc.value) == f"kernels: kernel '{tmp_path}' is not a regular file"


def test_list_kernels_reports_cached_state(apt: FakeApt, manifest: Path, cache: Path) -> None:
    before = list_kernels(cache, manifest=manifest)
    assert [(s.pinned.name, s.cached) for s in before] == [
        ("fake-9.9", False),
        ("other-1.0", False),
    ]
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    after = list_kernels(cache, manifest=manifest)
    assert [(s.pinned.name, s.cached) for s in after] == [("fake-9.9", True), ("other-1.0", False)]
    assert after[0].vmlinuz == kernel_cache_dir(PINNED, cache) / "vmlinuz"


# ----------------------------------------------------------------------------- repin


def test_repin_new_candidate_rewrites_only_that_table(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    new_image = fake_bzimage(payload=b"\x28\xb5\x2f\xfd")  # zstd
    new_deb = fake_deb(vmlinuz=new_image)
    apt.offer(PKG, "9.9.2-1", new_deb)
    got = repin("fake-9.9", manifest=manifest, cache_dir=cache, runner=apt)
    expected = dataclasses.replace(
        PINNED, version="9.9.2-1", vmlinuz_sha256=sha(new_image), deb_sha256=sha(new_deb),
        compression="zstd",
    )
    assert got == expected
    assert load_manifest(manifest) == {"fake-9.9": expected, "other-1.0": OTHER}
    assert manifest.read_text() == render_manifest({"fake-9.9": expected, "other-1.0": OTHER})
    # The download is cached: fetching the new pin runs nothing.
    apt.calls.clear()
    assert fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt).downloaded is False
    assert apt.calls == []


def test_repin_new_package_after_abi_bump(apt: FakeApt, manifest: Path, cache: Path) -> None:
    new_pkg = "linux-image-9.9.0-2-fake-amd64-unsigned"
    apt.offer(new_pkg, "9.9.3-1", fake_deb(abi="9.9.0-2"))
    got = repin("fake-9.9", package=new_pkg, manifest=manifest, cache_dir=cache, runner=apt)
    assert (got.package, got.version, got.vmlinuz_member, got.config_member) == (
        new_pkg,
        "9.9.3-1",
        "boot/vmlinuz-9.9.0-2-fake-amd64",
        "boot/config-9.9.0-2-fake-amd64",
    )
    assert got.description == PINNED.description
    assert load_manifest(manifest)["fake-9.9"] == got


def test_repin_no_candidate_raises_and_keeps_manifest(
    apt: FakeApt, manifest: Path, cache: Path
) -> None:
    before = manifest.read_text()
    apt.policy.clear()
    with pytest.raises(KernelFetchError) as exc:
        repin("fake-9.9", manifest=manifest, cache_dir=cache, runner=apt)
    assert str(exc.value) == (
        f"kernels: fake-9.9: apt has no candidate version of {PKG} (run `apt-get update` "
        "(as root) if the package lists are empty or stale); look for its successor with: "
        r"apt-cache search --names-only '^linux-image-9\.9\.0-[0-9]+-fake-amd64-unsigned$'"
    )
    assert manifest.read_text() == before


def test_repin_unknown_name_without_package_raises(apt: FakeApt, manifest: Path) -> None:
    with pytest.raises(KernelError) as exc:
        repin("new-1", manifest=manifest, runner=apt)
    assert str(exc.value) == (
        "kernels: unknown kernel 'new-1' (known: fake-9.9, other-1.0); "
        "to add a new one, give its package"
    )


# ---------------------------------------------------------------- bootfuzz kernels fetch


def test_main_fetch_cached_prints_one_line_each(
    apt: FakeApt,
    manifest: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fetch("fake-9.9", cache_dir=cache, manifest=manifest, runner=apt)
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(cache))
    assert bootfuzz_main(["kernels", "fetch", "fake-9.9"]) == 0
    path = kernel_cache_dir(PINNED, cache) / "vmlinuz"
    assert capsys.readouterr().out == f"fake-9.9: {path} (cached, sha256 verified)\n"


def test_main_fetch_unknown_name_exits_2(
    manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    assert bootfuzz_main(["kernels", "fetch", "nope"]) == 2
    assert capsys.readouterr().err == (
        "bootfuzz: error: kernels: unknown kernel 'nope' (known: fake-9.9, other-1.0)\n"
    )


def test_main_fetch_without_apt_exits_3(
    manifest: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BOOTFUZZ_KERNEL_MANIFEST", str(manifest))
    monkeypatch.setenv("BOOTFUZZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    assert shutil.which("apt-get") is None
    assert bootfuzz_main(["kernels", "fetch", "fake-9.9"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("bootfuzz: infrastructure: kernels: apt-get not found")
