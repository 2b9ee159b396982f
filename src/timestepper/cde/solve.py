"""``cdeint``: solve a neural CDE ``dZ = f(t, Z) dX(t)`` with :func:`timestepper.solve`.

The CDE is the ODE of :class:`~timestepper.cde.term.CDETerm`; every solver, controller and
gradient mode of ``solve`` applies (``adjoint="direct"``, ``"checkpoint"``, ``"backsolve"``;
for the last two the parameters of ``func`` and the path coefficients that require grad are the
adjoint parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..core.solution import Solution
from ..ode.solve import solve
from .paths import ControlPath, LinearPath
from .term import CDETerm, KnotController


def _path_tensors(path: ControlPath) -> list[Tensor]:
    return [v for v in vars(path).values() if isinstance(v, Tensor) and v.requires_grad]


def cdeint(  # noqa: PLR0913 - the options of solve, forwarded
    path: ControlPath,
    func: Callable[[Any, Tensor], Tensor],
    z0: Tensor,
    t: Sequence[float] | Tensor | None = None,
    *,
    solver: str = "tsit5",
    rtol: float = 1e-4,
    atol: float = 1e-6,
    adjoint: str = "direct",
    step_to_knots: bool | None = None,
    dt: float | None = None,
    **solve_kwargs: Any,
) -> Solution:
    """Solve ``dZ = func(t, Z) dX(t)`` from ``Z(t[0]) = z0`` along ``path``.

    Args:
        path: the control path (:func:`~timestepper.cde.paths.control_path`).
        func: ``func(t, z) -> (..., hidden, C)``; an ``nn.Module`` gives its parameters to the
            checkpoint/backsolve adjoints.
        z0: ``(..., hidden)`` initial state (batch dims as the path's).
        t: save times (default: the path's interval); ``Solution.ys`` holds ``Z`` there.
        solver, rtol, atol, adjoint, dt: as :func:`timestepper.solve`.
        step_to_knots: clip adaptive steps at the path's knots (default: True for linear and
            rectilinear paths, whose derivative jumps there).
        solve_kwargs: further options of :func:`timestepper.solve`.
    """
    t0, t1 = path.interval
    times = torch.as_tensor([t0, t1] if t is None else t, dtype=torch.float64).reshape(-1)
    if times.numel() < 2 or not bool((times[1:] > times[:-1]).all()):
        raise ValueError("t must hold at least two strictly increasing times")
    lo, hi = float(times[0]), float(times[-1])
    if lo < t0 - 1e-12 * max(1.0, abs(t0)) or hi > t1 + 1e-12 * max(1.0, abs(t1)):
        raise ValueError(f"t must lie in the path's interval [{t0:.6g}, {t1:.6g}], got "
                         f"[{lo:.6g}, {hi:.6g}]")
    term = CDETerm(func, path)
    if step_to_knots is None:
        step_to_knots = isinstance(path, LinearPath)
    if step_to_knots and dt is None:
        solve_kwargs.setdefault("controller", KnotController(path.knots, rtol, atol))
    if adjoint != "direct" and "adjoint_params" not in solve_kwargs:
        params = list(func.parameters()) if isinstance(func, torch.nn.Module) else []
        solve_kwargs["adjoint_params"] = [p for p in params if p.requires_grad] + _path_tensors(path)
    return solve(lambda s, z: term.vf(s, z), z0, lo, hi, saveat=times, solver=solver, rtol=rtol,
                 atol=atol, adjoint=adjoint, dt=dt, **solve_kwargs)


__all__ = ["cdeint"]
