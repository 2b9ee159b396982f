"""Surrogates end to end on a tiny KS data set: generate, train, roll out, score."""

from __future__ import annotations

import functools

import pytest
import torch

from timestepper import pde
from timestepper.pde import metrics
from timestepper.pde.models import FNO1d, FNO2d, UNet


@functools.cache
def _ks_data():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    cfg = pde.GenerationConfig(dt=0.25, save_every=2, duration=10.0, t_burn_in=20.0)
    return pde.generate(eq, 16, cfg), pde.generate(eq, 4, cfg, split="test")


def test_fno_surrogate_end_to_end_beats_persistence():
    torch.manual_seed(0)
    train, test = _ks_data()
    model = pde.OneStepSurrogate(FNO1d(width=16, modes=8, layers=2), residual=True)
    losses = pde.train_surrogate(
        model, train, pde.TrainConfig(iterations=60, batch_size=16, lr=3e-3)
    )
    assert losses[-1] < losses[0] / 10
    traj = pde.rollout(model, test[:, 0], 20, dt=0.5)
    assert traj.shape == test.shape
    one_step = metrics.mse_per_step(traj[:, :2], test[:, :2])[:, 1]
    persistence = (test[:, 1] - test[:, 0]).pow(2).mean(-1)
    assert float(one_step.mean()) < float(persistence.mean()) / 2
    corr = metrics.pearson_per_step(traj, test)
    assert float(pde.high_correlation_time(corr, 0.5).min()) >= 2.0


@pytest.mark.slow
def test_refiner_trains_and_samples_spread_with_noise():
    torch.manual_seed(0)
    train, test = _ks_data()
    net = UNet(2, 1, hidden=8, channel_mults=(1, 2), conditioned=True)
    refiner = pde.PDERefiner(net, num_steps=3, min_noise_std=4e-7)
    losses = pde.train_surrogate(
        refiner, train, pde.TrainConfig(iterations=30, batch_size=16, lr=3e-3, unroll=1)
    )
    assert all(torch.isfinite(torch.tensor(losses)))
    a = pde.rollout(refiner, test[:, 0], 5, generator=torch.Generator().manual_seed(1))
    b = pde.rollout(refiner, test[:, 0], 5, generator=torch.Generator().manual_seed(1))
    c = pde.rollout(refiner, test[:, 0], 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # The spread of samples (the uncertainty estimate) starts at zero and grows with time.
    spread = (a - c).pow(2).mean(-1).mean(0)
    assert float(spread[0]) == 0.0 < float(spread[1]) < float(spread[-1])


@pytest.mark.parametrize("dim", [1, 2])
def test_models_shapes_and_errors(dim):
    x = torch.randn(2, 1, *([16] * dim))
    fno = (FNO1d if dim == 1 else FNO2d)(width=8, modes=4, layers=2)
    unet = UNet(1, 1, hidden=8, dim=dim)
    assert fno(x).shape == x.shape and unet(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        unet(torch.randn(2, 1, *([18] * dim)))
    with pytest.raises(ValueError, match="cond"):
        UNet(1, 1, hidden=8, dim=dim, conditioned=True)(x)


def test_fno_is_resolution_invariant_in_its_spectral_part():
    """The same weights apply to 32 and 64 points; a band-limited input gives the same field."""
    torch.manual_seed(0)
    fno = FNO1d(width=8, modes=4, layers=2)
    x64 = torch.linspace(0, 2 * torch.pi, 65)[:-1]
    u64 = torch.sin(x64) + 0.3 * torch.cos(2 * x64)
    with torch.no_grad():
        y64 = fno(u64.view(1, 1, -1))[0, 0]
        y32 = fno(u64[::2].view(1, 1, -1))[0, 0]
    assert float((y64[::2] - y32).abs().max()) < 0.1 * float(y64.abs().max())


def test_metrics_on_known_signals():
    x = torch.linspace(0, 2 * torch.pi, 33)[:-1]
    ref = torch.sin(x).expand(1, 5, 32).clone()
    pred = ref.clone()
    pred[0, 3] = -pred[0, 3]  # anti-correlated at step 3 only
    corr = metrics.pearson_per_step(pred, ref)
    torch.testing.assert_close(corr[0], torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0]))
    assert float(metrics.high_correlation_time(corr, 0.5)[0]) == 1.0  # last good step: index 2
    assert float(metrics.high_correlation_time(corr, 0.5, mode="count")[0]) == 1.5  # 3 steps above
    assert float(metrics.high_correlation_time(torch.ones(1, 5), 0.5)[0]) == 2.0  # whole horizon
    nan = torch.tensor([[1.0, 0.9, float("nan"), 0.9]])
    assert float(metrics.high_correlation_time(nan, 1.0)[0]) == 1.0
    torch.testing.assert_close(metrics.nrmse_per_step(pred, ref)[0, 3], torch.tensor(2.0))
    assert float(metrics.spectrum_error(pred, ref).abs().max()) < 1e-6  # sign flip keeps spectrum
    assert float(metrics.spectrum_error(2 * ref, ref)[0]) == pytest.approx(3.0)


def test_rollout_counts_model_calls_and_rejects_bad_input():
    calls = []

    class Shift:
        def predict(self, u, generator=None):
            calls.append(1)
            return torch.roll(u, 1, dims=-1)

    u0 = torch.arange(8.0).view(1, 8)
    traj = pde.rollout(Shift(), u0, 3)
    assert traj.shape == (1, 4, 8) and len(calls) == 3
    torch.testing.assert_close(traj[0, 3], torch.roll(u0[0], 3))
    with pytest.raises(TypeError, match="predict"):
        pde.rollout(object(), u0, 3)
    with pytest.raises(ValueError, match="steps"):
        pde.rollout(Shift(), u0, 0)


def test_fno2d_learns_one_step_of_kolmogorov_flow():
    """2-D pipeline: NS data (generate), FNO2d one-step training, rollout through integrate."""
    torch.manual_seed(0)
    eq = pde.NavierStokes2D(n=16, nu=0.05, drag=0.1, forcing_amplitude=1.0, forcing_wavenumber=2)
    cfg = pde.GenerationConfig(dt=0.05, save_every=4, duration=2.0, t_burn_in=1.0, batch_size=8)
    train, test = pde.generate(eq, 8, cfg), pde.generate(eq, 2, cfg, split="test")
    model = pde.OneStepSurrogate(FNO2d(width=8, modes=4, layers=2), residual=True)
    losses = pde.train_surrogate(
        model, train, pde.TrainConfig(iterations=40, batch_size=8, lr=3e-3)
    )
    assert losses[-1] < losses[0]
    pred = pde.rollout(model, test[:, 0], 3, dt=0.2)
    persistence = metrics.mse_per_step(test[:, :1].expand(-1, 2, -1, -1), test[:, :2])[:, 1]
    assert float(metrics.mse_per_step(pred[:, :2], test[:, :2])[:, 1].mean()) < float(
        persistence.mean()
    )
