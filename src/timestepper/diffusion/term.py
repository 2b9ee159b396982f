"""The diffusion term: a denoiser seen through a sampling grid.

``prepare(grid, x)`` runs once per grid: it evaluates, in float64, the coefficients that turn
the network output at each grid point into a data prediction ``x0 = a x + b m`` and a noise
prediction ``eps = c x + d m``, and builds the time tensors handed to the model. A step then
costs one model call and one fused ``add``; nothing in it synchronises with the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.terms import Term
from .denoiser import Denoiser
from .grids import SamplingGrid
from .predictions import data_coefficients, noise_coefficients


class DiffusionTerm(Term):
    """Probability-flow dynamics of a :class:`Denoiser` (Song et al. 2021, eq. 13).

    Attributes:
        denoiser: the wrapped model.
        generator: ``torch.Generator`` used by stochastic solvers (``None``: torch's default).
    """

    def __init__(self, denoiser: Denoiser, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.schedule = denoiser.schedule
        self.generator = generator
        self.grid: SamplingGrid | None = None

    def prepare(self, grid: SamplingGrid, x: Tensor) -> None:
        """Precompute per-point coefficients and model times for ``grid`` (float64, then cast)."""
        if not isinstance(grid, SamplingGrid):
            raise TypeError(f"grid must be a SamplingGrid, got {type(grid).__name__}")
        self.grid = grid
        self._a, self._b, self._c, self._d, self._model_t = [], [], [], [], []
        self._dtype, self._device = x.dtype, x.device
        self._batch = x.shape[0] if x.ndim > 0 else 1
        self._tdtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float64
        self.add_points(grid)

    def add_points(self, points: SamplingGrid) -> int:
        """Append evaluation points (e.g. the stages of a Runge-Kutta step) after the grid's own;
        returns the index of the first one. Called once per grid, from a solver's ``init``.

        The model is called at ``points.model_t`` where a compatibility grid sets it
        (:meth:`SamplingGrid.with_model_times`), at ``points.t`` otherwise."""
        first = len(self._a)
        evaluable = points.sigma > 0  # the model is never evaluated at zero noise
        t = torch.where(evaluable, points.t, points.t[0])
        kind, sch = self.denoiser.prediction, self.schedule
        a, b = data_coefficients(kind, sch, t)
        c, d = noise_coefficients(kind, sch, t)
        for table, v in zip((self._a, self._b, self._c, self._d), (a, b, c, d)):
            table.extend(v.tolist())
        mt = t if points.model_t is None else torch.where(evaluable, points.model_t, points.model_t[0])
        self._model_t.extend(mt.to(device=self._device, dtype=self._tdtype)[:, None].repeat(1, self._batch).unbind(0))
        return first

    def model_output(self, x: Tensor, i: int) -> Tensor:
        """The raw network output at grid point ``i``."""
        self.nfe += 1
        m = self.denoiser(x, self._model_t[i])
        if m.dtype != x.dtype or m.device != x.device or m.shape != x.shape:
            raise TypeError(
                f"model output (dtype={m.dtype}, device={m.device}, shape={tuple(m.shape)}) must match the "
                f"state (dtype={x.dtype}, device={x.device}, shape={tuple(x.shape)})"
            )
        return m

    def data_coefficients(self, i: int) -> tuple[float, float]:
        """``(a, b)`` with ``x0 = a x + b m`` at grid point ``i`` (``m`` the raw model output), for
        solvers that fold the conversion into their own update."""
        return self._a[i], self._b[i]

    def data_prediction(self, x: Tensor, i: int) -> Tensor:
        """``x0`` predicted at grid point ``i``."""
        return _affine(x, self._a[i], self.model_output(x, i), self._b[i])

    def noise_prediction(self, x: Tensor, i: int) -> Tensor:
        """``eps`` predicted at grid point ``i``."""
        return _affine(x, self._c[i], self.model_output(x, i), self._d[i])

    def vf(self, t, x):  # pragma: no cover - diffusion solvers use the predictions above
        raise NotImplementedError("DiffusionTerm is advanced by diffusion solvers through data/noise predictions")


def _affine(x: Tensor, a: float, m: Tensor, b: float) -> Tensor:
    """``a x + b m`` with one allocation (in-place accumulation into the fresh product)."""
    if a == 0.0:
        return m if b == 1.0 else m * b
    return (x * a).add_(m, alpha=b)
