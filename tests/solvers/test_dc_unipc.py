"""dc-unipc (DC-Solver, Zhao et al. 2024): neutral ratios are unipc-bh2 bit for bit; the
compensation changes the result; bad ratios are refused naming the argument; measured order."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from tests.solvers.test_convergence import _error, problem  # noqa: F401 - the shared fixture

F64 = torch.float64

# (solver, options, declared order, steps (coarse, fine)) as tests/solvers/test_convergence.py
CASES = [("dc-unipc", {"lower_order_final": False}, 3, (32, 64))]


def _setup(gmm2, kind):
    sched = ts.VPDiscreteSchedule.from_betas("linear") if kind == "vp" else ts.RectifiedFlowSchedule()
    den = gmm2.denoiser(sched, "epsilon" if kind == "vp" else "velocity")
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    return den, noise, "logsnr" if kind == "vp" else "uniform"


@pytest.mark.parametrize("kind", ["vp", "flow"])
@pytest.mark.parametrize("steps", [1, 3, 5, 8])
def test_neutral_ratios_are_unipc_bh2_bit_for_bit(gmm2, kind, steps):
    den, noise, grid = _setup(gmm2, kind)
    ref = ts.sample(den, noise, "unipc-bh2", steps=steps, grid=grid)
    for options in ({}, {"ratios": [1.0] * steps}, {"ratios": torch.ones(steps, dtype=F64)}):
        assert torch.equal(ts.sample(den, noise, "dc-unipc", steps=steps, grid=grid, solver_options=options), ref)


def test_a_ratio_changes_the_sample_from_the_first_compensated_step(gmm2):
    den, noise, grid = _setup(gmm2, "vp")
    ref = ts.sample(den, noise, "unipc-bh2", steps=6, grid=grid, save="all", return_solution=True).ys
    r = [1.0, 1.0, 1.2, 1.0, 1.0, 1.0]
    out = ts.sample(den, noise, "dc-unipc", steps=6, grid=grid, solver_options={"ratios": r}, save="all",
                    return_solution=True).ys
    assert torch.equal(out[:3], ref[:3])  # the compensation of step 2 acts on its prediction
    assert (out[3] - ref[3]).abs().max() > 1e-4


def test_compensation_weights_interpolate_the_outputs():
    """At ratio rho the weights are the Lagrange basis through t_i, t_{i-1}, t_{i-2} at
    tau = t_{i-1} + rho (t_i - t_{i-1}): a quadratic in t is reproduced exactly."""
    from timestepper.solvers.dc_unipc import compensation_weights
    from timestepper.solvers.expint import polynomial_basis

    t = [0.5, 0.6, 0.75]  # t_i, t_{i-1}, t_{i-2}
    nodes = [(tk - t[1]) / (t[0] - t[1]) for tk in t]
    basis = polynomial_basis(nodes)
    for rho in (0.3, 1.0, 1.7):
        tau = t[1] + rho * (t[0] - t[1])
        w = compensation_weights(basis, rho)
        assert sum(wk * (3 * tk**2 - tk + 2) for wk, tk in zip(w, t)) == pytest.approx(3 * tau**2 - tau + 2, rel=1e-12)


@pytest.mark.parametrize(("options", "steps", "exc", "phrase"), [
    ({"ratios": [1.0] * 4}, 5, ValueError, "ratios must have one entry per step: 5, got 4"),
    ({"ratios": [1.0, 1.0, math.nan, 1.0, 1.0]}, 5, ValueError, "ratios must be finite; ratios[2]"),
    ({"ratios": [1.0, 1.0, math.inf, 1.0, 1.0]}, 5, ValueError, "ratios must be finite"),
    ({"ratios": [1.0, 1.3, 1.0, 1.0, 1.0]}, 5, ValueError, "ratios[:2] must be 1"),
    ({"ratios": "1.0"}, 5, TypeError, "ratios must be a sequence of numbers"),
    ({"dc_order": 4}, 5, ValueError, "dc_order must be 1, 2 or 3"),
])
def test_bad_input_is_refused_naming_the_argument(gmm2, options, steps, exc, phrase):
    den, noise, grid = _setup(gmm2, "vp")
    with pytest.raises(exc) as info:
        ts.sample(den, noise, "dc-unipc", steps=steps, grid=grid, solver_options=options)
    assert phrase in str(info.value)


def test_declared_order_is_first_with_non_neutral_ratios():
    assert ts.solvers.get("dc-unipc").order == 3
    assert ts.solvers.get("dc-unipc", ratios=[1.0, 1.0, 1.1]).order == 1


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_convergence_order(problem, case):  # noqa: F811 - the imported fixture
    solver, options, order, (n0, n1) = case
    assert ts.solvers.get(solver, **options).order == order
    e0, _ = _error(problem, solver, options, n0)
    e1, _ = _error(problem, solver, options, n1)
    assert abs(math.log(e0 / e1) / math.log(n1 / n0) - order) <= 0.3
