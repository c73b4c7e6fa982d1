"""nox sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s boot-matrix [-- ARGS]``.

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
