"""A solver schedule through the diffusers drop-in: ``Scheduler.from_config(cfg, schedule=...)``
runs the schedule's times and per-step solver in a diffusers-style loop and gives what
``ts.sample(..., schedule=...)`` gives (float64); the config it saves rebuilds it."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.grids import make_grid
from timestepper.integrations.diffusers import Scheduler
from timestepper.solvers.schedule import SolverSchedule, StepSpec, model_provenance

torch.set_num_threads(1)
CONFIG = {"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
          "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000,
          "prediction_type": "epsilon"}
GMM = GaussianMixture.random(4, 5, seed=3)
SPECS = (StepSpec(1, "data", True), StepSpec(2, "noise", False, "midpoint"), StepSpec(3, "data", True, "bh1"),
         StepSpec(2, "noise", True, "bh2"), StepSpec(3, "noise", False, "taylor"), StepSpec(1, "data"))


def _loop(sched, den, x):
    """The loop a diffusers pipeline runs (the model called by the pipeline, not by us)."""
    sched.set_timesteps(len(SPECS))
    x = x * sched.init_noise_sigma
    for t in sched.timesteps:
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(1).expand(x.shape[0])
        x = sched.step(den.model_fn(sched.scale_model_input(x, t), tt), t, x).prev_sample
    return x


@pytest.fixture(scope="module")
def setup():
    noise_schedule = Scheduler.from_config(CONFIG, solver="ddim").schedule
    den = GMM.denoiser(noise_schedule, "epsilon")
    grid = make_grid(noise_schedule, len(SPECS), "trailing")  # integer model times
    sched = SolverSchedule(tuple(grid.t.tolist()), SPECS, provenance=model_provenance(den))
    noise = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return den, sched, noise


def test_scheduler_loop_equals_ts_sample(setup, tmp_path):
    den, sched, noise = setup
    want = ts.sample(den, noise, schedule=sched)
    got = _loop(Scheduler.from_config(CONFIG, schedule=sched), den, noise)
    assert (got - want).abs().max().item() <= 1e-10
    sched.save(tmp_path / "s.json")  # a path works too, and the saved config rebuilds it
    from_path = Scheduler.from_config(CONFIG, schedule=str(tmp_path / "s.json"))
    rebuilt = Scheduler.from_config(dict(from_path.config))
    assert rebuilt.solver_schedule is not None and rebuilt.solver_schedule.steps == SPECS
    assert (_loop(rebuilt, den, noise) - want).abs().max().item() <= 1e-10


def test_scheduler_refuses_what_contradicts_the_schedule(setup):
    _, sched, _ = setup
    with pytest.raises(ValueError, match="solver cannot be given together with schedule="):
        Scheduler.from_config(CONFIG, solver="dpmpp-2m", schedule=sched)
    s = Scheduler.from_config(CONFIG, schedule=sched)
    with pytest.raises(ValueError, match="num_inference_steps=10 contradicts the solver schedule"):
        s.set_timesteps(10)
    with pytest.raises(ValueError, match="made for a 'epsilon'-prediction model"):
        Scheduler.from_config({**CONFIG, "prediction_type": "v_prediction"}, schedule=sched)
    Scheduler.from_config({**CONFIG, "prediction_type": "v_prediction"}, schedule=sched, force=True)
