"""The ``bootfuzz`` command: the top-level parser, and where errors become exit statuses.

Each subcommand is a module of this package with ``add_arguments(parser)`` and
``run(args) -> int``.  Only the chosen subcommand's module is imported, and only
when it runs: ``bootfuzz --version`` and ``bootfuzz --help`` load no stage of the
pipeline (the subcommands' one-line help is kept here for that reason).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol, cast

from bootfuzz import __version__
from bootfuzz.cli.exits import EPILOG, ExitStatus, Terminated
from bootfuzz.errors import BootfuzzError, ConfigError, HarnessBug, InfrastructureError


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str

    @property
    def module(self) -> str:
        return f"bootfuzz.cli.{self.name}"


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("boot", "boot one case through our loader and judge it"),
    Subcommand("replay", "boot a reproducer file again and judge it"),
    Subcommand("kernels", "list, fetch or re-pin the pinned real kernels"),
    Subcommand("doctor", "report which backends can run here and how fast"),
    Subcommand("diff", "boot one case on our loader and on a peer; report where views differ"),
    Subcommand("matrix", "boot kernels x entries x memory x initrds x targets in parallel"),
    Subcommand("fuzz", "run a boot campaign: generated cases, judged, failures minimized"),
    Subcommand("merge", "merge sharded campaign outputs into one summary"),
    Subcommand("minimize", "shrink a failing reproducer while it fails the same way"),
    Subcommand("coverage", "report a guided campaign's kernel coverage as HTML and JSON"),
)


class SubcommandModule(Protocol):
    """What each bootfuzz.cli.<subcommand> module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


class _ParserError(Exception):
    """argparse's error, caught so main() returns 2 instead of exiting."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _ParserError(f"{self.prog}: error: {message}")


def load(name: str) -> SubcommandModule:
    """The module of subcommand *name* (imports its stage)."""
    return cast(SubcommandModule, importlib.import_module(f"bootfuzz.cli.{name}"))


def chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in *argv*: its first word that is not an option (the
    top-level parser takes no option values)."""
    return next((a for a in argv if not a.startswith("-")), None)


def make_parser(command: str | None = None) -> Parser:
    """The ``bootfuzz`` parser; only *command*'s arguments are defined (and its module
    imported), the other subcommands are listed by name and help."""
    parser = Parser(
        prog="bootfuzz", description="Test harness and fuzzer for the Linux x86 boot protocol.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bootfuzz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser)
    for s in SUBCOMMANDS:
        p = sub.add_parser(s.name, help=s.help)
        if s.name == command:
            module = load(s.name)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a ``bootfuzz`` command line; ``args.run(args)`` runs it."""
    return make_parser(chosen(argv)).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bootfuzz`` with *argv*; every error bootfuzz expects becomes one line on
    stderr and an exit status (cli/exits.py)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        try:
            with _sigterm_as_interrupt():
                status = _run(argv)
        except SystemExit:  # --help and --version print, then exit through argparse
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit: a closed pipe is then ours to handle
        return status
    except BrokenPipeError:
        _silence_stdout()
        return ExitStatus.BROKEN_PIPE


def said(exc: BootfuzzError) -> str:
    """*exc* for a line that already starts with ``bootfuzz:``: its component named,
    unless that is bootfuzz itself (which would say "bootfuzz: error: bootfuzz: ...")."""
    text = str(exc)
    if exc.component == BootfuzzError.component:
        return text.removeprefix(f"{exc.component}: ")
    return text


def _run(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        return int(args.run(args))
    except _ParserError as exc:
        print(exc, file=sys.stderr)
        return ExitStatus.USAGE
    except ConfigError as exc:
        print(f"bootfuzz: error: {said(exc)}", file=sys.stderr)
        return ExitStatus.USAGE
    except InfrastructureError as exc:
        print(f"bootfuzz: infrastructure: {said(exc)}", file=sys.stderr)
        return ExitStatus.INFRASTRUCTURE
    except HarnessBug as exc:
        print(f"bootfuzz: internal error (a bug in bootfuzz): {said(exc)}", file=sys.stderr)
        return ExitStatus.INFRASTRUCTURE
    except BootfuzzError as exc:
        print(f"bootfuzz: {said(exc)}", file=sys.stderr)
        return ExitStatus.INFRASTRUCTURE
    except Terminated:
        print("bootfuzz: terminated (SIGTERM)", file=sys.stderr)
        return ExitStatus.TERMINATED
    except KeyboardInterrupt:
        print("bootfuzz: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        raise  # main() says nothing about a reader that went away
    except OSError as exc:  # a file this machine would not let us use, not said better above
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"bootfuzz: infrastructure: {where}{exc.strerror or exc}", file=sys.stderr)
        return ExitStatus.INFRASTRUCTURE


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # One is enough: a second SIGTERM must not cut the clean-up of the first short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a subcommand runs, SIGTERM unwinds it as Ctrl-C does (Terminated)."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding program): its signals, not ours
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's own flush at
    exit would otherwise print a second BrokenPipeError."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def entry() -> None:
    sys.exit(main())
