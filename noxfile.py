"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s boot-matrix [-- ARGS]``,
``nox -s fuzz [-- ARGS]`` (the nightly campaign), ``nox -s atheris [-- ARGS]`` (the parsers
and the planner, 1,000,000 executions per atheris target), ``nox -s loaders`` (every real
boot loader target on real kernels), ``nox -s device-tree`` (every arm64/riscv64 boot
and diff test), ``nox -s coverage-bench`` (the coverage plugin's cost, the guided
campaign against the blind one).

Each session installs the project into its own venv (``.[dev]``); ``reuse_venv``
keeps those venvs between runs so a machine without network can rerun them.
``boot-matrix`` passes its arguments to ``bootfuzz matrix`` (e.g.
``nox -s boot-matrix -- --nightly --jobs 4 --out /tmp/matrix``).
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

PYTHON = "3.11"


@nox.session(python=PYTHON, reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Unit and integration tests, two workers (real boots need QEMU)."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session(python=PYTHON, reuse_venv=True)
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict (configured in pyproject.toml)."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("mypy", *session.posargs)


@nox.session(name="boot-matrix", python=PYTHON, reuse_venv=True)
def boot_matrix(session: nox.Session) -> None:
    """Kernels x entries x memory x initrds x targets; reports in matrix-out/."""
    session.install("-e", ".[dev]")
    session.run("bootfuzz", "matrix", *session.posargs)


@nox.session(python=PYTHON, reuse_venv=True)
def loaders(session: nox.Session) -> None:
    """Every real-loader test (GRUB BIOS/linux16/EFI, SYSLINUX, the EFI stub, systemd-boot
    on the pinned kernels, and diffs against ours); the default suite boots one per
    family."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", "tests/integration/test_loaders_real.py",
                *session.posargs, env={"BOOTFUZZ_LOADER_TESTS": "all"})


@nox.session(name="device-tree", python=PYTHON, reuse_venv=True)
def device_tree(session: nox.Session) -> None:
    """Every arm64/riscv64 device-tree boot (256M and 4G with a hole, each arch) and the
    diffs against QEMU's own -kernel on virt; the default suite boots one per arch."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-n", "2", "tests/integration/test_dt_boot_real.py",
                *session.posargs, env={"BOOTFUZZ_DT_FULL": "1"})


@nox.session(name="coverage-bench", python=PYTHON, reuse_venv=True)
def coverage_bench(session: nox.Session) -> None:
    """bench/coverage_overhead.py, then bench/guided_vs_blind.py (20 minutes a side)."""
    session.install("-e", ".[dev]")
    session.run("python", "bench/coverage_overhead.py", "--pairs", "15")
    session.run("python", "bench/guided_vs_blind.py", "--time", "20m", "--jobs", "2",
                *session.posargs)


@nox.session(python=PYTHON, reuse_venv=True)
def fuzz(session: nox.Session) -> None:
    """The nightly campaign: the three pinned x86 kernels, 30 minutes, all cores, the nightly
    Hypothesis profile for the property tests, then every atheris target for 1,000,000
    executions (about an hour on 2 cores).

    Arguments after -- go to `bootfuzz fuzz` (e.g. -- --time 2h --shard 1/4).
    """
    session.install("-e", ".[dev]")
    out = session.env.get("BOOTFUZZ_FUZZ_OUT") or "fuzz-out"
    session.run(
        "bootfuzz", "fuzz",
        "--kernel", "debian-6.1-amd64", "--kernel", "debian-6.1-cloud",
        "--kernel", "debian-6.12-cloud",
        "--time", "30m", "--out", out,  # --jobs: the usable CPUs by default
        *session.posargs,
        success_codes=[0, 1],  # 1: findings, written as reproducers under --out
    )
    session.run("pytest", "-q", "tests/unit/test_planner_properties.py",
                "tests/unit/test_strategies.py", env={"HYPOTHESIS_PROFILE": "nightly"})
    _atheris(session, out, ())


@nox.session(name="fuzz-dt", python=PYTHON, reuse_venv=True)
def fuzz_dt(session: nox.Session) -> None:
    """The nightly device-tree campaign: the arm64 and riscv64 kernels, 30 minutes, all
    cores, a third of the cases a faulty loader's DTB (--overrides), findings minimized.

    Arguments after -- go to `bootfuzz fuzz` (e.g. -- --time 2h --shard 1/4).
    """
    session.install("-e", ".[dev]")
    session.run(
        "bootfuzz", "fuzz",
        "--kernel", "debian-6.12-cloud-arm64", "--kernel", "debian-6.12-riscv64",
        "--overrides", "--time", "30m",
        "--out", session.env.get("BOOTFUZZ_FUZZ_OUT") or "fuzz-dt-out",
        *session.posargs,
        success_codes=[0, 1],  # 1: findings, written as reproducers under --out
    )


def _atheris(session: nox.Session, out: str, args: tuple[str, ...] | list[str]) -> None:
    # 1,000,000 executions per target (tests/fuzz/run.py), the targets side by side on
    # the usable cores; a summary of executions and coverage in OUT/atheris-summary.md.
    session.run("python", "-m", "tests.fuzz.run", out, *args)


@nox.session(python=PYTHON, reuse_venv=True)
def atheris(session: nox.Session) -> None:
    """Every atheris target for 1,000,000 executions (the fuzz session's last step alone).

    Arguments after -- go to tests/fuzz/run.py (e.g. -- --runs 100000 --targets cpio,image).
    """
    session.install("-e", ".[dev]")
    _atheris(session, session.env.get("BOOTFUZZ_FUZZ_OUT") or "fuzz-out", session.posargs)
