"""The "timeshift" search method: the Time-Shift Sampler's window and cutoff chosen on the
training noise over the base solver's best grid (window 0, the base solver, always a candidate)."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture, sliced_wasserstein
from timestepper.solvers.schedule import SolverSchedule
from timestepper.tuning import get_method
from timestepper.tuning.objective import run_schedule
from timestepper.tuning.timeshift import BASES, best_base, timeshift

F64 = torch.float64


@pytest.fixture(scope="module")
def setup():
    gmm = GaussianMixture.random(32, 4, seed=0, spread=0.5)
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    exact = gmm.denoiser(sched, "epsilon", shared_time=False)
    # an imperfect model: the noise prediction 3 % too large (the exact model has no exposure bias)
    den = ts.Denoiser(lambda x, t: 1.03 * exact.model_fn(x, t), sched, "epsilon")
    noise = torch.randn(400, 32, generator=torch.Generator().manual_seed(0), dtype=F64)
    data = gmm.sample(400, torch.Generator().manual_seed(1))
    return den, noise, data


def test_registered_and_never_worse_than_its_base_on_the_training_noise(setup):
    den, noise, data = setup
    assert get_method("timeshift").fn is timeshift
    calls = []

    def objective(schedule):  # distance to data: what the paper's FID measures
        calls.append(schedule)
        return sliced_wasserstein(run_schedule(den, noise, schedule), data)

    sched = timeshift(den, 6, noise, objective, solver="ts-ddim", grid="uniform", windows=(10, 40),
                      cutoffs=(0.2, 0.6))
    assert sched.solver == "ts-ddim" and sched.steps == () and sched.nfe == 6
    assert set(sched.solver_options) == {"window", "cutoff", "data_variance"}
    assert sched.times == calls[0].times  # the base grid
    assert len(calls) == 1 + 1 + 2 * 2  # base, window 0, the budget's pairs
    p = sched.provenance
    assert p["method"] == "timeshift" and p["base_solver"] == "ddim" and p["grid"] == "uniform"
    assert p["objective_tuned"] <= p["objective_base"] + 1e-12
    assert p["objective_tuned"] == pytest.approx(objective(sched))
    # the base and window 0 agree (window 0 is the base solver to rounding)
    assert objective(calls[1]) == pytest.approx(p["objective_base"], rel=1e-9)


def test_tune_front_and_json_round_trip(setup, tmp_path):
    den, noise, _ = setup
    sched = ts.tuning.tune(den, nfe=5, method="timeshift", noise=noise[:64], windows=(10,), cutoffs=(0.3,),
                           grid="logsnr", reference_steps=40)
    assert sched.solver in BASES and sched.nfe == 5
    assert sched.provenance["found"]["base_solver"] == BASES[sched.solver]
    path = tmp_path / "ts.json"
    sched.save(path)
    loaded = SolverSchedule.load(path)
    assert loaded.solver_options == sched.solver_options and loaded.times == sched.times
    calls = []
    counted = ts.Denoiser(lambda x, t: calls.append(1) or den.model_fn(x, t), den.schedule, "epsilon")
    out = run_schedule(counted, noise[:8], loaded)
    assert len(calls) == 5 and torch.isfinite(out).all()
    torch.testing.assert_close(out, run_schedule(den, noise[:8], sched))


def test_bad_budget_is_refused(setup):
    den, noise, _ = setup

    def objective(s):
        return 0.0

    with pytest.raises(ValueError, match="solver must be .best. or one of ts-ddim, ts-dpmpp-2m"):
        timeshift(den, 5, noise, objective, solver="dpmpp-2m")
    with pytest.raises(ValueError, match=r"cutoffs are fractions of \[t_min, t_max\]"):
        timeshift(den, 5, noise, objective, cutoffs=(1.5,))
    with pytest.raises(ValueError, match="windows must be an integer >= 1"):
        timeshift(den, 5, noise, objective, windows=(0,))


def test_best_base_is_the_base_with_the_smallest_objective(setup):
    # every base solver is tried on its best named spacing (or the named one); UniPC bases included
    den, _, _ = setup
    seen = []

    def objective(schedule):
        seen.append((schedule.solver, schedule.times))
        return {"unipc-bh1": 0.5, "dpmpp-2m": 0.7}.get(schedule.solver, 1.0)

    assert best_base(den, 5, objective, "ays") == "ts-unipc-bh1"
    assert {s for s, _ in seen} == set(BASES.values())
    seen.clear()
    assert best_base(den, 5, objective, "uniform") == "ts-unipc-bh1"
    assert len({t for _, t in seen}) == 1  # only the named spacing
