"""``sample(gradient=...)``: checkpoint equals direct backpropagation, AdjointDPM agrees with it
(exactly with BDIA, to the inversion's accuracy with DDIM), on the mixture and a tiny U-Net, for
the noise, the model's weights and the conditioning; bad requests are refused."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts

from ._tiny_unet import tiny_unet_denoiser

F64 = torch.float64


class Scaled(torch.nn.Module):
    """The exact mixture denoiser with a weight and an additive conditioning input."""

    def __init__(self, fn):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0, dtype=F64))
        self.fn = fn

    def forward(self, x, t, shift):
        return self.w * self.fn(x, t) + shift


def _grads(den, noise0, solver, steps, mode, inputs):
    noise = noise0.clone().requires_grad_(True)
    for p in inputs:
        p.grad = None
    x = ts.sample(den, noise, solver, steps=steps, gradient=mode)
    x.sin().sum().backward()
    return torch.cat([noise.grad.flatten(), *[p.grad.flatten() for p in inputs]])


def _mixture(gmm2):
    shift = torch.zeros(2, dtype=F64, requires_grad=True)
    net = Scaled(gmm2.denoiser(ts.VPLinearSchedule(), "epsilon").model_fn)
    return ts.Denoiser(net, ts.VPLinearSchedule(), "epsilon", model_kwargs={"shift": shift}), [net.w, shift]


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("solver,steps,tol", [("bdia-ddim", 10, 1e-12), ("ddim", 50, 2e-3), ("ddim", 10, 0.15)])
def test_adjoint_and_checkpoint_agree_with_direct_on_the_mixture(gmm2, solver, steps, tol):
    den, inputs = _mixture(gmm2)
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    direct = _grads(den, noise, solver, steps, "direct", inputs)
    assert _rel(_grads(den, noise, solver, steps, "checkpoint", inputs), direct) < 1e-13
    assert _rel(_grads(den, noise, solver, steps, "adjoint", inputs), direct) < tol


def test_adjoint_on_a_tiny_unet_with_conditioning():
    cond = torch.zeros(8, dtype=F64, requires_grad=True)
    den = tiny_unet_denoiser(cond=cond)
    inputs = [*den.model_fn.parameters(), cond]
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)
    direct = _grads(den, noise, "bdia-ddim", 8, "direct", inputs)
    assert _rel(_grads(den, noise, "bdia-ddim", 8, "adjoint", inputs), direct) < 1e-10
    assert _rel(_grads(den, noise, "dpmpp-2m", 8, "checkpoint", inputs),
                _grads(den, noise, "dpmpp-2m", 8, "direct", inputs)) < 1e-12


def test_a_solver_without_adjoint_form_is_refused(gmm2):
    den, _ = _mixture(gmm2)
    noise = torch.randn(4, 2, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="adjoint form .*'dpmpp-2m'"):
        ts.sample(den, noise, "dpmpp-2m", steps=5, gradient="adjoint")
    with pytest.raises(ValueError, match="gradient must be one of"):
        ts.sample(den, noise, "ddim", steps=5, gradient="backsolve")


def test_loss_independent_of_the_sample_gives_zero_gradient(gmm2):
    den, inputs = _mixture(gmm2)
    noise = torch.randn(4, 2, dtype=F64, requires_grad=True)
    x = ts.sample(den, noise, "bdia-ddim", steps=5, gradient="adjoint")
    loss = (x * 0).sum() + inputs[0] * 0
    loss.backward()
    assert torch.count_nonzero(noise.grad) == 0
