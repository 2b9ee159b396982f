"""The one step shared by the linear multistep diffusion solvers.

DPM-Solver(++) multistep, DEIS and LMS all advance by ``x_{i+1} = cx_i x_i + sum_j w_ij m_{i-j}``,
where ``m`` is the model's data or noise prediction at past grid points (newest first). A method
is therefore a coefficient rule: a subclass implements ``weights(grid, i, order)`` and
``orders(grid)``; this module applies them. The history lives in the solver state.
"""

from __future__ import annotations

from ..diffusion.grids import SamplingGrid
from .base import DiffusionSolver, lincomb
from .expint import PhiTable, first_order_at, step_phis


def predict(term, x, i: int, prediction: str):
    """The model's data (``x0``) or noise (``eps``) prediction at grid point ``i``."""
    return term.data_prediction(x, i) if prediction == "data" else term.noise_prediction(x, i)


class LinearMultistep(DiffusionSolver):
    """Base class: one model call per step, ``max_order - 1`` past predictions kept in the state.

    Subclasses set ``prediction`` (``"data"`` or ``"noise"``) and implement
    ``orders(grid) -> list[int]`` (the order used at each step) and
    ``weights(grid, i, k) -> (cx, [w_0, ..., w_{k-1}])`` for step ``i`` at order ``k``
    (``w_j`` multiplies the prediction at grid point ``i - j``).
    """

    prediction = "data"
    nfe_per_step = 1
    max_order = 1  # predictions combined per step (the declared ``order`` is the convergence order)
    first_order_to_zero = True  # exponential integrators: higher terms diverge at h = inf

    def orders(self, grid: SamplingGrid) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def weights(
        self, grid: SamplingGrid, i: int, k: int
    ) -> tuple[float, list[float]]:  # pragma: no cover
        raise NotImplementedError

    def phi_table(self, grid: SamplingGrid) -> PhiTable:
        """The phi values the weights need: ``phi_k(+-h)`` of every step (one call per ``k``)."""
        return step_phis(grid, [(i, i + 1) for i in range(grid.steps)], self.max_order + 1)

    def coefficients(self, grid: SamplingGrid) -> dict[str, list]:
        cx, w, used = [], [], []
        phis = self.phi_table(grid)
        for i, k in enumerate(self.orders(grid)):
            k = 1 if (self.first_order_to_zero and first_order_at(grid, i)) else min(k, i + 1)
            c, wi = self.weights(grid, i, k, phis)
            cx.append(c)
            w.append(wi)
            used.append(k)
        return {"cx": cx, "w": w, "orders": used}

    def step(self, term, t0, t1, x, state):
        i, c = state.i, state.coeffs
        m = predict(term, x, i, self.prediction)
        hist = (m,) + state.history
        out = lincomb(x, c["cx"][i], list(zip(c["w"][i], hist)))
        return out, state.advance(hist[: self.max_order - 1]), None
