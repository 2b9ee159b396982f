"""Properties of the stochastic solvers: reproducible noise, honest NFE, bad input, the
deterministic limits (eta = 0) and their convergence order, the Brownian path."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.solvers import BrownianPath
from timestepper.solvers.noise import BrownianNoise

F64 = torch.float64
STOCHASTIC = ["ddpm", "euler-ancestral", "dpmpp-2s-ancestral", "dpm-2-ancestral", "dpmpp-sde",
              "sde-dpmpp-2m", "sde-dpmpp-3m",
              "euler-maruyama", "pc"]


@pytest.fixture(scope="module")
def setup(gmm2):
    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    return den, noise


@pytest.mark.parametrize("name", STOCHASTIC)
def test_bit_reproducible_with_generator(setup, name):
    den, noise = setup
    assert ts.solvers.get(name).is_stochastic
    a = ts.sample(den, noise, name, steps=6, generator=torch.Generator().manual_seed(5))
    b = ts.sample(den, noise, name, steps=6, generator=5)
    c = ts.sample(den, noise, name, steps=6, generator=6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name,opts,nfe", [
    ("ddpm", {}, 7), ("dpmpp-2s-ancestral", {}, 13), ("sde-dpmpp-3m", {}, 7),
    ("pc", {"n_corrector": 2}, 21),
    ("pc", {"predictor": "dpmpp-2s-ancestral", "n_corrector": 1}, 20),
    ("pc", {"n_corrector": 0}, 7),
])
def test_nfe_counted_honestly(setup, name, opts, nfe):
    den, noise = setup
    calls = []
    counted = ts.Denoiser(lambda x, t: calls.append(1) or den(x, t), den.schedule, "epsilon")
    sol = ts.sample(counted, noise, name, steps=7, solver_options=opts, generator=0,
                    return_solution=True)
    assert sol.stats.nfe == len(calls) == nfe


def test_ddim_eta_zero_is_the_deterministic_sampler(setup):
    den, noise = setup
    solver = ts.solvers.get("ddim")
    assert not solver.is_stochastic
    a = ts.sample(den, noise, "ddim", steps=8)
    b = ts.sample(den, noise, "ddim", steps=8, solver_options={"eta": 0.0}, generator=3)
    assert torch.equal(a, b)


def test_dpm2_ancestral_eta_zero_is_dpm2(setup):
    den, noise = setup
    a = ts.sample(den, noise, "dpm-2", steps=8)
    b = ts.sample(den, noise, "dpm-2-ancestral", steps=8, solver_options={"eta": 0.0}, generator=3)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_dpmpp_sde_eta_zero_is_dpmpp_2s(setup):
    """At eta = 0 both samplers are k-diffusion's DPM-Solver++(2S) with r = 1/2 on every step."""
    den, noise = setup
    a = ts.sample(den, noise, "dpmpp-2s-ancestral", steps=8, solver_options={"eta": 0.0})
    b = ts.sample(den, noise, "dpmpp-sde", steps=8, solver_options={"eta": 0.0}, generator=3)
    assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_ddpm_is_euler_ancestral_and_ddim_eta_one(setup):
    den, noise = setup
    a = ts.sample(den, noise, "ddpm", steps=8, generator=1)
    b = ts.sample(den, noise, "euler-ancestral", steps=8, generator=1)
    c = ts.sample(den, noise, "ddim", steps=8, generator=1, solver_options={"eta": 1.0})
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and torch.allclose(a, c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,opts,match", [
    ("ddim", {"eta": -0.1}, "eta"), ("ddim", {"eta": 1.5}, "eta"),
    ("ddpm", {"noise": "pink"}, "noise"),
    ("dpmpp-sde", {"r": 0.0}, "r must be in"), ("dpmpp-sde", {"r": 1.5}, "r must be in"),
    ("dpm-2-ancestral", {"eta": 2.0}, "eta"),
    ("sde-dpmpp-2m", {"solver_type": "rk"}, "solver_type"), ("sde-dpmpp-2m", {"eta": -1}, "eta"),
    ("pc", {"snr": 0.0}, "snr"), ("pc", {"n_corrector": -1}, "n_corrector"),
    ("pc", {"corrector": "hmc"}, "corrector"), ("pc", {"predictor": "rk4"}, "predictor"),
])
def test_bad_options_name_the_argument(name, opts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ts.solvers.get(name, **opts)


def _order(gmm2, name, opts, steps=(16, 32, 64)):
    """Empirical order of the deterministic limit on refined log-SNR grids ending at sigma_min."""
    sched = ts.VPLinearSchedule(t_min=1e-2)
    den = gmm2.denoiser(sched, "epsilon")
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    s0 = float(sched.sigma(sched.t_max) / sched.alpha(sched.t_max))
    s1 = float(sched.sigma(sched.t_min) / sched.alpha(sched.t_min))
    ref = gmm2.reference_solution(noise / float(sched.alpha(sched.t_max)), s0, s1)
    ref = ref * float(sched.alpha(sched.t_min))
    errs = []
    for n in steps:
        x = ts.sample(den, noise, name, steps=n, final="sigma_min", solver_options=opts)
        errs.append(float((x - ref).norm(dim=1).mean()))
    return math.log(errs[-2] / errs[-1]) / math.log(2.0)


@pytest.mark.parametrize("name,opts,order", [
    ("sde-dpmpp-2m", {"eta": 0.0, "lower_order_final": False}, 2),
    ("sde-dpmpp-3m", {"eta": 0.0, "lower_order_final": False}, 3),
    # the peers' 3M formula halves the second-difference term: a second-order method
    ("sde-dpmpp-3m", {"eta": 0.0, "lower_order_final": False, "variant": "k-diffusion"}, 2),
    ("dpmpp-2s-ancestral", {"eta": 0.0}, 2),
    ("dpm-2-ancestral", {"eta": 0.0}, 2),
    ("dpmpp-sde", {"eta": 0.0}, 2),
    ("euler-ancestral", {"eta": 0.0}, 1),
])
def test_deterministic_limit_convergence_order(gmm2, name, opts, order):
    assert abs(_order(gmm2, name, opts) - order) <= 0.3


def test_brownian_path_is_query_order_independent_and_additive():
    p = BrownianPath(0.0, 10.0, (3,), F64, "cpu", seed=11)
    ts_ = [7.3, 0.4, 9.99, 2.5, 5.0, 0.0, 10.0]
    first = [p(t) for t in ts_]
    q = BrownianPath(0.0, 10.0, (3,), F64, "cpu", seed=11)
    again = [q(t) for t in reversed(ts_)][::-1]
    for a, b in zip(first, again):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    assert torch.equal(first[5], torch.zeros(3, dtype=F64))
    other = BrownianPath(0.0, 10.0, (3,), F64, "cpu", seed=12)
    assert not torch.allclose(other(7.3), first[0])


def test_brownian_increments_are_standard_normal():
    # normalised increments over a fine grid: mean 0, variance 1, uncorrelated in time
    s = torch.linspace(20.0, 0.0, 201, dtype=F64).tolist()
    src = BrownianNoise(max(s), torch.zeros(2000, dtype=F64), seed=3)
    z = torch.stack([src.increment(s[i], s[i + 1]) for i in range(200)])  # (200 steps, 2000 paths)
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    assert abs(float(z.var()) - 1.0) < 4 * math.sqrt(2.0 / z.numel())
    lag1 = float((z[1:] * z[:-1]).mean())
    assert abs(lag1) < 4 / math.sqrt(z[1:].numel())


@pytest.mark.parametrize("name", ["ddpm", "sde-dpmpp-2m", "euler-maruyama"])
def test_brownian_option_reproducible_and_grid_consistent(setup, name):
    den, noise = setup
    a = ts.sample(den, noise, name, steps=6, generator=9, solver_options={"noise": "brownian"})
    b = ts.sample(den, noise, name, steps=6, generator=9, solver_options={"noise": "brownian"})
    assert torch.equal(a, b)
    # the same path on two grids: W at shared times coincides
    g1 = ts.make_grid(den.schedule, 4, "logsnr")
    g2 = ts.make_grid(den.schedule, 8, "logsnr")
    s1, s2 = (g1.sigma / g1.alpha).tolist(), (g2.sigma / g2.alpha).tolist()
    n1, n2 = BrownianNoise(max(s1), noise, 9), BrownianNoise(max(s2), noise, 9)
    shared = s1[0]
    assert torch.equal(n1.path(shared), n2.path(shared))
    assert torch.allclose(n1.path(0.5 * s1[1]), n2.path(0.5 * s1[1]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("sde,ode,opts", [
    ("sde-dpmpp-2m", "dpmpp-2m", {}),
    ("sde-dpmpp-2m", "dpmpp-2m", {"solver_type": "heun"}),
    ("sde-dpmpp-3m", "dpmpp-3m", {"solver_type": "heun"}),
    ("sde-dpmpp-3m", "dpmpp-3m", {"solver_type": "heun", "lower_order_final": False}),
])
def test_sde_dpmpp_at_eta_zero_has_the_ode_coefficients(gmm2, sde, ode, opts):
    """SDE-DPM-Solver++ is DPM-Solver++ multistep on the shared exponential-integrator weights:
    with eta = 0 every table row (evaluation point, cx, weights) is the ODE solver's, and no
    noise is added."""
    from timestepper.diffusion.term import DiffusionTerm

    den = gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")
    grid = ts.make_grid(den.schedule, 12, "logsnr")
    x = torch.zeros(4, 2, dtype=F64)
    term = DiffusionTerm(den)
    _, rows_sde = ts.solvers.get(sde, eta=0.0, **opts).init(term, grid, x)
    _, rows_ode = ts.solvers.get(ode, **opts).init(term, grid, x)
    for a, b in zip(rows_sde, rows_ode, strict=True):
        assert (a.cx, a.weights, a.cn) == (b.cx, b.weights, None)
        assert torch.equal(a.point.t, b.point.t)
