"""Rectified Diffusion: reflow on any diffusion parameterisation (Wang, Yang, Huang, Wang & Li
2024, "Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow", arXiv 2410.07303).

The paper's claim: what makes rectification (reflow, Liu et al. 2022) work is the *pairing*,
i.e. retraining on noise-sample pairs ``(eps, x0)`` coupled by the pretrained model's
deterministic ODE sampler, not the linear interpolant or the velocity target. Retraining keeps
the model's own schedule and prediction type (a VP epsilon model stays one):

* :func:`rectified_pairs`: ``(eps, x0)`` with ``x0`` the teacher's deterministic ODE sample from
  ``eps`` (any deterministic solver; stochastic ones are refused);
* :func:`rectify`: the denoising objective of the model's own parameterisation on those pairs,
  ``x_t = alpha_t x0 + sigma_t eps`` with the *paired* ``eps`` (the paper's Rectified Diffusion
  loss; with a rectified-flow schedule and velocity target it is reflow itself).

The training target is a *first-order* ODE path: with the coupling learned exactly, the state
along the sampler's trajectory is ``alpha_t x0 + sigma_t eps`` for a fixed pair, so the data
prediction is constant along it and a single DDIM step (first order) is exact. For VP schedules
that path is curved in ``x``; it is straight only in the flow coordinates
``z = x / (alpha + sigma)``, ``tau = sigma / (alpha + sigma)`` (where ``z = (1 - tau) x0 + tau
eps``). Two measures of it along a DDIM trajectory:

* :func:`first_order_deviation`: the mean squared distance (flow coordinates) of the trajectory
  from the first-order path through its end points; on a DDIM trajectory it is 0 exactly when the
  data prediction is constant along it;
* :func:`flow_straightness`: the straightness ``S`` of Liu et al. (2022, eq. 7) of the trajectory
  in the flow coordinates above (for a rectified flow, ``z = x`` and ``tau = t``: the same as
  :func:`~timestepper.train.generate.straightness`); 0 for a first-order path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..core.validation import check_int, check_state
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing
from ..diffusion.schedules import NoiseSchedule
from ..sampling.sample import sample
from ..solvers.registry import get as get_solver
from .generate import path_straightness, reflow_pairs
from .loop import TrainResult, train
from .model import DenoisingModel
from .objectives import DenoisingObjective
from .teacher import check_teacher


def rectified_pairs(  # noqa: PLR0913 - keyword options of the front, mirroring reflow_pairs
    teacher: Denoiser,
    n: int,
    shape: tuple[int, ...],
    *,
    prediction: str,
    solver: str = "dpmpp-2m",
    steps: int = 20,
    grid: str | None = None,
    seed: int = 0,
    batch_size: int = 1000,
) -> tuple[Tensor, Tensor]:
    """``(noise, samples)``: ``n`` pairs coupled by the teacher's deterministic ODE sampler
    (``solver`` with ``steps`` steps on ``grid``, default the schedule's spacing).

    Raises:
        ValueError: ``prediction`` does not match the teacher's Denoiser, or ``solver`` is
            stochastic (the pairing must be a deterministic map of the noise).
    """
    check_teacher(teacher, prediction)
    slv = get_solver(solver)
    if slv.is_stochastic:
        raise ValueError(f"solver {solver!r} is stochastic; Rectified Diffusion pairs need a "
                         "deterministic ODE sampler (e.g. 'ddim', 'dpmpp-2m')")
    return reflow_pairs(teacher, n, shape, solver, steps, grid, seed=seed, batch_size=batch_size)


def rectified_objective(schedule: NoiseSchedule, prediction: str = "epsilon",
                        **kwargs: Any) -> DenoisingObjective:
    """The model's own denoising objective (``uniform`` weighting unless given), to be trained
    on coupled pairs passed as ``noise=`` (Rectified Diffusion)."""
    return DenoisingObjective(schedule, prediction, **kwargs)


@dataclass
class RectifiedResult:
    """The retrained model as a :class:`Denoiser` (EMA weights when EMA was used) and the
    training result."""

    denoiser: Denoiser
    training: TrainResult


def rectify(teacher: Denoiser, model: DenoisingModel, pairs: tuple[Tensor, Tensor], *,
            prediction: str, objective: DenoisingObjective | None = None,
            **train_kwargs: Any) -> RectifiedResult:
    """Retrain ``model`` (usually a copy of the teacher's network) on the teacher's coupled
    ``pairs = (noise, samples)`` with its own parameterisation (Rectified Diffusion).

    Args:
        teacher: the model the pairs came from (its schedule and prediction type are kept).
        model: the :class:`DenoisingModel` to train, on the teacher's schedule.
        pairs: ``(noise, samples)`` from :func:`rectified_pairs`, of equal shapes.
        prediction: the teacher's prediction type, declared; the retrained model predicts it too.
        objective: default :func:`rectified_objective` of the teacher's schedule and type.
        train_kwargs: options of :func:`~timestepper.train.loop.train` (``steps``, ``lr``, ...).
    """
    check_teacher(teacher, prediction)
    noise, samples = _check_pairs(pairs)
    if not isinstance(model, DenoisingModel):
        raise TypeError(f"model must be a DenoisingModel, got {type(model).__name__}")
    if type(model.schedule) is not type(teacher.schedule):
        raise ValueError(f"model schedule {model.schedule!r} differs from the teacher's {teacher.schedule!r}")
    obj = rectified_objective(teacher.schedule, teacher.prediction) if objective is None else objective
    if obj.prediction != teacher.prediction:
        raise ValueError(f"objective predicts {obj.prediction!r} but the teacher (declared "
                         f"{teacher.prediction!r}) is kept in its own parameterisation")
    res = train(model, obj, samples, noise=noise, **train_kwargs)
    return RectifiedResult(Denoiser(res.sampling_model, teacher.schedule, teacher.prediction), res)


def _check_pairs(pairs: object) -> tuple[Tensor, Tensor]:
    if not isinstance(pairs, (tuple, list)) or len(pairs) != 2:
        raise TypeError("pairs must be a (noise, samples) tuple of tensors")
    noise, samples = check_state("noise", pairs[0]), check_state("samples", pairs[1])
    if noise.shape != samples.shape:
        raise ValueError(f"pairs: noise shape {tuple(noise.shape)} must equal samples shape "
                         f"{tuple(samples.shape)}")
    return noise, samples


def _ddim_trajectory(denoiser: Denoiser, noise: Tensor, steps: int, grid: str | None):
    """States ``x_0..x_K`` and the :class:`SamplingGrid` of a ``steps``-step DDIM solve."""
    check_state("noise", noise)
    steps = check_int(steps, "steps", 1)
    spacing = default_spacing(denoiser.schedule) if grid is None else grid
    sol = sample(denoiser, noise, "ddim", steps, spacing, save="all", return_solution=True)
    return sol.ys, sol.extras["grid"]


@torch.no_grad()
def first_order_deviation(denoiser: Denoiser, noise: Tensor, steps: int = 32,
                          grid: str | None = None) -> float:
    """How far the ``K = steps``-step DDIM trajectory from ``noise`` (grid default: the
    schedule's spacing) is from the first-order path through its end points: in the flow
    coordinates ``z_i = x_i / (alpha_i + sigma_i)``, ``tau_i = sigma_i / (alpha_i + sigma_i)``,

    ``D = (1 / (K - 1)) sum_{0 < i < K} mean_b |z_i - z_K - (tau_i / tau_0) (z_0 - z_K)|^2 / d``

    (``x = alpha x0 + sigma eps`` for one fixed pair is ``z = (1 - tau) x0 + tau eps``, linear in
    ``tau``; ``tau_0 < 1`` where the grid starts short of pure noise). On a DDIM
    trajectory (Euler in ``z``) ``D = 0`` exactly when the data prediction is constant along it,
    the first-order property of Rectified Diffusion. No extra model evaluations; 0 for
    ``steps = 1``."""
    ys, sgrid = _ddim_trajectory(denoiser, noise, steps, grid)
    z, tau = _flow_coordinates(ys, sgrid)
    inner = range(1, sgrid.steps)
    if not inner:
        return 0.0
    total = 0.0
    for i in inner:
        chord = z[-1] + float(tau[i] / tau[0]) * (z[0] - z[-1])  # the line through (tau_0, z_0), (0, z_K)
        total += float((z[i] - chord).pow(2).flatten(1).mean())
    return total / len(inner)


def _flow_coordinates(ys, sgrid) -> tuple[list[Tensor], Tensor]:
    """``z_i = x_i / (alpha_i + sigma_i)`` (float64) and ``tau_i = sigma_i / (alpha_i + sigma_i)``."""
    norm = sgrid.alpha + sgrid.sigma
    z = [y.double() / c for y, c in zip(ys, norm.tolist(), strict=True)]
    return z, sgrid.sigma / norm


@torch.no_grad()
def flow_straightness(denoiser: Denoiser, noise: Tensor, steps: int = 32,
                      grid: str | None = None) -> float:
    """Straightness ``S`` (Liu et al. 2022, eq. 7) of the ``steps``-step DDIM trajectory from
    ``noise`` in the flow coordinates ``z = x / (alpha + sigma)``, ``tau = sigma / (alpha +
    sigma)`` (DDIM is Euler there); equal to :func:`~timestepper.train.generate.straightness` for
    a rectified flow on a uniform grid, defined for every schedule."""
    ys, sgrid = _ddim_trajectory(denoiser, noise, steps, grid)
    z, tau = _flow_coordinates(ys, sgrid)
    return path_straightness(z, tau)


__all__ = ["RectifiedResult", "first_order_deviation", "flow_straightness", "rectified_objective",
           "rectified_pairs", "rectify"]
