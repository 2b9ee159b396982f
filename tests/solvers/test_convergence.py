"""Empirical order of convergence of every deterministic solver of the family on the exact
Gaussian mixture: the slope of log(error) against log(steps) between two refined uniform log-SNR
grids, against the float64 reference solution of the probability-flow ODE.

The grids stop at ``sigma_min`` (``final="sigma_min"``) so that every step is a smooth step of
the method (a step to zero noise is first order by design). Methods whose defaults lower the
order at the end of the grid (``lower_order_final``) are measured without it. The multistep
methods start with lower-order warm-up steps; their first-order first step adds an error term
of order 2 whose constant is tiny at high noise, so the declared order shows on these grids.
"""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.grids import make_grid

torch.set_num_threads(1)
SIGMA_MIN, SIGMA_MAX = 0.1, 80.0

# (solver, options, declared order, steps (coarse, fine))
CASES = [
    ("ddim", {}, 1, (64, 128)),
    ("dpm-solver-1", {}, 1, (64, 128)),
    ("dpmpp-2m", {}, 2, (32, 64)),
    ("dpmpp-2m", {"solver_type": "heun"}, 2, (32, 64)),
    ("dpmpp-3m", {}, 3, (32, 64)),
    ("dpmpp-3m", {"third_order_weight": "published"}, 2, (32, 64)),
    ("dpm-solver-2m", {}, 2, (32, 64)),
    ("dpm-solver-3m", {}, 3, (32, 64)),
    ("dpm-solver-2", {}, 2, (32, 64)),
    ("dpm-solver-3", {"lower_order_final": False}, 3, (48, 96)),
    ("dpm-solver-3", {"lower_order_final": False, "solver_type": "heun"}, 3, (96, 192)),
    ("dpmpp-2s", {}, 2, (32, 64)),
    ("dpmpp-3s", {"lower_order_final": False}, 3, (96, 192)),
    ("deis", {"order": 1}, 1, (64, 128)),
    ("deis", {"order": 2}, 2, (32, 64)),
    ("deis", {"order": 3}, 3, (32, 64)),
    ("deis", {"order": 2, "method": "rho-midpoint"}, 2, (32, 64)),
    ("unipc-bh1", {"order": 1, "lower_order_final": False}, 2, (32, 64)),
    ("unipc-bh1", {"order": 2, "lower_order_final": False}, 3, (32, 64)),
    ("unipc-bh1", {"order": 3, "lower_order_final": False}, 4, (64, 128)),
    ("unipc-bh2", {"order": 1, "lower_order_final": False}, 2, (32, 64)),
    ("unipc-bh2", {"order": 2, "lower_order_final": False}, 3, (32, 64)),
    ("unipc-bh2", {"order": 3, "lower_order_final": False}, 4, (64, 128)),
    ("plms", {}, 2, (32, 64)),
    ("pndm", {}, 2, (32, 64)),
    ("lms", {}, 4, (64, 128)),
    ("dpm-2", {}, 2, (32, 64)),
]


@pytest.fixture(scope="module")
def problem(gmm2):
    schedule = ts.EDMSchedule(SIGMA_MIN, SIGMA_MAX)
    den = gmm2.denoiser(schedule, "sample")
    noise = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y0 = noise * math.sqrt(1 + SIGMA_MAX**2)
    ref = gmm2.reference_solution(y0, s_start=SIGMA_MAX, s_end=SIGMA_MIN)
    return den, noise, ref


def _error(problem, solver, options, steps):
    den, noise, ref = problem
    sol = ts.sample(
        den,
        noise,
        solver=solver,
        steps=steps,
        grid="logsnr",
        final="sigma_min",
        solver_options=options,
        return_solution=True,
    )
    return (sol.x - ref).norm(dim=-1).mean().item(), sol.stats.nfe


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}" for c in CASES]
)
def test_convergence_order(problem, case):
    solver, options, order, (n0, n1) = case
    assert ts.solvers.get(solver, **options).order == order  # the declared order is what we measure
    e0, _ = _error(problem, solver, options, n0)
    e1, _ = _error(problem, solver, options, n1)
    slope = math.log(e0 / e1) / math.log(n1 / n0)
    assert abs(slope - order) <= 0.3, (
        f"{solver} {options}: measured order {slope:.2f}, declared {order}"
    )


def test_grid_is_uniform_in_log_snr():
    grid = make_grid(ts.EDMSchedule(SIGMA_MIN, SIGMA_MAX), 8, "logsnr", final="sigma_min")
    h = grid.log_snr[1:] - grid.log_snr[:-1]
    assert torch.allclose(h, h[0].expand_as(h), rtol=1e-12)
