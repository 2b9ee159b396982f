"""BDIA-DDIM (Zhang et al. 2023): order on the exact Gaussian mixture, gamma = 0 is DDIM, and the
exact inverse recovers the noise of a sample."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.term import DiffusionTerm
from timestepper.solvers.bdia import invert_bdia

F64 = torch.float64


@pytest.mark.parametrize("name,gamma,order", [("bdia-ddim", 1.0, 2), ("bdia-ddim", 0.5, 1)])
def test_bdia_order(problem, name, gamma, order):
    den, noise, ref = problem
    errs = [(ts.sample(den, noise, name, steps=n, final="sigma_min", solver_options={"gamma": gamma})
             - ref).norm(dim=-1).mean().item() for n in (64, 128)]
    assert ts.solvers.get(name, gamma=gamma).order == order
    assert math.log2(errs[0] / errs[1]) == pytest.approx(order, abs=0.15)


def test_gamma_zero_is_ddim(problem):
    den, noise, _ = problem
    a = ts.sample(den, noise, "bdia-ddim", steps=7, solver_options={"gamma": 0.0})
    torch.testing.assert_close(a, ts.sample(den, noise, "ddim", steps=7), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["vp", "flow"])
def test_inverse_recovers_the_noise(gmm2, kind):
    sched = ts.VPLinearSchedule() if kind == "vp" else ts.RectifiedFlowSchedule()
    den = gmm2.denoiser(sched, "epsilon" if kind == "vp" else "velocity")
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    sol = ts.sample(den, noise, "bdia-ddim", steps=20, save="all", return_solution=True,
                    grid="logsnr" if kind == "vp" else "uniform")
    first, second = invert_bdia(DiffusionTerm(den), sol.extras["grid"], sol.ys[-1], sol.ys[-2], 1.0)
    assert ((first - sol.ys[0]).norm() / sol.ys[0].norm()).item() < 1e-12
    assert ((second - sol.ys[1]).norm() / sol.ys[1].norm()).item() < 1e-12


def test_bad_gamma():
    with pytest.raises(ValueError, match=r"gamma must be in \[0, 1\]"):
        ts.solvers.get("bdia-ddim", gamma=1.5)
