"""The solver contract, checked for every registered solver.

* Capabilities are declared consistently (a solver that declares dense output, per-sample steps
  or a first derivative implements the method; orders and counts are positive integers).
* The evaluations a solve reports (``Solution.stats.nfe``, summed from what each step says it did)
  are the calls the model / vector field actually received.
* Every registered solver has a test that measures its order, or an exemption with a reason.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import timestepper as ts
from timestepper.core.solver import Solver
from timestepper.core.terms import Term
from timestepper.solvers import registry

F64 = torch.float64
NAMES = ts.solvers.available()


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_declared_consistently(name):
    s = ts.solvers.get(name)
    entry = ts.solvers.entry(name)
    assert s.family == entry.family in registry.FAMILIES
    assert isinstance(s.order, int) and s.order >= 1
    assert isinstance(s.nfe_per_step, int) and s.nfe_per_step >= 1
    assert s.error_order is None or (isinstance(s.error_order, int) and s.error_order >= 1)
    kinds = s.term_type if isinstance(s.term_type, tuple) else (s.term_type,)
    assert all(issubclass(k, Term) for k in kinds)
    for flag, method in (("has_dense_output", "interpolate"), ("per_sample", "merge"),
                         ("provides_first_derivative", "first_derivative")):
        implemented = getattr(type(s), method) is not getattr(Solver, method)
        assert implemented or not getattr(s, flag), (name, flag)
    assert s.display_name == name and entry.summary


def _counting_denoiser(gmm, schedule, kind):
    calls = []
    den = gmm.denoiser(schedule, kind)
    return ts.Denoiser(lambda x, t: calls.append(1) or den.model_fn(x, t), schedule, kind), calls


@pytest.mark.parametrize("name", ts.solvers.available("diffusion"))
@pytest.mark.parametrize("schedule", ["vp", "flow"])
def test_reported_nfe_is_the_model_calls_diffusion(gmm2, name, schedule):
    sched = ts.VPDiscreteSchedule.from_betas("linear") if schedule == "vp" else ts.RectifiedFlowSchedule()
    den, calls = _counting_denoiser(gmm2, sched, "epsilon" if schedule == "vp" else "velocity")
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    for steps in (1, 2, 3, 7):
        if steps < ts.solvers.get(name).min_steps:
            continue  # refused (tests/solvers/test_bad_input.py)
        calls.clear()
        sol = ts.sample(den, noise, name, steps=steps, generator=1, return_solution=True,
                        grid="uniform" if schedule == "flow" else "logsnr")
        assert sol.stats.nfe == len(calls), (name, steps)


def test_reported_nfe_of_the_wrappers(gmm2):
    """Inpainting (replacement, RePaint resampling) and SMC: per sample, SMC evaluates K particles
    in each model call."""
    from timestepper.solvers.inpaint import Inpaint
    from timestepper.solvers.smc import SMCInpaint

    den, calls = _counting_denoiser(gmm2, ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    known, mask = torch.zeros(2, dtype=F64), torch.tensor([True, False])
    for solver, per_call in ((Inpaint("dpmpp-2m", known, mask, resample=3), 1),
                             (Inpaint("pc", known, mask, {"n_corrector": 2}), 1),
                             (SMCInpaint(known, mask, particles=4), 4)):
        calls.clear()
        sol = ts.sample(den, noise, solver, steps=5, generator=0, return_solution=True)
        assert sol.stats.nfe == per_call * len(calls), solver


def _counting_field(f):
    calls = []
    return (lambda t, y: calls.append(1) or f(t, y)), calls


@pytest.mark.parametrize("name", ts.solvers.available("ode"))
@pytest.mark.parametrize("mode", ["fixed", "adaptive", "per-sample", "dense", "per-sample-dense"])
def test_reported_nfe_is_the_field_calls_ode(name, mode):
    s = ts.solvers.get(name)
    if mode != "fixed" and s.error_order is None:
        pytest.skip("fixed-step solver")
    if mode == "fixed" and s.variable_order:
        pytest.skip("chooses its own steps and orders (refuses a grid: tests/ode/test_adams_variable.py)")
    if "dense" in mode and not s.has_dense_output:
        pytest.skip("no dense output")
    if mode.startswith("per-sample") and not s.per_sample:
        pytest.skip("shared steps only (a multistep history)")
    field, calls = _counting_field(lambda t, y: -y + torch.sin(y))
    y0 = torch.tensor([[1.0, 0.5], [0.2, -1.0]], dtype=F64)
    if mode == "fixed":
        sol = ts.integrate(ts.ODETerm(field), s, torch.linspace(0, 1, 7, dtype=F64), y0)
    else:
        sol = ts.integrate(ts.ODETerm(field), s, ts.PIDController(1e-6, 1e-8), y0, t_span=(0.0, 2.0),
                           per_sample=mode.startswith("per-sample"),
                           saveat=torch.tensor([0.3, 1.1, 1.7], dtype=F64) if "dense" in mode else None)
    nfe = sol.stats.nfe
    total = int(nfe.max()) if isinstance(nfe, torch.Tensor) else nfe  # per sample: the batch calls
    assert total == len(calls) and sol.extras.get("nfe_calls", total) == len(calls), name


@pytest.mark.parametrize("name", ts.solvers.available("sde"))
def test_reported_nfe_is_the_drift_and_diffusion_calls_sde(name):
    drift, calls = _counting_field(lambda t, x: 0.5 * x)
    diffusion, calls_g = _counting_field(lambda t, x: 0.3 * x)
    sde_type = ts.solvers.get(name).sde_type
    sol = ts.sdeint(drift, diffusion, torch.ones(3, dtype=F64), torch.linspace(0, 1, 6), solver=name,
                    sde_type=sde_type)
    assert sol.stats.nfe == len(calls) + len(calls_g)


@pytest.mark.parametrize("name", ts.solvers.available("pde"))
def test_reported_nfe_is_the_nonlinear_calls_pde(name):
    n, calls = _counting_field(lambda t, x: -x * x)
    term = ts.SemilinearTerm(torch.tensor([-1.0, -4.0], dtype=F64), n)
    sol = ts.integrate(term, name, torch.linspace(0, 1, 5, dtype=F64), torch.ones(2, dtype=F64))
    assert sol.stats.nfe == len(calls)


def test_reported_nfe_is_the_surrogate_calls():
    class Surrogate:
        calls = 0

        def predict(self, u, generator=None):
            Surrogate.calls += 1
            return 0.9 * u

    out = ts.integrate(ts.core.SurrogateTerm(Surrogate()), "autoregressive",
                       torch.arange(5, dtype=F64), torch.ones(3))
    assert out.stats.nfe == Surrogate.calls == 4


# -- every registered solver has an order test ---------------------------------------------------

# name -> (module, test function) whose parametrization names the solver
ORDER_TESTS = {
    **{n: ("tests.ode.test_rk", "test_convergence_order") for n in
       ("rk-euler", "midpoint", "rk-heun", "adaptive-heun", "fehlberg2", "heun3", "rk4", "rk4-38",
        "bosh3", "dopri5", "dopri5-shampine", "tsit5", "dopri8")},
    "rosenbrock23": ("tests.ode.test_stiff", "test_rosenbrock_order"),
    "vode-adams": ("tests.ode.test_adams_variable", "test_order_with_the_order_capped"),
    **{n: ("tests.solvers.test_implicit", "test_convergence_order") for n in
       ("implicit-euler", "implicit-midpoint", "trapezoid", "sdirk2", "trbdf2", "radau-iia3", "gl4",
        "radau-iia5", "gl6", "kvaerno3", "kvaerno4", "kvaerno5")},
    **{n: ("tests.ode.test_odeint_adams", "test_adams_order") for n in ("adams-bashforth", "adams-moulton",
                                                                           "abm")},
    **{n: ("tests.ode.test_sde", "test_strong_order_gbm") for n in ("sde-euler", "milstein", "reversible-heun")},
    **{n: ("tests.solvers.test_solvers_etd", "test_empirical_order_on_kuramoto_sivashinsky")
       for n in ("etd1", "etdrk2", "etdrk4", "imex-euler")},
    **{n: ("tests.solvers.test_convergence", "test_convergence_order") for n in
       ("ddim", "dpm-solver-1", "dpmpp-2m", "dpmpp-3m", "dpm-solver-2m", "dpm-solver-3m", "dpm-solver-2",
        "dpm-solver-3", "dpmpp-2s", "dpmpp-3s", "deis", "unipc-bh1", "unipc-bh2", "plms", "pndm", "lms",
        "dpm-2")},
    "usf": ("tests.solvers.test_schedule", "test_convergence_order"),
    "dpm-adaptive": ("tests.solvers.test_dpm_adaptive", "test_error_falls_as_nfe_to_minus_order"),
    "bdia-ddim": ("tests.solvers.test_bdia", "test_bdia_order"),
    "bdia-edm": ("tests.solvers.test_bdia_edm", "test_bdia_edm_order"),
    "dpm-solver-v3": ("tests.solvers.test_dpm_v3", "test_convergence_order"),
    "dc-unipc": ("tests.solvers.test_dc_unipc", "test_convergence_order"),
    **{n: ("tests.solvers.test_convergence_foundation", "test_empirical_order_matches_declared")
       for n in ("euler", "heun")},
    **{n: ("tests.solvers.test_stochastic_solvers", "test_deterministic_limit_convergence_order")
       for n in ("sde-dpmpp-2m", "sde-dpmpp-3m", "dpmpp-2s-ancestral", "dpm-2-ancestral",
                  "dpmpp-sde", "euler-ancestral")},
}
EXEMPT = {
    "autoregressive": "applies a learned one-step map: there is no discretisation to converge",
    "ddpm": "eta = 1 is fixed, so there is no deterministic limit; the sampled distribution's "
            "convergence to the exact one is tested (tests/sampling/test_distribution.py)",
    "euler-maruyama": "reverse-SDE sampler: weak convergence of the sampled distribution is tested "
                      "(tests/sampling/test_distribution.py)",
    "pc": "its order is the predictor's; the Langevin corrector is an MCMC step (distribution "
          "tested in tests/sampling/test_distribution.py)",
    **{n: "Time-Shift Sampler: the data-dependent shifted time deliberately leaves the PF-ODE (a "
          "window of training steps does not shrink with the grid); window 0 is ddim / dpmpp-2m / "
          "dpm-solver-2m / unipc to rounding (tests/solvers/test_time_shift.py, test_time_shift_unipc.py)"
       for n in ("ts-ddim", "ts-dpmpp-2m", "ts-dpm-solver-2m", "ts-unipc-bh1", "ts-unipc-bh2")},
}


def _parametrized_values(func) -> str:
    return repr([m.args for m in getattr(func, "pytestmark", []) if m.name == "parametrize"])


def test_every_registered_solver_has_an_order_test():
    names = set(NAMES)
    assert not (set(ORDER_TESTS) & set(EXEMPT))
    assert names == set(ORDER_TESTS) | set(EXEMPT), (names ^ (set(ORDER_TESTS) | set(EXEMPT)))
    for name, (module, func_name) in ORDER_TESTS.items():
        func = getattr(importlib.import_module(module), func_name)
        params = _parametrized_values(func) + repr(getattr(importlib.import_module(module), "CASES", ""))
        params += repr(getattr(importlib.import_module(module), "LEVELS", ""))
        assert f"'{name}'" in params or func_name == "test_rosenbrock_order", (name, module, func_name)


def test_solvers_fitted_to_a_model_are_left_out_of_the_training_free_baselines():
    from timestepper.bench.runner import deterministic_solvers

    fitted = {n for n in ts.solvers.available("diffusion") if ts.solvers.get(n).fitted_to_model}
    assert fitted == {"usf", "dc-unipc"}
    assert not fitted & set(deterministic_solvers())
