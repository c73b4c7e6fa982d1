"""Every atheris target runs over its seed corpus, without atheris, as CI does."""

from __future__ import annotations

import importlib

import pytest

from tests.fuzz._common import seed_files

TARGETS = ("image", "cpio", "kernel_log", "dt_log", "reproducer", "planner")


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_seeds_every_seed_runs_clean(target: str) -> None:
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    seeds = seed_files(target)
    assert seeds, f"corpus/atheris/{target} has no seeds"
    for path in seeds:
        module.TestOneInput(path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_seeds_empty_and_truncated_inputs_run_clean(target: str) -> None:
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    for path in seed_files(target):
        data = path.read_bytes()
        for cut in (0, 1, len(data) // 2, len(data) - 1):
            module.TestOneInput(data[:cut])


def test_fuzz_seeds_planted_bug_crasher_gets_exact_error() -> None:
    """The input atheris found when parse_newc's name bounds check was removed on purpose."""
    from bootfuzz.errors import InitramfsError
    from bootfuzz.guest.cpio import parse_newc
    from tests.fuzz._common import SEEDS

    data = (SEEDS / "cpio" / "fuzz_name-past-end.bin").read_bytes()
    with pytest.raises(InitramfsError, match=r"name at offset 226 \(4096 bytes\) runs past the "
                       r"end of the archive \(226 bytes\)"):
        parse_newc(data)


# Found while writing the targets (inputs longer than libFuzzer's default max_len),
# fixed in observation.py and reproducer.py; kept as regression tests.


def test_fuzz_seeds_kernel_log_huge_decimal_number_is_no_crash() -> None:
    from tests.fuzz.fuzz_kernel_log import TestOneInput

    TestOneInput(b"[    0.1] Freeing initrd memory: " + b"1" * 5000 + b"K\n")


def test_fuzz_seeds_reproducer_deeply_nested_json_is_no_crash() -> None:
    from tests.fuzz.fuzz_reproducer import TestOneInput

    TestOneInput(b"[" * 100_000 + b"]" * 100_000)


def test_fuzz_seeds_planner_runs_its_seeds_on_a_real_pinned_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """BOOTFUZZ_FUZZ_KERNEL swaps the fake bzImage for a pinned kernel's real header."""
    import tests.fuzz.fuzz_planner as planner

    monkeypatch.setenv(planner.KERNEL_ENV, "debian-6.12-cloud")
    try:
        real = importlib.reload(planner)
        assert real.IMAGE.kernel_version_string.startswith("6.12"), real.IMAGE.kernel_version_string
        for path in seed_files("planner"):
            real.TestOneInput(path.read_bytes())
    finally:
        monkeypatch.delenv(planner.KERNEL_ENV)
        importlib.reload(planner)
