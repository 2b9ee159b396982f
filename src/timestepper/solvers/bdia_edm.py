"""BDIA-EDM: bi-directional integration approximation (Zhang, Lewis & Kleijn 2023, "Exact
diffusion inversion via bi-directional integration approximation", ECCV 2024) applied to the
EDM sampler (Karras et al. 2022, Algorithm 1), and its exact inverse.

The paper's BDIA update (its general form, before specialising to DDIM) takes the last two
states and two integration approximations made at ``x_k``: a forward one over the next interval
and a backward one over the previous interval,

``x_{k+1} = gamma x_{k-1} + (1 - gamma) x_k - gamma Delta(t_k -> t_{k-1} | x_k)
+ Delta(t_k -> t_{k+1} | x_k)``.

BDIA-DDIM (:mod:`.bdia`) uses DDIM maps for both. Here both are EDM's Heun steps of the scaled
state ``y = x / alpha`` in ``s = sigma / alpha`` (``H_{k->j}(x_k)``, one shared model call at
``x_k`` plus one at the Euler predictor at ``s_j``), so
``x_{k+1} = gamma (x_{k-1} - H_{k->k-1}(x_k)) + H_{k->k+1}(x_k)``. With
``backward="euler"`` the backward approximation is the Euler step with the derivative already
computed at ``x_k`` (no extra call, so the NFE per step equals EDM Heun's). As in Algorithm 1 the
forward step to ``s = 0`` is Euler. The first step (no previous state) is EDM's Heun step; from
pure noise (``alpha = 0``, a flow at ``t = 1``) it is the DDIM step, as for ``heun``, and such a
trajectory samples but has no exact inverse (it is refused there).

The paper states that BDIA applied to EDM improves its samples on four pre-trained models; it
does not spell the EDM variant out in its abstract, and we did not find its exact form, so the
choice of Heun (or Euler) for the backward approximation is ours (both are exactly invertible,
which is what BDIA guarantees for any integration approximation that depends on ``x_k`` only):
``x_{k-1} = (x_{k+1} - H_{k->k+1}(x_k)) / gamma + H_{k->k-1}(x_k)`` (:func:`invert_bdia_edm`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..core.validation import check_choice, check_in_range
from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm, EvalPoint
from .base import DiffusionSolver, ve_sigmas
from .registry import register

BACKWARD = ("heun", "euler")


@dataclass(slots=True)
class ScaledMove:
    """A move of the scaled state from ``s0`` to ``s1`` ending at scale ``a1``; ``end`` is the
    evaluation at ``s1`` for Heun's correction (``None``: an Euler move)."""

    s0: float
    s1: float
    a1: float
    end: EvalPoint | None


def heun_move(term: DiffusionTerm, y: Tensor, d: Tensor, move: ScaledMove) -> tuple[Tensor, int]:
    """``(x1, calls)``: the EDM Heun (or Euler, when ``move.end`` is ``None``) step of the scaled
    state ``y`` with derivative ``d`` at ``move.s0``, returned in the unscaled state ``x1``."""
    h = move.s1 - move.s0
    y1 = y + d * h
    if move.end is None:
        return y1 * move.a1, 0
    d1 = (y1 - term.data_prediction(y1 * move.a1, move.end)) / move.s1
    return (y + (d + d1) * (0.5 * h)) * move.a1, 1


@dataclass(slots=True)
class BDIAEDMRow:
    """Step ``k``: the evaluation at ``x_k`` (scale ``a0``, level ``s0``), the forward move and the
    backward move (``None`` on the first step, which is plain EDM Heun)."""

    point: EvalPoint
    a0: float
    s0: float
    forward: ScaledMove
    backward: ScaledMove | None


def bdia_edm_rows(grid: SamplingGrid, points: list[EvalPoint], backward: str) -> list[BDIAEDMRow]:
    """One row per step of ``grid`` (float64 levels folded once)."""
    if bool((grid.alpha[:-1] <= 0).any()):
        raise ValueError("bdia-edm (EDM Heun maps) needs alpha > 0 where each step starts; this grid "
                         "starts at alpha = 0 (a flow model at t = 1): its exact inverse would have to undo "
                         "the DDIM step from pure noise; use bdia-ddim, or a schedule with t_max < 1")
    s, a = ve_sigmas(grid).tolist(), grid.alpha.tolist()
    rows = []
    for k in range(grid.steps):
        fwd = ScaledMove(s[k], s[k + 1], a[k + 1], points[k + 1] if s[k + 1] != 0.0 else None)
        bwd = None
        if k > 0:
            bwd = ScaledMove(s[k], s[k - 1], a[k - 1], points[k - 1] if backward == "heun" else None)
        rows.append(BDIAEDMRow(points[k], a[k], s[k], fwd, bwd))
    return rows


def _derivative(term: DiffusionTerm, x: Tensor, row: BDIAEDMRow) -> tuple[Tensor, Tensor]:
    """``(y, dy/ds)`` at ``x_k``: one model call."""
    y = x / row.a0
    return y, (y - term.data_prediction(x, row.point)) / row.s0


class BDIAEDM(DiffusionSolver):
    """BDIA applied to EDM's Heun sampler (Zhang et al. 2023; Karras et al. 2022); exactly
    invertible for ``gamma > 0`` (module docstring).

    Args:
        gamma: weight in ``[0, 1]`` of the backward re-estimate of the previous interval
            (0 is EDM Heun; 1, the default, the time-symmetric update).
        backward: ``"heun"`` (default; one extra model call per step) or ``"euler"`` (the
            derivative at ``x_k`` only: two calls per step, as EDM Heun).

    Order 2 with the Heun backward approximation, 1 with the Euler one (measured on the exact
    Gaussian mixture, ``tests/solvers/test_bdia_edm.py``).
    """

    order = 2
    nfe_per_step = 3
    carries_state = True

    def __init__(self, gamma: float = 1.0, backward: str = "heun") -> None:
        self.gamma = check_in_range(gamma, "gamma", 0.0, 1.0)
        self.backward = check_choice(backward, BACKWARD, "backward")
        heun = self.backward == "heun"
        self.nfe_per_step, self.order = (3, 2) if heun else (2, 1)

    def table(self, term, grid, points, x0):
        return bdia_edm_rows(grid, points, self.backward)

    def advance(self, term, x, state, row):
        y, d = _derivative(term, x, row)
        x1, calls = heun_move(term, y, d, row.forward)
        if row.backward is None:
            return x1, x, None, 1 + calls
        xb, back_calls = heun_move(term, y, d, row.backward)
        return x1 + self.gamma * (state - xb), x, None, 1 + calls + back_calls


def invert_bdia_edm(term: DiffusionTerm, grid: SamplingGrid, last: Tensor, previous: Tensor,
                    solver: BDIAEDM) -> tuple[Tensor, Tensor, int]:
    """``(x_0, x_1, model calls)``: the first two states of a BDIA-EDM trajectory on ``grid``
    from its last two ``(x_N, x_{N-1})``, running the steps backwards (exact up to round-off)."""
    if solver.gamma <= 0.0:
        raise ValueError("inverting BDIA-EDM needs gamma > 0 (gamma = 0 is EDM Heun, which has no "
                         "exact inverse)")
    if grid.steps < 2:
        raise ValueError(f"inverting BDIA needs at least 2 steps, got {grid.steps}")
    rows = bdia_edm_rows(grid, term.points(grid, last), solver.backward)
    nxt, cur, calls = last, previous, 0
    for k in range(grid.steps - 1, 0, -1):
        y, d = _derivative(term, cur, rows[k])
        fwd, fwd_calls = heun_move(term, y, d, rows[k].forward)
        bwd, bwd_calls = heun_move(term, y, d, rows[k].backward)  # type: ignore[arg-type]
        nxt, cur, calls = cur, (nxt - fwd) / solver.gamma + bwd, calls + 1 + fwd_calls + bwd_calls
    return cur, nxt, calls


register("bdia-edm", BDIAEDM,
         summary="BDIA applied to EDM's Heun sampler (Zhang et al. 2023): a backward Heun (or Euler) "
                 "re-estimate of the previous interval weighted by gamma; exactly invertible for gamma > 0.")

__all__ = ["BACKWARD", "BDIAEDM", "BDIAEDMRow", "ScaledMove", "bdia_edm_rows", "heun_move", "invert_bdia_edm"]
