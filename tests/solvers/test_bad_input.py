"""Bad input for the solver family: invalid options raise naming the option and the allowed
values; orders the grid cannot support fall back as documented; adaptive solves raise with the
time reached when the step size underflows."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def problem(gmm2, vp_schedule):
    den = gmm2.denoiser(vp_schedule, "epsilon")
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return den, noise


@pytest.mark.parametrize(
    "name,options,match",
    [
        (
            "dpmpp-3m",
            {"third_order_weight": "half"},
            "third_order_weight must be one of 'taylor', 'published'",
        ),
        ("dpm-solver-2", {"solver_type": "rk"}, "solver_type must be one of 'midpoint', 'heun'"),
        ("deis", {"order": 4}, "order must be one of 1, 2, 3"),
        (
            "deis",
            {"order": 2, "method": "rk4"},
            "method must be one of 'tab', 'rho-heun', 'rho-midpoint'",
        ),
        ("deis", {"order": 3, "method": "rho-heun"}, "second order: order must be 2"),
        ("unipc-bh1", {"order": 0}, "order must be one of 1, 2, 3"),
        ("unipc-bh2", {"order": 2.0}, "order must be one of 1, 2, 3"),
        ("lms", {"order": 5}, "order must be one of 1, 2, 3, 4"),
        ("dpm-adaptive", {"order": 1}, "order must be one of 2, 3"),
        ("dpm-adaptive", {"rtol": 0.0, "atol": 0.0}, "rtol and atol cannot both be <= 0"),
    ],
)
def test_invalid_options_raise(name, options, match):
    with pytest.raises(ValueError, match=match):
        ts.solvers.get(name, **options)


def test_unknown_option_names_the_solver():
    with pytest.raises(TypeError, match="bad options for solver 'dpmpp-2s'"):
        ts.solvers.get("dpmpp-2s", steps=3)
    with pytest.raises(TypeError, match="solver 'dpmpp-2s' fixes order=2; build DPMSolverSinglestep"):
        ts.solvers.get("dpmpp-2s", order=3)


def test_order_3m_with_two_steps_falls_back_to_2m(problem):
    """3M on two steps runs the warm-up orders 1 and 2, i.e. exactly 2M (documented)."""
    den, noise = problem
    x3 = ts.sample(den, noise, "dpmpp-3m", steps=2, solver_options={"lower_order_final": False})
    x2 = ts.sample(den, noise, "dpmpp-2m", steps=2, solver_options={"lower_order_final": False})
    assert torch.isfinite(x3).all()
    torch.testing.assert_close(x3, x2, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name,options",
    [("unipc-bh2", {"order": 3}), ("deis", {"order": 3}), ("dpm-solver-3m", {}), ("lms", {})],
)
def test_one_step_is_first_order(problem, name, options):
    den, noise = problem
    x = ts.sample(den, noise, name, steps=1, solver_options=options)
    torch.testing.assert_close(x, ts.sample(den, noise, "ddim", steps=1), rtol=0, atol=1e-12)


def test_singlestep_without_lower_order_final_needs_a_multiple_of_the_order(problem):
    den, noise = problem
    with pytest.raises(ValueError, match="steps=7 must be a multiple of order=3"):
        ts.sample(
            den,
            noise,
            "dpm-solver-3",
            steps=7,
            final="sigma_min",
            solver_options={"lower_order_final": False},
        )
    x = ts.sample(
        den, noise, "dpm-solver-3", steps=7, final="sigma_min"
    )  # default: lower orders at the end
    assert torch.isfinite(x).all()


def test_pndm_refuses_grids_shorter_than_its_warmup(problem):
    """PNDM's three pseudo Runge-Kutta warm-up steps need at least four steps (on shorter grids
    the result diverged, error ~4e2 on the benchmark): refused, naming the minimum and plms."""
    den, noise = problem
    for steps in (1, 2, 3):
        with pytest.raises(ValueError, match="'pndm' needs at least 4 steps.*'plms'"):
            ts.sample(den, noise, "pndm", steps=steps)
    sol = ts.sample(den, noise, "plms", steps=1, return_solution=True)
    assert sol.stats.nfe == 1 and torch.isfinite(sol.x).all()
    assert ts.sample(den, noise, "pndm", steps=4, return_solution=True).stats.nfe == 4 * 3 + 1


def test_nfe_is_accounted_like_the_peers(problem):
    den, noise = problem
    nfe = {
        name: ts.sample(den, noise, name, steps=10, return_solution=True).stats.nfe
        for name in (
            "dpmpp-3m",
            "dpm-solver-3",
            "deis",
            "unipc-bh2",
            "plms",
            "pndm",
            "lms",
            "dpm-2",
        )
    }
    assert nfe == {
        "dpmpp-3m": 10,
        "dpm-solver-3": 10,
        "deis": 10,
        "unipc-bh2": 10,
        "plms": 11,
        "pndm": 19,
        "lms": 10,
        "dpm-2": 19,
    }


def test_adaptive_raises_nonfinite_with_the_time_reached_when_the_model_returns_nan(gmm2, vp_schedule):
    """An adaptive sampler retries NaN proposals with smaller steps; when they stay NaN it stops
    with NonFiniteError naming the time reached (not a step-size underflow)."""
    base = gmm2.denoiser(vp_schedule, "epsilon")

    def broken(x, t):  # the model fails below t = 300
        out = base.model_fn(x, t)
        return torch.where((t < 300)[:, None], torch.full_like(out, float("nan")), out)

    den = ts.Denoiser(broken, vp_schedule, "epsilon")
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lam_300 = float(vp_schedule.log_snr(300.0))
    with pytest.raises(ts.NonFiniteError, match="proposals from t=.* were NaN/inf") as info:
        ts.sample(den, noise, "dpm-adaptive")
    reached = float(str(info.value).split("t=")[1].split()[0])
    # the log-SNR reached: the last accepted step ends past the onset (its end point is not evaluated)
    assert lam_300 <= reached < lam_300 + 0.5


def test_adaptive_tracks_the_reference(gmm2, vp_schedule):
    den = gmm2.denoiser(vp_schedule, "epsilon")
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a_t = float(vp_schedule.alpha(999.0))
    ref = gmm2.reference_solution(
        noise / a_t, s_start=float(vp_schedule.sigma(999.0)) / a_t, s_end=0.0
    )
    loose = ts.sample(
        den,
        noise,
        "dpm-adaptive",
        final="zero",
        return_solution=True,
        solver_options={"rtol": 0.05, "atol": 1e-3},
    )
    tight = ts.sample(
        den,
        noise,
        "dpm-adaptive",
        return_solution=True,
        solver_options={"rtol": 1e-3, "atol": 1e-5},
    )
    assert tight.stats.nfe > loose.stats.nfe and tight.stats.rejected >= 0
    err = (tight.x - ref).norm(dim=-1).mean().item()
    assert err < (ts.sample(den, noise, "dpmpp-2m", steps=20) - ref).norm(dim=-1).mean().item()
