"""Metrics of sample quality against references."""

from __future__ import annotations

import torch
from torch import Tensor


def trajectory_error(x: Tensor, reference: Tensor) -> float:
    """Mean over samples of the L2 distance to the reference solution from the same noise."""
    if x.shape != reference.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(reference.shape)}")
    diff = (x.to(torch.float64) - reference.to(torch.float64)).reshape(x.shape[0], -1)
    return float(diff.norm(dim=1).mean())


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two equally sized point sets (Rabin et al. 2011).

    Projections are drawn once from a seeded generator (uniform on the sphere), so two calls on
    the same sets agree. ``SW2^2 = mean_projections mean_i (sort(a u)_i - sort(b u)_i)^2``.
    """
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"point sets must have equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(a.shape[1], n_projections, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ u, dim=0)
    pb, _ = torch.sort(b @ u, dim=0)
    return float(((pa - pb) ** 2).mean().sqrt())


def feature_statistics(f: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of features ``(N, D)``, float64."""
    f = f.double()
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors, got {f.shape[0]}")
    return f.mean(0), torch.cov(f.T)


def _sqrtm_psd(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(a: Tensor | tuple[Tensor, Tensor], b: Tensor | tuple[Tensor, Tensor]) -> float:
    """Squared Fréchet distance between Gaussians fitted to two feature sets (or given as
    ``(mu, cov)`` pairs); float64, via symmetric eigendecompositions."""
    mu1, s1 = a if isinstance(a, tuple) else feature_statistics(a)
    mu2, s2 = b if isinstance(b, tuple) else feature_statistics(b)
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2.0 * tr_sqrt
    return float(d2.clamp(min=0))
