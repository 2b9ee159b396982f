"""The exact class-conditional mixture: label k is component k's exact denoiser, the null label the
whole mixture's, and classifier-free guidance over it is the affine combination of the two."""

import pytest
import torch

import timestepper as ts
from timestepper.bench import ConditionalMixture, GaussianMixture

F64 = torch.float64


@pytest.mark.parametrize("full", [False, True])
def test_labels_select_the_exact_component_and_null_the_mixture(full):
    g = GaussianMixture.random(3, 4, seed=2, full=full)
    model = ConditionalMixture(g)
    sched = ts.VPCosineSchedule()
    x, t = torch.randn(8, 3, dtype=F64), torch.full((8,), 0.4, dtype=F64)
    labels = torch.tensor([0, 1, 2, 3, 4, 4, 2, 0])
    for kind in ("sample", "epsilon"):
        out = model.denoiser(sched, kind).model_fn(x, t, labels=labels)
        for k in range(4):
            single = GaussianMixture(torch.ones(1, dtype=F64), g.means[k:k + 1], g.covs[k:k + 1]).denoiser(sched, kind)
            rows = labels == k
            assert torch.allclose(out[rows], single(x[rows], t[rows]), atol=1e-12)
        full_mix = g.denoiser(sched, kind)(x, t)
        assert torch.allclose(out[labels == 4], full_mix[labels == 4], atol=1e-12)
        assert torch.allclose(model.denoiser(sched, kind).model_fn(x, t), full_mix, atol=1e-12)


def test_guidance_over_it_is_the_affine_combination():
    g = GaussianMixture.random(2, 3, seed=0)
    model = ConditionalMixture(g)
    den = model.denoiser(ts.VPCosineSchedule(), "epsilon")
    x, t = torch.randn(5, 2, dtype=F64), torch.full((5,), 0.7, dtype=F64)
    labels = torch.tensor([0, 1, 2, 1, 0])
    guided = ts.guidance.cfg(den, 4.0, labels=labels, null_label=model.null_label)
    m_c, m_u = den.model_fn(x, t, labels=labels), den.model_fn(x, t)
    assert torch.allclose(guided(x, t), m_u + 4.0 * (m_c - m_u), atol=1e-12)
    assert model.null_label == 3 and model.sample_labels(1000, torch.Generator().manual_seed(0)).max() == 2


def test_bad_labels_are_refused():
    model = ConditionalMixture(GaussianMixture.random(2, 3, seed=0))
    den = model.denoiser(ts.VPCosineSchedule(), "sample")
    x, t = torch.randn(2, 2, dtype=F64), torch.full((2,), 0.5, dtype=F64)
    with pytest.raises(ValueError, match=r"labels must lie in 0..3 \(K = 3 is the null label\), got \[0, 4\]"):
        den.model_fn(x, t, labels=torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="labels must be 2 integers in 0..3"):
        den.model_fn(x, t, labels=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels must be 2 integers"):
        den.model_fn(x, t, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="mixture must be a GaussianMixture"):
        ConditionalMixture("gmm")
