import math

import pytest
import torch

import timestepper as ts
from timestepper.train import make_model, mmd_finetune, toy_2d
from timestepper.train.mmd import budget_mmd, median_bandwidths, mmd2_unbiased, polynomial_kernel, rbf_kernel


def test_mmd_estimator_matches_a_hand_computation_polynomial():
    # x = {0, 1}, y = {0, 2}, d = 1, k(a, b) = (ab + 1)^3:
    # within x: k(0,1) = 1 -> 2 / (2*1) = 1; within y: k(0,2) = 1 -> 1;
    # cross: k(0,0) = k(0,2) = k(1,0) = 1, k(1,2) = 27 -> mean 30/4 = 7.5 -> MMD^2 = 1 + 1 - 15
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    assert float(mmd2_unbiased(x, y, polynomial_kernel)) == pytest.approx(-13.0, abs=1e-12)


def test_mmd_estimator_matches_a_hand_computation_rbf_mixture():
    # x = {0, 1}, y = {0, 3}, bandwidths 1 and 2: k = exp(-d^2/2) + exp(-d^2/8)
    def k(d2):
        return math.exp(-d2 / 2) + math.exp(-d2 / 8)

    want = k(1) + k(9) - 2 * (k(0) + k(9) + k(1) + k(4)) / 4
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    got = mmd2_unbiased(x, y, lambda a, b: rbf_kernel(a, b, (1.0, 2.0)))
    assert float(got) == pytest.approx(want, abs=1e-12)


def test_mmd_estimator_is_unbiased_zero_for_equal_distributions():
    gen = torch.Generator().manual_seed(0)
    vals = [float(mmd2_unbiased(torch.randn(50, 3, generator=gen, dtype=torch.float64),
                                torch.randn(50, 3, generator=gen, dtype=torch.float64)))
            for _ in range(200)]
    mean, sd = sum(vals) / len(vals), torch.tensor(vals).std().item()
    assert abs(mean) < 3 * sd / math.sqrt(len(vals))  # zero in expectation
    shifted = mmd2_unbiased(torch.randn(50, 3, generator=gen, dtype=torch.float64) + 1.0,
                            torch.randn(50, 3, generator=gen, dtype=torch.float64))
    assert float(shifted) > 10 * sd


def test_median_bandwidths():
    y = torch.tensor([[0.0], [1.0], [3.0]])  # distances 1, 2, 3 -> median 2
    assert median_bandwidths(y, (0.5, 1.0)) == pytest.approx((1.0, 2.0))


def _moons_flow(seed=0):
    torch.manual_seed(seed)
    rf = ts.RectifiedFlowSchedule()
    return ts.Denoiser(make_model("mlp", {"dim": 2, "hidden": 32, "depth": 2}, rf), rf, "velocity")


def test_gradient_modes_give_the_same_fine_tuning():
    den, data = _moons_flow(), toy_2d("moons", 64, seed=0)
    runs = [mmd_finetune(den, data, steps=2, kernel="rbf", iterations=2, batch_size=16, lr=1e-2,
                         gradient=g, seed=1) for g in ("direct", "checkpoint")]
    assert runs[0].losses == pytest.approx(runs[1].losses, rel=1e-6)
    for p, q in zip(runs[0].denoiser.model_fn.parameters(), runs[1].denoiser.model_fn.parameters(),
                    strict=True):
        torch.testing.assert_close(p, q)
    # the input denoiser is untouched (a copy is trained)
    assert not any(torch.equal(p, q) for p, q in zip(den.model_fn.parameters(),
                                                     runs[0].denoiser.model_fn.parameters(),
                                                     strict=True) if p.ndim == 2)


@pytest.mark.slow
def test_finetuning_lowers_the_mmd_at_the_budget_on_moons():
    from timestepper.train import flow_matching, train

    den = _moons_flow()
    data = toy_2d("moons", 2000, seed=0)
    r = train(den.model_fn, flow_matching(), data, steps=150, batch_size=128, lr=3e-3, seed=0,
              progress=False)
    den = ts.Denoiser(r.sampling_model, den.schedule, "velocity")
    held = toy_2d("moons", 500, seed=1)
    z = torch.randn(500, 2, generator=torch.Generator().manual_seed(5))
    before = budget_mmd(den, held, z, 2, kernel="rbf")
    res = mmd_finetune(den, data, steps=2, kernel="rbf", iterations=25, batch_size=128, lr=3e-3)
    after = budget_mmd(res.denoiser, held, z, 2, kernel="rbf")
    assert len(res.losses) == 25 and res.seconds > 0
    assert after < 0.3 * before, (before, after)


def test_bad_input():
    den, data = _moons_flow(), toy_2d("moons", 32, seed=0)
    with pytest.raises(ValueError, match="unknown kernel 'gauss'"):
        mmd_finetune(den, data, kernel="gauss", iterations=1, batch_size=8)
    with pytest.raises(ValueError, match="unknown features"):
        mmd_finetune(den, data, features="inception", iterations=1, batch_size=8)
    with pytest.raises(ValueError, match="gradient must be one of"):
        mmd_finetune(den, data, gradient="reverse", iterations=1, batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be between 2"):
        mmd_finetune(den, data, batch_size=64)
    with pytest.raises(ValueError, match="steps must be an integer"):
        mmd_finetune(den, data, steps=0, batch_size=8)
    with pytest.raises(TypeError, match="must be an nn.Module"):
        mmd_finetune(ts.Denoiser(lambda x, t: x, den.schedule, "velocity"), data, batch_size=8)
    with pytest.raises(ValueError, match="at least 2 samples"):
        mmd2_unbiased(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="gradient='adjoint' needs"):
        mmd_finetune(den, data, solver="heun", gradient="adjoint", iterations=1, batch_size=8)
