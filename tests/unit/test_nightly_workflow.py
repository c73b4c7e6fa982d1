"""docs/examples/nightly-fuzz.yml and nightly-fuzz-dt.yml stay workflows of today's
bootfuzz: every bootfuzz command in them parses with our own parser, the shards of the
matrix are 0..SHARDS-1 of one --shard i/SHARDS split, and the merge job merges what the
shard jobs upload."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from bootfuzz.cli.fuzz import options_from_args
from bootfuzz.cli.main import parse_args

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
TEXT = (EXAMPLES / "nightly-fuzz.yml").read_text()
DT_TEXT = (EXAMPLES / "nightly-fuzz-dt.yml").read_text()
#: An expression's value when the workflow runs (any stands in for a seed, time, shard).
EXPRESSION = re.compile(r"\$\{\{[^}]*\}\}")


def env_value(name: str, text: str = TEXT) -> str:
    m = re.search(rf'^  {name}: "([^"]*)"$', text, re.MULTILINE)
    assert m is not None, name
    return m.group(1)


def commands(text: str = TEXT) -> list[list[str]]:
    """Each `.venv/bin/bootfuzz ...` command line, continuations joined, expressions and
    the workflow's env variables filled in."""
    joined = EXPRESSION.sub("1", re.sub(r"\\\n\s*", " ", text))
    found = []
    for m in re.finditer(r"\.venv/bin/bootfuzz ([^\n|&;]*)", joined):
        line = m.group(1).replace("$KERNELS", env_value("KERNELS", text))
        line = line.replace("$SHARDS", env_value("SHARDS", text))
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


def test_the_device_tree_workflow_shards_one_campaign_its_options_allow() -> None:
    """Every command parses; the shard command is a device-tree campaign that takes
    every option given (none of the x86-only ones it refuses); the matrix covers the
    shards, and the merge job reads what they upload and publishes dt-campaign's JUnit."""
    from bootfuzz.cli.fuzz import X86_ONLY_DEFAULTS, parse_shard
    from bootfuzz.fuzz.dt_campaign import dt_kernels

    argvs = commands(DT_TEXT)
    assert {a[0] for a in argvs} == {"kernels", "fuzz", "merge"}
    for argv in argvs:
        parse_args(argv)
    (fuzz,) = [a for a in argvs if a[0] == "fuzz"]
    args = parse_args(fuzz)
    assert set(dt_kernels(args.kernel)) == set(args.kernel) == {
        "debian-6.12-cloud-arm64", "debian-6.12-riscv64"}
    assert all(getattr(args, k) == v for k, v in X86_ONLY_DEFAULTS.items())
    shards = int(env_value("SHARDS", DT_TEXT))
    assert parse_shard(args.shard) == (1, shards) and args.overrides
    m = re.search(r"shard: \[([\d, ]+)\]", DT_TEXT)
    assert m is not None and [int(x) for x in m.group(1).split(",")] == list(range(shards))
    (merge,) = [a for a in argvs if a[0] == "merge"]
    assert merge[1] == "shards/fuzz-dt-shard-*"
    assert "name: fuzz-dt-shard-${{ matrix.shard }}" in DT_TEXT and args.out == "fuzz-out"
    assert "path: fuzz-out/" in DT_TEXT
    assert "report_paths: merged/dt-campaign/junit.xml" in DT_TEXT
