"""The exit statuses every ``bootfuzz`` subcommand shares, and the text that explains them."""

from __future__ import annotations

import enum
import signal


class ExitStatus(enum.IntEnum):
    """What a script calling ``bootfuzz`` can tell apart without reading its output."""

    PASS = 0  # every oracle passed (replay: the expectation is met)
    FINDING = 1  # an oracle failed or could not answer: the product of a run
    USAGE = 2  # bad input: fix the command line or the file
    INFRASTRUCTURE = 3  # this machine: backend missing, guest never started, fetch failed
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT
    TERMINATED = 143  # SIGTERM (kill, timeout(1), a CI runner's cancel), as a shell reports it
    #: The reader of our output went away (``bootfuzz kernels list | head -1``): we
    #: stop quietly, with the status a shell gives a tool that SIGPIPE ended.
    BROKEN_PIPE = 141


EPILOG = """\
exit status: 0 all oracles pass (replay: the reproducer's expectation is met),
1 an oracle failed or could not answer (replay: expectation not met, or verdicts differ),
2 bad input or usage, 3 infrastructure trouble (backend missing, guest never started,
more guest RAM than this machine can back, a disk that cannot be written),
130 interrupted (SIGINT), 143 terminated (SIGTERM), 141 the reader of our output went away."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound exactly as Ctrl-C is: the guest stopped, the run's blobs
    removed, a campaign's state saved (everything that handles KeyboardInterrupt)."""

    signum = signal.SIGTERM
