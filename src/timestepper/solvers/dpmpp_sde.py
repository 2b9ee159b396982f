"""DPM-Solver++(2S) SDE: k-diffusion's ``sample_dpmpp_sde`` (diffusers' ``DPMSolverSDEScheduler``).

A two-stage singlestep DPM-Solver++ step (Lu et al. 2022b, "DPM-Solver++", Algorithm 1, with the
stage at ``lambda_s = lambda_i + r h``) in which both stages are ancestral steps (Ho et al. 2020;
k-diffusion's ``get_ancestral_step``), i.e. the stochastic DDIM step of
:func:`~timestepper.solvers.ddim.ancestral_coefficients` with noise scale ``eta``:

* stage 1, from ``x_i`` to ``lambda_s``: ``u = c1x x_i + c1d D_i + c1n z_1`` with ``D_i = x0(x_i, t_i)``;
* stage 2, from ``x_i`` to ``lambda_{i+1}``: ``x_{i+1} = cx x_i + cd ((1 - f) D_i + f D_s) + cn z_2``
  with ``D_s = x0(u, t_s)`` and ``f = 1 / (2 r)`` (``f = 1`` at the default ``r = 1/2``).

The two draws of a step are of the same Brownian motion in k-diffusion (its Brownian-tree noise
sampler, queried between ``s_i`` and ``s_s`` and between ``s_i`` and ``s_{i+1}``):
``noise="brownian"`` gives that structure with our :class:`~timestepper.solvers.noise.BrownianPath`;
``"normal"`` (default) draws them independently from the generator. A step to zero noise is the
first-order (Euler) step with one model call and no noise. ``eta = 0`` is DPM-Solver++(2S),
order 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.validation import check_in_range
from ..diffusion.term import EvalPoint
from .base import lincomb, nonzero, ve_sigmas
from .ddim import ancestral_between, ancestral_coefficients
from .dpm2 import log_snr_midpoints
from .noise import Draw, StochasticDiffusionSolver, add_noise, draws_between
from .registry import register


@dataclass(slots=True)
class SDEStageRow:
    """Step ``i``: ``u = cm x + dm D + nm z_1`` at ``mid`` (``None``: a one-stage step
    ``x1 = cx x + cd D``), then ``x1 = cx x + cd D + ce D(u) + cn z_2`` (``None``: a term left
    out)."""

    point: EvalPoint
    mid: EvalPoint | None
    cm: float | None
    dm: float
    nm: float | None
    draw_m: Draw | None
    cx: float | None
    cd: float | None
    ce: float
    cn: float | None
    draw: Draw | None


@register("dpmpp-sde")
class DPMSolverPPSDE(StochasticDiffusionSolver):
    """DPM-Solver++(2S) SDE (k-diffusion ``sample_dpmpp_sde``; Lu et al. 2022b with ancestral
    stages). Two model calls per step (one on a step to zero noise); order 2 at ``eta = 0``.

    Args:
        eta: ancestral noise scale of both stages in ``[0, 1]`` (default 1).
        s_noise: multiplier of the added noise.
        noise: ``"normal"`` (independent draws), ``"brownian"`` (both stages' draws from one
            Brownian path, as k-diffusion's Brownian-tree noise sampler) or a
            :class:`~timestepper.solvers.noise.LevelNoise`.
        r: where the stage sits in the step's log-SNR interval, in ``(0, 1]`` (default 1/2).
    """

    order = 2
    nfe_per_step = 2

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, noise: Any = "normal",
                 r: float = 0.5) -> None:
        super().__init__(eta, s_noise, noise)
        self.r = check_in_range(r, "r", 0.0, 1.0)
        if self.r == 0.0:
            raise ValueError("r must be in (0, 1], got 0")

    def table(self, term, grid, points, x0):
        mg = log_snr_midpoints(term.schedule, grid, self.r)
        mids = term.points(mg, x0)
        cm, dm, nm = ancestral_between(grid.sigma[:-1], mg.sigma, mg.alpha,
                                       mg.log_snr - grid.log_snr[:-1], self.eta)
        cx, cd, cn = ancestral_coefficients(grid, self.eta)
        draw_m, draw = self._draws(term, grid, mg, x0)
        f = 1.0 / (2.0 * self.r)
        rows = []
        to_zero = (grid.sigma[1:] == 0).tolist()
        for i, (n_m, n) in enumerate(zip(self.noise_scales(nm), self.noise_scales(cn))):
            if to_zero[i]:  # the Euler step
                rows.append(SDEStageRow(points[i], None, None, 0.0, None, None, nonzero(cx[i]), cd[i],
                                        0.0, None, None))
                continue
            rows.append(SDEStageRow(points[i], mids[i], nonzero(cm[i]), dm[i], n_m, draw_m[i],
                                    nonzero(cx[i]), nonzero((1.0 - f) * cd[i]), f * cd[i], n, draw[i]))
        return rows

    def _draws(self, term, grid, mg, x0) -> tuple[list, list]:
        """The draws of both stages of every step, in the order the steps use them."""
        if not self.is_stochastic:
            return [None] * grid.steps, [None] * grid.steps
        s, s_mid = ve_sigmas(grid).tolist(), ve_sigmas(mg).tolist()
        pairs = [p for i in range(grid.steps) for p in ((s[i], s_mid[i]), (s[i], s[i + 1]))]
        both = draws_between(self.noise, term, x0, max(s), pairs)
        return both[0::2], both[1::2]

    def advance(self, term, x, state, row):
        d = term.data_prediction(x, row.point)
        if row.mid is None:
            return lincomb(x, row.cx, ((row.cd, d),)), state, None, 1
        u = add_noise(lincomb(x, row.cm, ((row.dm, d),)), x, row.nm, row.draw_m)
        d2 = term.data_prediction(u, row.mid)
        x1 = lincomb(x, row.cx, ((row.ce, d2),) if row.cd is None else ((row.cd, d), (row.ce, d2)))
        return add_noise(x1, x, row.cn, row.draw), state, None, 2
