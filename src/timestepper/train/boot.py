"""BOOT: data-free distillation of a diffusion model into a one-step student by bootstrapping
(Gu, Zhai, Zhang, Liu & Susskind 2023, "BOOT: Data-free Distillation of Denoising Diffusion
Models with Bootstrapping", arXiv 2306.05544).

**Signal-ODE** (the paper's Sec. 3.1). Along the teacher's probability-flow ODE started at
``x_T = eps`` (the sampler's initial state, ``eps`` scaled by ``sqrt(alpha_T^2 + sigma_T^2)``), the
*signal* ``y_t = (x_t - sigma_t eps) / alpha_t`` obeys

``dy_t / dt = -lambda'(t) (f(x_t, t) - y_t)``, ``x_t = alpha_t y_t + sigma_t eps``,

with ``f`` the teacher's data prediction and ``lambda = log(sigma / alpha)`` (the negative
log-SNR). The student ``g_theta(eps, t)`` (:class:`BootStudent`) predicts ``y_t`` from the noise
alone, for every ``t``; at the data end ``y = x``, so ``g_theta(eps, t_data)`` is the teacher's
sample in one network evaluation.

**Bootstrapping** (the paper's Sec. 3.2). No data is used: for two consecutive times ``t > s``
the student's own ``y_t`` is advanced by one teacher step of the Signal-ODE with ``f`` frozen over
the step (its exact solution then, the DDIM step of Song et al. 2021 written in ``y``):

``y_s = y_t + delta (f(alpha_t y_t + sigma_t eps, t) - y_t)``,
``delta = 1 - exp(lambda_s - lambda_t) = 1 - (alpha_t sigma_s) / (sigma_t alpha_s)``,

and ``g_theta(eps, s)`` is regressed onto it with the target's gradient stopped and the weight
``1 / delta^2`` (the loss is then one on the finite-difference derivative
``(g(eps, s) - g(eps, t)) / delta`` against ``f - y_t``, whose scale does not depend on the step):

``L_BS = E_{eps, t} 1/delta^2 |g_theta(eps, s) - sg[y_t + delta (f(x_t, t) - y_t)]|^2``

(the paper's bootstrapping objective; the exponential-integrator form of ``delta`` and the
``1/delta^2`` weight are as we read the paper, whose full text we could not re-check here).
The start of the trajectory is pinned by the boundary condition ``g_theta(eps, T) = f(x_T, T)``
(the teacher's prediction from pure noise), regressed with weight 1 on the samples drawn for it.

Choices made here (the paper samples ``t`` uniformly with a fixed step): the pairs ``(t, s)`` are
consecutive points of a sampling grid of ``intervals`` steps (default spacing of the schedule, the
last point ``t_data``), so that the student's fixed point is exactly the teacher's
``intervals``-step DDIM trajectory; one of the ``intervals + 1`` "edges" (the boundary or a
bootstrapping step) is drawn per sample. No EMA of the student is needed for the targets (the
paper's point; the online student under ``no_grad`` makes them), an EMA copy for sampling is
optional. The teacher is called with one time per sample.

Few-step use (:func:`boot_sample` with ``teacher_steps > 0``): the student jumps from the noise to
the teacher's trajectory at the second point of an ``(teacher_steps + 1)``-step grid, replacing
the teacher's first (largest) step, and the teacher's solver finishes in ``teacher_steps`` steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..core.validation import check_int, check_positive, check_state
from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import SamplingGrid, default_spacing, make_grid
from ..diffusion.schedules import NoiseSchedule
from ..sampling.sample import sample
from .ema import EMA
from .teacher import check_teacher, teacher_data_prediction


class BootStudent(nn.Module):
    """The student ``g_theta(eps, t)``: the signal ``y_t`` of the teacher's ODE trajectory from
    the noise ``eps``, in the schedule's own time ``t``.

    The network sees ``eps`` and ``c_noise = time_scale * sigma / (alpha + sigma)`` (the flow time
    of the schedule: 0 at the data, 1 at pure noise; finite on every schedule, also at
    ``t_data``), and its output is the signal itself (sample parameterisation, as in the paper:
    the student predicts ``y_t``, not ``x_t`` or a noise).

    Args:
        net: a network ``net(x, c_noise, labels=None)`` (:class:`~timestepper.train.networks.MLP`,
            :class:`~timestepper.train.networks.UNet`) with the data's shape.
        schedule: the teacher's noise schedule.
        time_scale: factor on the flow time (1000 as the networks' sinusoidal embedding expects).
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, time_scale: float = 1000.0) -> None:
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.net = net
        self.schedule = schedule
        self.time_scale = check_positive(time_scale, "time_scale")

    def c_noise(self, t: Tensor) -> Tensor:
        """The network's time input at float64 times ``t`` (float32)."""
        al, si = self.schedule.alpha_sigma(torch.as_tensor(t, dtype=torch.float64).cpu())
        return (self.time_scale * si / (al + si)).to(torch.float32)

    def forward(self, eps: Tensor, t: Tensor) -> Tensor:
        """``y_t`` for noise ``eps (B, ...)`` and times ``t`` (scalar or ``(B,)``, float64 in the
        schedule's time)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if t.ndim == 0:
            t = t.expand(eps.shape[0])
        if t.shape != (eps.shape[0],):
            raise ValueError(f"t must be a scalar or hold one time per sample ({eps.shape[0]}), "
                             f"got shape {tuple(t.shape)}")
        return self.net(eps, self.c_noise(t).to(eps.device))


@dataclass(frozen=True)
class BootEdges:
    """The bootstrapping pairs of a grid ``t_0 > ... > t_K = t_data``: edge ``0`` is the boundary
    at ``t_0`` and edge ``j >= 1`` the step from ``t_{j-1}`` to ``t_j``.

    ``start``/``end``: float64 times ``(K + 1,)`` of each edge (``start = end = t_0`` for the
    boundary); ``alpha``/``sigma``: the schedule at ``start``; ``delta``: the step's
    ``1 - (alpha_t sigma_s) / (sigma_t alpha_s)`` (1 at the boundary and at the last step);
    ``prior_std``: the sampler's scale of the noise at ``t_0``.
    """

    start: Tensor
    end: Tensor
    alpha: Tensor
    sigma: Tensor
    delta: Tensor
    prior_std: float

    @classmethod
    def from_grid(cls, grid: SamplingGrid) -> BootEdges:
        t, al, si = grid.t, grid.alpha, grid.sigma
        start = torch.cat([t[:1], t[:-1]])
        delta = 1.0 - (al[:-1] * si[1:]) / (si[:-1] * al[1:])
        prior = float(torch.sqrt(al[0] ** 2 + si[0] ** 2))
        return cls(start=start, end=t.clone(), alpha=torch.cat([al[:1], al[:-1]]),
                   sigma=torch.cat([si[:1], si[:-1]]),
                   delta=torch.cat([torch.ones(1, dtype=torch.float64), delta]), prior_std=prior)

    @property
    def count(self) -> int:
        return self.end.numel()


def boot_edges(schedule: NoiseSchedule, intervals: int = 32, grid: str | None = None) -> BootEdges:
    """The edges of an ``intervals``-step grid of ``schedule`` (spacing ``grid``, default the
    schedule's default spacing), ending at ``t_data``."""
    intervals = check_int(intervals, "intervals", 1)
    spacing = default_spacing(schedule) if grid is None else grid
    return BootEdges.from_grid(make_grid(schedule, intervals, spacing))


def boot_target(student: nn.Module, teacher: Denoiser, eps: Tensor, edges: BootEdges,
                index: Tensor) -> tuple[Tensor, Tensor]:
    """The stopped-gradient target and the weight ``1 / delta^2`` of each sample of ``eps`` for
    its edge ``index (B,)``: ``f(x_T, T)`` at the boundary (edge 0, ``x_T = prior_std eps``), else
    ``y_t + delta (f(alpha_t y_t + sigma_t eps, t) - y_t)`` with ``y_t = student(eps, t)``."""
    shape = (-1,) + (1,) * (eps.ndim - 1)

    def col(v: Tensor) -> Tensor:
        return v[index].to(device=eps.device, dtype=eps.dtype).view(shape)

    t = edges.start[index]
    with torch.no_grad():
        y_t = _signal(student, eps, t)
        boundary = (index == 0).to(eps.device).view(shape)
        x_t = torch.where(boundary, edges.prior_std * eps, col(edges.alpha) * y_t + col(edges.sigma) * eps)
        f = teacher_data_prediction(teacher, x_t, t)
        d = col(edges.delta)
        target = torch.where(boundary, f, y_t + d * (f - y_t))
    return target, (1.0 / edges.delta[index] ** 2).to(device=eps.device, dtype=eps.dtype)


def boot_loss(student: nn.Module, teacher: Denoiser, eps: Tensor, edges: BootEdges,
              index: Tensor) -> Tensor:
    """The bootstrapping loss (module docstring) of a batch of noise for the edges ``index``:
    ``mean_b w_b mean |g(eps_b, s_b) - target_b|^2``."""
    target, w = boot_target(student, teacher, eps, edges, index)
    y_s = _signal(student, eps, edges.end[index])
    return (w * (y_s - target).flatten(1).pow(2).mean(1)).mean()


def _signal(student: nn.Module, eps: Tensor, t: Tensor) -> Tensor:
    """``student(eps, t)``, refused unless shaped like the noise."""
    y = student(eps, t)
    if y.shape != eps.shape:
        raise ValueError(f"student output {tuple(y.shape)} must have the noise's shape {tuple(eps.shape)}")
    return y


@dataclass
class BootResult:
    """The distilled student (its EMA copy when ``ema_decay`` was given), the raw student, the
    loss of every iteration, and the wall time of the distillation."""

    student: BootStudent
    raw: BootStudent
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class _BootRun:
    teacher: Denoiser
    student: BootStudent
    edges: BootEdges
    shape: tuple[int, ...]
    batch_size: int
    grad_clip: float | None
    gen: torch.Generator


def boot_distill(  # noqa: PLR0913 - keyword options of the front, all with defaults
    teacher: Denoiser,
    student: BootStudent,
    shape: tuple[int, ...],
    *,
    prediction: str,
    iterations: int = 1000,
    batch_size: int = 128,
    lr: float = 1e-3,
    intervals: int = 32,
    grid: str | None = None,
    grad_clip: float | None = 1.0,
    ema_decay: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> BootResult:
    """Distil ``teacher`` into ``student`` with BOOT's bootstrapping loss, without data.

    Args:
        teacher: the model (frozen; called with one time per sample).
        student: a :class:`BootStudent` on the teacher's schedule (trained in place).
        shape: shape of one sample.
        prediction: the teacher's prediction type, declared (``epsilon``, ``sample``,
            ``v_prediction``, ``velocity``, ``score``); refused when the teacher's Denoiser
            predicts another (:func:`~timestepper.train.teacher.check_teacher`).
        iterations, batch_size, lr: Adam steps on batches of fresh noise.
        intervals, grid: the bootstrapping grid (:func:`boot_edges`).
        grad_clip: max gradient norm (``None``: no clipping).
        ema_decay: keep an EMA copy of the student for sampling (``None``: none).
        seed: seeds the noise and the edges drawn.
    """
    _check_inputs(teacher, student, shape, prediction)
    iterations, batch_size = check_int(iterations, "iterations", 1), check_int(batch_size, "batch_size", 1)
    check_positive(lr, "lr")
    run = _BootRun(teacher, student, boot_edges(teacher.schedule, intervals, grid), tuple(shape),
                   batch_size, grad_clip, torch.Generator().manual_seed(check_int(seed, "seed")))
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    ema = EMA(student, ema_decay) if ema_decay is not None else None
    student.train()
    losses = []
    t0 = time.perf_counter()
    for _ in tqdm(range(iterations), disable=not progress, desc="boot"):
        losses.append(_iteration(run, opt))
        if ema is not None:
            ema.update(student)
    seconds = time.perf_counter() - t0
    student.eval()
    final = ema.module if ema is not None else student
    return BootResult(student=final, raw=student, losses=losses, seconds=seconds)


def _check_inputs(teacher: Denoiser, student: BootStudent, shape: tuple[int, ...], prediction: str) -> None:
    check_teacher(teacher, prediction)
    if not isinstance(student, BootStudent):
        raise TypeError(f"student must be a BootStudent, got {type(student).__name__}")
    if type(student.schedule) is not type(teacher.schedule):
        raise ValueError(f"student schedule {student.schedule!r} differs from the teacher's "
                         f"{teacher.schedule!r}")
    if not isinstance(shape, tuple) or not shape:
        raise ValueError(f"shape must be the non-empty tuple shape of one sample, got {shape!r}")
    for n in shape:
        check_int(n, "every entry of shape", 1)


def _iteration(run: _BootRun, opt: torch.optim.Optimizer) -> float:
    dev = next(run.student.parameters()).device
    eps = torch.randn((run.batch_size, *run.shape), generator=run.gen).to(dev)
    index = torch.randint(0, run.edges.count, (run.batch_size,), generator=run.gen)
    loss = boot_loss(run.student, run.teacher, eps, run.edges, index)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.student.parameters(), run.grad_clip)
    opt.step()
    return loss.item()  # training loop, not a sampling step: one sync per iteration


@torch.no_grad()
def boot_sample(student: BootStudent, noise: Tensor, teacher: Denoiser | None = None,
                teacher_steps: int = 0, solver: str = "ddim", grid: str | None = None) -> Tensor:
    """Samples from noise: ``g(noise, t_data)`` (one student evaluation), or with
    ``teacher_steps > 0`` the student's jump to the second point ``t_1`` of a
    ``(teacher_steps + 1)``-step grid (spacing ``grid``, default the schedule's) followed by
    ``teacher_steps`` steps of the teacher with ``solver`` from ``x_1 = alpha_1 g(noise, t_1) +
    sigma_1 noise``: ``1 + teacher_steps`` evaluations in all."""
    check_state("noise", noise)
    teacher_steps = check_int(teacher_steps, "teacher_steps", 0)
    sch = student.schedule
    if teacher_steps == 0:
        return student(noise, torch.tensor(sch.t_data, dtype=torch.float64))
    if not isinstance(teacher, Denoiser):
        raise ValueError("teacher_steps > 0 needs teacher= (the teacher's Denoiser)")
    if type(teacher.schedule) is not type(sch):
        raise ValueError(f"teacher schedule {teacher.schedule!r} differs from the student's {sch!r}")
    full = make_grid(sch, teacher_steps + 1, default_spacing(sch) if grid is None else grid)
    a1, s1 = float(full.alpha[1]), float(full.sigma[1])
    x1 = a1 * student(noise, full.t[1]) + s1 * noise
    # sample() scales its input by sqrt(alpha^2 + sigma^2) at the first grid time
    return sample(teacher, x1 / (a1 * a1 + s1 * s1) ** 0.5, solver, grid=full.t[1:-1])


__all__ = ["BootEdges", "BootResult", "BootStudent", "boot_distill", "boot_edges", "boot_loss",
           "boot_sample", "boot_target"]
