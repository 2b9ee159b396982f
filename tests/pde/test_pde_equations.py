"""Spectral equations against exact solutions, all stepped by ETDRK4 through ``integrate``."""

from __future__ import annotations

import math

import pytest
import torch

import timestepper as ts
from timestepper import pde


def test_kassam_trefethen_ks_runs_and_stays_bounded():
    """Kassam & Trefethen (2005), sec. 6: u0 = cos(x/16)(1 + sin(x/16)) on [0, 32 pi], N = 128,
    h = 1/4, to t = 150; the chaotic solution stays O(1) (|u| < 4 in their Fig. 6.1)."""
    eq = pde.KuramotoSivashinsky(32 * math.pi, 128, dealias=False)
    u0 = torch.cos(eq.x / 16) * (1 + torch.sin(eq.x / 16))
    traj = eq.simulate(u0, t_end=150.0, dt=0.25, save_every=4)
    assert traj.shape == (151, 128)
    assert torch.isfinite(traj).all()
    peak = traj.abs().amax(dim=-1)
    assert float(peak.max()) < 4.0
    assert float(peak[-20:].min()) > 1.0  # still chaotic, not decayed
    # The mean is conserved (the k = 0 mode of N vanishes).
    torch.testing.assert_close(
        traj.mean(-1),
        torch.zeros(151, dtype=torch.float64).add(float(u0.mean())),
        atol=1e-12,
        rtol=0,
    )


@pytest.mark.parametrize(("nu", "n", "a", "tol"), [(0.1, 64, 1.2, 1e-7), (0.05, 128, 1.05, 1e-7)])
def test_burgers_matches_cole_hopf(nu, n, a, tol):
    eq = pde.Burgers(2 * math.pi, n, nu=nu)
    u0 = eq.cole_hopf(0.0, eq.x, a=a)
    u = eq.simulate(u0, t_end=1.0, dt=0.0125)
    exact = eq.cole_hopf(1.0, eq.x, a=a)
    assert float((u - exact).abs().max()) < tol * max(1.0, float(exact.abs().max()))


def test_burgers_cole_hopf_step_convergence():
    """Two Fourier modes in phi; the error falls at fourth order until the spatial floor."""
    eq = pde.Burgers(2 * math.pi, 128, nu=0.05)
    u0 = eq.cole_hopf(0.0, eq.x, a=2.2, modes=(1, 2))
    exact = eq.cole_hopf(0.5, eq.x, a=2.2, modes=(1, 2))
    errs = [float((eq.simulate(u0, t_end=0.5, dt=h) - exact).abs().max()) for h in (0.1, 0.05)]
    assert errs[1] < errs[0] / 12, errs


def test_kdv_two_soliton_matches_hirota():
    """Fast soliton (k=1.5) overtakes the slow one (k=1) and re-emerges phase-shifted."""
    eq = pde.KdV(60.0, 256)
    x = eq.x - 30.0

    def exact(t):
        return pde.KdV.two_soliton(t, x, 1.5, 1.0, -15.0, -5.0)

    u = eq.simulate(exact(0.0), t_end=10.0, dt=0.005)
    assert float((u - exact(10.0)).abs().max()) < 1e-6


def test_heat_and_advection_diffusion_are_exact():
    eq = pde.Heat(2 * math.pi, 32, nu=0.3, c=1.5)
    u0 = torch.sin(3 * eq.x) + 0.5 * torch.cos(eq.x)
    u = eq.simulate(u0, t_end=2.0, dt=0.5)
    exact = math.exp(-0.3 * 9 * 2) * torch.sin(3 * (eq.x - 3.0)) + 0.5 * math.exp(
        -0.3 * 2
    ) * torch.cos(eq.x - 3.0)
    torch.testing.assert_close(u, exact, atol=1e-13, rtol=0)


def test_navier_stokes_taylor_green_decays_at_exact_rate():
    eq = pde.NavierStokes2D(2 * math.pi, 32, nu=0.05, drag=0.02)
    w = eq.simulate(eq.taylor_green(0.0, wavenumber=2), t_end=2.0, dt=0.1, save_every=5)
    energy = w.pow(2).mean(dim=(-2, -1))
    rate = -torch.log(energy[1:] / energy[:-1]) / (2 * 0.5)  # per unit time, for w (not w^2)
    torch.testing.assert_close(rate, torch.full_like(rate, 2 * 0.05 * 4 + 0.02), atol=1e-10, rtol=0)
    torch.testing.assert_close(w[-1], eq.taylor_green(2.0, wavenumber=2), atol=1e-12, rtol=0)


def test_navier_stokes_kolmogorov_batch_float32_bounded():
    eq = pde.NavierStokes2D(2 * math.pi, 32, nu=1e-2, drag=0.1, forcing_amplitude=1.0)
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(2, 32, 32, generator=g)
    w = eq.simulate(w0, t_end=2.0, dt=0.05)
    assert w.shape == (2, 32, 32) and w.dtype == torch.float32
    assert torch.isfinite(w).all() and float(w.abs().max()) < 20


def test_simulate_keeps_batch_dims_and_matches_unbatched():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    g = torch.Generator().manual_seed(1)
    u0 = torch.randn(2, 3, 32, generator=g, dtype=torch.float64)
    traj = eq.simulate(u0, t_end=1.0, dt=0.1, save_every=2)
    assert traj.shape == (2, 3, 6, 32)
    single = eq.simulate(u0[1, 2], t_end=1.0, dt=0.1)
    torch.testing.assert_close(traj[1, 2, -1], single, atol=1e-12, rtol=0)


def test_rk4_blows_up_where_etdrk4_is_stable():
    """Explicit RK4 on the stiff KS symbol at h = 1/4: a NonFiniteError naming the step."""
    eq = pde.KuramotoSivashinsky(32 * math.pi, 128)
    u0 = torch.cos(eq.x / 16) * (1 + torch.sin(eq.x / 16))
    with pytest.raises(ts.NonFiniteError, match="step"):
        eq.simulate(u0, t_end=20.0, dt=0.25, solver="rk4")
    assert torch.isfinite(eq.simulate(u0, t_end=20.0, dt=0.25)).all()


def test_bad_arguments_are_named():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    with pytest.raises(ValueError, match="n"):
        pde.KuramotoSivashinsky(22.0, 31)
    with pytest.raises(ValueError, match="multiple of dt"):
        eq.simulate(torch.zeros(32), t_end=1.0, dt=0.3)
    with pytest.raises(ValueError, match="spatial shape"):
        eq.simulate(torch.zeros(16), t_end=1.0, dt=0.5)
    with pytest.raises(ValueError, match="save_every"):
        eq.simulate(torch.zeros(32), t_end=1.0, dt=0.5, save_every=0)
    with pytest.raises(ValueError, match="nu"):
        pde.Burgers(1.0, 8, nu=0.0)
