"""The controlled differential equation ``dZ = f(t, Z) dX(t)`` as a term of the one loop.

For a differentiable control path ``X`` the CDE is the ODE ``dZ/dt = f(t, Z) dX/dt(t)``
(Kidger et al. 2020, "Neural Controlled Differential Equations for Irregular Time Series",
eq. 4): :class:`CDETerm` is a :class:`~timestepper.core.terms.VectorFieldTerm` whose field is the
matrix-vector product of ``f(t, Z)`` (``(..., hidden, C)``) with the path's derivative
(``(..., C)``), so every ODE solver, controller and gradient mode of the loop applies.
:class:`KnotController` is a PID controller whose steps never cross a knot of the path (where a
linear path's derivative jumps): torchdiffeq's ``jump_t``/``step_t`` in the loop's protocol.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.controllers import PIDController
from ..core.terms import VectorFieldTerm
from .paths import ControlPath


class CDETerm(VectorFieldTerm):
    """``dZ = f(t, Z) dX(t)`` seen as ``dZ/dt = f(t, Z) @ X'(t)``.

    Args:
        func: ``f(t, z) -> (..., hidden, C)`` (``z`` is ``(..., hidden)``).
        path: the control path (``evaluate``/``derivative``), with ``C`` channels.
    """

    def __init__(self, func: Callable[[Any, Tensor], Tensor], path: ControlPath) -> None:
        if not callable(func):
            raise TypeError(f"func must be callable, got {type(func).__name__}")
        if not callable(getattr(path, "derivative", None)):
            raise TypeError(f"path needs a derivative(t) method, got {type(path).__name__}")
        self.func, self.path = func, path

    def vf(self, t: Any, x: Tensor) -> Tensor:
        g = self.func(t, x)
        dx = self.path.derivative(t)
        if g.ndim < 2 or g.shape[-1] != dx.shape[-1] or g.shape[-2] != x.shape[-1]:
            raise ValueError(f"func must return (..., hidden={x.shape[-1]}, channels={dx.shape[-1]}) "
                             f"for a state {tuple(x.shape)} and a path of {dx.shape[-1]} channels, "
                             f"got {tuple(g.shape)}")
        return (g @ dx.unsqueeze(-1).to(g.dtype)).squeeze(-1)


class KnotController(PIDController):
    """A :class:`PIDController` whose proposed steps end at the next knot when they would cross
    it (forwards or backwards; shared or per-sample steps).

    Args:
        knots: the times no step may cross.
        rtol, atol, **kwargs: as :class:`PIDController`.
    """

    def __init__(self, knots: Sequence[float] | Tensor, rtol: float = 1e-6, atol: float = 1e-9,
                 **kwargs: Any) -> None:
        super().__init__(rtol, atol, **kwargs)
        self.knots = [float(k) for k in (knots.tolist() if isinstance(knots, Tensor) else knots)]
        self._knot_tensor = torch.tensor(self.knots, dtype=torch.float64)

    def next_time(self, t: Any, cstate: Any) -> Any:
        t_next = t + cstate.dt
        if isinstance(t, Tensor):
            return self._clip_tensor(t, t_next)
        ks, eps = self.knots, 1e-12 * max(1.0, abs(t))
        if t_next > t:
            j = bisect.bisect_right(ks, t + eps)
            return ks[j] if j < len(ks) and ks[j] < t_next else t_next
        j = bisect.bisect_left(ks, t - eps) - 1
        return ks[j] if j >= 0 and ks[j] > t_next else t_next

    def _clip_tensor(self, t: Tensor, t_next: Tensor) -> Tensor:
        ks = self._knot_tensor.to(device=t.device, dtype=t.dtype)
        n = ks.numel()
        up = ks[torch.searchsorted(ks, t.contiguous(), right=True).clamp(max=n - 1)]
        down = ks[(torch.searchsorted(ks, t.contiguous(), right=False) - 1).clamp(min=0)]
        fwd = torch.where((up > t) & (up < t_next), up, t_next)
        bwd = torch.where((down < t) & (down > t_next), down, t_next)
        return torch.where(t_next > t, fwd, bwd)


__all__ = ["CDETerm", "KnotController"]
