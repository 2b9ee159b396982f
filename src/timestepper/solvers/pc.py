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

from typing import Any

import torch
from torch import Tensor

from ..core.solver import Solver, get, register
from .base import DiffusionSolver, DiffusionState
from .noise import GeneratorNoise

CORRECTORS = ("langevin",)


@register("pc")
class PredictorCorrector(Solver):
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

    samples_diffusion = True

    def __init__(self, predictor: str | Solver = "euler-maruyama", corrector: str = "langevin",
                 snr: float = 0.16, n_corrector: int = 1,
                 predictor_options: dict[str, Any] | None = None) -> None:
        self.predictor = get(predictor, **(predictor_options or {}))
        if not isinstance(self.predictor, DiffusionSolver):
            raise TypeError(
                f"predictor must be a diffusion solver, got {type(self.predictor).__name__}")
        if corrector not in CORRECTORS:
            raise ValueError(
                f"unknown corrector {corrector!r}; choose from {', '.join(CORRECTORS)}")
        if not snr > 0:
            raise ValueError(f"snr must be > 0, got {snr}")
        if not isinstance(n_corrector, int) or isinstance(n_corrector, bool) or n_corrector < 0:
            raise ValueError(f"n_corrector must be an integer >= 0, got {n_corrector!r}")
        self.corrector, self.snr, self.n_corrector = corrector, float(snr), n_corrector
        self.order = self.predictor.order
        self.is_stochastic = n_corrector > 0 or self.predictor.is_stochastic
        self.nfe_per_step = self.predictor.nfe_per_step + n_corrector

    def init(self, term, grid, x0) -> tuple[DiffusionState, GeneratorNoise, list]:
        state = self.predictor.init(term, grid, x0)
        return state, GeneratorNoise(term.generator), grid.sigma.tolist()

    def step(self, term, t0, t1, x, state):
        pstate, noise, sigma = state
        i = pstate.i
        for _ in range(self.n_corrector):
            x = self.langevin(x, term.noise_prediction(x, i), noise.draw(i, x), sigma[i])
        x1, pstate, err = self.predictor.step(term, t0, t1, x, pstate)
        return x1, (pstate, noise, sigma), err

    def langevin(self, x: Tensor, eps: Tensor, z: Tensor, sigma: float) -> Tensor:
        """One Langevin step (Algorithm 4) written with ``eps = -sigma * score``."""
        dims = tuple(range(1, x.ndim))
        znorm = torch.linalg.vector_norm(z, dim=dims).mean()
        rho = znorm / torch.linalg.vector_norm(eps, dim=dims).mean()
        return torch.addcmul(x, (2.0 * self.snr * sigma) * rho, z - (self.snr * rho) * eps)
