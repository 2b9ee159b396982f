"""PDE-Refiner (Lippe, Veeling, Perdikaris, Turner & Brandstetter 2023, "PDE-Refiner: Achieving
Accurate Long Rollouts with Neural PDE Solvers", the refinement process of sec. 3).

One model ``NN(u_tilde, u(t - dt), k)`` does two jobs. At refinement step ``k = 0`` it predicts
``u(t)`` from ``u(t - dt)`` (input ``u_tilde = 0``, MSE objective). At ``k = 1..K`` the current
prediction is perturbed with Gaussian noise of standard deviation ``sigma_k = sigma_min^(k / K)``
and the model predicts that noise; subtracting it refines the prediction (denoising objective
``|eps - NN(u + sigma_k eps, u(t - dt), k)|^2``). Decreasing ``sigma_k`` makes the later steps
focus on the low-amplitude (high-frequency) components that an MSE model neglects. The spread
of rollouts with different noise draws is the paper's uncertainty estimate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.validation import check_int


class PDERefiner(nn.Module):
    """The refinement process around a conditioned network.

    Args:
        net: ``net(x, cond)`` with ``x`` of shape ``(B, 2, *space)`` (``[u_prev, u_tilde]``) and
            ``cond`` the refinement step ``k`` as a float tensor ``(B,)``; one output channel.
        num_steps: ``K``, refinement steps after the initial prediction (paper: 3 for KS).
        min_noise_std: ``sigma_min``, the noise level of the last step (paper: 4e-7 for KS).
    """

    def __init__(self, net: nn.Module, *, num_steps: int = 3, min_noise_std: float = 4e-7) -> None:
        super().__init__()
        num_steps = check_int(num_steps, "num_steps", 1)
        if not 0 < min_noise_std < 1:
            raise ValueError(f"min_noise_std must be in (0, 1), got {min_noise_std!r}")
        self.net = net
        self.num_steps = num_steps
        self.min_noise_std = float(min_noise_std)

    @property
    def noise_stds(self) -> list[float]:
        """``[sigma_0 = 0, sigma_1, ..., sigma_K]``, ``sigma_k = sigma_min^(k / K)`` (floats)."""
        return [0.0] + [
            self.min_noise_std ** (k / self.num_steps) for k in range(1, self.num_steps + 1)
        ]

    def _net(self, u_prev: Tensor, u_tilde: Tensor, k: Tensor) -> Tensor:
        return self.net(torch.stack([u_prev, u_tilde], dim=1), k.to(u_prev.dtype)).squeeze(1)

    def loss(
        self, u_prev: Tensor, u_next: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Training: ``k ~ U{0..K}`` per sample; MSE on ``u(t)`` if ``k = 0``, else on noise."""
        b = u_prev.shape[0]
        k = torch.randint(0, self.num_steps + 1, (b,), generator=generator).to(u_prev.device)
        sig = torch.tensor(self.noise_stds, dtype=u_prev.dtype, device=u_prev.device)[k]
        sig = sig.view(b, *([1] * (u_prev.ndim - 1)))
        eps = torch.randn(u_next.shape, generator=generator, dtype=u_next.dtype).to(u_next.device)
        first = sig == 0
        u_tilde = torch.where(first, torch.zeros_like(u_next), u_next + sig * eps)
        target = torch.where(first, u_next, eps)
        return nn.functional.mse_loss(self._net(u_prev, u_tilde, k), target)

    @torch.no_grad()
    def predict(self, u_prev: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Inference: initial prediction, then ``K`` noise-and-denoise refinements."""
        b = u_prev.shape[0]
        kvec = torch.zeros(b, device=u_prev.device)
        u = self._net(u_prev, torch.zeros_like(u_prev), kvec)
        for k, sigma in enumerate(self.noise_stds[1:], start=1):
            eps = torch.randn(u.shape, generator=generator, dtype=u.dtype).to(u.device)
            noisy = u + sigma * eps
            u = noisy - sigma * self._net(u_prev, noisy, kvec + k)
        return u


__all__ = ["PDERefiner"]
