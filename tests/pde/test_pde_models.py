"""SineNet, Transform-Once (T1), the spatiotemporal FNO and the negative Sobolev loss: shapes,
periodic equivariance, T1's variance-preserving initialisation, the H^{-s} norm against a
hand-computed Fourier sum, training through ``train_surrogate``/``rollout``, and bad input."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from timestepper import pde
from timestepper.pde.losses import NegativeSobolevLoss, negative_sobolev_norm_sq
from timestepper.pde.models import T1, SineNet, SpaceTimeFNO, freeze_for_spectral_refinement
from timestepper.pde.models.t1 import retained_energy


def _roll(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    return torch.roll(x, (shift,) * dim, tuple(range(x.ndim - dim, x.ndim)))


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("dim", [1, 2])
def test_shapes_of_every_model(dim):
    torch.manual_seed(0)
    n = 32 if dim == 1 else 16
    x = torch.randn(3, 2, *(n,) * dim)
    assert SineNet(2, 3, hidden=4, waves=2, levels=2, dim=dim)(x).shape == (3, 3, *(n,) * dim)
    assert T1(2, 3, width=4, modes=4, layers=2, dim=dim, grid=n)(x).shape == (3, 3, *(n,) * dim)
    st = SpaceTimeFNO(2, 5, grid=n, width=4, modes=4, modes_t=1, layers=2, dim=dim)
    assert st(x).shape == (3, 5, *(n,) * dim)  # 2 frames in, 5 out (time resampled)


def test_sinenet_parameter_count_grows_linearly_with_waves():
    def count(k):
        return sum(p.numel() for p in SineNet(hidden=4, waves=k, levels=2).parameters())

    assert count(4) - count(3) == count(3) - count(2) > 0


# ---------------------------------------------------------------- periodic equivariance


@pytest.mark.parametrize("dim", [1, 2])
def test_sinenet_is_equivariant_to_periodic_shifts_by_the_pooling_stride(dim):
    torch.manual_seed(0)
    n = 32 if dim == 1 else 16
    net = SineNet(hidden=4, waves=2, levels=2, dim=dim).double()
    x = torch.randn(2, 1, *(n,) * dim, dtype=torch.float64)
    y = net(x)
    for shift in (4, 8, -4):  # multiples of 2 ** levels
        assert torch.allclose(net(_roll(x, shift, dim)), _roll(y, shift, dim), atol=1e-12)
    # Circular padding matters: the same shift is not an identity of the output.
    assert not torch.allclose(_roll(y, 4, dim), y, atol=1e-3)


@pytest.mark.parametrize("dim", [1, 2])
def test_space_time_fno_is_equivariant_to_every_periodic_shift(dim):
    torch.manual_seed(0)
    n = 16
    net = SpaceTimeFNO(4, 4, grid=n, width=4, modes=4, modes_t=2, layers=2, dim=dim).double()
    freeze_for_spectral_refinement(net)  # untruncated final layer, with random weights
    with torch.no_grad():
        net.final.weight.normal_()
    x = torch.randn(2, 4, *(n,) * dim, dtype=torch.float64)
    y = net(x)
    for shift in (1, 3, 7):
        assert torch.allclose(net(_roll(x, shift, dim)), _roll(y, shift, dim), atol=1e-12)


# ---------------------------------------------------------------- T1 variance preservation


@pytest.mark.parametrize(("dim", "n", "modes"), [(1, 128, 8), (2, 32, 4)])
def test_t1_init_preserves_the_variance_of_white_input_at_every_depth(dim, n, modes):
    """Output/input mean square, averaged over 24 random models, within [0.6, 1.6] at depths 1,
    4 and 12. Dropping the paper's N / m factor would give m_eff / N (0.12 in 1-D, 0.05 in 2-D);
    an unscaled residual would grow as 2^depth."""
    torch.manual_seed(0)
    assert 1 / 0.6 < n**dim / retained_energy(modes, dim)
    for depth in (1, 4, 12):
        ratios = []
        for _ in range(24):
            net = T1(width=16, modes=modes, layers=depth, dim=dim, grid=n)
            x = torch.randn(4, 1, *(n,) * dim)
            with torch.no_grad():
                ratios.append(float(net(x).pow(2).mean() / x.pow(2).mean()))
        mean = sum(ratios) / len(ratios)
        assert 0.6 < mean < 1.6, (depth, mean)


@pytest.mark.parametrize(("dim", "n", "modes"), [(1, 16, 5), (1, 32, 16), (2, 16, 3), (2, 32, 4)])
def test_t1_retained_energy_is_the_inverse_transform_gain(dim, n, modes):
    """``m_eff`` equals ``E ||irfft(pad(h))||^2`` for unit-variance complex ``h`` on the retained
    modes, computed exactly from the basis (real and imaginary unit coefficients, weight 1/2)."""
    net = T1(width=1, modes=modes, layers=1, dim=dim, grid=n)
    kept = (modes,) if dim == 1 else (2 * modes, modes)
    count = math.prod(kept)
    basis = torch.eye(count, dtype=torch.cdouble).reshape(count, 1, *kept)
    space = (n,) * dim
    dims = tuple(range(2, 2 + dim))
    energy = sum(
        torch.fft.irfftn(net._pad(basis * unit, space), s=space, dim=dims, norm="ortho")
        .pow(2).sum() / 2
        for unit in (1.0, 1j)
    )
    assert float(energy) == pytest.approx(retained_energy(modes, dim), rel=1e-12)


# ---------------------------------------------------------------- the H^{-s} loss


def test_negative_sobolev_norm_matches_a_hand_computed_fourier_sum():
    length, n = 22.0, 64
    x = torch.arange(n, dtype=torch.float64) * length / n
    k1, k2 = 2 * math.pi * 3 / length, 2 * math.pi * 7 / length
    u = 2 * torch.cos(k1 * x) + 0.5 * torch.sin(k2 * x) + 0.3
    for s in (0.0, 1.0, 2.5):
        # |Omega| * (|c_0|^2 + 2 |c_3|^2 w_3 + 2 |c_7|^2 w_7), c_3 = 1, c_7 = 0.25 i
        hand = length * (0.09 + 2 * (1 + k1**2) ** -s + 2 * 0.0625 * (1 + k2**2) ** -s)
        assert float(negative_sobolev_norm_sq(u, s, length=length)) == pytest.approx(hand, 1e-12)


@pytest.mark.parametrize("dim", [1, 2])
def test_negative_sobolev_norm_of_order_zero_is_the_scaled_l2_norm(dim):
    torch.manual_seed(0)
    u = torch.randn(3, 5, *(16,) * dim, dtype=torch.float64)
    got = negative_sobolev_norm_sq(u, 0.0, dim=dim, length=2.0)
    want = 2.0**dim * u.pow(2).mean(dim=tuple(range(2, u.ndim)))
    assert got.shape == (3, 5)
    assert torch.allclose(got, want, rtol=1e-12)
    loss = NegativeSobolevLoss(0.0, dim=dim, length=2.0)
    assert float(loss(u, torch.zeros_like(u))) == pytest.approx(float(want.mean()), rel=1e-12)


def test_negative_sobolev_norm_decreases_with_the_order_for_high_frequencies():
    x = torch.arange(32, dtype=torch.float64) * 2 * math.pi / 32
    low, high = torch.sin(x), torch.sin(9 * x)
    ratio = [float(negative_sobolev_norm_sq(high, s) / negative_sobolev_norm_sq(low, s))
             for s in (0.0, 1.0)]
    assert ratio[0] == pytest.approx(1.0)
    assert ratio[1] == pytest.approx(2 / 82)


# ---------------------------------------------------------------- training through the front


@functools.cache
def _ks_data():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    cfg = pde.GenerationConfig(dt=0.25, save_every=2, duration=10.0, t_burn_in=20.0)
    return pde.generate(eq, 8, cfg), pde.generate(eq, 2, cfg, split="test")


@pytest.mark.parametrize("name", ["sinenet", "t1"])
def test_one_step_models_train_and_roll_out(name):
    torch.manual_seed(0)
    train, test = _ks_data()
    net = (SineNet(hidden=4, waves=2, levels=2) if name == "sinenet"
           else T1(width=8, modes=8, layers=2, grid=32))
    model = pde.OneStepSurrogate(net, residual=True)
    losses = pde.train_surrogate(model, train, pde.TrainConfig(iterations=40, batch_size=8,
                                                                lr=3e-3))
    assert sum(losses[-5:]) < sum(losses[:5]) / 2
    traj = pde.rollout(model, test[:, 0], 4, dt=0.5)
    assert traj.shape == (2, 5, 32) and torch.isfinite(traj).all()


def test_spectral_refiner_fine_tunes_only_the_untruncated_final_layer():
    torch.manual_seed(0)
    train, test = _ks_data()
    k = 2
    net = SpaceTimeFNO(k, k, grid=32, width=8, modes=6, modes_t=1, layers=2)
    model = pde.BlockSurrogate(net, k, residual=True)
    blocks = pde.frame_blocks(train, k)
    cfg = pde.TrainConfig(iterations=80, batch_size=8, lr=3e-3, frames_per_step=k)
    losses = pde.train_surrogate(model, blocks, cfg)
    assert sum(losses[-5:]) < sum(losses[:5]) / 2
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    freeze_for_spectral_refinement(model)
    model.objective = NegativeSobolevLoss(1.0, length=22.0)
    fine = pde.train_surrogate(model, blocks, pde.TrainConfig(iterations=10, batch_size=8,
                                                               lr=1e-3, frames_per_step=k))
    assert all(math.isfinite(v) for v in fine)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"net.final.weight"}
    # The fine-tuned layer now uses modes beyond the training truncation.
    high = model.net.final.weight.detach()[:, 6:]
    assert float(high.abs().max()) > 0
    out = pde.unblock(pde.rollout(model, test[:, :k], 3))
    assert out.shape == (2, 4 * k, 32) and torch.isfinite(out).all()


def test_frame_blocks_are_consecutive_model_steps():
    traj = torch.arange(2 * 12 * 3, dtype=torch.float32).reshape(2, 12, 3)
    blocks = pde.frame_blocks(traj, 3, stride=2)
    assert blocks.shape == (2, 8, 3, 3)
    assert torch.equal(blocks[1, 2], traj[1, [2, 4, 6]])
    assert torch.equal(pde.unblock(blocks[:, :2]), blocks[:, :2].reshape(2, 6, 3))


# ---------------------------------------------------------------- bad input


def test_too_small_or_odd_grids_raise_naming_the_argument():
    with pytest.raises(ValueError, match="modes=8 needs a grid of at least 16"):
        T1(modes=8, grid=12)
    t1 = T1(width=4, modes=4, layers=1, grid=16)
    with pytest.raises(ValueError, match="modes=4 needs a grid of at least 8"):
        t1(torch.randn(1, 1, 6))
    with pytest.raises(ValueError, match="modes=8 needs a grid of at least 16"):
        SpaceTimeFNO(4, 4, grid=10, modes=8)
    with pytest.raises(ValueError, match="modes_t=3 needs at least 6 frames"):
        SpaceTimeFNO(4, 4, grid=32, modes=4, modes_t=3)
    net = SineNet(hidden=4, waves=1, levels=3)
    with pytest.raises(ValueError, match=r"multiple of 2 \*\* levels = 8 \(levels=3\)"):
        net(torch.randn(1, 1, 36))  # divisible by 4, not by 8
    with pytest.raises(ValueError, match="levels"):
        net(torch.randn(1, 1, 33))  # odd


def test_bad_options_raise_naming_the_argument():
    with pytest.raises(ValueError, match="dim must be 1 or 2"):
        SineNet(dim=3)
    with pytest.raises(ValueError, match="waves must be an integer >= 1"):
        SineNet(waves=0)
    with pytest.raises(ValueError, match="activation must be one of"):
        T1(activation="tanh", grid=64)
    with pytest.raises(ValueError, match="head_gain must be >= 0"):
        T1(grid=64, head_gain=-1.0)
    with pytest.raises(ValueError, match="s must be >= 0"):
        negative_sobolev_norm_sq(torch.zeros(8), -1.0)
    with pytest.raises(ValueError, match="frames=4"):
        pde.BlockSurrogate(SpaceTimeFNO(4, 4, grid=16, modes=4), 4)(torch.zeros(1, 3, 16))
    with pytest.raises(TypeError, match="SpaceTimeFNO"):
        freeze_for_spectral_refinement(pde.OneStepSurrogate(SineNet()))
    with pytest.raises(ValueError, match="T >= 7"):
        pde.frame_blocks(torch.zeros(1, 5, 4), 4, stride=2)


@pytest.mark.slow
def test_every_new_model_trains_and_rolls_out_on_2d_navier_stokes():
    torch.manual_seed(0)
    eq = pde.NavierStokes2D(n=16, nu=0.05, drag=0.1, forcing_amplitude=1.0, forcing_wavenumber=2)
    cfg = pde.GenerationConfig(dt=0.05, save_every=4, duration=2.0, t_burn_in=1.0, batch_size=8)
    train, test = pde.generate(eq, 4, cfg), pde.generate(eq, 2, cfg, split="test")
    models = {
        "sinenet": pde.OneStepSurrogate(SineNet(hidden=4, waves=2, levels=2, dim=2), residual=True),
        "t1": pde.OneStepSurrogate(T1(width=4, modes=4, layers=2, dim=2, grid=16), residual=True),
        "st-fno": pde.BlockSurrogate(
            SpaceTimeFNO(2, 2, grid=16, width=4, modes=4, modes_t=1, layers=2, dim=2), 2,
            residual=True,
        ),
    }
    for name, model in models.items():
        block = isinstance(model, pde.BlockSurrogate)
        data = pde.frame_blocks(train, 2) if block else train
        cfg_t = pde.TrainConfig(iterations=30, batch_size=4, lr=3e-3, frames_per_step=2 if block else 1)
        losses = pde.train_surrogate(model, data, cfg_t)
        assert sum(losses[-5:]) < sum(losses[:5]), name
        u0 = test[:, :2] if block else test[:, 0]
        out = pde.rollout(model, u0, 3)
        assert torch.isfinite(out).all(), name
        assert out.shape == ((2, 4, 2, 16, 16) if block else (2, 4, 16, 16)), name
