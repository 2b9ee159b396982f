"""The diffusion term: a denoiser and the points of a sampling grid where it is evaluated.

``points(grid, x)`` runs once per grid: it evaluates, in float64, the coefficients that turn the
network output ``m`` at each grid point into a data prediction ``x0 = a x + b m`` and a noise
prediction ``eps = c x + d m``, and builds the time tensor handed to the model there
(:class:`EvalPoint`). A solver keeps the points its steps need in its table; a step then costs
one model call and one fused ``add``, with no host synchronisation and no Python state changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.ops import add_scaled_
from ..core.terms import Term
from .denoiser import Denoiser
from .grids import SamplingGrid
from .predictions import conversion_coefficients


@dataclass(slots=True)
class EvalPoint:
    """A point where the model is evaluated: ``t`` is the time tensor handed to the network
    (one entry per sample) and ``x0 = a x + b m``, ``eps = c x + d m`` convert its output ``m``.
    """

    t: Tensor
    a: float
    b: float
    c: float
    d: float


def model_tensor(out: object) -> Tensor:
    """The tensor in a model's output: itself, the ``sample`` field of a diffusers output object,
    or the only element of a one-tuple (``return_dict=False``); anything else is refused."""
    if isinstance(out, Tensor):
        return out
    sample = getattr(out, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(out, (tuple, list)) and len(out) == 1 and isinstance(out[0], Tensor):
        return out[0]
    kind = f"a {type(out).__name__} of {len(out)} items" if isinstance(out, (tuple, list)) else \
        f"a {type(out).__name__}"
    raise TypeError(f"the model returned {kind}; a Denoiser's model_fn must return one tensor shaped like "
                    "x (wrap diffusers models with timestepper.integrations.diffusers.denoiser_from_diffusers)")


class DiffusionTerm(Term):
    """Probability-flow dynamics of a :class:`Denoiser` (Song et al. 2021, eq. 13).

    Attributes:
        denoiser: the wrapped model.
        schedule: its noise schedule.
        generator: ``torch.Generator`` used by stochastic solvers (``None``: torch's default).
    """

    def __init__(self, denoiser: Denoiser, generator: torch.Generator | None = None) -> None:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.schedule = denoiser.schedule
        self.generator = generator
        # The conversions are the model output itself for data-predicting models (a = 0, b = 1)
        # and noise-predicting ones (c = 0, d = 1): decided once here, not per step.
        self._data_is_output = denoiser.prediction == "sample"
        self._noise_is_output = denoiser.prediction == "epsilon"

    def points(self, grid: SamplingGrid, x: Tensor) -> list[EvalPoint]:
        """The :class:`EvalPoint` of every point of ``grid`` for states like ``x`` (float64
        coefficients, then Python floats; times cast to the model's dtype and device once).

        The model is called at ``grid.model_t`` where a compatibility grid sets it
        (:meth:`SamplingGrid.with_model_times`), at ``grid.t`` otherwise. A point at zero noise
        gets the coefficients of the first point: the model is never evaluated there."""
        if not isinstance(grid, SamplingGrid):
            raise TypeError(f"grid must be a SamplingGrid, got {type(grid).__name__}")
        mt, coefficients = self._grid_coefficients(grid)
        tdtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float64
        batch = x.shape[0] if x.ndim > 0 else 1
        # a fresh (points, batch) tensor per solve (expand + contiguous copies only when batch > 1,
        # which is cheaper than repeat; a copy also when batch == 1 and the dtype and device match,
        # so a model never holds the cached tensor), one row per point
        times = mt.to(device=x.device, dtype=tdtype, copy=True)[:, None].expand(-1, batch).contiguous().unbind(0)
        return [EvalPoint(ti, *abcd) for ti, abcd in zip(times, coefficients)]

    def _grid_coefficients(self, grid: SamplingGrid) -> tuple[Tensor, list[tuple[float, float, float, float]]]:
        """The model times (float64) and ``(a, b, c, d)`` of every point of ``grid``: rules of the
        grid and the schedule alone, computed once per grid, prediction kind and schedule (cached
        on the grid, like the solvers' weights), so a sampler called batch after batch on one
        grid does not recompute them."""
        cache = grid.__dict__.setdefault("_conversion_coefficients", {})
        key = (self.denoiser.prediction, id(self.schedule))
        hit = cache.get(key)
        if hit is not None and hit[0] is self.schedule:  # the id of a live schedule: no reuse
            return hit[1], hit[2]
        evaluable = grid.sigma > 0
        t = torch.where(evaluable, grid.t, grid.t[0])
        with torch.no_grad():
            a, b, c, d = conversion_coefficients(self.denoiser.prediction, self.schedule, t)
        mt = t if grid.model_t is None else torch.where(evaluable, grid.model_t, grid.model_t[0])
        coefficients = list(zip(a.tolist(), b.tolist(), c.tolist(), d.tolist()))
        cache[key] = (self.schedule, mt, coefficients)
        return mt, coefficients

    def model_output(self, x: Tensor, p: EvalPoint) -> Tensor:
        """The raw network output at point ``p``."""
        m = self.denoiser(x, p.t)
        if type(m) is not Tensor:
            m = model_tensor(m)
        if m.dtype != x.dtype or m.device != x.device or m.shape != x.shape:
            raise TypeError(
                f"model output (dtype={m.dtype}, device={m.device}, shape={tuple(m.shape)}) must match the "
                f"state (dtype={x.dtype}, device={x.device}, shape={tuple(x.shape)})"
            )
        return m

    def data_prediction(self, x: Tensor, p: EvalPoint) -> Tensor:
        """``x0`` predicted at point ``p``."""
        return self.data_from_output(x, self.model_output(x, p), p)

    def noise_prediction(self, x: Tensor, p: EvalPoint) -> Tensor:
        """``eps`` predicted at point ``p``."""
        return self.noise_from_output(x, self.model_output(x, p), p)

    def data_from_output(self, x: Tensor, m: Tensor, p: EvalPoint) -> Tensor:
        """``x0`` from the model output ``m`` at ``(x, p)`` (no model call)."""
        return m if self._data_is_output else add_scaled_(x * p.a, m, p.b)

    def noise_from_output(self, x: Tensor, m: Tensor, p: EvalPoint) -> Tensor:
        """``eps`` from the model output ``m`` at ``(x, p)`` (no model call)."""
        return m if self._noise_is_output else add_scaled_(x * p.c, m, p.d)

    def prediction(self, x: Tensor, p: EvalPoint, kind: str) -> Tensor:
        """The ``"data"`` (``x0``) or ``"noise"`` (``eps``) prediction at point ``p``."""
        return self.data_prediction(x, p) if kind == "data" else self.noise_prediction(x, p)


__all__ = ["DiffusionTerm", "EvalPoint", "model_tensor"]
