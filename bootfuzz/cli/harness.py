"""``python -m bootfuzz.cli.harness``: build (or find) the guest harness, print its paths.

./bootstrap runs this so that the first boot does not wait for gcc; the build
itself is bootfuzz.guest.harness.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.errors import BootfuzzError, ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bootfuzz.cli.harness",
        description="Build the guest agent and firmware stub (or find the cached build) "
        "and print their paths.",
    )
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="cache root (default: $BOOTFUZZ_CACHE or ~/.cache/bootfuzz)")
    args = parser.parse_args(argv)
    from bootfuzz.guest.harness import build_harness

    try:
        built = build_harness(args.cache_dir)
    except BootfuzzError as e:
        print(e, file=sys.stderr)
        return ExitStatus.USAGE if isinstance(e, ConfigError) else ExitStatus.INFRASTRUCTURE
    print(f"agent={built.agent}")
    print(f"firmware={built.firmware}")
    print(f"agent_selftest={built.agent_selftest}")
    return ExitStatus.PASS


if __name__ == "__main__":
    sys.exit(main())
