"""Our solvers through the diffusers step protocol: every fixed-grid diffusion solver of the
registry, one- and multi-evaluation (Heun, DPM-2, DPM++ 2S ancestral, PLMS/PNDM warm-ups through
the order-2 protocol), gives through ``Scheduler.step`` what ``ts.sample`` gives on the same grid,
with the same generator; flow-matching models too, from pure noise."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.integrations._diffusers_harness import GMM, SHAPE, noise, rel_err
from timestepper.integrations.diffusers import Scheduler, scheduler_solvers

torch.set_num_threads(1)
SCHEDULE = ts.VPDiscreteSchedule.from_betas("scaled_linear", 0.00085, 0.012, 1000)
SOLVERS = scheduler_solvers()


def _pipeline_loop(sched, den, x, seed=7):
    g = torch.Generator().manual_seed(seed)
    sched.set_timesteps(8)
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(1)
        if not isinstance(den.schedule, ts.VPDiscreteSchedule):
            tt = tt / 1000
        x = sched.step(den.model_fn(sched.scale_model_input(x, t), tt), t, x, generator=g).prev_sample
    return x


def test_every_fixed_grid_diffusion_solver_is_offered():
    for name in ("heun", "dpm-2", "dpmpp-2s-ancestral", "dpm-2-ancestral", "plms", "pndm", "euler-ancestral",
                 "sde-dpmpp-2m", "unipc-bh2", "lms"):
        assert name in SOLVERS
    for name in ("etd1", "imex-euler", "dpm-adaptive", "rk45"):
        assert name not in SOLVERS


@pytest.mark.parametrize("solver", SOLVERS)
def test_scheduler_step_equals_ts_sample(solver):
    den = GMM.denoiser(SCHEDULE, "epsilon")
    sched = Scheduler(SCHEDULE, "epsilon", solver, grid="logsnr")
    x = _pipeline_loop(sched, den, noise())
    want = ts.sample(den, noise(), solver, 8, grid="logsnr", generator=7)
    assert rel_err(x, want) <= 1e-6
    if solver in ("heun", "dpm-2", "dpmpp-2s-ancestral", "dpm-2-ancestral"):
        assert sched.order == 2 and len(sched.timesteps) > 8


@pytest.mark.parametrize("solver", ["euler", "dpmpp-2m", "dpmpp-3m", "unipc-bh2", "heun"])
def test_flow_matching_from_pure_noise(solver):
    """``Scheduler(RectifiedFlowSchedule(), "velocity")``: timesteps in 0..1000 for the
    transformer, the first step from t = 1 (pure noise) finite, as ts.sample."""
    sch = ts.RectifiedFlowSchedule()
    den = GMM.denoiser(sch, "velocity")
    sched = Scheduler(sch, "velocity", solver, grid="uniform", grid_options={"shift": 3.0})
    x = _pipeline_loop(sched, den, noise())
    assert float(sched.timesteps[0]) == 1000.0 and sched.timesteps.dtype == torch.float32
    want = ts.sample(den, noise(), solver, 8, grid="uniform", shift=3.0)
    assert torch.isfinite(x).all()
    assert rel_err(x, want) <= 1e-6


def test_flow_set_timesteps_sigmas_and_mu():
    sch = ts.RectifiedFlowSchedule()
    sched = Scheduler(sch, "velocity", "dpmpp-2m")
    sched.set_timesteps(sigmas=[1.0, 0.75, 0.5, 0.25], mu=0.0)
    assert sched.timesteps.tolist() == [1000.0, 750.0, 500.0, 250.0]
    sched.set_timesteps(4, mu=1.0)  # shift = e
    u = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    want = (torch.e * u / (1 + (torch.e - 1) * u) * 1000).float()
    torch.testing.assert_close(sched.timesteps, want)


def test_sd_config_with_our_solver_and_grid():
    """One argument away: the SD 1.5 config, our 3M solver on a log-SNR grid."""
    import pytest as _pytest

    diffusers = _pytest.importorskip("diffusers")
    cfg = diffusers.PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                  beta_end=0.012, steps_offset=1, skip_prk_steps=True)
    sched = Scheduler.from_config(cfg, solver="dpmpp-3m", grid="logsnr")
    den = GMM.denoiser(sched.schedule, "epsilon")
    x = _pipeline_loop(sched, den, noise())
    assert rel_err(x, ts.sample(den, noise(), "dpmpp-3m", 8, grid="logsnr")) <= 1e-6
    assert SHAPE == tuple(x.shape)
