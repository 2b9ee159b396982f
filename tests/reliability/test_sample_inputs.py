"""Issue 12, ts.sample and friends: bad inputs fail early naming the problem; no silent
misconfiguration; memory does not hold a graph unless asked."""

import numpy as np
import pytest
import torch

import timestepper as ts

F64 = torch.float64
SCHED = ts.VPDiscreteSchedule.from_betas("linear")


def zero_model(x, t):
    return torch.zeros_like(x)


DEN = ts.Denoiser(zero_model, SCHED, "epsilon")
NOISE = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)


@pytest.mark.parametrize("kwargs, error, phrase", [
    (dict(grid="karras", grid_options={"roh": 3}), ValueError,
     r"grid options \['roh'\] are not used by grid 'karras' \(it takes: rho\)"),
    (dict(grid="logsnr", grid_options={"rho": 3}), ValueError, r"not used by grid 'logsnr' \(it takes none\)"),
    (dict(grid=torch.tensor([999.0, 500.0]), grid_options={"rho": 7}), ValueError, "not used by an explicit grid"),
    (dict(grid=torch.tensor([999.0, 500.0]), shift=3.0), ValueError, "shift is not applied to an explicit grid"),
    (dict(grid="leading", shift=3.0), ValueError, "shift is not applied to grid 'leading'"),
    (dict(grid="logsnrr"), ValueError, "unknown grid 'logsnrr'"),
    (dict(solver="sde-dpmpp-2m", generator="seed"), TypeError,
     "generator must be a torch.Generator, an integer seed or None, got str"),
    (dict(solver="pndm", steps=3), ValueError, "'pndm' needs at least 4 steps"),
    (dict(steps=0), ValueError, "steps must be an integer >= 1"),
    (dict(steps=2.5), ValueError, "steps must be an integer >= 1"),
])
def test_misconfigurations_are_refused(kwargs, error, phrase):
    with pytest.raises(error, match=phrase):
        ts.sample(DEN, NOISE, **kwargs)


def test_grid_options_a_spacing_uses_are_applied():
    a = ts.sample(DEN, NOISE, grid="karras", grid_options={"rho": 3}, return_solution=True).extras["grid"]
    b = ts.sample(DEN, NOISE, grid="karras", grid_options={"rho": 9}, return_solution=True).extras["grid"]
    assert not torch.equal(a.t, b.t)


def test_numpy_integers_for_steps_and_seed():
    x1 = ts.sample(DEN, NOISE, "sde-dpmpp-2m", steps=np.int64(5), generator=np.int64(3))
    x2 = ts.sample(DEN, NOISE, "sde-dpmpp-2m", steps=5, generator=3)
    assert torch.equal(x1, x2)


def test_a_diffusers_style_output_is_unwrapped():
    class Output:
        def __init__(self, sample):
            self.sample = sample

    ref = ts.sample(DEN, NOISE)
    for wrap in (lambda m: Output(m), lambda m: (m,)):
        den = ts.Denoiser(lambda x, t, wrap=wrap: wrap(zero_model(x, t)), SCHED, "epsilon")
        assert torch.equal(ts.sample(den, NOISE), ref)


def test_a_model_returning_several_tensors_is_refused():
    den = ts.Denoiser(lambda x, t: (x, x), SCHED, "epsilon")
    with pytest.raises(TypeError, match="the model returned a tuple of 2 items.*denoiser_from_diffusers"):
        ts.sample(den, NOISE)


def test_a_nan_noise_is_refused_before_any_model_call():
    calls = []
    den = ts.Denoiser(lambda x, t: calls.append(1) or torch.zeros_like(x), SCHED, "epsilon")
    bad = NOISE.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ts.NonFiniteError, match=r"x0 contains 1 NaN/inf value\(s\) \(first at index \(1, 0\)\)"):
        ts.sample(den, bad)
    assert calls == []


def test_sampling_keeps_no_graph_unless_asked():
    """Memory is flat in the number of steps: by default no autograd graph is recorded."""
    w = torch.nn.Parameter(torch.tensor(0.1, dtype=F64))
    den = ts.Denoiser(lambda x, t: w * x, SCHED, "epsilon")
    assert not ts.sample(den, NOISE, steps=20).requires_grad
    x = ts.sample(den, NOISE, steps=5, grad=True)
    assert x.requires_grad
    x.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad)
    with torch.no_grad():
        assert not ts.sample(den, NOISE, steps=5, grad=True).requires_grad  # the caller's no_grad wins


def test_a_nan_model_fails_naming_the_step():
    den = ts.Denoiser(lambda x, t: torch.where(t[:, None] < 500, x * float("nan"), x * 0), SCHED, "epsilon")
    with pytest.raises(ts.NonFiniteError, match="state became NaN/inf at step"):
        ts.sample(den, NOISE, "ddim", steps=10)
