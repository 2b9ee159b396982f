"""Noise schedules: exact values, inverses and derivatives."""

import math

import pytest
import torch

import timestepper as ts

F64 = torch.float64


def _schedules():
    return [
        ts.VPDiscreteSchedule.from_betas("linear"),
        ts.VPDiscreteSchedule.from_betas("scaled_linear", beta_start=0.00085, beta_end=0.012),
        ts.VPDiscreteSchedule.from_betas("squaredcos_cap_v2"),
        ts.VPLinearSchedule(),
        ts.VPCosineSchedule(),
        ts.VESchedule(),
        ts.EDMSchedule(),
        ts.RectifiedFlowSchedule(t_min=1e-3, t_max=1 - 1e-3),
    ]


@pytest.mark.parametrize("sched", _schedules(), ids=lambda s: repr(s))
def test_log_snr_inverse_and_derivatives(sched):
    t = torch.linspace(sched.t_min, sched.t_max, 37, dtype=F64)[1:-1] + 0.123 * (sched.t_max - sched.t_min) / 37
    lam = sched.log_snr(t)
    assert torch.allclose(sched.t_from_log_snr(lam), t, rtol=1e-9, atol=1e-9 * (sched.t_max - sched.t_min))
    assert bool((lam[1:] < lam[:-1]).all()), "log-SNR must decrease with t"
    h = 1e-6 * (sched.t_max - sched.t_min)
    fd_a = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    fd_s = (sched.sigma(t + h) - sched.sigma(t - h)) / (2 * h)
    assert torch.allclose(sched.dalpha(t), fd_a, rtol=1e-5, atol=1e-8)
    assert torch.allclose(sched.dsigma(t), fd_s, rtol=1e-5, atol=1e-8)
    assert math.isinf(float(sched.log_snr(torch.tensor(sched.t_data)))) or float(sched.sigma(sched.t_data)) == 0


def test_vp_discrete_matches_diffusers_alphas_cumprod():
    diffusers = pytest.importorskip("diffusers")
    for name, kw in [("linear", {}), ("scaled_linear", dict(beta_start=0.00085, beta_end=0.012)),
                     ("squaredcos_cap_v2", {})]:
        peer = diffusers.DDIMScheduler(beta_schedule=name, **kw)
        ours = ts.VPDiscreteSchedule.from_betas(name, **kw)
        t = torch.arange(1000, dtype=F64)
        # diffusers accumulates in float32; ours in float64 from the same float32 betas
        assert torch.allclose(ours.alpha(t) ** 2, peer.alphas_cumprod.to(F64), rtol=2e-5, atol=0)


def test_vp_discrete_interpolates_log_alpha_and_ends_at_minus_one():
    s = ts.VPDiscreteSchedule.from_betas("linear")
    la = torch.log(s.alpha(torch.tensor([10.0, 11.0, 10.25], dtype=F64)))
    assert torch.isclose(la[2], 0.75 * la[0] + 0.25 * la[1], rtol=1e-14)
    assert s.t_data == -1.0 and float(s.sigma(-1.0)) == 0.0
    with pytest.raises(ValueError, match="unknown beta schedule"):
        ts.VPDiscreteSchedule.from_betas("cubic")


def test_closed_forms():
    vp = ts.VPLinearSchedule(beta_min=0.1, beta_max=20)
    t = torch.tensor(0.5, dtype=F64)
    assert math.isclose(float(vp.alpha(t)), math.exp(-0.25 * 0.25 * 19.9 - 0.5 * 0.5 * 0.1), rel_tol=1e-14)
    rf = ts.RectifiedFlowSchedule()
    assert float(rf.alpha(0.25)) == 0.75 and float(rf.sigma(0.25)) == 0.25 and rf.t_data == 0.0
    edm = ts.EDMSchedule()
    assert float(edm.sigma(3.0)) == 3.0 and edm.t_data == 0.0
    ve = ts.VESchedule(sigma_min=0.01, sigma_max=50)
    assert math.isclose(float(ve.sigma(1.0)), 50.0, rel_tol=1e-14) and ve.t_data == -math.inf
