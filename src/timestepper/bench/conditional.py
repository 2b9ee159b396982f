"""An exact class-conditional model: the components of a Gaussian mixture as classes.

Label ``k`` of a mixture with ``K`` components is the data ``N(mu_k, C_k)``; its exact denoiser is
the posterior mean of that one Gaussian under ``x_t = alpha x0 + sigma eps``,

``D_k(x) = mu_k + alpha C_k (alpha^2 C_k + sigma^2 I)^{-1} (x - alpha mu_k)``,

and the null label ``K`` is the whole mixture, whose exact denoiser is ``sum_k w_k(x) D_k(x)``
with the posterior weights ``w_k`` of :class:`~timestepper.bench.gmm.GaussianMixture`. A
classifier-free guided model (:func:`timestepper.guidance.cfg` with ``null_label=K``) is then
``D_u + s (D_k - D_u)``: exact conditional and unconditional branches, so the only error of a
guided sample is the sampler's (the benchmark of DC-Solver's guidance-scale regression,
``benchmarks/dc_solver.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.predictions import canonical_prediction, convert
from ..diffusion.schedules import NoiseSchedule
from .gmm import GaussianMixture

F64 = torch.float64


class ConditionalMixture:
    """The components of ``mixture`` as class labels ``0 .. K-1``; ``null_label = K`` is the
    unconditional model (the whole mixture)."""

    def __init__(self, mixture: GaussianMixture) -> None:
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        self.mixture = mixture
        self.null_label = mixture.n_components

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` labels drawn with the mixture's weights (the classes of its data), ``(n,)`` int64."""
        return torch.multinomial(self.mixture.weights, n, replacement=True, generator=generator)

    def component_means(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Every component's exact denoiser ``D_k(x)``, ``(n, K, d)``, and the posterior weights
        ``w_k(x)``, ``(n, K)``, at one ``(alpha, sigma)`` for the batch (float64 scalars)."""
        g = self.mixture
        var = alpha * alpha * g.eigvals + sigma * sigma  # (K, d)
        z = g._rotated(x, alpha)  # (n, K, d), in each component's eigenbasis
        w = torch.softmax(g._log_weights(z, var.unsqueeze(0)), dim=1)
        shift = alpha * g.eigvals * z / var
        if g.eigvecs is not None:
            shift = torch.einsum("kij,nkj->nki", g.eigvecs, shift)
        return g.means.unsqueeze(0) + shift, w

    def selection(self, labels: Tensor | None, weights: Tensor) -> Tensor:
        """The per-sample weights over the components, ``(n, K)``: one-hot for a class label, the
        posterior weights for the null label (or ``labels=None``)."""
        if labels is None:
            return weights
        labels = torch.as_tensor(labels, device=weights.device)
        if labels.dtype.is_floating_point or labels.shape != weights.shape[:1]:
            raise ValueError(f"labels must be {weights.shape[0]} integers in 0..{self.null_label}, got "
                             f"dtype {labels.dtype} shape {tuple(labels.shape)}")
        if labels.device.type == "cpu" and not bool(((labels >= 0) & (labels <= self.null_label)).all()):
            raise ValueError(f"labels must lie in 0..{self.null_label} (K = {self.null_label} is the null "
                             f"label), got {labels.tolist()}")
        hot = torch.nn.functional.one_hot(labels.long(), self.null_label + 1).to(weights.dtype)
        return hot[:, :-1] + hot[:, -1:] * weights

    def denoiser(self, schedule: NoiseSchedule, prediction: str = "sample") -> Denoiser:
        """The exact class-conditional model ``model_fn(x, t, labels=None)`` predicting
        ``prediction`` under ``schedule``. ``labels``: ``(n,)`` integers, ``k < K`` the component,
        ``K`` (:attr:`null_label`) or ``None`` the whole mixture. Reads the time of the first
        sample for the whole batch (one time per step, as every sampler calls it)."""
        kind = canonical_prediction(prediction)

        def model_fn(x: Tensor, t: Tensor, labels: Tensor | None = None, **_: Any) -> Tensor:
            shape, dtype = x.shape, x.dtype
            xf = x.reshape(shape[0], -1).to(F64)
            tt = t.to(F64).reshape(-1, 1)[:1]
            al, si = schedule.alpha_sigma(tt)
            means, w = self.component_means(xf, al.reshape(()), si.reshape(()))
            x0 = torch.einsum("nk,nkd->nd", self.selection(labels, w), means)
            out = x0 if kind == "sample" else convert(x0, xf, tt, schedule, "sample", kind)
            return out.reshape(shape).to(dtype)

        return Denoiser(model_fn, schedule, kind)


__all__ = ["ConditionalMixture"]
