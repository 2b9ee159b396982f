"""Solver schedules (USF): the existing multistep solvers reproduced bit for bit as per-step
schedules, mixed schedules that converge, the declared order measured, JSON, validation and the
``sample`` fronts."""

from __future__ import annotations

import json
import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.diffusion.grids import make_grid
from timestepper.solvers.schedule import ScheduledSolver, SolverSchedule, StepSpec

F64 = torch.float64
torch.set_num_threads(1)

# (solver, options): the solvers a schedule reproduces bit for bit
REPRODUCED = [
    ("dpmpp-2m", {}),
    ("dpmpp-2m", {"solver_type": "heun", "lower_order_final": False}),
    ("dpmpp-3m", {}),
    ("unipc-bh2", {}),
    ("unipc-bh1", {}),
    ("unipc-bh2", {"order": 3, "disable_corrector": (1,)}),
    ("ddim", {}),
    ("dpm-solver-2m", {}),
    ("dpm-solver-3m", {}),
]


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture.random(3, 6, seed=2)


def _noise(n=8, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("name,options", REPRODUCED, ids=[f"{n}-{o}" for n, o in REPRODUCED])
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_existing_solvers_are_reproduced_bit_for_bit(gmm, name, options, prediction):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den, noise = gmm.denoiser(sched, prediction), _noise()
    for steps in (1, 2, 3, 5, 8, 16):  # < 15 steps: lower_order_final grids
        for final in ("zero", "sigma_min"):
            grid = make_grid(sched, steps, "logsnr", final=final)
            ref = ts.sample(den, noise, name, grid=grid, solver_options=options)
            schedule = SolverSchedule.from_solver(name, grid, **options)
            assert schedule.nfe == steps
            out = ts.sample(den, noise, schedule=schedule)
            assert torch.equal(out, ref), (name, options, steps, final)


@pytest.mark.parametrize("name", ["dpmpp-2m", "unipc-bh2", "dpm-solver-3m"])
def test_flow_from_pure_noise_is_reproduced_bit_for_bit(gmm, name):
    """A grid from alpha = 0: the first step is the DDIM step and the history starts after it."""
    sched = ts.RectifiedFlowSchedule()
    den, noise = gmm.denoiser(sched, "velocity"), _noise()
    for steps in (2, 4, 7):
        grid = make_grid(sched, steps, "uniform")
        schedule = SolverSchedule.from_solver(name, grid)
        assert schedule.steps[1].order == 1
        schedule.validate(den)
        assert torch.equal(ts.sample(den, noise, schedule=schedule), ts.sample(den, noise, name, grid=grid))


def _edm_problem(gmm, sigma_min=0.1, sigma_max=80.0):
    sched = ts.EDMSchedule(sigma_min, sigma_max)
    noise = _noise(16)
    ref = gmm.reference_solution(noise * math.sqrt(1 + sigma_max**2), s_start=sigma_max, s_end=sigma_min)
    return gmm.denoiser(sched, "epsilon"), noise, ref


def _error(den, noise, ref, **kw):
    if "schedule" not in kw:
        kw["final"] = "sigma_min"  # a schedule's times already end at sigma_min
    return (ts.sample(den, noise, **kw) - ref).norm(dim=-1).mean().item()


MIXED = [StepSpec(1, "data"), StepSpec(2, "noise", True, "bh1"), StepSpec(3, "data", False, "taylor"),
         StepSpec(2, "data", True, "midpoint"), StepSpec(3, "noise", True, "bh2")]


def _mixed_schedule(grid):
    n = grid.steps
    specs = [MIXED[min(i, 2)] if i < 3 else MIXED[3 + i % 2] for i in range(n)]
    to_zero = not math.isfinite(float(grid.log_snr[-1]))  # a step to zero noise is first order
    specs[-1] = StepSpec(1 if to_zero else 2, "noise", False, "bh2")
    return SolverSchedule(tuple(grid.t.tolist()), tuple(specs))


def test_mixed_schedule_converges_and_beats_ddim(gmm):
    """Orders 1-3, data and noise prediction, correctors on and off per step: the error falls at
    (at least) second order with the steps and is far below DDIM's on the same grid."""
    den, noise, ref = _edm_problem(gmm)
    errors = []
    for n in (16, 32):
        grid = make_grid(den.schedule, n, "logsnr", final="sigma_min")
        e = _error(den, noise, ref, schedule=_mixed_schedule(grid))
        e_ddim = _error(den, noise, ref, solver="ddim", grid=grid)
        assert e < 0.05 * e_ddim, (n, e, e_ddim)
        errors.append(e)
    assert math.log2(errors[0] / errors[1]) > 1.7, errors


# (solver, options, declared order, steps (coarse, fine)) -- the order test of "usf"
CASES = [
    ("usf", {}, 2, (32, 64)),
    ("usf", {"steps": StepSpec(1, "noise", False, "midpoint")}, 1, (64, 128)),
    ("usf", {"steps": StepSpec(3, "data", False, "taylor")}, 3, (32, 64)),
    ("usf", {"steps": StepSpec(2, "noise", False, "bh1")}, 2, (32, 64)),
    ("usf", {"steps": StepSpec(1, "noise", True, "bh2")}, 2, (32, 64)),
    ("usf", {"steps": StepSpec(2, "noise", True, "bh2")}, 3, (32, 64)),
    ("usf", {"steps": StepSpec(2, "data", True, "taylor")}, 3, (32, 64)),
    ("usf", {"steps": StepSpec(3, "noise", True, "bh1")}, 4, (64, 128)),
]


@pytest.mark.parametrize("case", CASES, ids=[str(c[1].get("steps", "default")) for c in CASES])
def test_convergence_order(gmm2, case):
    """The declared order (``order + corrector``; UniC in noise prediction included) is measured
    on the exact mixture, as tests/solvers/test_convergence.py does for the other solvers."""
    solver, options, order, (n0, n1) = case
    assert ts.solvers.get(solver, **options).order == order
    sched = ts.EDMSchedule(0.1, 80.0)
    den, noise = gmm2.denoiser(sched, "sample"), _noise(16, 2)
    ref = gmm2.reference_solution(noise * math.sqrt(1 + 80.0**2), s_start=80.0, s_end=0.1)
    e0, e1 = (_error(den, noise, ref, solver=solver, steps=n, grid="logsnr", solver_options=options)
              for n in (n0, n1))
    slope = math.log(e0 / e1) / math.log(n1 / n0)
    assert abs(slope - order) <= 0.3, (options, slope)


# -- JSON and provenance ---------------------------------------------------------------------------

def test_json_round_trip_is_exact_and_runs_the_same(gmm, tmp_path):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den, noise = gmm.denoiser(sched, "epsilon"), _noise()
    grid = make_grid(sched, 6, "karras")
    s = _mixed_schedule(grid)
    s.provenance = ts.solvers.schedule.model_provenance(den, model="gmm-seed-2", method="hand", seed=0,
                                                        objective="l2", search_cost={"model_calls": 0})
    path = tmp_path / "s.json"
    s.save(path)
    data = json.loads(path.read_text())
    assert data["provenance"]["nfe"] == 6 and data["provenance"]["prediction"] == "epsilon"
    assert data["provenance"]["schedule"]["class"] == "VPDiscreteSchedule"
    loaded = ts.load_schedule(path)
    assert loaded.times == s.times and loaded.steps == s.steps
    assert loaded.to_dict() == s.to_dict()
    ref = ts.sample(den, noise, schedule=s)
    assert torch.equal(ts.sample(den, noise, schedule=loaded), ref)
    assert torch.equal(ts.sample(den, noise, grid=f"searched:{path}"), ref)
    assert torch.equal(ts.sample(den, noise, schedule=str(path)), ref)


def test_schedule_of_a_registered_solver(gmm, tmp_path):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    den, noise = gmm.denoiser(sched, "epsilon"), _noise()
    grid = make_grid(sched, 7, "logsnr")
    s = SolverSchedule(tuple(grid.t.tolist()), solver="dpmpp-2m", solver_options={"solver_type": "heun"})
    assert s.nfe == 7
    s.save(tmp_path / "r.json")
    out = ts.sample(den, noise, grid=f"searched:{tmp_path / 'r.json'}", return_solution=True)
    assert out.stats.nfe == 7
    assert torch.equal(out.x, ts.sample(den, noise, "dpmpp-2m", grid=grid,
                                        solver_options={"solver_type": "heun"}))
    unknown = SolverSchedule(tuple(grid.t.tolist()), solver="heun")
    assert unknown.nfe == 14 and not unknown.nfe_is_exact and "nfe" not in unknown.to_dict()["provenance"]
    unknown.save(tmp_path / "h.json")
    assert ts.sample(den, noise, grid=f"searched:{tmp_path / 'h.json'}", return_solution=True).stats.nfe == 13
    heun = SolverSchedule(tuple(grid.t.tolist()), solver="heun", provenance={"nfe": 13})
    assert heun.nfe == ts.sample(den, noise, schedule=heun, return_solution=True).stats.nfe == 13
    heun.provenance["nfe"] = 14  # the last step to zero noise is an Euler step
    with pytest.raises(ValueError, match="records nfe=14 but running it took 13 model calls"):
        ts.sample(den, noise, schedule=heun)


def test_nfe_is_the_model_calls(gmm):
    sched = ts.VPDiscreteSchedule.from_betas("linear")
    calls = []
    inner = gmm.denoiser(sched, "epsilon")
    den = ts.Denoiser(lambda x, t: calls.append(1) or inner.model_fn(x, t), sched, "epsilon")
    s = _mixed_schedule(make_grid(sched, 9, "logsnr"))
    sol = ts.sample(den, _noise(), schedule=s, return_solution=True)
    assert s.nfe == sol.stats.nfe == len(calls) == 9


# -- bad input -------------------------------------------------------------------------------------

def _times(n):
    return tuple(float(t) for t in torch.linspace(999, 0, n + 1))


@pytest.mark.parametrize("build,phrase", [
    (lambda: SolverSchedule((999.0, 500.0, 600.0, 0.0), (StepSpec(1),) * 3), "step 1: times must strictly"),
    (lambda: SolverSchedule(_times(3), (StepSpec(1), StepSpec(3), StepSpec(1))), "step 1: order 3 exceeds"),
    (lambda: SolverSchedule(_times(3), (StepSpec(1),) * 2), "NFE mismatch: 2 steps for 4 times"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1), StepSpec(1, "score"))), "step 1: prediction must be"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1), StepSpec(1, variant="bh3"))), "step 1: variant must be"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1), {"order": 1, "eta": 1})), "step 1: unknown fields"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1), StepSpec(1, corrector=True))), "step 1: the last step"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1), StepSpec(2, variant="ddim"))), "step 1: variant 'ddim'"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1),) * 2, provenance={"nfe": 3}), "provenance says nfe=3"),
    (lambda: SolverSchedule(_times(2), (StepSpec(1),) * 2, solver="ddim"), "either per-step specs"),
])
def test_bad_schedules_are_refused_naming_the_step(build, phrase):
    with pytest.raises(ValueError, match=phrase):
        build()


def test_a_schedule_for_another_model_is_refused_unless_forced(gmm, tmp_path):
    vp = ts.VPDiscreteSchedule.from_betas("linear")
    den = gmm.denoiser(vp, "epsilon")
    s = SolverSchedule.from_solver("dpmpp-2m", make_grid(vp, 5, "logsnr"))
    s.provenance.update(ts.solvers.schedule.model_provenance(den))
    s.validate(den)
    other_betas = gmm.denoiser(ts.VPDiscreteSchedule.from_betas("scaled_linear"), "epsilon")
    with pytest.raises(ValueError, match="made for noise schedule"):
        s.validate(other_betas)
    with pytest.raises(ValueError, match="made for a 'epsilon'-prediction model"):
        ts.sample(gmm.denoiser(vp, "v_prediction"), _noise(), schedule=s)
    out = ts.sample(gmm.denoiser(vp, "v_prediction"), _noise(), schedule=s, force=True)
    assert torch.allclose(out, ts.sample(den, _noise(), schedule=s), atol=1e-10)


def test_orders_above_the_history_of_a_grid_from_pure_noise_are_refused(gmm):
    flow = ts.RectifiedFlowSchedule()
    s = SolverSchedule(tuple(torch.linspace(1, 0, 4).tolist()), (StepSpec(1), StepSpec(2), StepSpec(1)))
    with pytest.raises(ValueError, match="step 1: order 2 exceeds the history available there"):
        ts.sample(gmm.denoiser(flow, "velocity"), _noise(), schedule=s)


@pytest.mark.parametrize("kw,phrase", [
    ({"solver": "ddim"}, "solver cannot be given together with a solver schedule"),
    ({"steps": 4}, "steps=4 contradicts the schedule, which has 5 steps"),
    ({"grid": "karras"}, "grid cannot be given"),
    ({"final": "sigma_min"}, "final cannot be given"),
    ({"solver_options": {"order": 3}}, "solver_options cannot be given"),
])
def test_sample_refuses_options_that_contradict_the_schedule(gmm, kw, phrase):
    vp = ts.VPDiscreteSchedule.from_betas("linear")
    s = SolverSchedule.from_solver("dpmpp-2m", make_grid(vp, 5, "logsnr"))
    with pytest.raises(ValueError, match=phrase):
        ts.sample(gmm.denoiser(vp), _noise(), schedule=s, **kw)
    ts.sample(gmm.denoiser(vp), _noise(), schedule=s, steps=5)  # the same step count is fine


def test_solver_refuses_a_grid_of_another_length(gmm):
    vp = ts.VPDiscreteSchedule.from_betas("linear")
    with pytest.raises(ValueError, match="the schedule has 2 steps but the grid has 5"):
        ts.sample(gmm.denoiser(vp), _noise(), ScheduledSolver((StepSpec(1), StepSpec(2))), steps=5)
