"""Asymptotically exact inpainting by Sequential Monte Carlo: SMCDiff (Trippe et al. 2022,
"Diffusion probabilistic modeling of protein backbones in 3D for the motif-scaffolding problem",
Section 4 and Algorithm 1).

Write the state as ``x = (x^M, x^U)`` (known / unknown coordinates) and the sampling grid as
``t_0 > ... > t_N``. SMCDiff targets ``p(x^U_0 | x^M_0 = y)`` with a particle filter:

1. Forward-noise the observation once per sample into a trajectory ``y_N = alpha_N y``,
   ``y_i ~ q(y_i | y_{i+1}) = N((alpha_i / alpha_{i+1}) y_{i+1},
   sigma_i^2 - (alpha_i / alpha_{i+1})^2 sigma_{i+1}^2)``; its marginals are ``q(y_i | y)``.
2. ``K`` particles ``x_0^k = (y_0, x^{U,k}_0)`` start from the prior. At step ``i`` each particle
   is weighted by the reverse transition density of the known coordinates (Trippe et al.,
   Algorithm 1: ``w^k = p_theta(y_{i+1} | x_i^k)``), here the DDPM ancestral kernel of the ``ddpm``
   solver, ``N(cx_i x_i + cd_i x0_theta(x_i), cn_i^2 I)`` restricted to the known coordinates
   (:func:`timestepper.solvers.ddim.ancestral_coefficients` with ``eta = 1``: Ho et al. 2020,
   eqs. 6-7). When the effective sample size ``1 / sum w^2`` of a sample's normalised weights falls
   below ``ess_threshold * K``, its particles are resampled (systematic resampling); the unknown
   coordinates are then proposed from the same kernel, ``x^U_{i+1} ~ N(mean^U, cn_i^2 I)``, and the
   known ones set to ``y_{i+1}``. A step without noise (the last one, to ``sigma = 0``) is the
   posterior-mean step and carries no weight.
3. After the last step one particle per sample is drawn from the final weights.

Exactness: when the denoiser is exact, the forward noise of the known coordinates is independent of
the unknown ones given ``x_0``, so ``p(x^U_0 | y_{0:N}) = p(x^U_0 | y)`` (the argument of Trippe et
al., Section 4); the particle filter is consistent, so the output converges to the exact conditional
as ``K`` and the number of steps grow. The remaining errors are the DDPM discretisation, the
finite-``K`` bias (``O(1/K)``), and the unweighted last step to ``sigma = 0``, whose weight would be
a point mass: the filter conditions on ``y_{N-1}``, the observation at the last noisy grid point.
With ``K = 1`` there are no weights and the method is replacement
(:class:`timestepper.solvers.inpaint.Inpaint`) with a forward-chained noise of the known
coordinates, biased on correlated data (tested).

Cost: every step evaluates the model on ``K`` particles per sample, so the NFE per sample is ``K x
steps`` (counted so in ``Solution.stats.nfe``: each model call adds ``K``), and memory is ``K``
times the batch plus the stored trajectory (``N`` times the batch). The state inside the loop has
``B * K`` rows (particles of sample ``b`` are rows ``b K ... b K + K - 1``);
:func:`timestepper.inpaint` with ``method="smc"`` returns one particle per sample.
The weights, ESS test and resampling run on the device without host synchronisation (the test
selects per sample with ``torch.where``). The model's ``model_kwargs`` must not be batched per
sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.ops import add_scaled
from ..core.validation import check_in_range, check_int
from ..diffusion.term import EvalPoint
from .base import DiffusionSolver
from .ddim import ancestral_coefficients


@dataclass(slots=True)
class SMCRow:
    """Step ``i``: the DDPM kernel ``N(cx x + cd x0(x), cn^2)`` (``cn=None``: the noise-free last
    step), the known coordinates' trajectory at the start (``start``, first step only) and end
    (``target``), and whether this is the last step (one particle is then drawn per sample)."""

    point: EvalPoint
    cx: float
    cd: float
    cn: float | None
    start: Tensor | None
    target: Tensor
    last: bool
    mask: Tensor
    generator: Any


class SMCInpaint(DiffusionSolver):
    """SMCDiff particle filter for inpainting with DDPM ancestral transitions (see module doc).

    Args:
        known: the known values ``y`` in data space, broadcastable to the batch ``(B, ...)`` (a
            tensor with as many dimensions as the state has a batch axis) or to one sample.
        mask: boolean tensor, ``True`` where ``known`` is observed (broadcastable likewise).
        particles: number of particles ``K`` per sample (the state has ``B * K`` rows).
        ess_threshold: resample a sample's particles when their effective sample size is below
            ``ess_threshold * K`` (in ``[0, 1]``; 1 resamples at every weighted step).
    """

    is_stochastic = True
    order = 1

    def __init__(self, known: Tensor, mask: Tensor, particles: int = 16,
                 ess_threshold: float = 0.5) -> None:
        if not isinstance(known, Tensor) or not isinstance(mask, Tensor):
            raise TypeError("known and mask must be tensors")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a boolean tensor, got {mask.dtype}")
        self.known, self.mask = known, mask
        self.particles = check_int(particles, "particles", 1)
        self.ess_threshold = check_in_range(ess_threshold, "ess_threshold", 0.0, 1.0)
        self.nfe_per_step = particles

    def _shapes(self, x0: Tensor) -> tuple[tuple[int, ...], Tensor, Tensor]:
        """The particle view ``(B, 1, ...)`` of the state and ``known``/``mask`` cast to it."""
        k = self.particles
        if x0.shape[0] % k:
            raise ValueError(f"the state's batch {x0.shape[0]} must be a multiple of particles={k}")
        shape = (x0.shape[0] // k, 1, *x0.shape[1:])
        # A known/mask with the state's number of dimensions carries a batch axis (one row per
        # sample, or 1): it gains the particle axis; otherwise it is one sample's shape.
        known, mask = (t if t.ndim < x0.ndim else t.unsqueeze(1) for t in (self.known, self.mask))
        known = known.to(dtype=x0.dtype, device=x0.device)
        mask = mask.to(device=x0.device)
        try:
            ok = torch.broadcast_shapes(known.shape, mask.shape, shape) == torch.Size(shape)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"known {tuple(self.known.shape)} and mask {tuple(self.mask.shape)} "
                             f"must broadcast to the batch {(shape[0], *shape[2:])} (or to one "
                             f"sample {tuple(shape[2:])})")
        return shape, known, mask

    def start_state(self, x0):
        # Log-weights in the state's precision, at least float32 (normalised at every step).
        wdtype = torch.promote_types(x0.dtype, torch.float32)
        return torch.zeros(x0.shape[0] // self.particles, self.particles, dtype=wdtype, device=x0.device)

    def table(self, term, grid, points, x0):
        shape, known, mask = self._shapes(x0)
        traj = _forward_trajectory(grid, known, shape, term.generator, x0)
        cx, cd, cn = ancestral_coefficients(grid, 1.0)
        n = grid.steps
        return [SMCRow(points[i], cx[i], cd[i], cn[i] if cn[i] > 0.0 else None,
                       traj[0] if i == 0 else None, traj[i + 1], i + 1 == n, mask, term.generator)
                for i in range(n)]

    def advance(self, term, x, state, row):
        k, logw = self.particles, state
        if row.start is not None:  # the initial particles with their known coordinates set to y_0
            x = _put(x, row.mask, row.start, k)
        mean = add_scaled(x * row.cx, term.data_prediction(x, row.point), row.cd)
        view = mean.view(logw.shape[0], k, *mean.shape[1:])
        if row.cn is not None:
            resid = torch.where(row.mask, row.target - view, 0.0)
            logw = logw - 0.5 * (resid.flatten(2).to(logw.dtype) ** 2).sum(-1) / row.cn ** 2
            logw, idx = _resample(logw, self.ess_threshold, row.generator)
            view = torch.gather(view, 1, idx.view(*idx.shape, *[1] * (view.ndim - 2))
                                .expand_as(view))
            z = torch.randn(view.shape, generator=row.generator, dtype=view.dtype, device=view.device)
            view = add_scaled(view, z, row.cn)
        x1 = _put(view.reshape(mean.shape), row.mask, row.target, k)
        if row.last:  # Step 3: one particle per sample, broadcast over its K slots.
            x1 = _pick(x1, logw, k, row.generator)
        # the model call evaluated K particles per sample: NFE per sample is K
        return x1, logw, None, k


def _forward_trajectory(grid, known: Tensor, shape: tuple[int, ...], gen, x0: Tensor) -> list[Tensor]:
    """Step 1: the forward-noised trajectory of the known coordinates, from data to noise."""
    a, s = grid.alpha.tolist(), grid.sigma.tolist()
    traj: list[Tensor] = [known] * (grid.steps + 1)
    traj[-1] = (known * a[-1]).expand(shape)
    for i in range(grid.steps - 1, -1, -1):
        ratio = a[i] / a[i + 1]
        var = s[i] ** 2 - (ratio * s[i + 1]) ** 2
        if var < 0.0:
            raise ValueError(f"the grid must increase in noise towards t_0 (step {i})")
        z = torch.randn(shape, generator=gen, dtype=x0.dtype, device=x0.device)
        traj[i] = torch.add(traj[i + 1] * ratio, z, alpha=var ** 0.5)
    return traj


def _pick(x1: Tensor, logw: Tensor, k: int, gen) -> Tensor:
    """One particle per sample drawn from the final weights, broadcast over its ``K`` slots."""
    pick = torch.multinomial(torch.softmax(logw, 1), 1, generator=gen)  # (B, 1)
    v = x1.view(logw.shape[0], k, *x1.shape[1:])
    v = torch.gather(v, 1, pick.view(-1, 1, *[1] * (v.ndim - 2)).expand(-1, 1, *v.shape[2:]))
    return v.expand(-1, k, *v.shape[2:]).reshape(x1.shape)


def _put(x: Tensor, mask: Tensor, y: Tensor, k: int) -> Tensor:
    """``x`` (``B * K`` rows) with the known coordinates replaced by ``y`` (``B, 1, ...``)."""
    v = x.view(y.shape[0], k, *x.shape[1:])
    return torch.where(mask, y, v).reshape(x.shape)


def _resample(logw: Tensor, threshold: float, gen) -> tuple[Tensor, Tensor]:
    """Systematic resampling of the samples (rows of ``logw``, shape ``(B, K)``) whose ESS is below
    ``threshold * K``; returns the new log-weights (0 where resampled) and ancestor indices."""
    b, k = logw.shape
    w = torch.softmax(logw, 1)
    ess = 1.0 / (w * w).sum(1)
    u = (torch.rand(b, 1, generator=gen, dtype=w.dtype, device=w.device)
         + torch.arange(k, dtype=w.dtype, device=w.device)) / k
    cdf = torch.cumsum(w, 1)
    idx = torch.searchsorted(cdf, u).clamp_(max=k - 1)  # rounding of cdf[-1] below 1
    redo = (ess < threshold * k).unsqueeze(1)
    idx = torch.where(redo, idx, torch.arange(k, device=w.device))
    logw = torch.where(redo, torch.zeros_like(logw), logw - logw.logsumexp(1, keepdim=True))
    return logw, idx
