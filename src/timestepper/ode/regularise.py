"""Solver heuristics as training regularisers (Pal, Ma, Shah & Rackauckas 2021, "Opening the
Blackbox: Accelerating Neural Differential Equations by Regularizing Internal Solver
Heuristics", eqs. 5 and 7).

During a solve with direct backpropagation, :class:`SolverHeuristics` accumulates over the
accepted steps ``j``

* ``error = sum_j E_j |h_j|`` with ``E_j`` the norm of the embedded local error estimate
  (ERNODE), and
* ``stiffness = sum_j S_j`` with ``S_j = ||k_s - k_{s-1}|| / ||x_s - x_{s-1}||`` the stiffness
  (dominant eigenvalue) estimate from the last two stages of an FSAL Runge–Kutta step (Shampine
  1977; Hairer & Wanner, Solving ODEs II, IV.2) (SRNODE).

Both are differentiable tensors: add ``lambda * sol.extras["reg_error"]`` to the loss.
"""

from __future__ import annotations

import torch

from ..solvers.rk import ExplicitRK, bcast, weighted_sum


class SolverHeuristics:
    """Accumulates the local error and stiffness estimates of accepted steps."""

    def __init__(self) -> None:
        self.error = torch.zeros(())
        self.stiffness = torch.zeros(())
        self.steps = 0

    def __call__(self, solver, state, err, dt) -> None:
        self.steps += 1
        self.error = self.error + torch.linalg.vector_norm(err) * abs(dt)
        if isinstance(solver, ExplicitRK) and solver.tableau.fsal and state.ks is not None:
            tab, ks = solver.tableau, state.ks
            # x_s - x_{s-1} = h sum_j (a_{s,j} - a_{s-1,j}) k_j (rows of A; a_s = b for FSAL).
            diff_w = [a - b for a, b in zip(tab.a[-1], tab.a[-2] + (0.0,))]
            dx = weighted_sum(None, bcast(state.h, ks[0]), diff_w, ks)
            num = torch.linalg.vector_norm(ks[-1] - ks[-2])
            den = torch.linalg.vector_norm(dx)
            self.stiffness = self.stiffness + torch.where(den > 0, num / den.clamp(min=1e-300),
                                                          0.0)
