"""torchdiffeq's ``options`` dictionary, checked: every option of the method's kind is honoured
and any other raises, naming it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .inputs import State

ADAPTIVE = ("first_step", "safety", "ifactor", "dfactor", "min_step", "max_step", "max_num_steps",
            "step_t", "jump_t", "grid_points", "eps", "dtype", "norm")
FIXED = ("step_size", "grid_constructor", "interp", "perturb")
ADAMS = FIXED + ("max_iters", "max_order")
SCIPY = ("solver", "min_step", "max_step", "first_step", "norm")
INTERPS = ("linear", "cubic")


def check_keys(options: dict, allowed: tuple[str, ...], method: str) -> None:
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ValueError(f"option(s) {bad} are not supported by method {method!r}; its options "
                         f"are {sorted(allowed)}")


def rms_norm(v: Tensor) -> Tensor:
    """torchdiffeq's default norm: the root mean square."""
    return v.abs().pow(2).mean().sqrt()


def mixed_norm(parts: tuple[Tensor, ...]) -> Any:
    """torchdiffeq's default norm of a tuple state: the largest RMS norm of its tensors."""
    return max(rms_norm(p) for p in parts)


def flat_norm(norm: Callable[[Any], Any] | None, state: State) -> Callable[[Tensor], Any]:
    """The norm of the flat state: the user's (called with the state's structure) or torchdiffeq's
    default (RMS, or the mixed norm of a tuple)."""
    if norm is not None and not callable(norm):
        raise TypeError(f"options['norm'] must be callable, got {type(norm).__name__}")
    if state.shapes is None:
        return norm or rms_norm
    user = norm or mixed_norm
    return lambda v: user(state.split(v))


def times_list(value: Any, name: str) -> list[float]:
    if value is None:
        return []
    if isinstance(value, Tensor):
        return [float(v) for v in value.detach().reshape(-1).tolist()]
    try:
        return [float(v) for v in value]
    except TypeError as exc:
        raise TypeError(f"options[{name!r}] must be a tensor or a sequence of times") from exc


@dataclass(frozen=True)
class Adaptive:
    """The options of an adaptive method, parsed."""

    first_step: float | None
    safety: float
    ifactor: float
    dfactor: float
    min_step: float
    max_step: float
    max_num_steps: int
    step_t: list[float]
    jumps: list[tuple[float, float]]  # (end of a segment, start of the next)
    norm: Callable[[Tensor], Any]

    @staticmethod
    def parse(options: dict, method: str, state: State) -> Adaptive:
        check_keys(options, ADAPTIVE, method)
        o = dict(options)
        dtype = o.pop("dtype", torch.float64)
        if dtype != torch.float64:
            raise ValueError("options['dtype']: the loop keeps times in float64 only; got "
                             f"{dtype} (float64 is torchdiffeq's default)")
        first = o.get("first_step")
        return Adaptive(
            None if first is None else float(first), float(o.get("safety", 0.9)),
            float(o.get("ifactor", 10.0)), float(o.get("dfactor", 0.2)),
            float(o.get("min_step", 0.0)), float(o.get("max_step", math.inf)),
            int(o.get("max_num_steps", 2**31 - 1)), times_list(o.get("step_t"), "step_t"),
            _jumps(o), flat_norm(o.get("norm"), state))


def _jumps(o: dict) -> list[tuple[float, float]]:
    """``jump_t`` (restart just after each time), or the older ``grid_points`` with ``eps``
    (stop at ``g - eps``, restart at ``g + eps``)."""
    if "eps" in o and "grid_points" not in o:
        raise ValueError("options['eps'] needs options['grid_points']")
    jumps = [(g, g) for g in times_list(o.get("jump_t"), "jump_t")]
    eps = float(o.get("eps", 0.0))
    jumps += [(g - eps, g + eps) for g in times_list(o.get("grid_points"), "grid_points")]
    return sorted(jumps)


@dataclass(frozen=True)
class Fixed:
    """The options of a fixed-grid method, parsed."""

    step_size: float | None
    grid_constructor: Callable[..., Tensor] | None
    interp: str
    perturb: bool
    solver_options: dict

    @staticmethod
    def parse(options: dict, method: str, adams: bool) -> Fixed:
        check_keys(options, ADAMS if adams else FIXED, method)
        o = dict(options)
        step, grid = o.pop("step_size", None), o.pop("grid_constructor", None)
        if step is not None and grid is not None:
            raise ValueError("options['step_size'] and options['grid_constructor'] are mutually "
                             "exclusive")
        interp = o.pop("interp", "linear")
        if interp not in INTERPS:
            raise ValueError(f"options['interp'] must be one of {INTERPS}, got {interp!r}")
        perturb = bool(o.pop("perturb", False))
        return Fixed(None if step is None else float(step), grid, interp, perturb, o)


__all__ = ["ADAPTIVE", "ADAMS", "Adaptive", "FIXED", "Fixed", "SCIPY", "check_keys", "flat_norm",
           "mixed_norm", "rms_norm", "times_list"]
