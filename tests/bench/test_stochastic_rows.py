"""The rows ``timestepper bench gmm --stochastic`` adds."""

import pytest

from timestepper.bench import GaussianMixture
from timestepper.bench.stochastic import STOCHASTIC_SAMPLERS, stochastic_rows
from timestepper.solvers.registry import available, get


def test_stochastic_rows_cover_samplers_and_budgets():
    gmm = GaussianMixture.random(2, 3, seed=0)
    seen = []
    rows = stochastic_rows(gmm, nfes=(4, 8), n_samples=200, solvers=["ddpm", "pc"],
                           on_row=seen.append)
    assert rows == seen and rows[0]["solver"] == "exact (baseline)"
    assert [(r["solver"].split()[0], r["nfe_budget"]) for r in rows[1:]] == [
        ("ddpm", 4), ("ddpm", 8), ("pc", 4), ("pc", 8)]
    for r in rows[1:]:
        assert r["nfe"] <= r["nfe_budget"] and r["sw2"] > 0
        assert r["sw2_ratio"] == r["sw2"] / rows[0]["sw2"]
    with pytest.raises(ValueError, match="unknown stochastic"):
        stochastic_rows(gmm, solvers=["heun"])


def test_every_stochastic_diffusion_solver_is_benchmarked():
    """A new stochastic sampler gets a row; its calls per step are the solver's declared ones."""
    stochastic = set()
    for name in available("diffusion"):
        options = STOCHASTIC_SAMPLERS.get(name, ({}, 0))[0]
        solver = get(name, **options)
        if solver.is_stochastic:
            stochastic.add(name)
            assert name in STOCHASTIC_SAMPLERS, name
            assert STOCHASTIC_SAMPLERS[name][1] == solver.nfe_per_step, name
    assert set(STOCHASTIC_SAMPLERS) == stochastic
