"""Training losses on periodic fields computed in Fourier space.

The negative Sobolev norm (Cao, Brarda, Li & Xi 2024, "Spectral-Refiner: Accurate Fine-Tuning of
Spatiotemporal Fourier Neural Operator for Turbulent Flows") of a field ``u`` on the
periodic box ``[0, L)^d``, evaluated exactly through Parseval's identity:

    ||u||_{H^{-s}}^2 = |Omega| sum_k (1 + |k|^2)^(-s) |u_hat_k|^2,
    u_hat_k = (1 / N) sum_x u(x) exp(-i k . x),  k in (2 pi / L) Z^d,

so ``s = 0`` is the squared L2 norm ``int |u|^2 = |Omega| mean(u^2)`` and ``s > 0`` weighs a
wavenumber ``k`` by ``(1 + |k|^2)^(-s)``: low-frequency errors dominate the loss, the complement
of what an MSE-trained model neglects least.

Spectral-Refiner's fine-tuning loss is a functional-type a posteriori error estimator that also
measures the residual of the Navier–Stokes equations in this norm; :class:`NegativeSobolevLoss`
measures the misfit to the data only (no PDE residual), so it applies to any equation. Note that
for a final layer that multiplies each Fourier mode separately, a per-mode weight changes the
optimisation path but not the least-squares minimiser.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _wavenumber_weight(space: tuple[int, ...], length: float, s: float, device) -> Tensor:
    """``(1 + |k|^2)^(-s)`` on the ``rfftn`` grid of ``space``, with the Hermitian multiplicity
    (2 for the modes whose conjugate is not stored, else 1) folded in."""
    ks = [torch.fft.fftfreq(n, d=length / n, dtype=torch.float64, device=device) * 2 * math.pi for n in space[:-1]]
    ks.append(torch.fft.rfftfreq(space[-1], d=length / space[-1], dtype=torch.float64, device=device) * 2 * math.pi)
    grids = torch.meshgrid(*ks, indexing="ij")
    k2 = sum(g**2 for g in grids)
    weight = (1.0 + k2) ** (-s)
    mult = torch.full((space[-1] // 2 + 1,), 2.0, dtype=torch.float64, device=device)
    mult[0] = 1.0
    if space[-1] % 2 == 0:
        mult[-1] = 1.0
    return weight * mult


def negative_sobolev_norm_sq(u: Tensor, s: float = 1.0, *, dim: int = 1,
                             length: float = 2 * math.pi) -> Tensor:
    """``||u||_{H^{-s}}^2`` over the last ``dim`` axes of ``u`` (a periodic box of side
    ``length``); returns the leading shape.

    Raises:
        ValueError: ``s < 0``, ``dim`` not 1 or 2, ``length <= 0``, or ``u`` with fewer than
            ``dim`` axes.
    """
    if not s >= 0:
        raise ValueError(f"s must be >= 0 (the norm is H^(-s)), got {s!r}")
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim!r}")
    if not length > 0:
        raise ValueError(f"length must be positive, got {length!r}")
    if u.ndim < dim:
        raise ValueError(f"u needs at least dim={dim} axes, got shape {tuple(u.shape)}")
    space = tuple(u.shape[-dim:])
    dims = tuple(range(-dim, 0))
    uh = torch.fft.rfftn(u, dim=dims, norm="forward")
    weight = _wavenumber_weight(space, length, s, u.device).to(uh.real.dtype)
    return (length**dim) * (weight * uh.abs().pow(2)).sum(dim=dims)


class NegativeSobolevLoss:
    """Mean over samples (and frames) of ``||pred - target||_{H^{-s}}^2``, a training objective
    for a surrogate's ``objective`` (see :class:`~timestepper.pde.surrogate.BlockSurrogate`).

    Args:
        s: the order (paper: 1 for the vorticity residual).
        dim: spatial dimensions of the fields.
        length: side of the periodic box.
    """

    def __init__(self, s: float = 1.0, *, dim: int = 1, length: float = 2 * math.pi) -> None:
        negative_sobolev_norm_sq(torch.zeros((2,) * dim), s, dim=dim, length=length)  # validate
        self.s, self.dim, self.length = float(s), dim, float(length)

    def __call__(self, pred: Tensor, target: Tensor) -> Tensor:
        return negative_sobolev_norm_sq(pred - target, self.s, dim=self.dim,
                                        length=self.length).mean()

    def __repr__(self) -> str:
        return f"NegativeSobolevLoss(s={self.s}, dim={self.dim}, length={self.length})"


__all__ = ["NegativeSobolevLoss", "negative_sobolev_norm_sq"]
