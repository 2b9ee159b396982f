"""Solver heuristics as training regularisers (Pal, Ma, Shah & Rackauckas 2021, "Opening the
Blackbox: Accelerating Neural Differential Equations by Regularizing Internal Solver
Heuristics", ICML; arXiv:2105.03918).

During a solve with direct backpropagation, :class:`SolverHeuristics` accumulates over the
accepted steps ``j`` (step size ``h_j``)

* ``R_E = sum_j E_j |h_j|``, the paper's accumulated local error (ERNODE). ``E_j`` is the
  local error estimate as the step-size controller sees it: the embedded error scaled by
  ``atol + rtol * max(|x_j|, |x_{j+1}|)`` and reduced by the controller's norm (RMS by
  default; Hairer, Nørsett & Wanner, Solving ODEs I, eq. II.4.11), so ``E_j <= 1`` on accepted
  steps. The authors' code saves the same quantity (OrdinaryDiffEq's ``EEst * dt``) at every
  accepted step.
* ``R_S = sum_j S_j``, the paper's total stiffness (SRNODE), with
  ``S_j = ||k_s - k_{s-1}|| / ||x_s - x_{s-1}||`` the estimate of the dominant Jacobian
  eigenvalue from the last two stages of an FSAL Runge–Kutta pair whose last two stages sit at
  the same time (``c_s = c_{s-1} = 1``: dopri5, tsit5; Shampine 1977; Hairer & Wanner, Solving
  ODEs II, Sec. IV.2). Solvers without such stages contribute 0.

Both are differentiable tensors: add ``lam * sol.extras["reg_error"]`` (or ``reg_stiffness``)
to the loss. Gradients flow through the stages and the error scale; the step sizes the
controller picks are constants, so the gradient lowers the local error of the learned field at
the current steps and the controller takes larger steps afterwards. Because the controller
keeps ``E_j`` near its target, the *value* of ``R_E`` stays of the order of ``|t1 - t0|``
while the model gets cheaper; watch the NFE, not ``R_E``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.controllers import error_ratio
from ..core.solver import OrderErrors, Solver
from ..loop import StepRecord
from ..solvers.rk import ExplicitRK, bcast, weighted_sum


def scaled_error(x0: Tensor, x1: Tensor, err: Tensor, rtol: float, atol: float,
                 norm: str = "rms") -> Tensor:
    """The controller's scaled error norm of one step (HNW I, eq. II.4.11), differentiable in
    ``x0``, ``x1`` and ``err`` (the controller's own copy is detached)."""
    r = error_ratio(x0, x1, err, rtol, atol)
    if norm == "rms":
        return torch.linalg.vector_norm(r) / (r.numel() ** 0.5)
    if norm == "max":
        return torch.linalg.vector_norm(r, ord=float("inf"))
    raise ValueError(f"norm must be 'rms' or 'max', got {norm!r}")


class SolverHeuristics:
    """Accumulates ``R_E`` and ``R_S`` (module docstring) over the accepted steps; the loop calls
    it with each accepted :class:`~timestepper.loop.StepRecord` (``integrate(on_accept=...)``).

    Args:
        rtol, atol, norm: the tolerances and norm of the step-size controller of the solve.
        solver: the solver of the solve (its stages give the stiffness estimate).
    """

    def __init__(self, rtol: float, atol: float, norm: str = "rms", solver: Solver | None = None) -> None:
        self.rtol, self.atol, self.norm = float(rtol), float(atol), norm
        self.solver = solver
        self.error: Tensor = torch.zeros(())
        self.stiffness: Tensor = torch.zeros(())
        self.steps = 0

    def __call__(self, step: StepRecord) -> None:
        if step.err is None:
            raise ValueError("the regularisation statistics need the solver's error estimate")
        self.steps += 1
        err = step.err.errors[step.err.order] if isinstance(step.err, OrderErrors) else step.err
        e = scaled_error(step.x0, step.x1, err, self.rtol, self.atol, self.norm)
        self.error = self.error + e * abs(step.t1 - step.t0)
        s = stiffness_estimate(self.solver, step.state)
        if s is not None:
            self.stiffness = self.stiffness + s


def stiffness_estimate(solver, state) -> Tensor | None:
    """``||k_s - k_{s-1}|| / ||x_s - x_{s-1}||`` of the last step of an FSAL explicit RK pair
    with ``c_s = c_{s-1}`` (else ``None``); 0 where the two stage points coincide."""
    if not isinstance(solver, ExplicitRK) or state.ks is None:
        return None
    tab, ks = solver.tableau, state.ks
    if not tab.fsal or tab.stages < 3 or tab.c[-1] != tab.c[-2]:
        return None
    # x_s - x_{s-1} = h sum_j (a_{s,j} - a_{s-1,j}) k_j (rows of A; a_s = b for FSAL).
    diff_w = [a - b for a, b in zip(tab.a[-1], tuple(tab.a[-2]) + (0.0,))]
    dx = weighted_sum(None, bcast(state.h, ks[0]), diff_w, ks)
    num = torch.linalg.vector_norm(ks[-1] - ks[-2])
    den = torch.linalg.vector_norm(dx)
    tiny = torch.finfo(den.dtype).tiny
    return torch.where(den > tiny, num / den.clamp(min=tiny), torch.zeros_like(num))


def local_error_estimate(field, t: float, y: Tensor, h: float, solver: Solver, rtol: float,  # noqa: PLR0913
                         atol: float, norm: str = "rms") -> Tensor:
    """The scaled local error estimate ``E(t)`` of one step of ``solver`` from ``(t, y)`` with
    step ``h``, differentiable in ``y`` and the field's parameters.

    This is the estimator of Pal, Edelman & Rackauckas (2023, "Locally Regularized Neural
    Differential Equations: Some Black Boxes Were Meant to Remain Closed!", ICML, sec. 3): rather
    than accumulating ``E_j |h_j|`` over every step of the solve (``R_E`` above, which needs
    backpropagation through the solver), sample a time ``t_r`` uniformly in ``[t0, t1]``, take
    the state there from the solve (any gradient method), and regularise ``|t1 - t0| E(t_r)``
    with ``h`` the step the solver took at ``t_r``: in expectation over ``t_r`` this is
    ``sum_j |h_j| E_j'`` with ``E_j'`` the error of a step of the same size started inside step
    ``j`` (so close to ``R_E``), at the cost of one extra step per sample.
    """
    from ..core.terms import ODETerm

    if solver.variable_order:
        raise ValueError(f"solver {solver.display_name!r} chooses its order per step from the solve's "
                         "history; the sampled local error estimate needs a fixed-order solver with an "
                         "error estimate (e.g. 'dopri5', 'tsit5')")
    term = ODETerm(field)
    state, _ = solver.init(term, None, y)
    x1, _, err, _ = solver.step(term, t, t + h, y, state, None)
    if err is None:
        raise ValueError(f"solver {solver.display_name!r} has no error estimate to regularise")
    return scaled_error(y, x1, err, rtol, atol, norm)


def step_at(step_ts: Tensor, t: float) -> float:
    """The size of the accepted step (of the step times ``step_ts``) that contains ``t``."""
    ts = step_ts.tolist()
    forward = ts[-1] >= ts[0]
    for a, b in zip(ts[:-1], ts[1:]):
        if (a <= t <= b) if forward else (b <= t <= a):
            return b - a
    raise ValueError(f"t={t:.6g} is outside the solve [{ts[0]:.6g}, {ts[-1]:.6g}]")
