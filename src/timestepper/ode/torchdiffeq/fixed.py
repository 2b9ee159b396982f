"""torchdiffeq's fixed-grid semantics: the solver steps on its own grid (``step_size``,
``grid_constructor`` or the output times) and the outputs are interpolated inside the steps that
contain them, linearly (``interp="linear"``, the default) or by cubic Hermite interpolation
(``interp="cubic"``, from ``f`` at both ends of the step)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .options import Fixed


def build_grid(func: Callable[..., Any], y0: Any, t: Tensor, o: Fixed) -> list[float]:
    """The times the solver steps on, from ``t[0]`` to ``t[-1]``. Like torchdiffeq, a decreasing
    ``t`` is negated for ``grid_constructor`` and for the uniform grid of ``step_size``, and the
    uniform grid's last point is moved onto ``t[-1]``; a resulting zero-length step is dropped."""
    tt = t.detach()
    flip = bool(tt[0] > tt[-1])
    s = -tt if flip else tt
    if o.grid_constructor is not None:
        g = torch.as_tensor(o.grid_constructor(func, y0, s)).detach()
    elif o.step_size is not None:
        if not o.step_size > 0:
            raise ValueError(f"options['step_size'] must be > 0, got {o.step_size}")
        n = math.ceil(float((s[-1] - s[0]) / o.step_size) + 1)
        g = torch.arange(0, n, dtype=s.dtype, device=s.device) * o.step_size + s[0]
        g[-1] = s[-1]
    else:
        g = s
    pts = [float(v) for v in (-g if flip else g).tolist()]
    if pts[0] != float(tt[0]) or pts[-1] != float(tt[-1]):
        raise ValueError(f"the grid must start at t[0] and end at t[-1]; grid_constructor gave "
                         f"[{pts[0]}, ..., {pts[-1]}]")
    out = [pts[0]]
    for p in pts[1:]:
        if p != out[-1]:
            out.append(p)
    sign = 1.0 if out[-1] > out[0] else -1.0
    if any(sign * (b - a) <= 0 for a, b in zip(out[:-1], out[1:])):
        raise ValueError("the grid must be strictly monotone, in the direction of t")
    return out


def interpolate(grid: list[float], ys: Tensor, t: list[float], interp: str,  # noqa: PLR0913
                field: Callable[[float, Tensor], Tensor]) -> Tensor:
    """The states at the output times ``t`` from the states ``ys`` at the grid points: each
    output is interpolated in the first step whose end reaches it (``ys[0]`` for ``t[0]``)."""
    sign = 1.0 if grid[-1] >= grid[0] else -1.0
    out, k = [ys[0]], 0
    for tj in t[1:]:
        while k < len(grid) - 2 and sign * (grid[k + 1] - tj) < 0:
            k += 1
        out.append(_inside(grid[k], grid[k + 1], ys[k], ys[k + 1], tj, interp, field))
    return torch.stack(out)


def _inside(t0: float, t1: float, y0: Tensor, y1: Tensor, t: float, interp: str,  # noqa: PLR0913
            field: Callable[[float, Tensor], Tensor]) -> Tensor:
    if t == t0:
        return y0
    if t == t1:
        return y1
    s = (t - t0) / (t1 - t0)
    if interp == "linear":
        return y0 + s * (y1 - y0)
    h = t1 - t0
    f0, f1 = field(t0, y0), field(t1, y1)
    h00, h10 = (1 + 2 * s) * (1 - s) ** 2, s * (1 - s) ** 2
    h01, h11 = s * s * (3 - 2 * s), s * s * (s - 1)
    return h00 * y0 + (h10 * h) * f0 + h01 * y1 + (h11 * h) * f1


__all__ = ["build_grid", "interpolate"]
