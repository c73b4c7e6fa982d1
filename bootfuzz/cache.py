"""Where bootfuzz keeps what it builds and fetches: one resolver for every cache user.

Kernels, the guest harness, probe images and initrds all live under one root:
``$BOOTFUZZ_CACHE`` if set, else ``~/.cache/bootfuzz``.  The root is refused when it
lies inside this git tree, where tens of MB of kernels could end up committed.
"""

from __future__ import annotations

import os
from pathlib import Path

from bootfuzz.errors import ConfigError

CACHE_ENV = "BOOTFUZZ_CACHE"
DEFAULT_CACHE = Path("~/.cache/bootfuzz")
#: The checkout bootfuzz runs from (bootfuzz/ is its child).
REPO_ROOT = Path(__file__).resolve().parent.parent


class CacheDirError(ConfigError):
    """The cache directory cannot be used."""


def cache_root(cache_dir: Path | None = None) -> Path:
    """The explicit directory, else ``$BOOTFUZZ_CACHE``, else ``~/.cache/bootfuzz``."""
    if cache_dir is None:
        env = os.environ.get(CACHE_ENV)
        cache_dir = Path(env) if env else DEFAULT_CACHE
    root = cache_dir.expanduser().resolve()
    if (REPO_ROOT / ".git").exists() and root.is_relative_to(REPO_ROOT):
        raise CacheDirError(
            f"cache directory {root} is inside the git tree {REPO_ROOT}; "
            f"set {CACHE_ENV} to a directory outside it"
        )
    return root
