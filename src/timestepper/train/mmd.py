"""MMD-DDM: fine-tuning a denoiser for a fixed, small step budget (Aiello, Valsesia & Magli
2023, "Fast inference in denoising diffusion models via MMD finetuning", arXiv 2301.07969).

The pretrained model is sampled with a fixed solver and a fixed number of steps ``T`` (the
budget); the samples ``x = S_theta(z)`` are compared with a batch of data by the unbiased
estimator of the squared maximum mean discrepancy (Gretton et al. 2012, Lemma 6)

``MMD_u^2 = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
- 2/(mn) sum_{i,j} k(x_i, y_j)``

on features ``phi`` of the samples, and the loss is backpropagated through the whole sampling
chain into the weights (the paper's Sec. III). The gradient goes through :func:`timestepper.sample`
with ``gradient="direct"`` (autograd, memory grows with ``T``), ``"checkpoint"`` or
``"adjoint"`` (AdjointDPM; ``ddim``/``bdia-ddim``), see :mod:`timestepper.sampling.adjoint`.

Kernels:

* ``"polynomial"`` (default, the paper's): the cubic kernel of the Kernel Inception Distance
  (Binkowski et al. 2018), ``k(a, b) = (a.b / d + 1)^3`` with ``d`` the feature dimension. The
  paper applies it to Inception-v3 (or CLIP) features of images.
* ``"rbf"``: a mixture of Gaussian kernels ``sum_h exp(-|a - b|^2 / (2 h^2))`` over bandwidths
  ``h`` (``rbf_bandwidths``; default the median pairwise distance of a data batch times 1/4,
  1/2, 1, 2, 4, fixed for the whole run), suited to raw low-dimensional samples.
* any callable ``k(a, b) -> (len(a), len(b))`` Gram matrix.

Features: ``"raw"`` (the flattened samples), ``"digits"`` (the 64 penultimate activations of
the digits classifier of :mod:`timestepper.train.metrics`, the role Inception-v3 plays in the
paper, for ``(N, 1, 8, 8)`` digits; note that the Fréchet distance of the metric uses the same
features) or a callable ``phi(x) -> (N, D)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..diffusion.denoiser import Denoiser
from ..diffusion.grids import default_spacing
from ..sampling.adjoint import GRADIENTS
from ..sampling.sample import sample

KERNELS = ("polynomial", "rbf")
FEATURES = ("raw", "digits")
RBF_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)

Kernel = Callable[[Tensor, Tensor], Tensor]
FeatureMap = Callable[[Tensor], Tensor]


def polynomial_kernel(a: Tensor, b: Tensor, degree: int = 3, coef0: float = 1.0) -> Tensor:
    """``(a.b / d + coef0)^degree`` for rows of ``a (m, d)`` and ``b (n, d)``: the KID kernel
    (Binkowski et al. 2018) that MMD-DDM uses on features."""
    return (a @ b.T / a.shape[1] + coef0) ** degree


def rbf_kernel(a: Tensor, b: Tensor, bandwidths: Sequence[float]) -> Tensor:
    """``sum_h exp(-|a_i - b_j|^2 / (2 h^2))`` over ``bandwidths``."""
    d2 = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp(min=0)
    return sum(torch.exp(-d2 / (2.0 * h * h)) for h in bandwidths)  # type: ignore[return-value]


def mmd2_unbiased(x: Tensor, y: Tensor, kernel: Kernel = polynomial_kernel) -> Tensor:
    """The unbiased estimator of ``MMD^2`` between samples ``x (m, d)`` and ``y (n, d)``
    (Gretton et al. 2012, Lemma 6; the diagonal of the within-set Gram matrices is left out, so
    the estimate can be negative). Differentiable in both arguments."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (m, d) and (n, d) with the same d, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set, got {m} and {n}")
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2.0 * kxy.mean()


def median_bandwidths(y: Tensor, scales: Sequence[float] = RBF_SCALES) -> tuple[float, ...]:
    """The median pairwise distance of the rows of ``y`` times each of ``scales``."""
    d = torch.cdist(y.detach().double(), y.detach().double())
    off = d[~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)]
    med = float(off.median())
    if not med > 0:
        raise ValueError("the data batch has no spread (median pairwise distance 0); pass "
                         "rbf_bandwidths explicitly")
    return tuple(med * s for s in scales)


def _digits_features(x: Tensor) -> Tensor:
    from .metrics import digits_classifier

    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
        raise ValueError(f"features='digits' needs (N, 1, 8, 8) samples, got {tuple(x.shape)}")
    clf = digits_classifier().to(x.device)
    return clf.features(x.float())


def feature_map(features: str | FeatureMap) -> FeatureMap:
    """The feature map named by ``features`` (``"raw"``, ``"digits"``) or the callable itself."""
    if callable(features):
        return features
    if features == "raw":
        return lambda x: x.flatten(1)
    if features == "digits":
        return _digits_features
    raise ValueError(f"unknown features {features!r}; choose from {', '.join(FEATURES)} or pass a "
                     "callable x -> (N, D)")


def make_kernel(kernel: str | Kernel, reference: Tensor,
                rbf_bandwidths: Sequence[float] | None = None) -> Kernel:
    """The kernel named by ``kernel``; ``"rbf"`` without bandwidths takes them from the
    median heuristic on the feature batch ``reference``."""
    if callable(kernel):
        return kernel
    if kernel == "polynomial":
        return polynomial_kernel
    if kernel == "rbf":
        bw = tuple(float(h) for h in rbf_bandwidths) if rbf_bandwidths is not None \
            else median_bandwidths(reference)
        if not bw or min(bw) <= 0:
            raise ValueError(f"rbf_bandwidths must be positive numbers, got {rbf_bandwidths!r}")
        return lambda a, b: rbf_kernel(a, b, bw)
    raise ValueError(f"unknown kernel {kernel!r}; choose from {', '.join(KERNELS)} or pass a "
                     "callable k(a, b) -> Gram matrix")


@dataclass(frozen=True)
class MMDBudget:
    """The sampler the model is fine-tuned for: ``solver`` with ``steps`` steps on ``grid``,
    differentiated by ``gradient``."""

    steps: int = 5
    solver: str = "ddim"
    grid: str | None = None
    gradient: str = "direct"

    def check(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {self.gradient!r}")

    def draw(self, denoiser: Denoiser, noise: Tensor) -> Tensor:
        """Samples from ``noise`` at the budget, differentiable by ``gradient``."""
        grid = self.grid or default_spacing(denoiser.schedule)
        return sample(denoiser, noise, self.solver, self.steps, grid,  # type: ignore[return-value]
                      gradient=self.gradient)


@dataclass
class MMDResult:
    """The fine-tuned denoiser, the loss (MMD^2 estimate) of every iteration and the wall
    time of the fine-tuning."""

    denoiser: Denoiser
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Run:
    denoiser: Denoiser
    params: list[nn.Parameter]
    data: Tensor
    phi: FeatureMap
    kernel: Kernel
    budget: MMDBudget
    batch_size: int
    grad_clip: float | None
    gen: torch.Generator


def _check_inputs(denoiser: Denoiser, data: Tensor, iterations: int, batch_size: int,
                  lr: float) -> None:
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    if not isinstance(denoiser.model_fn, nn.Module):
        raise TypeError("denoiser.model_fn must be an nn.Module to be fine-tuned, got "
                        f"{type(denoiser.model_fn).__name__}")
    if not isinstance(data, Tensor) or data.ndim < 2 or not data.is_floating_point():
        raise ValueError("data must be a floating tensor (N, ...) of samples")
    for name, value in (("iterations", iterations), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if batch_size < 2 or batch_size > data.shape[0]:
        raise ValueError(f"batch_size must be between 2 and the number of data samples "
                         f"({data.shape[0]}), got {batch_size}")
    if not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def _trainable_copy(denoiser: Denoiser, inplace: bool) -> Denoiser:
    model = cast(nn.Module, denoiser.model_fn if inplace else copy.deepcopy(denoiser.model_fn))
    model.requires_grad_(True)
    return Denoiser(model, denoiser.schedule, denoiser.prediction, denoiser.model_kwargs)


def _iteration(run: _Run, opt: torch.optim.Optimizer) -> float:
    idx = torch.randperm(run.data.shape[0], generator=run.gen)[: run.batch_size]
    real = run.data[idx.to(run.data.device)]
    noise = torch.randn(real.shape, generator=run.gen, dtype=real.dtype).to(real.device)
    with torch.enable_grad():
        fake = run.budget.draw(run.denoiser, noise)
        loss = mmd2_unbiased(run.phi(fake).double(), run.phi(real).double(), run.kernel)
        opt.zero_grad(set_to_none=True)
        loss.backward()
    if run.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.params, run.grad_clip)
    opt.step()
    return float(loss.detach())


def mmd_finetune(  # noqa: PLR0913 - keyword options of the front, all with defaults
    denoiser: Denoiser,
    data: Tensor,
    steps: int = 5,
    solver: str = "ddim",
    *,
    grid: str | None = None,
    kernel: str | Kernel = "polynomial",
    features: str | FeatureMap = "raw",
    rbf_bandwidths: Sequence[float] | None = None,
    iterations: int = 100,
    batch_size: int = 64,
    lr: float = 1e-4,
    gradient: str = "direct",
    grad_clip: float | None = 0.5,
    seed: int = 0,
    inplace: bool = False,
    progress: bool = False,
) -> MMDResult:
    """Fine-tune ``denoiser`` for sampling with ``solver`` in ``steps`` steps by minimising the
    MMD between its samples and ``data`` (MMD-DDM, Aiello et al. 2023; see the module docstring
    for the estimator, kernels and features).

    Each iteration draws ``batch_size`` data points and as many noises, samples at the budget
    with gradients (``gradient``), computes ``MMD_u^2`` on the features and takes an Adam step
    (``lr``) after clipping the gradient norm to ``grad_clip`` (the authors' code clips at 0.5).

    Args:
        denoiser: the pretrained model; ``denoiser.model_fn`` must be an ``nn.Module`` (its
            parameters are trained). Fixed conditioning in ``model_kwargs`` is kept as is.
        data: training samples ``(N, ...)`` shaped like the model's samples.
        steps, solver, grid: the budget (grid defaults to ``uniform`` for flows, else
            ``logsnr``).
        kernel: ``"polynomial"`` (the paper's cubic kernel), ``"rbf"`` or a callable.
        features: ``"raw"``, ``"digits"`` or a callable feature map.
        rbf_bandwidths: bandwidths of ``"rbf"`` (default: median heuristic on a data batch).
        iterations: optimisation steps.
        batch_size: data points and samples per step (the MMD's ``m = n``).
        lr: Adam learning rate.
        gradient: ``"direct"``, ``"checkpoint"`` or ``"adjoint"`` (see :func:`timestepper.sample`).
        grad_clip: maximum gradient norm (``None``: no clipping).
        seed: seeds the data batches and the noise.
        inplace: train ``denoiser.model_fn`` itself instead of a copy.
        progress: show a progress bar with the loss.

    Returns:
        :class:`MMDResult` with the fine-tuned denoiser (a copy unless ``inplace``), the loss
        per iteration and the wall time.
    """
    _check_inputs(denoiser, data, iterations, batch_size, lr)
    budget = MMDBudget(steps, solver, grid, gradient)
    budget.check()
    gen = torch.Generator().manual_seed(int(seed))
    phi = feature_map(features)
    first = data[torch.randperm(data.shape[0], generator=gen)[:batch_size].to(data.device)]
    with torch.no_grad():
        kern = make_kernel(kernel, phi(first).double(), rbf_bandwidths)
    den = _trainable_copy(denoiser, inplace)
    params = [p for p in cast(nn.Module, den.model_fn).parameters() if p.requires_grad]
    run = _Run(den, params, data, phi, kern, budget, batch_size, grad_clip, gen)
    opt = torch.optim.Adam(params, lr=lr)
    result = MMDResult(den)
    t0 = time.perf_counter()
    bar = tqdm(range(iterations), disable=not progress, desc="mmd-ddm")
    for _ in bar:
        result.losses.append(_iteration(run, opt))
        bar.set_postfix(mmd2=f"{result.losses[-1]:.3g}")
    result.seconds = time.perf_counter() - t0
    return result


@torch.no_grad()
def budget_mmd(denoiser: Denoiser, data: Tensor, noise: Tensor, budget: int | MMDBudget = 5,
               kernel: str | Kernel = "polynomial", features: str | FeatureMap = "raw",
               rbf_bandwidths: Sequence[float] | None = None) -> float:
    """``MMD_u^2`` between the samples of ``denoiser`` from ``noise`` at ``budget`` (a number of
    DDIM steps or an :class:`MMDBudget`) and ``data`` (held out), with the kernel and features of
    :func:`mmd_finetune`."""
    plan = budget if isinstance(budget, MMDBudget) else MMDBudget(budget)
    plan.check()
    phi = feature_map(features)
    real = phi(data).double()
    kern = make_kernel(kernel, real, rbf_bandwidths)
    x = sample(denoiser, noise, plan.solver, plan.steps, plan.grid or default_spacing(denoiser.schedule))
    return float(mmd2_unbiased(phi(x).double(), real, kern))  # type: ignore[arg-type]


__all__ = ["FEATURES", "KERNELS", "MMDBudget", "MMDResult", "budget_mmd", "feature_map",
           "make_kernel", "median_bandwidths", "mmd2_unbiased", "mmd_finetune",
           "polynomial_kernel", "rbf_kernel"]
