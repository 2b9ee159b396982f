"""An exact benchmark problem: a Gaussian mixture whose diffused marginals are closed-form.

For data ``x0 ~ sum_k pi_k N(mu_k, C_k)`` and ``x_t = alpha x0 + sigma eps``, the scaled state
``y = x_t / alpha = x0 + s eps`` with ``s = sigma / alpha`` is again a mixture with covariances
``C_k + s^2 I``. Hence the exact denoiser ``E[x0 | x_t]`` depends on ``(y, s)`` only:

``D(y, s) = sum_k w_k(y, s) [mu_k + C_k (C_k + s^2 I)^{-1} (y - mu_k)]``,
``w_k = softmax_k(log pi_k + log N(y; mu_k, C_k + s^2 I))`` (log-sum-exp, float64),

and the probability-flow ODE in ``s`` (Karras et al. 2022, eq. 4 in the scaled state) is
``dy/ds = (y - D(y, s)) / s = s sum_k w_k (C_k + s^2 I)^{-1} (y - mu_k)``, smooth down to
``s = 0``. Its float64 reference solution is a tight-tolerance Dormand–Prince solve, independent
of the noise schedule.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.controllers import IController
from ..core.terms import ODETerm
from ..diffusion.denoiser import Denoiser
from ..diffusion.predictions import canonical_prediction, convert
from ..diffusion.schedules import NoiseSchedule
from ..loop import integrate

F64 = torch.float64


class GaussianMixture:
    """A Gaussian mixture in ``d`` dimensions with diagonal or full covariances.

    Args:
        weights: ``(K,)`` positive mixture weights (normalised here).
        means: ``(K, d)``.
        covs: ``(K, d)`` diagonal variances or ``(K, d, d)`` symmetric positive-definite matrices.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        w = torch.as_tensor(weights, dtype=F64)
        mu = torch.as_tensor(means, dtype=F64)
        cv = torch.as_tensor(covs, dtype=F64)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(mu.shape)}")
        k, d = mu.shape
        if w.shape != (k,) or not bool((w > 0).all()):
            raise ValueError(f"weights must be {k} positive numbers, got shape {tuple(w.shape)}")
        if cv.shape == (k, d):
            if not bool((cv > 0).all()):
                raise ValueError("diagonal covariances must be positive")
            self.eigvals, self.eigvecs = cv, None
        elif cv.shape == (k, d, d):
            if not torch.allclose(cv, cv.transpose(-1, -2)):
                raise ValueError("full covariances must be symmetric")
            e, u = torch.linalg.eigh(cv)
            if not bool((e > 0).all()):
                raise ValueError("full covariances must be positive definite")
            self.eigvals, self.eigvecs = e, u
        else:
            raise ValueError(f"covs must have shape (K, d) or (K, d, d) with K={k}, d={d}, got {tuple(cv.shape)}")
        self.weights = w / w.sum()
        self.means = mu
        self.covs = cv
        self.dim, self.n_components = d, k

    @classmethod
    def random(cls, dim: int, n_components: int = 8, seed: int = 0, full: bool = False,
               spread: float = 1.5, scale: tuple[float, float] = (0.05, 0.3)) -> GaussianMixture:
        """A reproducible random mixture: means ``N(0, spread^2 / d * I) * sqrt(d)``-scaled so that
        components are separated, standard deviations uniform in ``scale``."""
        if dim < 1 or n_components < 1:
            raise ValueError(f"dim and n_components must be >= 1, got {dim}, {n_components}")
        g = torch.Generator().manual_seed(seed)
        w = 0.5 + torch.rand(n_components, generator=g, dtype=F64)
        mu = spread * torch.randn(n_components, dim, generator=g, dtype=F64)
        lo, hi = scale
        std = lo + (hi - lo) * torch.rand(n_components, dim, generator=g, dtype=F64)
        if not full:
            return cls(w, mu, std**2)
        q, _ = torch.linalg.qr(torch.randn(n_components, dim, dim, generator=g, dtype=F64))
        covs = q @ torch.diag_embed(std**2) @ q.transpose(-1, -2)
        return cls(w, mu, 0.5 * (covs + covs.transpose(-1, -2)))

    # -- sampling and densities -------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples of the data distribution, float64 ``(n, d)``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=F64)
        std = self.eigvals[comp].sqrt() * z
        if self.eigvecs is not None:
            std = (self.eigvecs[comp] @ std.unsqueeze(-1)).squeeze(-1)
        return self.means[comp] + std

    def _rotated(self, y: Tensor, alpha: Tensor | float = 1.0) -> Tensor:
        """``(n, K, d)``: ``y - alpha mu_k`` in each component's eigenbasis."""
        diff = y.unsqueeze(1) - _col(alpha, y).unsqueeze(-1) * self.means.unsqueeze(0)
        if self.eigvecs is None:
            return diff
        return torch.einsum("kji,nkj->nki", self.eigvecs, diff)

    def _log_weights(self, z: Tensor, var: Tensor) -> Tensor:
        """``log pi_k + log N(z; 0, diag(var))``; ``var`` is ``(1, K, d)`` or ``(n, K, d)``."""
        logdet = torch.log(2 * math.pi * var).sum(-1)
        return torch.log(self.weights) - 0.5 * ((z * z) / var).sum(-1) - 0.5 * logdet

    def log_prob(self, x: Tensor, s: float | Tensor = 0.0) -> Tensor:
        """Log-density of ``y = x0 + s eps`` (``s = 0``: the data), float64 ``(n,)``."""
        y = torch.as_tensor(x, dtype=F64)
        s2 = torch.as_tensor(s, dtype=F64).reshape(-1, 1, 1) ** 2
        var = self.eigvals.unsqueeze(0) + s2
        return torch.logsumexp(self._log_weights(self._rotated(y), var), dim=1)

    def posterior_mean(self, y: Tensor, s: Tensor | float) -> Tensor:
        """``E[x0 | x0 + s eps = y]`` for ``y`` of shape ``(n, d)`` and ``s`` scalar or ``(n,)``."""
        return y - self.scaled_drift(y, s) * _col(s, y)

    def _shared_diagonal(self, x: Tensor, a: Tensor, sg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior weights ``(n, K)`` for diagonal covariances and one ``(alpha, sigma)`` for the
        whole batch, with ``(n, d) @ (d, K)`` products instead of ``(n, K, d)`` tensors; also
        returns the inverse variances ``(K, d)`` and the scaled means ``alpha mu`` ``(K, d)``."""
        var = a * a * self.eigvals + sg * sg
        iv = 1.0 / var
        m = a * self.means
        quad = (x * x) @ iv.T - 2.0 * (x @ (m * iv).T) + (m * m * iv).sum(-1)
        logw = torch.log(self.weights) - 0.5 * quad - 0.5 * torch.log(2 * math.pi * var).sum(-1)
        return torch.softmax(logw, dim=1), iv, m

    def posterior_mean_at(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """``E[x0 | alpha x0 + sigma eps = x]`` computed in ``x`` itself, so ``alpha = 0`` (pure
        noise: the mixture mean) is exact too. ``alpha``, ``sigma``: scalars or ``(n,)``."""
        x = torch.as_tensor(x, dtype=F64)
        a, sg = _col(alpha, x), _col(sigma, x)
        if self.eigvecs is None and a.ndim == 0:
            w, iv, m = self._shared_diagonal(x, a, sg)
            gain = a * self.eigvals * iv  # (K, d)
            return w @ self.means + x * (w @ gain) - w @ (gain * m)
        if a.ndim == 0:
            a, sg = a.reshape(1, 1), sg.reshape(1, 1)
        var = (a * a).unsqueeze(-1) * self.eigvals.unsqueeze(0) + (sg * sg).unsqueeze(-1)
        z = self._rotated(x, a)
        w = torch.softmax(self._log_weights(z, var), dim=1)
        g = w.unsqueeze(-1) * (a.unsqueeze(-1) * self.eigvals.unsqueeze(0)) * z / var
        if self.eigvecs is not None:
            g = torch.einsum("kij,nkj->nki", self.eigvecs, g)
        return (w @ self.means) + g.sum(1)

    def scaled_drift(self, y: Tensor, s: Tensor | float) -> Tensor:
        """``(y - D(y, s)) / s = s sum_k w_k (C_k + s^2)^{-1} (y - mu_k)``, finite at ``s = 0``."""
        y = torch.as_tensor(y, dtype=F64)
        sc = _col(s, y)
        if self.eigvecs is None and sc.ndim == 0:
            w, iv, _ = self._shared_diagonal(y, torch.ones((), dtype=F64), sc)
            return sc * (y * (w @ iv) - w @ (iv * self.means))
        var = self.eigvals.unsqueeze(0) + (sc * sc).unsqueeze(-1)
        z = self._rotated(y)
        w = torch.softmax(self._log_weights(z, var), dim=1)
        g = w.unsqueeze(-1) * z / var
        if self.eigvecs is not None:
            g = torch.einsum("kij,nkj->nki", self.eigvecs, g)
        return sc * g.sum(1)

    # -- the model and the reference ------------------------------------------------------------
    def denoiser(self, schedule: NoiseSchedule, prediction: str = "sample", shared_time: bool = True) -> Denoiser:
        """The exact model as a :class:`Denoiser` predicting ``prediction`` under ``schedule``.

        The model accepts states of any trailing shape that flattens to ``d`` features and returns
        the state's dtype (computing in float64). With ``shared_time`` (default) it reads the time
        of the first sample for the whole batch, as every sampler calls it (one time per step);
        this is what makes it fast (matrix products, no ``(n, K, d)`` tensors) without reading
        values back to the host. Pass ``shared_time=False`` to evaluate per-sample times.
        """
        kind = canonical_prediction(prediction)

        def model_fn(x: Tensor, t: Tensor) -> Tensor:
            shape, dtype = x.shape, x.dtype
            xf = x.reshape(shape[0], -1).to(F64)
            tt = t.to(F64).reshape(-1, 1)
            if shared_time:
                tt = tt[:1]
            al, si = schedule.alpha_sigma(tt)
            a_, s_ = (al.reshape(()), si.reshape(())) if shared_time else (al.squeeze(1), si.squeeze(1))
            x0 = self.posterior_mean_at(xf, a_, s_)
            out = x0 if kind == "sample" else convert(x0, xf, tt, schedule, "sample", kind)
            return out.reshape(shape).to(dtype)

        return Denoiser(model_fn, schedule, kind)

    def reference_solution(self, y_start: Tensor, s_start: float, s_end: float = 0.0,
                           rtol: float = 1e-10, atol: float = 1e-10) -> Tensor:
        """Solve the PF-ODE ``dy/ds = scaled_drift(y, s)`` from ``s_start`` to ``s_end`` in float64
        with Dormand–Prince 5(4) at tight tolerances. ``y`` is the scaled state ``x / alpha``."""
        y0 = torch.as_tensor(y_start, dtype=F64).reshape(y_start.shape[0], -1)
        term = ODETerm(lambda s, y: self.scaled_drift(y, s))
        sol = integrate(term, "dopri5", IController(rtol=rtol, atol=atol), y0,
                        t_span=(float(s_start), float(s_end)), max_steps=1_000_000)
        return sol.x.reshape(y_start.shape)


def _col(s, y: Tensor) -> Tensor:
    s = torch.as_tensor(s, dtype=F64, device=y.device)
    return s.reshape(-1, 1) if s.ndim > 0 else s
