import pytest
import torch

import timestepper as ts
from timestepper import guidance


def _toy_denoiser(schedule=None):
    """A model whose output depends on the label: m = x * 0.1 + label."""

    def model(x, t, labels=None):
        return 0.1 * x + labels.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))

    return ts.Denoiser(model, schedule or ts.VPLinearSchedule(), "epsilon")


def test_cfg_combines_conditional_and_unconditional_outputs():
    den = _toy_denoiser()
    x, t = torch.randn(3, 2), torch.full((3,), 0.5)
    y, null = torch.tensor([1, 2, 3]), 10
    m_c = den.model_fn(x, t, labels=y)
    m_u = den.model_fn(x, t, labels=torch.full_like(y, null))
    for w in (0.0, 1.0, 3.0):
        g = guidance.cfg(den, w, labels=y, null_label=null)
        torch.testing.assert_close(g(x, t), m_u + w * (m_c - m_u))
        assert g.schedule is den.schedule and g.prediction == den.prediction


def test_cfg_interval_guides_only_inside():
    sch = ts.VPLinearSchedule()
    den = _toy_denoiser(sch)
    y = torch.tensor([1, 2])
    # noise level s = sigma/alpha at t=0.3 and t=0.8
    s = lambda t: float(sch.sigma(t) / sch.alpha(t))  # noqa: E731
    g = guidance.cfg(den, 3.0, labels=y, null_label=0, interval=(s(0.3), s(0.8)))
    x = torch.randn(2, 4)
    for t, inside in ((0.2, False), (0.5, True), (0.9, False)):
        tt = torch.full((2,), t)
        m_c = den.model_fn(x, tt, labels=y)
        m_u = den.model_fn(x, tt, labels=torch.zeros_like(y))
        want = m_u + 3.0 * (m_c - m_u) if inside else m_c
        torch.testing.assert_close(g(x, tt), want)


@pytest.mark.parametrize("solver", ["ddim", "dpmpp-2m", "euler", "heun"])
def test_every_solver_accepts_a_guided_denoiser(solver):
    den = _toy_denoiser(ts.VPDiscreteSchedule.from_betas())
    g = guidance.cfg(den, 2.0, labels=torch.tensor([0, 1]), null_label=5, interval=(0.1, 10.0))
    out = ts.sample(g, torch.randn(2, 3, generator=torch.Generator().manual_seed(0)), solver, 5)
    assert out.shape == (2, 3) and torch.isfinite(out).all()


def test_cfg_errors():
    den = _toy_denoiser()
    with pytest.raises(ValueError, match="scale"):
        guidance.cfg(den, -1.0, labels=torch.tensor([1]), null_label=0)
    with pytest.raises(ValueError, match="null_label"):
        guidance.cfg(den, 2.0, labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="cond"):
        guidance.cfg(den, 2.0)
    with pytest.raises(ValueError, match="interval"):
        guidance.cfg(den, 2.0, labels=torch.tensor([1]), null_label=0, interval=(2.0, 1.0))
    with pytest.raises(TypeError, match="Denoiser"):
        guidance.cfg(lambda x, t: x, 2.0, labels=torch.tensor([1]), null_label=0)
