"""State recovery for backward passes and inversion: the DDIM step solved for its start."""

from __future__ import annotations

from torch import Tensor

from ..diffusion.grids import SamplingGrid
from ..diffusion.term import DiffusionTerm


def ddim_inverse_step(term: DiffusionTerm, grid: SamplingGrid, i: int, x_next: Tensor,  # noqa: PLR0913
                      iterations: int, points: list) -> Tensor:
    """``x_i`` from ``x_{i+1}`` by the DDIM step solved with ``eps`` taken at ``x_{i+1}`` and then
    ``iterations`` fixed-point updates ``x_i <- A x_{i+1} + B eps(x_i, t_i)``. From pure noise
    (``alpha_i = 0``, a flow at ``t = 1``), where ``eps(x) = x`` gives no equation, the data split
    ``x_i <- (sigma_i / sigma_{i+1}) (x_{i+1} - alpha_{i+1} x0(x_i))`` is iterated instead."""
    a0, a1, s0, s1 = (float(v) for v in (grid.alpha[i], grid.alpha[i + 1], grid.sigma[i], grid.sigma[i + 1]))
    x = x_next
    if a0 == 0.0:
        for _ in range(iterations + 1):
            x = (s0 / s1) * (x_next - a1 * term.data_prediction(x, points[i]))
        return x
    ca, cb = a0 / a1, s0 - a0 * s1 / a1
    for _ in range(iterations + 1):
        x = ca * x_next + cb * term.noise_prediction(x, points[i])
    return x


__all__ = ["ddim_inverse_step"]
