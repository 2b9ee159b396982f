"""Argument types and the user-error convention of the ``timestepper`` subcommands.

A bad value on the command line is refused by argparse itself through the types below
(``timestepper: error: argument --dt: must be > 0, got '0'``, exit code 2); a problem found
after parsing (a missing file, a checkpoint of other settings, a missing optional dependency)
is raised as :class:`UsageError` or another ``ValueError``/file error, which
:func:`timestepper.cli.main` prints as one ``error:`` line with exit code 2. Every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class UsageError(ValueError):
    """A user error found after the command line was parsed; its message names the option."""


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    return _number(text, float)


def below_one(text: str) -> float:
    """An argparse type: a number in ``[0, 1)`` (an EMA decay, a dropout probability)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def _comma_list(text: str, item: Callable[[str], T], what: str) -> list[T]:
    """``text`` split at commas, each part parsed by ``item`` (at least one part)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got {text!r}")
    return [item(p) for p in parts]


def positive_ints(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1 (at least one)."""
    return _comma_list(text, positive_int, "integers >= 1")


def solver_name(text: str) -> str:
    """An argparse type: a solver of the registry."""
    from .solvers.registry import available

    names = available()
    if text not in names:
        raise argparse.ArgumentTypeError(f"unknown solver {text!r}; available: {', '.join(names)}")
    return text


def solver_names(text: str) -> list[str]:
    """An argparse type: comma-separated solvers of the registry (at least one)."""
    return _comma_list(text, solver_name, "solver names")


def grid_name(text: str) -> str:
    """An argparse type: a named time grid (``uniform``, ``logsnr``, ``karras``, ...)."""
    from .diffusion.grids import SPACINGS

    if text not in SPACINGS:
        raise argparse.ArgumentTypeError(f"unknown grid {text!r}; choose from {', '.join(SPACINGS)}")
    return text


def output_file(text: str) -> Path:
    """An argparse type: a file path whose folder exists and that is not a folder itself."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist")
    return path


def output_path(text: str) -> Path:
    """An argparse type: a path (file or folder, which the command decides) whose folder exists."""
    path = Path(text)
    if not path.resolve().parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder of {text!r} does not exist")
    return path


def require_modules(command: str, modules: dict[str, str]) -> None:
    """Raise :class:`UsageError` naming the ``pip install`` command when an optional dependency of
    ``command`` is missing; ``modules`` maps import names to pip package names."""
    missing = [pip for module, pip in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise UsageError(
            f"{command} needs {', '.join(missing)}, which is not installed: "
            f"pip install {' '.join(missing)}"
        )
