"""Inpainting by replacement around any diffusion solver (Song et al. 2021, Score SDE, Appendix
I.2; the "replacement" baseline of Ho et al. 2022, Video Diffusion, Section 3.1), with RePaint's
resampling (Lugmayr et al. 2022, Algorithm 1 with jump length 1).

Before every step from ``t_i`` the known coordinates of the state are replaced by a fresh sample
of the forward process ``alpha_i y + sigma_i z`` (``q(x_{t_i} | x_0 = y)``), and after the last
step by ``alpha_end y``; the wrapped solver evolves the unknown coordinates. ``resample=U``
repeats each step ``U`` times, diffusing the result back to ``t_i`` with ``q(x_i | x_{i+1})`` in
between. The front is :func:`timestepper.inpaint`, which documents when replacement is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.ops import add_scaled
from ..core.validation import check_int
from .base import DiffusionSolver
from .noise import Draw, GeneratorNoise
from .registry import get


def bool_mask(mask: Tensor) -> Tensor:
    """A boolean mask from a boolean or 0/1 tensor."""
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be boolean or hold only 0 and 1")
    return mask != 0


@dataclass(slots=True)
class InpaintRow:
    """Step ``i``: project onto ``known * alpha + sigma z`` (``sigma=None``: no noise), run the
    inner row; RePaint goes back with ``x ratio + back_std z``; after the last step project onto
    the end point's ``known * alpha + sigma z`` (``end=(alpha, sigma)``; ``None`` on other steps)."""

    inner: Any
    alpha: float
    sigma: float | None
    ratio: float
    back_std: float
    end: tuple[float, float | None] | None
    known: Tensor
    mask: Tensor
    draw: Draw


class Inpaint(DiffusionSolver):
    """Wrap a diffusion solver with the replacement projection onto the known coordinates.

    Args:
        solver: a diffusion solver name or instance (``"pc"`` included).
        known: the known values ``y`` in data space (broadcastable to the state).
        mask: boolean (or 0/1) tensor, ``True`` where ``known`` is observed (broadcastable).
        solver_options: options for a solver given by name.
        resample: RePaint's ``U``: each step is taken ``U`` times (``U`` times the model calls).
    """

    is_stochastic = True

    def __init__(self, solver: str | DiffusionSolver, known: Tensor, mask: Tensor,  # noqa: PLR0913
                 solver_options: dict[str, Any] | None = None, resample: int = 1) -> None:
        inner = get(solver, **(solver_options or {}))
        if not isinstance(inner, DiffusionSolver) or inner.error_order is not None:
            raise TypeError(f"solver must be a fixed-grid diffusion solver (or 'pc'), got "
                            f"{inner.display_name!r}")
        self.inner: DiffusionSolver = inner
        if not isinstance(known, Tensor) or not isinstance(mask, Tensor):
            raise TypeError("known and mask must be tensors")
        self.known, self.mask = known, bool_mask(mask)
        self.resample = check_int(resample, "resample", 1)
        self.order, self.nfe_per_step = self.inner.order, self.inner.nfe_per_step * resample

    def start_state(self, x0):
        return self.inner.start_state(x0)

    def table(self, term, grid, points, x0):
        try:
            torch.broadcast_shapes(self.known.shape, self.mask.shape, x0.shape)
        except RuntimeError as exc:
            raise ValueError(f"known {tuple(self.known.shape)} and mask {tuple(self.mask.shape)} "
                             f"must broadcast to the state {tuple(x0.shape)}") from exc
        known = self.known.to(dtype=x0.dtype, device=x0.device)
        mask = self.mask.to(device=x0.device)
        a, s = grid.alpha.tolist(), grid.sigma.tolist()
        draw = GeneratorNoise(term.generator).draw
        rows = []
        for i, inner in enumerate(self.inner.table(term, grid, points, x0)):
            ratio = a[i] / a[i + 1]
            back_std = max(s[i] ** 2 - (ratio * s[i + 1]) ** 2, 0.0) ** 0.5
            end = (a[-1], s[-1] if s[-1] != 0.0 else None) if i + 1 == grid.steps else None
            rows.append(InpaintRow(inner, a[i], s[i] if s[i] != 0.0 else None, ratio, back_std,
                                   end, known, mask, draw))
        return rows

    def advance(self, term, x, state, row):
        x1, inner, err, nfe = x, state, None, 0
        for r in range(self.resample):
            if r > 0:  # RePaint: diffuse back from t_{i+1} to t_i with q(x_i | x_{i+1})
                x = add_scaled(x1 * row.ratio, row.draw(x1), row.back_std)
            x = _project(x, row.known, row.mask, row.alpha, row.sigma, row.draw)
            x1, inner, err, n = self.inner.advance(term, x, state, row.inner)
            nfe += n
        if row.end is not None:
            x1 = _project(x1, row.known, row.mask, row.end[0], row.end[1], row.draw)
        return x1, inner, err, nfe


def _project(x: Tensor, known: Tensor, mask: Tensor, alpha: float, sigma: float | None,  # noqa: PLR0913
             draw: Draw) -> Tensor:
    target = known * alpha
    if sigma is not None:
        target = add_scaled(target, draw(x), sigma)
    return torch.where(mask, target, x)


__all__ = ["Inpaint", "bool_mask"]
