"""``odeint_dense``: the continuous solution of an adaptive solve (torchdiffeq's, which allows
``dopri5`` only; here any adaptive method with dense output)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ...core.solution import SaveAt
from ...core.terms import ODETerm
from ...loop import integrate
from .controller import StepRule, TorchdiffeqController
from .inputs import Field, State
from .methods import drives_adaptively, method_of, solver_of
from .options import Adaptive
from .outputs import callbacks_of


def odeint_dense(func, y0: Tensor, t0: Tensor, t1: Tensor, *, rtol=1e-7, atol=1e-9,  # noqa: PLR0913 - torchdiffeq's
                 method=None, options=None) -> Callable[[Tensor], Tensor]:
    """Solve from ``t0`` to ``t1`` and return ``y(t)``: a function of a time tensor (0-d: the
    state; 1-D: the states stacked along dim 0), differentiable like the solve."""
    if not isinstance(y0, Tensor):
        raise TypeError("odeint_dense needs a tensor y0 (as torchdiffeq)")
    name, m = method_of(method)
    solver = solver_of(m)
    if not drives_adaptively(m, solver) or not solver.has_dense_output:
        raise ValueError(f"odeint_dense needs an adaptive method with dense output, got {name!r}")
    state = State.of(y0)
    o = Adaptive.parse(dict(options or {}), name, state)
    field = Field(func, state)
    rule = StepRule(rtol, atol, m.order or solver.order, o.norm, o.first_step, o.safety,
                    o.ifactor, o.dfactor, o.min_step, o.max_step)
    ctrl = TorchdiffeqController(rule, o.step_t, callbacks_of(func),
                                 field.time, past_end=True)
    sol = integrate(ODETerm(field), solver, ctrl, y0, t_span=(float(t0), float(t1)),
                    saveat=SaveAt(dense=True), max_steps=o.max_num_steps)
    interp = sol.interpolation
    assert interp is not None

    def dense(t_eval: Tensor) -> Tensor:
        te = torch.as_tensor(t_eval)
        if te.ndim == 0:
            return interp(float(te))
        return torch.stack([interp(float(s)) for s in te.reshape(-1).tolist()])

    return dense


__all__ = ["odeint_dense"]
