"""ts.tune: the search methods improve the protocol objective, keep the NFE, and the results
save, load, resume and refuse bad budgets."""

from __future__ import annotations

import json
import math

import pytest
import torch

import timestepper as ts
from timestepper.bench import GaussianMixture
from timestepper.solvers.schedule import SolverSchedule
from timestepper.tuning import available_methods, register_method
from timestepper.tuning.ays import KLUB, optimise_levels
from timestepper.tuning.objective import CallCounter, Objective

F64 = torch.float64
SCHED = ts.VPDiscreteSchedule.from_betas("linear")


@pytest.fixture(scope="module")
def problem():
    gmm = GaussianMixture.random(2, 4, seed=0)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(64, 2, generator=g, dtype=F64)
    held = torch.randn(64, 2, generator=g, dtype=F64)
    a0, s0 = float(SCHED.alpha(SCHED.t_max)), float(SCHED.sigma(SCHED.t_max))

    def reference(n):
        return gmm.reference_solution(n / a0, s0 / a0, 0.0, rtol=1e-9, atol=1e-9)

    return gmm.denoiser(SCHED, "epsilon"), noise, held, reference


TINY = {"autodiffusion": dict(population=6, generations=3, top_k=2),
        "s3": dict(initial=12, rounds=3, proposals=4, predictor_population=64),
        "ays": dict(sweeps=1, iters=5)}


def test_the_methods_are_registered():
    assert {"fixed", "autodiffusion", "s3", "ays"} <= set(available_methods())


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TINY))
def test_each_method_improves_on_its_starting_grid(problem, method):
    den, noise, held, ref = problem
    base = ts.tune(den, 5, "fixed", noise=noise, reference=ref).provenance["objective_train"]
    sched = ts.tune(den, 5, method, noise=noise, reference=ref, held_out=held, **TINY[method])
    p = sched.provenance
    assert p["objective_train"] < 0.98 * base  # the best fixed grid x solver is where they start
    assert p["method"] == method and p["nfe"] == 5 and p["search_cost"]["model_calls"] > 0
    assert p["prediction"] == "epsilon" and p["schedule"]["class"] == "VPDiscreteSchedule"
    assert p["objective_held_out"] > 0


def test_the_tuned_schedule_spends_exactly_nfe_model_calls(problem):
    den, noise, _, ref = problem
    sched = ts.tune(den, 4, "autodiffusion", noise=noise, reference=ref, population=4, generations=2, top_k=1)
    counter = CallCounter(den)
    ts.sample(counter.denoiser, noise, schedule=sched)
    assert counter.calls == 4 == sched.nfe


def test_save_load_round_trip_gives_the_same_sample(problem, tmp_path):
    den, noise, _, ref = problem
    sched = ts.tune(den, 4, "autodiffusion", noise=noise, reference=ref, population=4, generations=2, top_k=1)
    path = tmp_path / "s.json"
    sched.save(path)
    back = SolverSchedule.load(path)
    assert back.times == sched.times and back.steps == sched.steps and back.provenance == json.loads(
        json.dumps(sched.to_dict()["provenance"]))
    back.validate(den)
    x = ts.sample(den, noise, schedule=sched)
    assert torch.equal(ts.sample(den, noise, schedule=ts.load_schedule(path)), x)
    assert torch.equal(ts.sample(den, noise, grid=f"searched:{path}"), x)


def test_bad_budget_names_and_values_are_refused(problem):
    den, noise, _, ref = problem
    with pytest.raises(TypeError, match="takes no budget argument 'generation'; allowed: population"):
        ts.tune(den, 4, "autodiffusion", noise=noise, reference=ref, generation=3)
    with pytest.raises(ValueError, match="population must be an integer >= 2, got 1.5"):
        ts.tune(den, 4, "autodiffusion", noise=noise, reference=ref, population=1.5)
    with pytest.raises(ValueError, match="unknown search method 'nope'"):
        ts.tune(den, 4, "nope", noise=noise, reference=ref)
    with pytest.raises(ValueError, match="criterion must be one of"):
        ts.tune(den, 4, "ays", noise=noise, reference=ref, criterion="fid")


def test_register_method_checks_the_signature():
    with pytest.raises(TypeError, match="must take"):
        register_method("bad-method", lambda den, nfe: None, "x")
    with pytest.raises(ValueError, match="already registered"):
        register_method("s3", lambda denoiser, nfe, noise, objective: None, "x")


def test_the_default_reference_is_a_tight_solve(problem):
    den, noise, _, ref = problem
    ob = Objective(den, noise)
    assert ob.model_calls == ob.reference_steps
    assert (ob.reference - ref(noise)).norm(dim=1).mean() < 2e-3


def test_journal_replays_without_model_calls(problem, tmp_path):
    den, noise, _, ref = problem
    kw = dict(noise=noise, reference=ref, journal=tmp_path / "j", population=4, generations=2, top_k=1)
    first = ts.tune(den, 4, "autodiffusion", **kw)
    again = ts.tune(den, 4, "autodiffusion", **kw)
    assert again.times == first.times and again.steps == first.steps
    assert again.provenance["search_cost"]["evaluations"] == 0
    assert again.provenance["search_cost"]["model_calls"] == first.provenance["search_cost"]["model_calls"]
    with pytest.raises(ValueError, match="written for other noise or another model"):
        ts.tune(den, 4, "autodiffusion", **{**kw, "noise": noise[:32]})


def test_journal_replays_an_infinite_objective_as_infinite(problem, tmp_path):
    # a refused or non-finite schedule scores inf; the journal writes it as a large finite number
    # (strict JSON) and must read it back as inf, or a replayed S^3 fits its predictor to other
    # targets than the live search did (and returns another schedule)
    den, noise, _, ref = problem
    ok = SolverSchedule.from_solver("ddim", ts.make_grid(den.schedule, 3, "logsnr", final="zero"))
    live = Objective(den, noise, ref, journal=tmp_path / "j")
    value = live(ok)
    live._append_journal("a schedule that failed", math.inf, 0, 0.0)
    replay = Objective(den, noise, ref, journal=tmp_path / "j")
    assert replay._cache["a schedule that failed"] == math.inf
    assert replay(ok) == value and replay.evaluations == 0


def test_feature_objective_measures_the_distance_between_features(problem):
    # features=f: the mean L2 between f(sample) and f(reference), training and held-out alike.
    den, noise, held, ref = problem
    sched = SolverSchedule.from_solver("dpmpp-2m", ts.make_grid(den.schedule, 5, "logsnr", final="zero"))
    plain = Objective(den, noise, ref, held_out=held)
    proj = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], dtype=F64)
    feat = Objective(den, noise, ref, held_out=held, features=lambda x: x @ proj)
    for name, ob in (("train", lambda o: o(sched)), ("held_out", lambda o: o.held_out(sched))):
        x = ts.sample(den, noise if name == "train" else held, schedule=sched)
        r = ref(noise if name == "train" else held)
        want = float(((x - r) @ proj).norm(dim=1).mean())
        assert ob(feat) == pytest.approx(want, rel=1e-12), name
        assert ob(plain) == pytest.approx(float((x - r).norm(dim=1).mean()), rel=1e-12), name
    assert feat.problem != plain.problem  # a journal of one is refused by the other
    tuned = ts.tune(den, 4, "ays", noise=noise, reference=ref, features=lambda x: x @ proj, sweeps=1, iters=3)
    assert tuned.provenance["objective"].endswith("(features)")
    with pytest.raises(TypeError, match="features must be a function samples -> features, got int"):
        Objective(den, noise, ref, features=3)


def test_klub_descent_lowers_the_bound(problem):
    den, noise, _, ref = problem
    klub = KLUB(den, ref(noise), seed=0)
    levels = [157.0, 10.0, 1.0, 0.1, 0.03]

    def total(lv):
        return sum(klub.interval(lv[i + 1], lv[i]) for i in range(len(lv) - 1))

    better = optimise_levels(lambda lv, i: klub.pair(lv, i, lv[i]), levels, sweeps=1, iters=6)
    assert better[0] == levels[0] and better[-1] == levels[-1]
    assert total(better) < 0.9 * total(levels)


def test_searches_start_from_the_fixed_grid_and_its_ays_refinement(problem):
    # The first population holds the refined times of the best fixed candidate (first), whose
    # objective is at most the fixed candidate's; with start_sweeps=0 only the fixed candidates.
    from timestepper.tuning.space import Space
    from timestepper.tuning.start import starting_candidates

    den, noise, _, ref = problem
    objective = Objective(den, noise, ref)
    space = Space(den.schedule, 6)
    start, plain = starting_candidates(den, 6, noise, objective, space, sweeps=0)
    assert plain[0] == space.from_schedule(start)
    _, seeded = starting_candidates(den, 6, noise, objective, space, sweeps=1, iters=4)
    assert seeded[1:] == plain and seeded[0] not in plain
    assert objective(space.to_schedule(seeded[0])) < objective(space.to_schedule(plain[0]))
    assert seeded[0].steps == plain[0].steps  # the same solver steps, refined times
    with pytest.raises(ValueError, match="start_sweeps must be an integer >= 0, got -1"):
        ts.tune(den, 4, "s3", noise=noise, reference=ref, start_sweeps=-1)


def test_s3_predictor_ranks_without_overflow_far_from_its_data():
    # On the digits model a stage once predicted a log-objective beyond float range: math.exp
    # overflowed and the search crashed. The search ranks by the log; predict() caps.
    from timestepper.tuning.s3 import QualityPredictor

    p = QualityPredictor(2, seed=0)
    p.fit([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [1e-3, 1e300, float("inf"), 1e-2])
    far = [[1e6, -1e6], [-1e6, 1e6], [0.5, 0.5]]
    logs = p.predict_log(far)
    assert all(math.isfinite(v) for v in logs)
    p.std, p.mean = 1e4, 0.0  # a wide fitted spread: the log leaves float range once exponentiated
    assert all(math.isfinite(v) for v in p.predict(far))


def test_the_guard_keeps_a_search_only_if_its_samples_are_as_close_as_the_fixed_grids(problem):
    # guard: the squared Fréchet distance of the samples (here flattened) to the reference
    # samples, on the training noise, for the searched schedule and for the best fixed grid
    from timestepper.bench.metrics import frechet_distance
    from timestepper.tuning.guard import guarded

    den, noise, _, ref = problem
    r = ref(noise)

    def distance(s):
        return frechet_distance(ts.sample(den, noise, schedule=s), r)

    fixed = ts.tune(den, 5, "fixed", noise=noise, reference=ref)
    tuned = ts.tune(den, 5, "ays", noise=noise, reference=ref, guard=True, sweeps=1, iters=3)
    g = tuned.provenance["guard"]
    assert g["frechet_fixed"] == pytest.approx(distance(fixed), rel=1e-9)
    assert g["kept"] == (g["frechet_found"] <= g["frechet_fixed"])
    assert tuned.provenance["search_cost"]["model_calls"] > 0
    # a poor schedule (DDIM on the uniform grid) loses to the best fixed grid: the guard returns that
    poor = SolverSchedule.from_solver("ddim", ts.make_grid(den.schedule, 5, "uniform", final="zero"))
    objective = Objective(den, noise, ref)
    out = guarded(poor, 5, objective, lambda x: x)
    assert out.provenance["fell_back_to_fixed"] and not out.provenance["guard"]["kept"]
    assert out.provenance["guard"]["frechet_found"] == pytest.approx(distance(poor), rel=1e-9)
    assert Objective.key(out) == Objective.key(fixed)
    # the fixed grid itself passes untouched
    same = guarded(fixed, 5, objective, lambda x: x)
    assert same.provenance["guard"] == {"kept": True, "same_as_fixed": True}


def test_the_guard_compares_with_data_when_given(problem):
    # guard_data: the distances are to the real samples' features, not the model's reference
    # samples'; a schedule closer to the model but farther from the data falls back
    from timestepper.bench.metrics import frechet_distance
    from timestepper.tuning.guard import guarded

    den, noise, _, ref = problem
    poor = SolverSchedule.from_solver("ddim", ts.make_grid(den.schedule, 5, "uniform", final="zero"))
    fixed = ts.tune(den, 5, "fixed", noise=noise, reference=ref)
    # "data" that sits exactly where the poor schedule's samples are: with it, the poor schedule wins
    data = ts.sample(den, noise, schedule=poor)
    out = guarded(poor, 5, Objective(den, noise, ref), lambda x: x, data=data)
    g = out.provenance["guard"]
    assert g["kept"] and g["frechet_found"] == pytest.approx(0.0, abs=1e-9)
    assert g["frechet_fixed"] == pytest.approx(frechet_distance(ts.sample(den, noise, schedule=fixed), data),
                                               rel=1e-9)
    assert g["reference"] == f"data ({noise.shape[0]} samples)"
    # against the model's reference the same schedule falls back
    assert guarded(poor, 5, Objective(den, noise, ref), lambda x: x).provenance["guard"]["reference"] == "model"
    tuned = ts.tune(den, 5, "ays", noise=noise, reference=ref, guard=True, guard_data=data, sweeps=1, iters=2)
    assert tuned.provenance["guard"].get("same_as_fixed") or tuned.provenance["guard"]["reference"].startswith("data")


def test_bad_guard_data_is_refused(problem):
    den, noise, _, ref = problem
    with pytest.raises(ValueError, match="guard_data needs a guard"):
        ts.tune(den, 4, "ays", noise=noise, reference=ref, guard_data=noise)
    with pytest.raises(ValueError, match=r"guard_data must be a tensor of at least 2 samples shaped like the noise's"):
        ts.tune(den, 4, "ays", noise=noise, reference=ref, guard=True, guard_data=noise[:, :1])
    with pytest.raises(ValueError, match="guard_data holds NaN or inf"):
        ts.tune(den, 4, "ays", noise=noise, reference=ref, guard=True, guard_data=noise * float("nan"))


def test_bad_guards_are_refused(problem):
    den, noise, _, ref = problem
    with pytest.raises(TypeError, match="guard must be None, True or a feature extractor"):
        ts.tune(den, 4, "ays", noise=noise, reference=ref, guard=3)
    wide = torch.zeros(2, 4097, dtype=F64)
    with pytest.raises(ValueError, match="guard=True compares flattened samples, at most 4096"):
        ts.tune(den, 4, "ays", noise=wide, reference=ref, guard=True)
