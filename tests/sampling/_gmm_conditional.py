"""Exact conditional of a Gaussian mixture given some coordinates (test helper)."""

from __future__ import annotations

import torch

from timestepper.bench import GaussianMixture

F64 = torch.float64


def conditional_sample(gmm: GaussianMixture, known_idx: list[int], value: torch.Tensor, n: int,
                       generator: torch.Generator) -> torch.Tensor:
    """``n`` exact samples of the unknown coordinates given ``x[known_idx] = value``."""
    d = gmm.dim
    unk = [j for j in range(d) if j not in known_idx]
    covs = gmm.covs if gmm.covs.ndim == 3 else torch.diag_embed(gmm.covs)
    mu_a, mu_b = gmm.means[:, unk], gmm.means[:, known_idx]
    c_aa = covs[:, unk][:, :, unk]
    c_ab = covs[:, unk][:, :, known_idx]
    c_bb = covs[:, known_idx][:, :, known_idx]
    diff = value.to(F64) - mu_b  # (K, b)
    sol = torch.linalg.solve(c_bb, diff.unsqueeze(-1)).squeeze(-1)
    logn = -0.5 * (diff * sol).sum(-1) - 0.5 * torch.logdet(2 * torch.pi * c_bb)
    w = torch.softmax(torch.log(gmm.weights) + logn, 0)
    mean = mu_a + (c_ab @ sol.unsqueeze(-1)).squeeze(-1)
    cov = c_aa - c_ab @ torch.linalg.solve(c_bb, c_ab.transpose(-1, -2))
    comp = torch.multinomial(w, n, replacement=True, generator=generator)
    z = torch.randn(n, len(unk), generator=generator, dtype=F64)
    chol = torch.linalg.cholesky(0.5 * (cov + cov.transpose(-1, -2)))
    return mean[comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1)
