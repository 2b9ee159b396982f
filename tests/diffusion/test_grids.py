"""Time grids: spacings, the final-step rule, and bad input."""

import math

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.grids import diffusers_timesteps, make_grid

F64 = torch.float64


@pytest.mark.parametrize("name", ["uniform", "logsnr", "karras", "quadratic", "sigmoid"])
def test_named_grids_span_the_range_and_end_at_zero_noise(name, vp_schedule):
    g = make_grid(vp_schedule, 10, name)
    g2 = make_grid(vp_schedule, 10, name, final="sigma_min")
    assert g.steps == 10 and len(g) == 11 and g2.steps == 10
    assert float(g2.t[0]) == vp_schedule.t_max and float(g2.t[-1]) == pytest.approx(vp_schedule.t_min, abs=1e-9)
    # final="zero": the same points, with the end point t_min replaced by sigma = 0
    assert torch.equal(g.t[:-1], g2.t[:-1]) and float(g.t[-1]) == vp_schedule.t_data
    assert float(g.sigma[-1]) == 0.0 and math.isinf(float(g.log_snr[-1]))


def test_logsnr_is_uniform_in_lambda_and_karras_in_sigma_root(vp_schedule):
    g = make_grid(vp_schedule, 8, "logsnr", final="sigma_min")
    d = g.log_snr[1:] - g.log_snr[:-1]
    assert torch.allclose(d, d[0].expand_as(d), rtol=1e-9)
    edm = ts.EDMSchedule(0.002, 80.0)
    k = make_grid(edm, 6, "karras", rho=7.0)
    root = k.sigma[:-1] ** (1 / 7)
    dr = root[1:] - root[:-1]
    assert torch.allclose(dr, dr[0].expand_as(dr), rtol=1e-9)
    assert float(k.t[0]) == 80.0 and float(k.t[-1]) == 0.0


def test_flow_grid_reaches_data_without_extra_point():
    rf = ts.RectifiedFlowSchedule()
    g = make_grid(rf, 4, "uniform")
    assert torch.allclose(g.t, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64))
    shifted = make_grid(rf, 4, "uniform", shift=3.0)
    u = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=F64)
    assert torch.allclose(shifted.t, 3 * u / (1 + 2 * u))
    with pytest.raises(ValueError, match="finite log-SNR"):
        make_grid(rf, 4, "logsnr")


def test_explicit_grid_and_diffusers_spacings(vp_schedule):
    g = make_grid(vp_schedule, 0, torch.tensor([999.0, 500.0, 10.0]))
    assert g.t.tolist() == [999.0, 500.0, 10.0, -1.0]
    assert make_grid(vp_schedule, 0, torch.tensor([999.0, 500.0, -1.0])).steps == 2
    assert diffusers_timesteps(1000, 10, "leading").tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert diffusers_timesteps(1000, 10, "trailing").tolist()[:2] == [999, 899]
    assert diffusers_timesteps(1000, 10, "linspace").tolist()[-1] == 100


def test_grid_errors_name_the_problem(vp_schedule):
    with pytest.raises(ValueError, match="unknown grid 'cubic'.*logsnr"):
        make_grid(vp_schedule, 5, "cubic")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        make_grid(vp_schedule, 0, "logsnr")
    with pytest.raises(ValueError, match="strictly decreasing"):
        make_grid(vp_schedule, 0, torch.tensor([10.0, 500.0]))
    with pytest.raises(ValueError, match="leaves the schedule's range"):
        make_grid(vp_schedule, 0, torch.tensor([1500.0, 500.0]))
    with pytest.raises(ValueError, match="unknown final"):
        make_grid(vp_schedule, 5, "logsnr", final="one")
    with pytest.raises(ValueError, match="needs a VPDiscreteSchedule"):
        make_grid(ts.EDMSchedule(), 5, "trailing")
