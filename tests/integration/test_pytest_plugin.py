"""The pytest plugin, used from a scratch test file as a user would (pytester)."""

from __future__ import annotations

import importlib.metadata

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.qemu


def _plugin_args() -> list[str]:
    """-p the plugin unless the installed entry point already loads it."""
    names = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    return [] if "bootfuzz" in names else ["-p", "bootfuzz.pytest_plugin"]


def test_pytest_plugin_boot_fixture_real_boot_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from bootfuzz.judge.verdict import Verdict

        def test_boot(boot, bootfuzz_verdict, tmp_path):
            result = boot(kernel="debian-6.1-cloud", mem="256M", initrd_size="1M")
            bootfuzz_verdict(result)
            assert result.verdict is Verdict.PASS
            assert result.run_dir.parent == tmp_path
            assert (result.run_dir / "console.log").exists()
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "--bootfuzz-timeout", "240",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_pytest_plugin_verdict_prints_failing_oracles(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_boot(boot, bootfuzz_verdict):
            # rdinit points nowhere: the kernel panics, the agent never reports
            result = boot(kernel="debian-6.1-cloud", cmdline="rdinit=/nope")
            bootfuzz_verdict(result)
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*boot verdict fail*", "*boot: fail*", "*expected: agent*"])
