"""The package's import graph follows the stage order of docs/architecture.md.

Walks every module of bootfuzz/ with ast (imports inside functions included: a lazy
import is still a dependency) and fails on an import cycle between modules, or on a
module importing from a later stage than its own.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bootfuzz"

#: Lowest first.  A module may import from its own stage and from earlier ones.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("bootfuzz", "errors", "units", "fileio", "cache", "jsonread", "compression",
                    "case", "cmdline", "transcript", "junit", "abi", "arch")),
    ("kernel", ("kernel",)),
    ("loader", ("loader",)),
    ("guest", ("guest",)),
    ("judge", ("judge",)),
    ("run", ("run",)),
    ("peers", ("peers",)),
    ("fuzz", ("fuzz",)),
    ("interface", ("cli", "pytest_plugin")),
)
RANK = {top: rank for rank, (_, tops) in enumerate(STAGES) for top in tops}
STAGE_PACKAGES = ("kernel", "loader", "guest", "judge", "run", "peers", "fuzz", "cli")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


MODULES = _modules()


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(name: str) -> set[str]:
    """The bootfuzz modules *name* imports (a ``from pkg import mod`` counts as mod)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(), str(MODULES[name]))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, node)
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def stage_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "bootfuzz"
    if top not in RANK:
        raise AssertionError(f"{module} belongs to no stage; add it to STAGES and the docs")
    return RANK[top]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (iterative DFS)."""
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_every_module_has_a_stage() -> None:
    for name in MODULES:
        stage_of(name)


def test_no_import_cycles() -> None:
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_no_import_against_the_stage_order() -> None:
    bad = sorted(f"{a} ({STAGES[stage_of(a)][0]}) imports {b} ({STAGES[stage_of(b)][0]})"
                 for a, deps in GRAPH.items() for b in deps if stage_of(b) > stage_of(a))
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_cycle_and_an_inversion() -> None:
    """The checks above are only worth something if they can fail."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert stage_of("bootfuzz.cli.main") > stage_of("bootfuzz.judge.oracles")


@pytest.mark.parametrize("package", STAGE_PACKAGES)
def test_each_stage_package_imports_alone_and_says_what_it_takes(package: str) -> None:
    code = f"import bootfuzz.{package} as p; print(len((p.__doc__ or '').split()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert int(out.stdout) >= 15, f"bootfuzz.{package} needs a docstring: what it takes, gives"


def test_the_cli_imports_no_stage_before_a_subcommand_runs() -> None:
    """`bootfuzz --version` must not pay for importing the whole pipeline."""
    code = ("import sys, bootfuzz.cli.main; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('bootfuzz.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    loaded = out.stdout.split()
    heavy = [m for m in loaded if m.split(".")[1] in STAGE_PACKAGES[:-1]]
    assert not heavy, f"imported at CLI start-up: {heavy}"
