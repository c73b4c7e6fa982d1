"""docs/examples/nightly-fuzz.yml stays a workflow of today's bootfuzz: every bootfuzz
command in it parses with our own parser, the shards of the matrix are 0..SHARDS-1 of
one --shard i/SHARDS split, and the merge job merges what the shard jobs upload."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from bootfuzz.cli.fuzz import options_from_args
from bootfuzz.cli.main import parse_args

WORKFLOW = Path(__file__).parents[2] / "docs" / "examples" / "nightly-fuzz.yml"
TEXT = WORKFLOW.read_text()
#: An expression's value when the workflow runs (any stands in for a seed, time, shard).
EXPRESSION = re.compile(r"\$\{\{[^}]*\}\}")


def env_value(name: str) -> str:
    m = re.search(rf'^  {name}: "([^"]*)"$', TEXT, re.MULTILINE)
    assert m is not None, name
    return m.group(1)


def commands() -> list[list[str]]:
    """Each `.venv/bin/bootfuzz ...` command line, continuations joined, expressions and
    the workflow's env variables filled in."""
    joined = EXPRESSION.sub("1", re.sub(r"\\\n\s*", " ", TEXT))
    found = []
    for m in re.finditer(r"\.venv/bin/bootfuzz ([^\n|&;]*)", joined):
        line = m.group(1).replace("$KERNELS", env_value("KERNELS"))
        line = line.replace("$SHARDS", env_value("SHARDS"))
        found.append(shlex.split(line))
    return found


def test_every_bootfuzz_command_parses() -> None:
    argvs = commands()
    assert {a[0] for a in argvs} == {"kernels", "fuzz", "merge"}
    for argv in argvs:
        parse_args(argv)  # a usage error raises


def test_the_shards_split_one_campaign_and_are_merged() -> None:
    (fuzz,) = [a for a in commands() if a[0] == "fuzz" and "--shard" in a]
    opts = options_from_args(parse_args(fuzz))
    shards = int(env_value("SHARDS"))
    assert opts.shard == (1, shards) and "--resume" not in fuzz
    assert set(opts.kernels) == {"debian-6.1-amd64", "debian-6.1-cloud", "debian-6.12-cloud"}
    m = re.search(r"shard: \[([\d, ]+)\]", TEXT)
    assert m is not None and [int(x) for x in m.group(1).split(",")] == list(range(shards))
    (merge,) = [a for a in commands() if a[0] == "merge"]
    assert merge[1] == "shards/fuzz-shard-*" and "name: fuzz-shard-${{ matrix.shard }}" in TEXT
    assert "path: fuzz-out/" in TEXT and opts.out == Path("fuzz-out")
    assert "report_paths: merged/campaign/junit.xml" in TEXT


def test_every_shard_uses_the_floors_measured_once() -> None:
    """Shards measuring their own memory floors could disagree, and merge refuses shards
    of different generators: one job measures, every shard downloads its result."""
    (floors,) = [a for a in commands() if a[0] == "fuzz" and "--shard" not in a]
    opts = options_from_args(parse_args(floors))
    assert opts.max_cases == 1
    assert "needs: [plan, floors]" in TEXT
    assert TEXT.count("name: memory-floors") == 2 and TEXT.count("~/.cache/bootfuzz/floors/") == 2
