"""PDE-Refiner (Lippe, Veeling, Perdikaris, Turner & Brandstetter 2023, "PDE-Refiner: Achieving
Accurate Long Rollouts with Neural PDE Solvers", the refinement process of sec. 3).

One model ``NN(x_k, u(t - dt), k)`` does ``K + 1`` jobs. At step ``k = 0`` it predicts ``u(t)``
from ``u(t - dt)`` alone; at ``k = 1..K`` the current prediction is perturbed with Gaussian noise
of decreasing level and the model removes it, so the later steps focus on the low-amplitude
(high-frequency) components that a one-step MSE model neglects. Training draws ``k ~ U{0..K}``
per sample. The spread of rollouts with different noise draws is the paper's uncertainty
estimate.

Two noise parameterisations (``schedule``):

``"ddpm"`` (default) - the authors' released code (PDEArena, ``pdearena/models/pderefiner.py``),
which produced the paper's numbers: a variance-preserving DDPM with betas
``beta_k = sigma_min^(k / K)`` (so ``beta_0 = 1``), ``alpha_bar_k = prod_{j=k..K} (1 - beta_j)``,
noisy input ``x_k = sqrt(alpha_bar_k) y + sqrt(1 - alpha_bar_k) eps`` (pure noise at ``k = 0``),
v-prediction target ``v = sqrt(alpha_bar_k) eps - sqrt(1 - alpha_bar_k) y``, estimate
``y_hat = sqrt(alpha_bar_k) x_k - sqrt(1 - alpha_bar_k) v_hat``, and the DDPM posterior
``q(x_{k+1} | x_k, y_hat)`` between steps. ``sigma_min`` is thus a *variance* increment: the noise
standard deviations are ``sqrt(1 - alpha_bar_k) ~ sigma_min^(k / 2K)``; for KS (``K = 3``,
``sigma_min = 4e-7``) ``1, 8.6e-2, 7.4e-3, 6.3e-4``.

``"std"`` - the pseudocode of the paper's appendix read literally: ``u + sigma_k eps`` with the
standard deviation ``sigma_k = sigma_min^(k / K)`` (``7.4e-3, 5.4e-5, 4e-7`` for KS), input zero
at ``k = 0`` (target ``y``), noise prediction at ``k >= 1``, fresh noise at each step. Its first
refinement noise lies below the error of a small model's initial prediction and its last two lie
at float32 resolution of O(1) fields, so the refinement barely changes the prediction (kept for
comparison; see ``benchmarks/pde_refiner.py``).

``y`` is the target: ``u(t)``, or with ``predict_difference`` (the released KS configuration)
``(u(t) - u(t - dt)) / difference_weight``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..core.validation import check_int

SCHEDULES = ("ddpm", "std")


def _ddpm_coefficients(num_steps: int, min_noise_std: float) -> dict[str, list[float]]:
    """Per-step float64 coefficients of the released code's VP-DDPM with v-prediction."""
    betas = [min_noise_std ** (k / num_steps) for k in range(num_steps + 1)]
    abar = [math.prod(1.0 - b for b in betas[k:]) for k in range(num_steps + 1)]
    a = [math.sqrt(x) for x in abar]
    s = [math.sqrt(1.0 - x) for x in abar]
    # posterior q(x_{k+1} | x_k, y_hat) of DDPM (Ho et al. 2020, eq. 7), "fixed_small" variance;
    # the last step returns y_hat itself.
    post_y, post_x, post_z = [], [], []
    for k in range(num_steps):
        beta_t = 1.0 - abar[k] / abar[k + 1]
        post_y.append(a[k + 1] * beta_t / (1.0 - abar[k]))
        post_x.append(math.sqrt(1.0 - beta_t) * (1.0 - abar[k + 1]) / (1.0 - abar[k]))
        post_z.append(math.sqrt((1.0 - abar[k + 1]) / (1.0 - abar[k]) * beta_t))
    return {
        "in_y": a, "in_eps": s, "tgt_eps": a, "tgt_y": [-x for x in s],
        "est_x": a, "est_out": [-x for x in s],
        "post_y": post_y, "post_x": post_x, "post_z": post_z, "init": [1.0],
    }  # fmt: skip


def _std_coefficients(num_steps: int, min_noise_std: float) -> dict[str, list[float]]:
    """Per-step float64 coefficients of the appendix pseudocode (noise std ``sigma_k``)."""
    sig = [0.0] + [min_noise_std ** (k / num_steps) for k in range(1, num_steps + 1)]
    first = [1.0] + [0.0] * num_steps
    rest = [0.0] + [1.0] * num_steps
    return {
        "in_y": rest, "in_eps": sig, "tgt_eps": rest, "tgt_y": first,
        "est_x": rest, "est_out": [1.0] + [-x for x in sig[1:]],
        "post_y": [1.0] * num_steps, "post_x": [0.0] * num_steps, "post_z": sig[1:],
        "init": [0.0],
    }  # fmt: skip


class PDERefiner(nn.Module):
    """The refinement process around a conditioned network.

    Args:
        net: ``net(x, cond)`` with ``x`` of shape ``(B, 2, *space)`` (``[u_prev, x_k]``) and
            ``cond`` the refinement step as a float tensor ``(B,)`` (``k * time_multiplier``);
            one output channel.
        num_steps: ``K``, refinement steps after the initial prediction (paper: 3 for KS).
        min_noise_std: ``sigma_min`` (paper and released KS config: 4e-7); its meaning depends
            on ``schedule`` (module docstring).
        schedule: ``"ddpm"`` (the released code, default) or ``"std"`` (the appendix pseudocode).
        time_multiplier: scale of ``k`` before the network's embedding; default ``1000 / K`` as
            in the released code (spreads the steps over a diffusion-time embedding's range).
        predict_difference: the target is ``(u(t) - u(t - dt)) / difference_weight`` (the
            released KS configuration: ``True``, ``0.3``) instead of ``u(t)``.
        difference_weight: the scale of that difference.
    """

    def __init__(  # noqa: PLR0913 - the paper's hyperparameters, all keyword-only
        self,
        net: nn.Module,
        *,
        num_steps: int = 3,
        min_noise_std: float = 4e-7,
        schedule: str = "ddpm",
        time_multiplier: float | None = None,
        predict_difference: bool = False,
        difference_weight: float = 1.0,
    ) -> None:
        super().__init__()
        num_steps = check_int(num_steps, "num_steps", 1)
        if not 0 < min_noise_std < 1:
            raise ValueError(f"min_noise_std must be in (0, 1), got {min_noise_std!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not difference_weight > 0:
            raise ValueError(f"difference_weight must be > 0, got {difference_weight!r}")
        self.net = net
        self.num_steps = num_steps
        self.min_noise_std = float(min_noise_std)
        self.schedule = schedule
        self.time_multiplier = (
            1000.0 / num_steps if time_multiplier is None else float(time_multiplier)
        )
        self.predict_difference = bool(predict_difference)
        self.difference_weight = float(difference_weight)
        make = _ddpm_coefficients if schedule == "ddpm" else _std_coefficients
        self._coef = make(num_steps, self.min_noise_std)

    @property
    def noise_stds(self) -> list[float]:
        """Standard deviation of the noise in the network's input at ``k = 0..K`` relative to
        the target's scale (``k = 0``: 1 for ``"ddpm"``, whose input there is pure noise, 0 for
        ``"std"``, whose input there is zero)."""
        return list(self._coef["in_eps"])

    def _table(self, name: str, like: Tensor) -> Tensor:
        return torch.tensor(self._coef[name], dtype=like.dtype, device=like.device)

    def _net(self, u_prev: Tensor, x: Tensor, k: Tensor) -> Tensor:
        cond = k.to(u_prev.dtype) * self.time_multiplier
        return self.net(torch.stack([u_prev, x], dim=1), cond).squeeze(1)

    def _target(self, u_prev: Tensor, u_next: Tensor) -> Tensor:
        if self.predict_difference:
            return (u_next - u_prev) / self.difference_weight
        return u_next

    def _field(self, u_prev: Tensor, y: Tensor) -> Tensor:
        if self.predict_difference:
            return u_prev + self.difference_weight * y
        return y

    def loss(
        self,
        u_prev: Tensor,
        u_next: Tensor,
        generator: torch.Generator | None = None,
        *,
        step: int | None = None,
    ) -> Tensor:
        """Training: ``k ~ U{0..K}`` per sample (or ``k = step`` for all, a diagnostic), the MSE
        between the network's output and the step's target (module docstring), averaged over
        the batch and space."""
        b = u_prev.shape[0]
        if step is None:
            dev = u_prev.device if generator is None else generator.device
            k = torch.randint(0, self.num_steps + 1, (b,), generator=generator, device=dev)
            k = k.to(u_prev.device)
        else:
            step = check_int(step, "step", 0)
            if step > self.num_steps:
                raise ValueError(f"step must be in 0..{self.num_steps}, got {step}")
            k = torch.full((b,), step, dtype=torch.long, device=u_prev.device)
        y = self._target(u_prev, u_next)
        eps = self._noise(y, generator)
        shape = (b,) + (1,) * (y.ndim - 1)

        def c(name: str) -> Tensor:
            return self._table(name, y)[k].view(shape)

        x = c("in_y") * y + c("in_eps") * eps
        target = c("tgt_eps") * eps + c("tgt_y") * y
        return nn.functional.mse_loss(self._net(u_prev, x, k), target)

    @torch.no_grad()
    def predict(self, u_prev: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Inference: the initial prediction, then ``K`` noise-and-denoise refinements; returns
        the last estimate of ``u(t)``."""
        c = {name: self._coef[name] for name in self._coef}
        kvec = torch.zeros(u_prev.shape[0], device=u_prev.device, dtype=torch.long)
        x = c["init"][0] * self._noise(u_prev, generator)
        y_hat = x
        for k in range(self.num_steps + 1):
            y_hat = c["est_x"][k] * x + c["est_out"][k] * self._net(u_prev, x, kvec + k)
            if k < self.num_steps:
                x = c["post_y"][k] * y_hat + c["post_x"][k] * x
                x = x + c["post_z"][k] * self._noise(u_prev, generator)
        return self._field(u_prev, y_hat)

    @staticmethod
    def _noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
        """Standard normal noise shaped like ``like``, drawn on the generator's device."""
        device = like.device if generator is None else generator.device
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(
            like.device
        )


__all__ = ["PDERefiner"]
