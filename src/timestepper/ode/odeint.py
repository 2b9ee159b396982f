"""A torchdiffeq-compatible ``odeint``: existing code switches by changing an import.

``odeint(func, y0, t, rtol=1e-7, atol=1e-9, method=None, options=None)`` returns the solution at
every time of ``t`` stacked along dim 0 (the first entry is ``y0``), like
``torchdiffeq.odeint``. ``odeint_adjoint`` is the same with the continuous adjoint.

The shim reproduces torchdiffeq's steps, not only its interface: ``"dopri5"`` maps to
``dopri5-shampine`` (the embedded error estimate torchdiffeq uses) and the step-size controller
follows torchdiffeq's convention that an accepted step never shrinks the next one
(``factor_min_accept=1``). ``ts.solve(solver="dopri5")`` keeps Hairer's DOPRI5 estimate and
controller, which make a smaller error per tolerance for a few percent more evaluations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..core.controllers import PIDController
from .solve import solve

# torchdiffeq method names -> registry names.
METHODS = {
    "dopri5": "dopri5-shampine", "dopri8": "dopri8", "bosh3": "bosh3", "tsit5": "tsit5",
    "adaptive_heun": "rk-heun", "heun2": "rk-heun", "euler": "rk-euler", "midpoint": "midpoint",
    "rk4": "rk4",
}
_FIXED = ("euler", "midpoint", "rk4", "heun2")


def odeint(func, y0: Any, t: Tensor, rtol: float = 1e-7, atol: float = 1e-9,  # noqa: PLR0913 - torchdiffeq's
           method: str | None = None, options: dict | None = None, *, adjoint: str = "direct",
           adjoint_params=None, adjoint_rtol=None, adjoint_atol=None):
    """Solve ``dy/dt = func(t, y)`` and return ``y`` at the times ``t`` (shape ``(len(t), ...)``).

    ``options``: ``step_size`` for the fixed-step methods (default: the steps of ``t``),
    ``first_step`` and ``max_num_steps`` for the adaptive ones. Unknown options raise.
    """
    method = method or "dopri5"
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    options = dict(options or {})
    t = torch.as_tensor(t)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError("t must be a 1-D tensor of at least two times")
    step_size = options.pop("step_size", None)
    first_step = options.pop("first_step", None)
    max_steps = options.pop("max_num_steps", 2**31 - 1)
    if options:
        raise ValueError(f"unsupported options {sorted(options)}")
    tl = t.detach().to(torch.float64).cpu()
    dt = None
    if method in _FIXED:
        dt = step_size if step_size is not None else float((tl[1:] - tl[:-1]).abs().min())
    controller = PIDController(rtol, atol, dt0=first_step, factor_min_accept=1.0)
    sol = solve(func, y0, float(tl[0]), float(tl[-1]), solver=METHODS[method], rtol=rtol,
                atol=atol, saveat=tl, dt=dt, controller=controller, max_steps=max_steps,
                adjoint=adjoint, adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                adjoint_atol=adjoint_atol)
    return sol.ys


def odeint_adjoint(func, y0, t, rtol: float = 1e-7, atol: float = 1e-9, method: str | None = None,  # noqa: PLR0913
                   options: dict | None = None, adjoint_rtol=None, adjoint_atol=None,
                   adjoint_params=None):
    """:func:`odeint` with the continuous adjoint (torchdiffeq's ``odeint_adjoint``)."""
    return odeint(func, y0, t, rtol, atol, method, options, adjoint="backsolve",
                  adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                  adjoint_atol=adjoint_atol)
