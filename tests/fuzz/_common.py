"""Shared by the atheris targets: optional atheris, instrumentation, and the seed runner.

A target imports bootfuzz inside ``instrumented(__name__ == "__main__")`` so atheris
instruments our modules only when the file runs as a fuzzer; under pytest
(tests/unit/test_fuzz_seeds.py) nothing is instrumented and atheris is optional.
This module must not import bootfuzz itself, or the instrumentation would miss it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, cast


def _atheris() -> ModuleType | None:
    try:
        import atheris as module
    except ImportError:  # CI without the fuzzer: the seed corpus still runs
        return None
    return cast(ModuleType, module)


atheris = _atheris()

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "corpus" / "atheris"


def instrumented(fuzzing: bool) -> contextlib.AbstractContextManager[Any]:
    """atheris.instrument_imports() when fuzzing, else nothing."""
    if fuzzing and atheris is not None:
        return atheris.instrument_imports()  # type: ignore[no-any-return]
    return contextlib.nullcontext()


def seed_files(target: str) -> list[Path]:
    return sorted(p for p in (SEEDS / target).iterdir() if p.is_file())


def main(test_one_input: Callable[[bytes], None]) -> None:
    """Run libFuzzer over *test_one_input* (python -m tests.fuzz.fuzz_x [libFuzzer args])."""
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def replay(target: str, test_one_input: Callable[[bytes], None]) -> Iterator[Path]:
    """Run every seed of *target* once (what CI does without atheris)."""
    for path in seed_files(target):
        test_one_input(path.read_bytes())
        yield path
