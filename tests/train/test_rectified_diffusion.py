"""Rectified Diffusion (Wang et al. 2024): pairs are the teacher's deterministic ODE endpoints,
retraining keeps the VP epsilon parameterisation, and the retrained model's trajectory is closer
to first order (measured against the exact Gaussian-mixture teacher)."""

import pytest
import torch

import timestepper as ts
from timestepper.bench.gmm import GaussianMixture
from timestepper.train import make_model
from timestepper.train.generate import straightness
from timestepper.train.rectified import (
    first_order_deviation,
    flow_straightness,
    rectified_objective,
    rectified_pairs,
    rectify,
)

VP = ts.VPDiscreteSchedule.from_betas()


def _teacher():
    return GaussianMixture.random(2, 8, seed=0).denoiser(VP, "epsilon")


def test_pairs_are_the_teachers_deterministic_ode_endpoints_bit_for_bit():
    teacher = _teacher()
    noise, x = rectified_pairs(teacher, 64, (2,), prediction="eps", solver="ddim", steps=8, seed=3)
    assert noise.shape == x.shape == (64, 2)
    assert torch.equal(noise, torch.randn(64, 2, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(x, ts.sample(teacher, noise, "ddim", 8))
    n2, x2 = rectified_pairs(teacher, 64, (2,), prediction="eps", solver="dpmpp-2m", steps=6, seed=3,
                             batch_size=20)
    assert torch.equal(x2, ts.sample(teacher, n2, "dpmpp-2m", 6))


def test_first_order_measures_vanish_on_a_first_order_model_and_match_straightness_on_a_flow():
    c = torch.tensor([0.5, -1.0])
    # x0 = c everywhere: every trajectory is alpha_t c + sigma_t eps, a first-order path
    point = ts.Denoiser(lambda x, t: c.expand_as(x).to(x.dtype), VP, "sample")
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    assert first_order_deviation(point, z, 16) < 1e-10
    assert flow_straightness(point, z, 16) < 1e-10
    curved = _teacher()
    assert first_order_deviation(curved, z, 16) > 1e-2
    assert flow_straightness(curved, z, 16) > 0.1
    # on a rectified flow (z = x, tau = t) flow_straightness is Liu et al.'s straightness itself
    c2 = 0.2

    def v(x, t):
        t = t.double().view(-1, 1)
        return x * ((t - (1 - t) * c2 * c2) / ((1 - t) ** 2 * c2 * c2 + t * t))

    flow = ts.Denoiser(v, ts.RectifiedFlowSchedule(), "velocity")
    zd = z.double()
    assert flow_straightness(flow, zd, 32) == pytest.approx(straightness(flow, zd, 32), rel=1e-12)
    assert first_order_deviation(point, z, 1) == 0.0


def test_retrained_vp_epsilon_model_is_closer_to_first_order():
    teacher = _teacher()
    pairs = rectified_pairs(teacher, 1000, (2,), prediction="epsilon", steps=20)
    torch.manual_seed(0)
    model = make_model("mlp", {"dim": 2, "hidden": 64, "depth": 2}, VP)
    res = rectify(teacher, model, pairs, prediction="epsilon", steps=150, batch_size=256, lr=3e-3, warmup=20,
                  progress=False)
    d = res.denoiser
    assert d.prediction == "epsilon" and d.schedule is VP
    assert res.training.losses[-1] < res.training.losses[0]
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(7))
    dev_t, dev_r = first_order_deviation(teacher, z, 16), first_order_deviation(d, z, 16)
    s_t, s_r = flow_straightness(teacher, z, 16), flow_straightness(d, z, 16)
    assert dev_r < 0.2 * dev_t
    assert s_r < 0.4 * s_t


def test_bad_input_is_refused_with_the_reason():
    teacher = _teacher()
    with pytest.raises(ValueError, match="its Denoiser predicts 'epsilon' but prediction='v_prediction'"):
        rectified_pairs(teacher, 4, (2,), prediction="v")
    with pytest.raises(ValueError, match="solver 'euler-ancestral' is stochastic"):
        rectified_pairs(teacher, 4, (2,), prediction="eps", solver="euler-ancestral")
    model = make_model("mlp", {"dim": 2, "hidden": 8, "depth": 1}, VP)
    pairs = (torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="its Denoiser predicts 'epsilon' but prediction='sample'"):
        rectify(teacher, model, pairs, prediction="x0", steps=1)
    with pytest.raises(ValueError, match=r"noise shape \(4, 2\) must equal samples shape \(4, 1\)"):
        rectify(teacher, model, (pairs[0], torch.randn(4, 1)), prediction="eps", steps=1)
    with pytest.raises(TypeError, match="pairs must be a \\(noise, samples\\) tuple"):
        rectify(teacher, model, pairs[0], prediction="eps", steps=1)
    other = make_model("mlp", {"dim": 2, "hidden": 8, "depth": 1}, ts.VPLinearSchedule())
    with pytest.raises(ValueError, match="model schedule .* differs from the teacher's"):
        rectify(teacher, other, pairs, prediction="eps", steps=1)
    with pytest.raises(ValueError, match="objective predicts 'v_prediction'"):
        rectify(teacher, model, pairs, prediction="eps", objective=rectified_objective(VP, "v"), steps=1)
    with pytest.raises(TypeError, match="model must be a DenoisingModel"):
        rectify(teacher, torch.nn.Linear(2, 2), pairs, prediction="eps", steps=1)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        first_order_deviation(teacher, torch.randn(3, 2), 0)
