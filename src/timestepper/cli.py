"""The ``timestepper`` command.

Each area registers its subcommands through a module exposing ``add_commands(subparsers)``;
the list below names them.

User errors never print a traceback: a bad option value is refused by argparse (its types are in
:mod:`timestepper.cli_args`), and a problem found later (``ValueError`` and its subclasses such as
:class:`~timestepper.cli_args.UsageError` and the checkpoint errors, a missing or existing file, a
solve that fails for the options given) is printed as ``timestepper <command>: error: <message>``
with exit code 2, argparse's convention. Any other exception is a bug and raises as usual; set
``TIMESTEPPER_TRACEBACK=1`` to see the traceback of a user error too. Ctrl-C prints one line and
exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .core.status import SolveError

COMMAND_MODULES = [
    "timestepper.bench.cli",
    "timestepper.pde.cli",
    "timestepper.ode.cli",
    "timestepper.train.cli",
    "timestepper.tuning.cli",
]

# What the user can cause and fix: printed as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    SolveError,
)
USAGE_EXIT = 2
INTERRUPTED_EXIT = 130  # 128 + SIGINT, the shell's convention


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="timestepper", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        if os.environ.get("TIMESTEPPER_TRACEBACK"):
            raise
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return USAGE_EXIT
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
