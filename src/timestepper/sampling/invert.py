"""``invert``: map a sample back to the noise a deterministic sampler turns into it.

Three methods, on the grid ``sample`` would use with the same ``steps``/``grid``/``final``:

* ``"naive"`` (solver ``"ddim"``): DDIM inversion as diffusion editing pipelines use it (Song et
  al. 2021, Sec. 4.3; diffusers' ``DDIMInverseScheduler``): the sampling step
  ``x_{i+1} = (alpha_{i+1}/alpha_i) x_i + (sigma_{i+1} - alpha_{i+1} sigma_i / alpha_i) eps(x_i)``
  is solved for ``x_i`` with the noise prediction taken at the known later state,
  ``eps(x_{i+1}, t_i)``. Its reconstruction error is the well-known inconsistency of DDIM
  inversion (first order in the step).
* ``"fixed-point"`` (solver ``"ddim"``): the same implicit equation solved by ``iterations``
  fixed-point iterations ``x_i <- A x_{i+1} + B eps(x_i, t_i)`` per step (Pan et al. 2023,
  "Effective real image editing with accelerated iterative diffusion inversion"; Garibi et al.
  2024, "ReNoise"): one extra model call per iteration, converges where the step contracts.
* ``"bdia"`` (solvers ``"bdia-ddim"`` and ``"bdia-edm"``): the exact inverse of BDIA (Zhang et
  al. 2023; :mod:`timestepper.solvers.bdia`, :mod:`timestepper.solvers.bdia_edm`), which
  inverts the pair ``(x_N, x_{N-1})``; pass
  ``previous=`` (the state before the last, e.g. ``sample(..., save="all").ys[-2]``) for an
  exact round trip of a sample; without it the companion is estimated by fixed-point inversion of
  the last step, as for a real image.

The result carries the noise and a reconstruction report: the noise re-sampled with the same
solver and grid, its error to ``x0`` and, when the true noise is given, the noise error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core.validation import check_choice, check_int, check_state
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import make_grid
from ..diffusion.term import DiffusionTerm
from ..solvers.bdia import BDIA, invert_bdia
from ..solvers.bdia_edm import BDIAEDM, invert_bdia_edm
from ..solvers.ddim import DDIM
from ..solvers.registry import get
from .adjoint_recovery import ddim_inverse_step
from .sample import sample

METHODS = ("naive", "fixed-point", "bdia")
INVERTIBLE = ("ddim (methods 'naive', 'fixed-point')", "bdia-ddim and bdia-edm (method 'bdia', exact)")
BDIA_SOLVERS = (BDIA, BDIAEDM)


@dataclass
class InversionResult:
    """What :func:`invert` returns.

    Attributes:
        noise: standard-normal-scaled noise (the ``noise`` argument of ``sample``).
        reconstruction: ``sample`` of ``noise`` with the same solver and grid.
        sample_error: largest per-sample ``|reconstruction - x0| / |x0|``.
        noise_error: largest per-sample ``|noise - true| / |true|`` (``None`` without ``true_noise``).
        method: the inversion method used.
        nfe: model calls of the inversion (the reconstruction not counted).
        extras: method diagnostics (``"companion"``: the state after the first step, for BDIA).
    """

    noise: Tensor
    reconstruction: Tensor
    sample_error: float
    noise_error: float | None
    method: str
    nfe: int
    extras: dict = field(default_factory=dict)


def relative_error(x: Tensor, ref: Tensor) -> float:
    """Largest per-sample relative error ``|x - ref| / |ref|`` (float64)."""
    d = (x - ref).double().flatten(1).norm(dim=1) if x.ndim > 1 else (x - ref).double().norm()[None]
    r = ref.double().flatten(1).norm(dim=1) if ref.ndim > 1 else ref.double().norm()[None]
    return float((d / r.clamp_min(1e-300)).max())


def _invert_ddim(term, grid, x0, iterations):
    points = term.points(grid, x0)
    x = x0
    for i in range(grid.steps - 1, -1, -1):
        x = ddim_inverse_step(term, grid, i, x, iterations, points)
    return x, grid.steps * (iterations + 1), {}


def _invert_bdia(term, grid, x0, solver: BDIA | BDIAEDM, previous, iterations):
    nfe = 0
    if previous is None:  # estimate the companion as for a real image
        previous = ddim_inverse_step(term, grid, grid.steps - 1, x0, iterations, term.points(grid, x0))
        nfe = iterations + 1
    else:
        check_state("previous", previous)
        if previous.shape != x0.shape or previous.dtype != x0.dtype:
            raise ValueError(f"previous must be shaped and typed like x0 ({tuple(x0.shape)}, {x0.dtype}), "
                             f"got ({tuple(previous.shape)}, {previous.dtype})")
    if isinstance(solver, BDIAEDM):
        first, companion, calls = invert_bdia_edm(term, grid, x0, previous, solver)
    else:
        first, companion = invert_bdia(term, grid, x0, previous, solver.gamma)
        calls = grid.steps - 1
    return first, nfe + calls, {"companion": companion}


def _solver_and_method(solver: Any, method: str | None) -> tuple[Any, str]:
    slv = get(solver)
    if slv.is_stochastic:
        raise ValueError(f"cannot invert the stochastic solver {slv.display_name!r}: its steps draw "
                         f"noise; invert with a deterministic one: {', '.join(INVERTIBLE)}")
    default = "bdia" if isinstance(slv, BDIA_SOLVERS) else "naive"
    m = check_choice(method or default, METHODS, "method")
    ok = (isinstance(slv, BDIA_SOLVERS) and m == "bdia") or (type(slv) is DDIM and m != "bdia")
    if not ok:
        raise ValueError(f"method {m!r} does not invert solver {slv.display_name!r}; invert supports "
                         f"{', '.join(INVERTIBLE)}")
    return slv, m


def invert(  # noqa: PLR0913 - keyword options of the front, all with defaults
    denoiser: Denoiser,
    x0: Tensor,
    solver: str | Any = "ddim",
    steps: int = 10,
    grid: str | Tensor = "logsnr",
    *,
    method: str | None = None,
    iterations: int = 5,
    previous: Tensor | None = None,
    true_noise: Tensor | None = None,
    final: str = "zero",
    grid_options: dict[str, Any] | None = None,
) -> InversionResult:
    """The noise that ``sample(denoiser, noise, solver, steps, grid)`` maps to ``x0``.

    Args:
        denoiser: the :class:`Denoiser`.
        x0: samples (data end of the grid).
        solver: ``"ddim"``, ``"bdia-ddim"`` or ``"bdia-edm"`` (a name or an instance; stochastic solvers are refused).
        steps, grid, final, grid_options: the sampling grid, as in :func:`sample`.
        method: ``"naive"`` (default for DDIM), ``"fixed-point"`` or ``"bdia"`` (default for BDIA).
        iterations: fixed-point iterations per step (``"fixed-point"``; and the estimate of the
            BDIA companion when ``previous`` is not given).
        previous: BDIA only: the state before the last (``sample(..., save="all").ys[-2]``).
        true_noise: the noise ``x0`` was sampled from, to report the noise error.

    Returns:
        :class:`InversionResult` (noise, reconstruction, errors, model calls).
    """
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    check_state("x0", x0)
    slv, m = _solver_and_method(solver, method)
    iters = check_int(iterations, "iterations", 1 if m == "fixed-point" else 0)
    sgrid = make_grid(denoiser.schedule, steps, grid, final=final, **(grid_options or {}))
    term = DiffusionTerm(denoiser)
    scale = float(torch.sqrt(sgrid.alpha[0] ** 2 + sgrid.sigma[0] ** 2))
    with torch.no_grad():
        if m == "bdia":
            xt, nfe, extras = _invert_bdia(term, sgrid, x0, slv, previous, iters)
        else:
            xt, nfe, extras = _invert_ddim(term, sgrid, x0, iters if m == "fixed-point" else 0)
        noise = xt / scale
        recon = sample(denoiser, noise, slv, steps=steps, grid=grid, final=final, grid_options=grid_options)
    assert isinstance(recon, Tensor)
    return InversionResult(noise, recon, relative_error(recon, x0),
                           None if true_noise is None else relative_error(noise, true_noise), m, nfe, extras)


__all__ = ["METHODS", "InversionResult", "invert", "relative_error"]
