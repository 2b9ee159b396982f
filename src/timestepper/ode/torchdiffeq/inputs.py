"""torchdiffeq's inputs, normalised: the state (a tensor, or a tuple flattened into one vector),
the output times and the user's ``func`` seen as a field of the loop.

torchdiffeq calls ``func(t, y)`` with ``t`` a 0-d tensor of the state's real dtype on its device
and ``y`` shaped like ``y0`` (a tuple for a tuple ``y0``). :class:`Field` does the same on top of
the loop, which keeps times as Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def check_times(t: Any, name: str = "t") -> Tensor:
    """``t`` as torchdiffeq accepts it: a 1-D floating tensor, strictly increasing or
    decreasing."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of times, got {type(t).__name__}")
    if not torch.is_floating_point(t):
        raise TypeError(f"{name} must be a floating point tensor, got {t.dtype}")
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape {tuple(t.shape)}")
    if t.numel() > 1:
        d = t[1:] - t[:-1]
        if not (bool((d > 0).all()) or bool((d < 0).all())):
            raise ValueError(f"{name} must be strictly increasing or decreasing")
    return t


@dataclass(frozen=True)
class State:
    """``y0`` as one tensor: itself, or a tuple's tensors flattened and concatenated (one
    dtype), with the shapes to split them back."""

    x0: Tensor
    shapes: tuple[torch.Size, ...] | None

    @staticmethod
    def of(y0: Any) -> State:
        if isinstance(y0, Tensor):
            return State(y0, None)
        if not isinstance(y0, tuple) or not y0 or not all(isinstance(v, Tensor) for v in y0):
            raise TypeError("y0 must be a torch.Tensor or a non-empty tuple of tensors, got "
                            f"{type(y0).__name__}")
        dtypes = {v.dtype for v in y0}
        if len(dtypes) > 1:
            raise TypeError(f"the tensors of a tuple y0 must share one dtype, got {sorted(map(str, dtypes))}")
        return State(torch.cat([v.reshape(-1) for v in y0]), tuple(v.shape for v in y0))

    def split(self, x: Tensor, lead: tuple[int, ...] = ()) -> Any:
        """The user's view of a state (``lead`` leading dims, e.g. the output times)."""
        if self.shapes is None:
            return x
        out, i = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            out.append(x[..., i:i + n].reshape(*lead, *shape))
            i += n
        return tuple(out)

    def join(self, y: Any) -> Tensor:
        """The flat state of the user's structure (the field's output)."""
        if self.shapes is None:
            return y
        return torch.cat([v.reshape(-1) for v in y])


class Field:
    """``func(t, y)`` on the flat state with ``t`` a float (the loop's view), calling the user's
    function with ``t`` as a 0-d tensor (the state's real dtype and device) and ``y`` in its
    structure, as torchdiffeq does. ``nudge`` (``perturb=True``) maps a time to the adjacent
    floating point number when the fixed-grid step asks for it."""

    def __init__(self, func: Callable[..., Any], state: State,
                 nudge: Callable[[float, Tensor], Any] | None = None) -> None:
        self.func, self.state, self.nudge = func, state, nudge
        x0 = state.x0
        self.t_dtype = x0.real.dtype if x0.is_complex() else x0.dtype
        self.device = x0.device

    def time(self, t: Any) -> Tensor:
        if isinstance(t, Tensor):
            return t.to(self.t_dtype)
        return torch.tensor(t, dtype=self.t_dtype, device=self.device)

    def __call__(self, t: Any, x: Tensor) -> Tensor:
        if self.nudge is not None:
            t = self.nudge(t, x)
        return self.state.join(self.func(self.time(t), self.state.split(x)))


class GridStepTracker:
    """What a fixed-grid step needs besides the field: torchdiffeq's ``perturb`` (the step's first
    evaluation at ``t0`` is made just after it, the evaluation at ``t1`` just before it, so that a
    discontinuity on a grid point is seen from the correct side) and ``func.callback_step(t0, y0,
    dt)`` before each step. A call at a grid point is the end of the step in progress when the
    method has a stage at ``t1`` and that stage has not been evaluated yet, else the start of the
    next step."""

    def __init__(self, grid: list[float], stage_at_end: bool, perturb: bool,
                 callback: Callable[..., Any] | None, as_time: Callable[[float], Tensor]) -> None:
        self.index = {t: i for i, t in enumerate(grid)}
        self.grid, self.stage_at_end, self.perturb = grid, stage_at_end, perturb
        self.callback, self.as_time = callback, as_time
        self.step = -1  # the step in progress
        self.ended = True

    def __call__(self, t: float, x: Tensor) -> Any:
        i = self.index.get(t)
        if i is None:
            return t
        if i == self.step + 1 and self.stage_at_end and not self.ended:
            self.ended = True
            return self._toward(t, self.grid[self.step]) if self.perturb else t
        if i == self.step + 1 or (i == self.step and self.ended):
            self.step, self.ended = i, False
            if self.callback is not None and i + 1 < len(self.grid):
                self.callback(self.as_time(t), x, self.as_time(self.grid[i + 1] - t))
            if self.perturb and i + 1 < len(self.grid):
                return self._toward(t, self.grid[i + 1])
        return t

    def _toward(self, t: float, other: float) -> Tensor:
        """The floating point number next to ``t`` towards ``other``, in the state's dtype."""
        return torch.nextafter(self.as_time(t), self.as_time(other))


__all__ = ["Field", "GridStepTracker", "State", "check_times"]
