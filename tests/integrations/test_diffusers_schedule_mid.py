"""A solver schedule in a loop that starts mid-schedule (img2img, inpainting):
``Scheduler.from_config(cfg, schedule=...)`` runs the schedule's steps from the loop's first step
with the multistep history restarted there (``SolverSchedule.starting_at``). For the schedules of
diffusers' own multistep classes this is what those classes do: side by side with diffusers'
DPMSolverMultistep and UniPC on the same grid, from several starting steps."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from tests.integrations._diffusers_harness import GMM, data, gmm_model, noise, rel_err, run
from timestepper.diffusion.grids import SamplingGrid
from timestepper.integrations.diffusers import Scheduler
from timestepper.integrations.diffusers.config import schedule_from_config
from timestepper.solvers.schedule import SolverSchedule, StepSpec

diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)

CFG = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
       "num_train_timesteps": 1000, "prediction_type": "epsilon"}
CASES = [("DPMSolverMultistepScheduler", "dpmpp-2m"), ("UniPCMultistepScheduler", "unipc-bh2")]
STEPS = 10


def _peer_and_schedule(cls_name: str, solver: str) -> tuple[object, SolverSchedule]:
    """The diffusers class, and our fixed-solver schedule on its own grid (its integer
    timesteps, the last step to zero noise)."""
    peer = getattr(diffusers, cls_name)(**CFG)
    peer.set_timesteps(STEPS)
    schedule = schedule_from_config(CFG)
    times = torch.tensor([*peer.timesteps.double().tolist(), schedule.t_data], dtype=torch.float64)
    return peer, SolverSchedule.from_solver(solver, SamplingGrid.from_times(schedule, times))


@pytest.mark.parametrize(("cls_name", "solver"), CASES)
def test_mid_schedule_schedule_matches_the_diffusers_class(cls_name, solver):
    peer, sched = _peer_and_schedule(cls_name, solver)
    model = gmm_model({**CFG, "_class_name": cls_name}, "epsilon")
    ours = Scheduler.from_config({**CFG, "_class_name": cls_name}, schedule=sched)
    for begin in (0, 1, 3, 6, 9):
        want = run(peer, model, STEPS, begin=begin)
        assert rel_err(run(ours, model, STEPS, begin=begin), want) <= 1e-5, begin
    # the restart matters: the full-history schedule from step 3 is another sampler
    full = run(peer, model, STEPS, begin=None)
    assert rel_err(run(ours, model, STEPS, begin=3), full) > 1e-3


def test_mid_schedule_without_set_begin_index_starts_at_the_first_timestep():
    _, sched = _peer_and_schedule(*CASES[0])
    model = gmm_model({**CFG, "_class_name": CASES[0][0]}, "epsilon")
    with_index = run(Scheduler.from_config(CFG, schedule=sched), model, STEPS, begin=4)
    s = Scheduler.from_config(CFG, schedule=sched)
    s.set_timesteps(STEPS)
    assert s.begin_index is None
    x = s.add_noise(data(), noise(), s.timesteps[4:5].repeat(4))
    for t in s.timesteps[4:]:
        x = s.step(model(x, t), t, x).prev_sample
    assert rel_err(x, with_index) <= 1e-12


def test_starting_at_restarts_the_history_and_keeps_the_specs():
    specs = (StepSpec(1, "data", True), StepSpec(2, "noise", True, "bh1"), StepSpec(3, "data", False, "taylor"),
             StepSpec(3, "data", True, "bh2"), StepSpec(2, "noise", False, "midpoint"), StepSpec(1, "data"))
    sched = SolverSchedule((999.0, 800.0, 600.0, 400.0, 250.0, 100.0, -1.0), specs)
    tail = sched.starting_at(2)
    assert tail.times == sched.times[2:] and tail.provenance["started_at"] == 2
    assert [s.order for s in tail.steps] == [1, 2, 2, 1]
    assert [(s.prediction, s.corrector, s.variant) for s in tail.steps] == [
        (s.prediction, s.corrector, s.variant) for s in specs[2:]]
    assert sched.starting_at(0) is sched
    with pytest.raises(ValueError, match="first must be a step index in"):
        sched.starting_at(6)


def test_mid_schedule_dc_solver_schedule_runs_its_remaining_ratios():
    schedule = schedule_from_config(CFG)
    den = GMM.denoiser(schedule, "epsilon")
    times = (999.0, 799.0, 599.0, 399.0, 199.0, 99.0, schedule.t_data)
    ratios = [1.0, 1.0, 1.2, 0.9, 1.1, 0.8]
    sched = SolverSchedule(times, solver="dc-unipc", solver_options={"ratios": ratios})
    tail = sched.starting_at(3)
    assert tail.solver_options["ratios"] == [1.0, 1.0, 0.8]  # the restarted warm-up, then step 5's
    model = gmm_model(CFG, "epsilon")
    got = run(Scheduler.from_config(CFG, schedule=sched), model, 6, begin=3)
    s = Scheduler.from_config(CFG, schedule=sched)
    s.set_timesteps(6)
    x3 = s.add_noise(data(), noise(), s.timesteps[3:4].repeat(4)).double()
    want = ts.sample(den, x3, schedule=tail)
    assert rel_err(got.double(), want) <= 1e-5
