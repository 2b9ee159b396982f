"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Score SDE, Section 4.3
and Appendix D.2).

In the scaled state ``y = x / alpha`` and ``u = log s`` with ``s = sigma / alpha``, the
probability-flow ODE (Song et al. 2021, eq. 13; Karras et al. 2022, eq. 4) is
``dy/du = F(u, y) = y - D(y, u)`` with ``D`` the model's data prediction. The instantaneous change
of variables (Chen et al. 2018, Theorem 1) gives
``log p_{s_min}(y(u_min)) = log p_{s_max}(y(u_max)) + int_{u_min}^{u_max} div_y F du`` with
``div_y F = d - tr(dD/dy)``. The trace is computed exactly (``d`` vector-Jacobian products per
evaluation) or estimated with Hutchinson's estimator ``v^T (dD/dy) v`` with Rademacher or Gaussian
probes ``v`` held fixed along the path (Grathwohl et al. 2019, FFJORD, eq. 7). The augmented state
``(y, int div F)`` is integrated from the data up to ``s_max`` by an adaptive Dormand–Prince 5(4)
solve through the core ``integrate`` loop with an
:class:`~timestepper.core.controllers.IController`.

The default prior at ``s_max`` is the Gaussian that ``sample`` draws from,
``N(0, (1 + s_max^2) I)`` in ``y`` (unit-variance data). It is not the exact marginal: for data of
mean ``mu`` its log-density is off by ``O(|mu| / s_max)`` per dimension (e.g. 1e-3 nats/dim at
``s_max = 1000`` for ``|mu| ~ 1``), so pass ``prior=`` the exact ``log p_{s_max}`` when it is known
or use a schedule with a large ``s_max``. The model is evaluated down to the schedule's ``t_min``,
so what is returned is the log-density of ``x0 + s_min eps`` (``s_min = sigma / alpha`` at
``t_min``): choose a schedule with a small ``t_min`` to approach the density of the data
itself. No dequantisation offset is applied for discrete data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.controllers import IController
from ..core.solution import Stats
from ..core.terms import ODETerm
from ..core.validation import as_generator, check_choice, check_int, check_state
from ..diffusion.denoiser import Denoiser
from ..diffusion.predictions import data_coefficients
from ..loop import integrate

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class LikelihoodResult:
    """What :func:`likelihood` returns.

    Attributes:
        log_prob: ``(B,)`` float64 log-density of each sample in nats (mean over probes for the
            Hutchinson estimator).
        stderr: ``(B,)`` standard error of ``log_prob`` over the probes (Hutchinson with
            ``n_probes >= 2``), else ``None``.
        dim: the number of dimensions ``d`` of one sample.
        prior_log_prob: ``(B,)`` the prior term ``log p_{s_max}(y(u_max))``.
        stats: the ODE solve's statistics (``nfe`` = evaluations of the augmented field; each is one
            model call plus ``d`` (exact) or one (Hutchinson) vector-Jacobian products).
    """

    log_prob: Tensor
    stderr: Tensor | None
    dim: int
    prior_log_prob: Tensor
    stats: Stats

    @property
    def bits_per_dim(self) -> Tensor:
        """``-log_prob / (d ln 2)``."""
        return -self.log_prob / (self.dim * math.log(2.0))

    @property
    def bits_per_dim_stderr(self) -> Tensor | None:
        return None if self.stderr is None else self.stderr / (self.dim * math.log(2.0))


def likelihood(  # noqa: PLR0913 - keyword options of the front
    denoiser: Denoiser,
    x: Tensor,
    *,
    trace: str = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    t_min: float | None = None,
    t_max: float | None = None,
    generator: torch.Generator | int | None = None,
    prior: Callable[[Tensor], Tensor] | None = None,
    max_steps: int = 10_000,
) -> LikelihoodResult:
    """Log-likelihood of ``x`` under ``denoiser`` by the probability-flow ODE.

    Args:
        denoiser: the model.
        x: ``(B, ...)`` data (in the data space, ``alpha = 1``).
        trace: ``"exact"`` (``d`` backward passes per evaluation; for small ``d``) or
            ``"hutchinson"`` (one).
        probe: ``"rademacher"`` or ``"gaussian"`` probes for Hutchinson.
        n_probes: independent probes per sample (Hutchinson); ``>= 2`` gives a standard error.
        rtol, atol: tolerances of the adaptive solve (on the augmented state).
        t_min, t_max: the integration range in the schedule's time (default: the schedule's).
        generator: ``torch.Generator`` or seed for the probes.
        prior: ``log p_{s_max}(y)`` of the scaled state ``y = x / alpha`` at ``t_max``, shape
            ``(B, ...) -> (B,)``; default the Gaussian ``N(0, (1 + s_max^2) I)``.
        max_steps: bound on the adaptive steps.

    Returns:
        :class:`LikelihoodResult` (``log_prob`` in nats per sample; ``bits_per_dim``).
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    check_state("x", x)
    check_choice(trace, TRACES, "trace")
    check_choice(probe, PROBES, "probe")
    check_int(n_probes, "n_probes", 1)
    if trace == "exact" and n_probes != 1:
        raise ValueError("n_probes applies to trace='hutchinson' only")
    u_lo, u_hi = _log_noise_range(denoiser.schedule, t_min, t_max)
    b = x.shape[0]
    y0 = x.repeat(n_probes, *([1] * (x.ndim - 1))) if n_probes > 1 else x
    dim = x[0].numel()
    probes = _probes(y0, probe, generator) if trace == "hutchinson" else None
    field = _AugmentedField(denoiser, y0.shape, dim, probes)
    z0 = torch.cat([y0.reshape(y0.shape[0], -1), y0.new_zeros(y0.shape[0], 1)], dim=1)
    sol = integrate(ODETerm(field), "dopri5", IController(rtol=rtol, atol=atol), z0,
                    t_span=(u_lo, u_hi), max_steps=max_steps)
    y1, delta = sol.x[:, :-1].to(torch.float64), sol.x[:, -1].to(torch.float64)
    if prior is None:
        var = 1.0 + math.exp(2.0 * u_hi)
        prior_lp = -0.5 * (y1 * y1).sum(1) / var - 0.5 * dim * math.log(2.0 * math.pi * var)
    else:
        prior_lp = torch.as_tensor(prior(y1.reshape(y0.shape)), dtype=torch.float64).reshape(-1)
    logp = (prior_lp + delta).reshape(n_probes, b)
    stderr = logp.std(0) / math.sqrt(n_probes) if n_probes > 1 else None
    return LikelihoodResult(log_prob=logp.mean(0), stderr=stderr, dim=dim,
                            prior_log_prob=prior_lp.reshape(n_probes, b).mean(0), stats=sol.stats)


def _log_noise_range(sched, t_min: float | None, t_max: float | None) -> tuple[float, float]:
    """``u = log(sigma / alpha)`` at the ends of the integration range (checked inside the
    schedule's)."""
    t_lo = sched.t_min if t_min is None else float(t_min)
    t_hi = sched.t_max if t_max is None else float(t_max)
    if not sched.t_min <= t_lo < t_hi <= sched.t_max:
        raise ValueError(
            f"need t_min <= {t_lo} < {t_hi} <= t_max within [{sched.t_min}, {sched.t_max}]")
    return -float(sched.log_snr(t_lo)), -float(sched.log_snr(t_hi))


def _probes(y0: Tensor, probe: str, generator: torch.Generator | int | None) -> Tensor:
    """Hutchinson probes shaped like ``y0``: Gaussian, or their signs (Rademacher)."""
    generator = as_generator(generator, y0.device)
    probes = torch.randn(y0.shape, generator=generator, dtype=y0.dtype, device=y0.device)
    return torch.sign(probes) if probe == "rademacher" else probes


class _AugmentedField:
    """``(y, l) -> (y - D(y, u), d - tr dD/dy)`` on the flattened augmented state."""

    def __init__(self, denoiser: Denoiser, shape, dim: int, probes: Tensor | None) -> None:
        self.denoiser, self.shape, self.dim, self.probes = denoiser, shape, dim, probes

    def __call__(self, u, z: Tensor) -> Tensor:
        sched = self.denoiser.schedule
        t = sched.t_from_log_snr(-float(u))
        alpha = float(sched.alpha(t))
        a, bcoef = (float(c) for c in data_coefficients(self.denoiser.prediction, sched, t))
        tt = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device)
        with torch.enable_grad():
            y = z[:, :-1].detach().reshape(self.shape).requires_grad_(True)
            xt = y * alpha
            d = a * xt + bcoef * self.denoiser(xt, tt)
            tr = self._trace(d, y)
        f = (y - d).detach().reshape(z.shape[0], -1)
        return torch.cat([f, (self.dim - tr).detach().reshape(-1, 1)], dim=1)

    def _trace(self, d: Tensor, y: Tensor) -> Tensor:
        if self.probes is not None:
            (g,) = torch.autograd.grad(d, y, grad_outputs=self.probes)
            return (g * self.probes).reshape(y.shape[0], -1).sum(1)
        # all d vector-Jacobian products at once (vmap over the backward pass); a model that
        # vmap cannot trace falls back to one backward pass per dimension
        n = y.shape[0]
        basis = torch.eye(self.dim, dtype=d.dtype, device=d.device)
        basis = basis.unsqueeze(1).expand(self.dim, n, self.dim).reshape(self.dim, *d.shape)
        try:
            (g,) = torch.autograd.grad(d, y, grad_outputs=basis, is_grads_batched=True)
            return torch.diagonal(g.reshape(self.dim, n, self.dim), dim1=0, dim2=2).sum(1)
        except RuntimeError:
            pass
        df, tr = d.reshape(n, -1), 0.0
        for j in range(self.dim):
            (g,) = torch.autograd.grad(df[:, j].sum(), y, retain_graph=j < self.dim - 1)
            tr = tr + g.reshape(n, -1)[:, j]
        return tr
