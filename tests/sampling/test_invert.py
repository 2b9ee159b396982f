"""``ts.invert``: BDIA inverts a sample exactly (float64 <= 1e-10 relative on the exact mixture and
a tiny U-Net), fixed-point beats naive DDIM inversion, and bad requests are refused."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts

from ._tiny_unet import tiny_unet_denoiser

F64 = torch.float64


def _noise(shape, dtype=F64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=F64).to(dtype)


@pytest.fixture(scope="module")
def vp_mixture(gmm2):
    return gmm2.denoiser(ts.VPLinearSchedule(), "epsilon")


@pytest.mark.parametrize("steps", [10, 50])
def test_bdia_round_trip_is_exact_on_the_mixture(vp_mixture, steps):
    noise = _noise((64, 2))
    sol = ts.sample(vp_mixture, noise, "bdia-ddim", steps=steps, save="all", return_solution=True)
    r = ts.invert(vp_mixture, sol.x, "bdia-ddim", steps=steps, previous=sol.ys[-2], true_noise=noise)
    assert r.method == "bdia" and r.nfe == steps - 1
    assert r.noise_error < 1e-10 and r.sample_error < 1e-10


def test_bdia_round_trip_is_exact_on_a_tiny_unet():
    den = tiny_unet_denoiser()
    noise = _noise((3, 1, 8, 8))
    sol = ts.sample(den, noise, "bdia-ddim", steps=20, save="all", return_solution=True)
    r = ts.invert(den, sol.x, "bdia-ddim", steps=20, previous=sol.ys[-2], true_noise=noise)
    assert r.noise_error < 1e-10 and r.sample_error < 1e-10


def test_bdia_round_trip_float32(vp_mixture):
    noise = _noise((64, 2), torch.float32)
    sol = ts.sample(vp_mixture, noise, "bdia-ddim", steps=20, save="all", return_solution=True)
    r = ts.invert(vp_mixture, sol.x, "bdia-ddim", steps=20, previous=sol.ys[-2], true_noise=noise)
    assert r.noise_error < 1e-5


def test_fixed_point_beats_naive_ddim_inversion(vp_mixture):
    noise = _noise((64, 2))
    x = ts.sample(vp_mixture, noise, "ddim", steps=50)
    naive = ts.invert(vp_mixture, x, "ddim", steps=50, true_noise=noise)
    fixed = ts.invert(vp_mixture, x, "ddim", steps=50, method="fixed-point", iterations=5, true_noise=noise)
    assert naive.nfe == 50 and fixed.nfe == 300
    assert naive.noise_error > 0.1  # the known inconsistency of DDIM inversion
    assert fixed.noise_error < 1e-3 and fixed.sample_error < 1e-2


def test_flow_from_pure_noise_inverts(gmm2):
    den = gmm2.denoiser(ts.RectifiedFlowSchedule(), "velocity")
    noise = _noise((16, 2))
    x = ts.sample(den, noise, "ddim", steps=50, grid="uniform")
    r = ts.invert(den, x, "ddim", steps=50, grid="uniform", method="fixed-point", iterations=10, true_noise=noise)
    assert r.noise_error < 1e-2


def test_stochastic_solver_is_refused_naming_the_deterministic_ones(vp_mixture):
    with pytest.raises(ValueError, match="stochastic solver 'ddpm'.*bdia-ddim"):
        ts.invert(vp_mixture, _noise((4, 2)), "ddpm")


def test_unsupported_pairs_are_refused(vp_mixture):
    with pytest.raises(ValueError, match="does not invert solver 'dpmpp-2m'"):
        ts.invert(vp_mixture, _noise((4, 2)), "dpmpp-2m")
    with pytest.raises(ValueError, match="method must be one of|method"):
        ts.invert(vp_mixture, _noise((4, 2)), "ddim", method="edict")
    with pytest.raises(ValueError, match="previous must be shaped"):
        ts.invert(vp_mixture, _noise((4, 2)), "bdia-ddim", previous=_noise((3, 2)))
