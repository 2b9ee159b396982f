"""Predictor–corrector sampling (Song et al. 2021, Score SDE, Section 4.2, Algorithms 1-5).

At each grid point ``t_i`` the corrector runs ``n_corrector`` steps of Langevin MCMC on the
current marginal ``p_{t_i}`` (Algorithm 4): with ``g = score(x, t_i)`` and ``z ~ N(0, I)``,
``step = 2 (snr ||z|| / ||g||)^2`` and ``x <- x + step g + sqrt(2 step) z``. Then the predictor (any
diffusion solver: ``euler-maruyama``, ``ddpm``, ``ddim``, ``dpmpp-2m``, ...) advances from ``t_i``
to ``t_{i+1}``. As in Score SDE's reference code, ``||g||`` and ``||z||`` are per-sample norms
averaged over the batch: a per-sample ratio is heavy-tailed in low dimension (``||g||`` can be
near 0) and makes single steps explode. Score SDE's VP variant (Algorithm 5) also multiplies the
step by ``1 - beta_i`` of its 1000-step discretisation; here Algorithm 4's rule is used for every
schedule.

With ``score = -eps / sigma`` the corrector update is, without any host synchronisation,
``x <- x + 2 snr rho sigma (z - snr rho eps)``, ``rho = mean ||z|| / mean ||eps||``.

Every corrector step costs one model call; ``Solution.stats.nfe`` counts them with the
predictor's: ``nfe = steps * n_corrector + predictor NFE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.validation import check_choice, check_int, check_positive
from ..diffusion.term import EvalPoint
from .base import DiffusionSolver
from .noise import Draw, GeneratorNoise
from .registry import get, register

CORRECTORS = ("langevin",)


@dataclass(slots=True)
class PCRow:
    """Langevin corrector steps at ``point`` (noise level ``sigma``), then the predictor's row."""

    point: EvalPoint
    sigma: float
    draw: Draw
    predictor: Any


@register("pc")
class PredictorCorrector(DiffusionSolver):
    """Any predictor + the Langevin corrector (Song et al. 2021, Algorithms 1 and 4).

    Args:
        predictor: a diffusion solver name or instance (default ``"euler-maruyama"``, Score SDE's
            reverse-diffusion predictor).
        corrector: ``"langevin"``.
        snr: the corrector's signal-to-noise ratio ``r`` (Score SDE uses 0.16 for VE models,
            0.01-0.17 for VP).
        n_corrector: corrector steps per grid point (``M`` in Algorithm 1), ``>= 0``.
        predictor_options: options for a predictor given by name.
    """

    def __init__(self, predictor: str | DiffusionSolver = "euler-maruyama", corrector: str = "langevin",  # noqa: PLR0913
                 snr: float = 0.16, n_corrector: int = 1,
                 predictor_options: dict[str, Any] | None = None) -> None:
        inner = get(predictor, **(predictor_options or {}))
        if not isinstance(inner, DiffusionSolver) or inner.error_order is not None:
            raise TypeError(f"predictor must be a fixed-grid diffusion solver, got {inner.display_name!r}")
        self.predictor: DiffusionSolver = inner
        self.corrector = check_choice(corrector, CORRECTORS, "corrector")
        self.snr = check_positive(snr, "snr")
        self.n_corrector = check_int(n_corrector, "n_corrector", 0)
        self.order = self.predictor.order
        self.is_stochastic = n_corrector > 0 or self.predictor.is_stochastic
        self.nfe_per_step = self.predictor.nfe_per_step + n_corrector

    def start_state(self, x0):
        return self.predictor.start_state(x0)

    def table(self, term, grid, points, x0):
        inner = self.predictor.table(term, grid, points, x0)
        draw = GeneratorNoise(term.generator).draw
        sigma = grid.sigma.tolist()
        return [PCRow(points[i], sigma[i], draw, row) for i, row in enumerate(inner)]

    def advance(self, term, x, state, row):
        for _ in range(self.n_corrector):
            x = self.langevin(x, term.noise_prediction(x, row.point), row.draw(x), row.sigma)
        x1, state, err, nfe = self.predictor.advance(term, x, state, row.predictor)
        return x1, state, err, nfe + self.n_corrector

    def langevin(self, x: Tensor, eps: Tensor, z: Tensor, sigma: float) -> Tensor:
        """One Langevin step (Algorithm 4) written with ``eps = -sigma * score``."""
        dims = tuple(range(1, x.ndim))
        znorm = torch.linalg.vector_norm(z, dim=dims).mean()
        rho = znorm / torch.linalg.vector_norm(eps, dim=dims).mean()
        return torch.addcmul(x, (2.0 * self.snr * sigma) * rho, z - (self.snr * rho) * eps)
