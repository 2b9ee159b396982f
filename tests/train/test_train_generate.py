import pytest
import torch

import timestepper as ts
from timestepper.train.generate import generate, reflow_pairs, straightness


def _point_mass_flow(c):
    """Exact velocity of rectified flow to the point mass at c: v = (x - c) / t (straight)."""
    return ts.Denoiser(
        lambda x, t: (x - c) / t.view(-1, 1), ts.RectifiedFlowSchedule(t_min=1e-3), "velocity"
    )


def test_straightness_is_zero_for_a_straight_flow_and_positive_otherwise():
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert straightness(_point_mass_flow(torch.tensor([1.0, 2.0])), z, 16) < 1e-10
    # Gaussian data N(0, c^2): the exact flow curves (its speed varies along the path)
    c = 0.2

    def v(x, t):
        t = t.double().view(-1, 1)
        return x * ((t - (1 - t) * c * c) / ((1 - t) ** 2 * c * c + t * t))

    curved = ts.Denoiser(v, ts.RectifiedFlowSchedule(), "velocity")
    assert straightness(curved, z, 64) > 1e-2
    with pytest.raises(ValueError, match="RectifiedFlowSchedule"):
        straightness(ts.Denoiser(lambda x, t: x, ts.VPLinearSchedule()), z)


def test_reflow_pairs_are_coupled_by_the_ode():
    den = _point_mass_flow(torch.tensor([0.5, -1.0]))
    noise, x = reflow_pairs(den, 6, (2,), "ddim", 4, seed=3)
    assert noise.shape == x.shape == (6, 2)
    again = ts.sample(den, noise, "ddim", 4, grid="uniform")
    torch.testing.assert_close(x, again)
    torch.testing.assert_close(x, torch.tensor([[0.5, -1.0]]).expand(6, 2), atol=1e-5, rtol=0)


def test_generate_conditional_and_guided():
    def model(x, t, labels=None):
        return (x - labels.to(x.dtype).view(-1, 1)) / t.view(-1, 1)  # to a point mass at the label

    den = ts.Denoiser(model, ts.RectifiedFlowSchedule(), "velocity")
    labels = torch.tensor([0, 1, 2, 3, 4])
    x, nfe = generate(den, 5, (1,), "ddim", 3, labels=labels, batch_size=2)
    assert nfe == 3 and x.shape == (5, 1)
    torch.testing.assert_close(x[:, 0], labels.float(), atol=1e-5, rtol=0)
    g, _ = generate(den, 5, (1,), "ddim", 3, labels=labels, cfg_scale=2.0, null_label=0)
    torch.testing.assert_close(g[:, 0], 2.0 * labels.float(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="labels"):
        generate(den, 5, (1,), cfg_scale=2.0)


def test_generate_in_batches_matches_one_batch_and_checks_noise_rows():
    den = _point_mass_flow(torch.tensor([0.5, -1.0]))
    whole, nfe = generate(den, 7, (2,), "ddim", 3, seed=2)
    split, nfe_split = generate(den, 7, (2,), "ddim", 3, seed=2, batch_size=3)
    torch.testing.assert_close(split, whole)
    assert nfe == nfe_split == 3
    given = torch.randn(7, 2, generator=torch.Generator().manual_seed(2))
    x, _ = generate(den, 7, (2,), "ddim", 3, noise=given)
    torch.testing.assert_close(x, whole)
    with pytest.raises(ValueError, match="noise has 6 rows, n=7"):
        generate(den, 7, (2,), noise=given[:6])
