"""``sample``: the front end, its stats and its errors."""

import pytest
import torch

import timestepper as ts

F64 = torch.float64


def test_sample_returns_solution_with_grid_and_nfe(gmm2, vp_schedule):
    den = gmm2.denoiser(vp_schedule, "epsilon")
    noise = torch.randn(16, 2, dtype=F64)
    x = ts.sample(den, noise, solver="dpmpp-2m", steps=10, grid="logsnr")
    sol = ts.sample(den, noise, solver="dpmpp-2m", steps=10, grid="logsnr", return_solution=True)
    assert torch.equal(sol.x, x)
    assert sol.stats.nfe == 10 and sol.stats.steps == 10
    assert sol.ts.shape == (11,) and float(sol.ts[-1]) == vp_schedule.t_data
    heun = ts.sample(den, noise, solver="heun", steps=10, return_solution=True)
    assert heun.stats.nfe == 19  # no correction on the step to zero noise


def test_bad_input_is_reported(gmm2, vp_schedule):
    den = gmm2.denoiser(vp_schedule, "epsilon")
    noise = torch.randn(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="unknown solver"):
        ts.sample(den, noise, solver="dpm-9000")
    with pytest.raises(ValueError, match="steps must be"):
        ts.sample(den, noise, steps=0)
    with pytest.raises(TypeError, match="noise must be a torch.Tensor"):
        ts.sample(den, noise.numpy())
    bad_dtype = ts.Denoiser(lambda x, t: x.float(), vp_schedule, "epsilon")
    with pytest.raises(TypeError, match="model output .*dtype=torch.float32.* must match the state"):
        ts.sample(bad_dtype, noise)
    bad_device = ts.Denoiser(lambda x, t: x.to("meta"), vp_schedule, "epsilon")
    with pytest.raises(TypeError, match="device=meta"):
        ts.sample(bad_device, noise)


def test_nan_in_the_state_names_step_and_time(vp_schedule):
    def model(x, t):
        return torch.where(t[:, None] < 300, torch.full_like(x, float("nan")), x)

    den = ts.Denoiser(model, vp_schedule, "epsilon")
    with pytest.raises(ts.NonFiniteError, match=r"step \d+ \(from t="):
        ts.sample(den, torch.randn(3, 2, dtype=F64), solver="ddim", steps=10)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction", "velocity", "score"])
def test_every_prediction_type_gives_the_same_samples(gmm2, prediction):
    sched = ts.VPCosineSchedule()
    noise = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(3))
    ref = ts.sample(gmm2.denoiser(sched, "sample"), noise, "dpmpp-2m", steps=12)
    out = ts.sample(gmm2.denoiser(sched, prediction), noise, "dpmpp-2m", steps=12)
    assert torch.allclose(out, ref, atol=1e-9)


def test_flow_model_euler_is_the_flow_euler_step(gmm2):
    rf = ts.RectifiedFlowSchedule()
    den = gmm2.denoiser(rf, "velocity")
    noise = torch.randn(8, 2, dtype=F64)
    x = ts.sample(den, noise, "euler", steps=4, grid="uniform")
    # hand-written flow Euler: x <- x + (t1 - t0) u(x, t0)
    y, ts_ = noise.clone(), [1.0, 0.75, 0.5, 0.25, 0.0]
    for t0, t1 in zip(ts_[:-1], ts_[1:]):
        y = y + (t1 - t0) * den(y, torch.full((8,), t0, dtype=F64))
    assert torch.allclose(x, y, atol=1e-12)


def test_every_deterministic_solver_samples_a_flow_from_pure_noise():
    """A flow model starts at t = 1 where alpha = 0 (log-SNR = -inf): every solver must still
    converge to the exact flow solution (the first step is the exact DDIM limit there)."""
    from timestepper.bench import GaussianMixture, trajectory_error
    from timestepper.bench.runner import deterministic_solvers

    gmm = GaussianMixture.random(3, 3, seed=1)
    den = gmm.denoiser(ts.RectifiedFlowSchedule(), "velocity")
    noise = torch.randn(64, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = ts.sample(den, noise, "dpmpp-2m", steps=2000, grid="uniform")
    for name in deterministic_solvers():
        errs = [trajectory_error(ts.sample(den, noise, name, steps=n, grid="uniform"), ref) for n in (10, 40)]
        assert errs[1] < 0.5 * errs[0], (name, errs)
    sol = ts.sample(den, noise, "dpmpp-2m", steps=10, grid="uniform", return_solution=True, save="all")
    assert sol.stats.nfe == 10 and sol.stats.steps == 10 and sol.ys.shape[0] == 11 and sol.ts.shape == (11,)


def test_sample_rejects_solvers_that_do_not_sample_diffusion(gmm2, vp_schedule):
    den = gmm2.denoiser(vp_schedule, "epsilon")
    with pytest.raises(TypeError, match="does not sample diffusion models; choose a diffusion solver .*dpmpp-2m"):
        ts.sample(den, torch.randn(4, 2, dtype=F64), "tsit5")
