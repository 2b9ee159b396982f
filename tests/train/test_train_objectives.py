import math

import pytest
import torch

import timestepper as ts
from timestepper.diffusion.predictions import data_coefficients
from timestepper.train import DenoisingObjective, flow_matching, make_model, reflow, toy_2d, train
from timestepper.train.objectives import loss_weight, prediction_target, sample_times

SCHEDULES = [
    ts.VPDiscreteSchedule.from_betas(),
    ts.VPLinearSchedule(),
    ts.VPCosineSchedule(),
    ts.VESchedule(),
    ts.EDMSchedule(),
    ts.RectifiedFlowSchedule(t_min=1e-3, t_max=1 - 1e-3),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction", "velocity", "score"])
def test_target_is_the_prediction_type_it_names(schedule, kind):
    """The regression target, read back through the prediction's conversion, is exactly x0."""
    g = torch.Generator().manual_seed(0)
    t = sample_times(schedule, 16, "uniform", generator=g)
    x0 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(16, 3, generator=g, dtype=torch.float64)
    xt = schedule.alpha(t)[:, None] * x0 + schedule.sigma(t)[:, None] * eps
    m = prediction_target(kind, schedule, t, x0, eps)
    a, b = data_coefficients(kind, schedule, t)
    torch.testing.assert_close(a[:, None] * xt + b[:, None] * m, x0, rtol=1e-9, atol=1e-9)


def test_min_snr_weight_matches_hang_et_al():
    """min-SNR-gamma: min(SNR, g)/SNR for eps and min(SNR, g)/(SNR + 1) for v (VP)."""
    sch = ts.VPLinearSchedule()
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    snr = torch.exp(2 * sch.log_snr(t))
    w_eps = loss_weight("min-snr", "epsilon", sch, t, min_snr_gamma=5.0)
    w_v = loss_weight("min-snr", "v_prediction", sch, t, min_snr_gamma=5.0)
    w_x0 = loss_weight("min-snr", "sample", sch, t, min_snr_gamma=5.0)
    torch.testing.assert_close(w_eps, snr.clamp(max=5) / snr)
    torch.testing.assert_close(w_v, snr.clamp(max=5) / (snr + 1))
    torch.testing.assert_close(w_x0, snr.clamp(max=5))


def test_edm_weight_is_karras_lambda_on_the_denoiser():
    sch = ts.EDMSchedule()
    s = torch.tensor([0.01, 0.5, 3.0, 50.0], dtype=torch.float64)
    w = loss_weight("edm", "sample", sch, s, sigma_data=0.5)
    torch.testing.assert_close(w, (s**2 + 0.25) / (s * 0.5) ** 2)


def test_time_distributions():
    g = torch.Generator().manual_seed(0)
    rf = ts.RectifiedFlowSchedule()
    u = sample_times(rf, 40000, "u-shaped", generator=g)
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / u.numel()
    # density cosh(4 (t - 1/2)): the end bins hold cosh(2)/cosh(0.2)-ish times the middle ones
    assert hist[0] > 3 * hist[5] and hist[-1] > 3 * hist[4]
    expected_end = (math.sinh(2.0) - math.sinh(1.6)) / (2 * math.sinh(2.0))
    assert abs(float(hist[0]) - expected_end) < 0.01
    ln = sample_times(rf, 40000, "logit-normal", generator=g)
    assert abs(float(ln.median()) - 0.5) < 0.01
    s = sample_times(ts.EDMSchedule(), 40000, "log-normal", generator=g)
    assert abs(float(s.log().mean()) + 1.2) < 0.03 and abs(float(s.log().std()) - 1.2) < 0.03
    d = sample_times(ts.VPDiscreteSchedule.from_betas(), 1000, generator=g)
    assert torch.equal(d, d.round()) and d.min() >= 0 and d.max() <= 999


def test_objective_errors_name_the_argument():
    with pytest.raises(ValueError, match="weighting"):
        DenoisingObjective(ts.VPLinearSchedule(), weighting="snr")
    with pytest.raises(ValueError, match="time_distribution"):
        DenoisingObjective(ts.VPLinearSchedule(), time_distribution="beta")
    with pytest.raises(ValueError, match="null_label"):
        DenoisingObjective(ts.VPLinearSchedule(), label_dropout=0.1)
    with pytest.raises(ValueError, match="prediction"):
        DenoisingObjective(ts.VPLinearSchedule(), prediction="noise")


def _first_last(losses, k=60):
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


@pytest.mark.parametrize(
    "schedule,prediction,weighting",
    [
        (ts.RectifiedFlowSchedule(), "velocity", "uniform"),
        (ts.VPLinearSchedule(), "epsilon", "min-snr"),
        (ts.EDMSchedule(), "sample", "edm"),
        (ts.VPCosineSchedule(), "v", "uniform"),
    ],
)
def test_training_decreases_the_loss(schedule, prediction, weighting):
    torch.manual_seed(0)
    x = toy_2d("moons", 1000)
    model = make_model("mlp", {"dim": 2, "hidden": 64, "depth": 2}, schedule)
    obj = DenoisingObjective(schedule, prediction, weighting)
    xe = x.repeat(4, 1)

    def held_out_loss():  # same times and noise before and after: a paired comparison
        with torch.no_grad():
            return float(obj(model, xe, generator=torch.Generator().manual_seed(123)))

    before = held_out_loss()
    res = train(model, obj, x, steps=300, batch_size=128, lr=3e-3, seed=0, progress=False)
    after = held_out_loss()
    first, last = _first_last(res.losses)
    assert last < first and after < 0.9 * before, (first, last, before, after)


@pytest.mark.slow
def test_flow_matching_learns_moons():
    """After a short run, 20-step samples are closer to the data than the prior is."""
    torch.manual_seed(0)
    x = toy_2d("moons", 2000)
    model = make_model("mlp", {"dim": 2, "hidden": 64, "depth": 2}, ts.RectifiedFlowSchedule())
    res = train(model, flow_matching(), x, steps=400, batch_size=256, lr=3e-3, progress=False)
    den = ts.Denoiser(res.sampling_model, model.schedule, "velocity")
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        s = ts.sample(den, noise, "ddim", 20, grid="uniform")
    # moons: bimodal in x-y; the prior is not. Compare nearest-neighbour distance to the data.
    d_s = torch.cdist(s, x).min(1).values.mean()
    d_n = torch.cdist(noise, x).min(1).values.mean()
    assert d_s < 0.6 * d_n, (float(d_s), float(d_n))


def test_reflow_uses_the_given_coupling_and_huber():
    """With paired noise the objective regresses onto noise - x0 of the given pairs."""
    obj = reflow(loss="huber")
    x0 = torch.randn(8, 2)
    z = torch.randn(8, 2)

    def oracle(xt, t, **_):
        return z - x0  # the exact velocity of every pair

    assert float(obj(oracle, x0, noise=z, generator=torch.Generator().manual_seed(0))) < 1e-6
    assert float(obj(oracle, x0, noise=-z, generator=torch.Generator().manual_seed(0))) > 0.1


def test_label_dropout_replaces_labels_with_the_null_label():
    seen = []

    def model(xt, t, labels=None):
        seen.append(labels.clone())
        return torch.zeros_like(xt)

    obj = DenoisingObjective(ts.VPLinearSchedule(), label_dropout=0.5, null_label=10)
    obj(
        model,
        torch.randn(4000, 2),
        labels=torch.zeros(4000, dtype=torch.long),
        generator=torch.Generator().manual_seed(0),
    )
    frac = float((seen[0] == 10).double().mean())
    assert abs(frac - 0.5) < 0.03 and set(seen[0].tolist()) == {0, 10}


def test_unet_shapes_and_conditioning():
    torch.manual_seed(0)
    for size, ch in ((8, (16, 32)), (16, (16, 32, 32)), (28, (16, 32, 32))):
        m = make_model(
            "unet", {"size": size, "channels": ch, "num_classes": 10}, ts.VPLinearSchedule()
        )
        x = torch.randn(3, 1, size, size)
        out = m(x, torch.rand(3), labels=torch.tensor([0, 1, 10]))
        assert out.shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        make_model("unet", {"size": 10, "channels": (8, 8, 8)}, ts.VPLinearSchedule())


@pytest.mark.parametrize(
    "schedule,prediction,weighting",
    [
        (ts.VPLinearSchedule(), "epsilon", "uniform"),
        (ts.VPLinearSchedule(), "v_prediction", "min-snr"),
        (ts.VPCosineSchedule(), "sample", "min-snr"),
        (ts.EDMSchedule(), "sample", "edm"),
        (ts.EDMSchedule(), "epsilon", "edm"),
        (ts.RectifiedFlowSchedule(), "velocity", "uniform"),
    ],
)
def test_objective_minimum_is_the_posterior_variance(schedule, prediction, weighting):
    """For Gaussian data N(0, c^2 I) the minimiser of every objective is the posterior mean
    E[x0 | x_t] = alpha c^2 x_t / (alpha^2 c^2 + sigma^2) written in the target's
    parameterisation, and the loss it attains is E_t[w(t) Var(x0 | x_t) / b(t)^2] with
    Var = c^2 sigma^2 / (alpha^2 c^2 + sigma^2) (x0 = a x + b m)."""
    c, n, d = 0.7, 20000, 4
    obj = DenoisingObjective(schedule, prediction, weighting)

    def oracle(x, t):
        t = t.double()
        al, si = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        x0 = al * c * c * x / (al * al * c * c + si * si)
        a, b = data_coefficients(prediction, schedule, t)
        return (x0 - a[:, None] * x) / b[:, None]

    x0 = c * torch.randn(n, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = float(obj(oracle, x0, generator=torch.Generator().manual_seed(2)))
    t = obj.times(n, generator=torch.Generator().manual_seed(2))  # the same draws as inside
    al, si = schedule.alpha(t), schedule.sigma(t)
    var = c * c * si * si / (al * al * c * c + si * si)
    _, b = data_coefficients(prediction, schedule, t)
    w = loss_weight(weighting, prediction, schedule, t)
    expected = float((w * var / b**2).mean())
    assert abs(loss - expected) < 0.02 * expected, (loss, expected)
    # and a perturbed predictor does worse
    assert (
        float(obj(lambda x, t: oracle(x, t) * 1.1, x0, generator=torch.Generator().manual_seed(2)))
        > loss
    )
