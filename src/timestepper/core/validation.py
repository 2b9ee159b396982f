"""Argument validation shared by every layer: one place for the checks and their messages.

Every check raises with the argument's name and what is allowed, so a bad input fails at the
boundary with a message the user can act on, never deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from .status import NonFiniteError

T = TypeVar("T")


def check_state(name: str, x: object) -> Tensor:
    """``x`` itself, after checking it is a floating-point (or complex) tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must have a floating or complex dtype, got {x.dtype}")
    return x


def check_choice(value: T, allowed: Sequence[T], name: str) -> T:
    """``value`` itself, after checking it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_order(order: object, allowed: Sequence[int], name: str = "order") -> int:
    """An integer option (not a bool) that must be one of ``allowed``."""
    if isinstance(order, bool) or not isinstance(order, int) or order not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, got {order!r}")
    return order


def check_int(value: object, name: str, minimum: int = 0) -> int:
    """An integer ``>= minimum`` as a Python ``int``: any ``numbers.Integral`` (``numpy.int64``
    too), not a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def finiteness_probe(x: Tensor) -> Tensor:
    """A device scalar that is finite when every entry of ``x`` is (one reduction, no sync): the
    sum propagates NaN, and inf unless cancelled by -inf, which gives NaN (a sum of finite values
    that overflows is not finite either). Half precision accumulates in float32; a complex state
    is summed through its real view (a real reduction, which the compiler generates code for)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.sum(dtype=torch.float32)
    if x.is_complex():
        return torch.view_as_real(x).sum()
    return x.sum()


def check_finite_state(x: Tensor, name: str, locate: bool = True) -> None:
    """Refuse a state holding NaN/inf, naming it (and, with ``locate``, the first bad index): one
    host read, made before a solve starts, never inside a step.

    The common case costs one reduction: a finite sum proves every entry finite (NaN propagates,
    and inf gives inf or NaN). Only a non-finite sum -- a bad entry, or finite values whose sum
    overflows -- is followed by the entrywise test (``isfinite`` is four passes over memory)."""
    x = x.detach()
    if not (x.is_floating_point() or x.is_complex()):
        return
    if bool(torch.isfinite(finiteness_probe(x))):
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = [int(i) for i in bad.nonzero()[0]] if locate and x.ndim else []
        where = f" (first at index {tuple(first)})" if first else ""
        raise NonFiniteError(f"{name} contains {int(bad.sum())} NaN/inf value(s){where}")


def as_generator(generator: object, device: torch.device | str | None = None,
                 name: str = "generator") -> torch.Generator | None:
    """``generator`` as a ``torch.Generator`` (an integer, numpy's too, is a seed for a new one on
    ``device``), or ``None``; anything else is refused naming the argument."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator(device=device if device is not None else "cpu").manual_seed(int(generator))
    raise TypeError(f"{name} must be a torch.Generator, an integer seed or None, got {type(generator).__name__}")


def check_in_range(value: object, name: str, low: float, high: float) -> float:
    """A real number in the closed interval ``[low, high]`` (as a float)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from exc
    if not low <= v <= high:
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
    return v


def check_positive(value: object, name: str) -> float:
    """A finite real number ``> 0`` (as a float)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a number, got {type(value).__name__}") from exc
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    """Tolerances of an adaptive solve: both ``>= 0`` and not both 0."""
    rtol, atol = float(rtol), float(atol)
    if rtol < 0 or atol < 0 or (rtol == 0 and atol == 0) or not (math.isfinite(rtol) and math.isfinite(atol)):
        raise ValueError(f"rtol and atol must be finite, >= 0 and not both 0, got rtol={rtol}, atol={atol}")
    return rtol, atol


def time_grid(grid: Any, name: str = "grid") -> Tensor:
    """A float64 CPU tensor of at least two strictly monotone times (the last may be infinite:
    a diffusion grid ends where the noise vanishes, ``t = -inf`` for VE schedules).

    ``grid`` is a tensor, a list/tuple of numbers, or an object with a ``t`` attribute holding
    one (a diffusion ``SamplingGrid``)."""
    times = grid if isinstance(grid, (Tensor, list, tuple)) else getattr(grid, "t", grid)
    try:
        times = torch.as_tensor(times, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of times, got {type(grid).__name__}") from exc
    if times.ndim != 1 or times.numel() < 2:
        raise ValueError(f"{name} must be a 1-D sequence of at least 2 times, got shape {tuple(times.shape)}")
    if bool(torch.isnan(times).any()):
        raise ValueError(f"{name} contains NaN")
    d = times[1:] - times[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError(f"{name} must be strictly monotone (all increasing or all decreasing)")
    return times


def save_times(ts: Any, t0: float, t1: float, name: str = "saveat") -> list[float]:
    """Save times as floats: 1-D, monotone in the direction ``t0 -> t1``, inside ``[t0, t1]``."""
    try:
        vals = torch.as_tensor(ts, dtype=torch.float64).detach().cpu().reshape(-1).tolist()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of times, got {type(ts).__name__}") from exc
    if not vals:
        raise ValueError(f"{name} must hold at least one time")
    direction = 1.0 if t1 > t0 else -1.0
    if any(direction * (b - a) < 0 for a, b in zip(vals, vals[1:])):
        raise ValueError(f"{name} must be monotone in the direction of integration")
    lo, hi = min(t0, t1), max(t0, t1)
    slack_lo, slack_hi = 1e-12 * max(1.0, abs(lo)), 1e-12 * max(1.0, abs(hi))
    if any(not (lo - slack_lo <= v <= hi + slack_hi) for v in vals):
        raise ValueError(f"{name} times must lie in [{lo:.6g}, {hi:.6g}]")
    return vals


__all__ = [
    "as_generator",
    "check_finite_state",
    "finiteness_probe",
    "check_choice",
    "check_in_range",
    "check_int",
    "check_order",
    "check_positive",
    "check_state",
    "check_tolerances",
    "save_times",
    "time_grid",
]
