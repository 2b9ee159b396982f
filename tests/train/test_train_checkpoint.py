import json

import pytest
import torch

import timestepper as ts
from timestepper.train import (
    DenoisingObjective,
    digits,
    flow_matching,
    load_denoiser,
    make_model,
    train,
)
from timestepper.train.checkpoint import load_model, schedule_from_config, schedule_to_config
from timestepper.train.ema import EMA

SCHEDULES = [
    ts.VPDiscreteSchedule.from_betas("scaled_linear", 0.00085, 0.012),
    ts.VPLinearSchedule(beta_min=0.2, beta_max=15.0),
    ts.VPCosineSchedule(),
    ts.VESchedule(sigma_min=0.02, sigma_max=30.0),
    ts.EDMSchedule(sigma_min=0.01, sigma_max=60.0),
    ts.RectifiedFlowSchedule(t_min=0.001),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_schedule_config_round_trip_is_exact(schedule):
    cfg = json.loads(json.dumps(schedule_to_config(schedule)))
    back = schedule_from_config(cfg)
    assert type(back) is type(schedule)
    t = torch.linspace(schedule.t_min, schedule.t_max, 17, dtype=torch.float64)
    assert torch.equal(back.alpha(t), schedule.alpha(t)) and torch.equal(
        back.sigma(t), schedule.sigma(t)
    )


def test_checkpoint_round_trip_and_config(tmp_path):
    x, y = digits("train")
    model = make_model(
        "unet",
        {"size": 8, "channels": [8, 16], "emb_dim": 16, "num_classes": 10},
        ts.VPDiscreteSchedule.from_betas(),
    )
    obj = DenoisingObjective(model.schedule, "v", "min-snr", label_dropout=0.1, null_label=10)
    res = train(model, obj, x, labels=y, steps=5, batch_size=16, progress=False, out=tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["prediction"] == "v_prediction" and cfg["network"]["name"] == "unet"
    assert cfg["objective"]["weighting"] == "min-snr" and cfg["data"]["num_classes"] == 10
    assert cfg["training"]["step"] == 5
    loaded, _ = load_model(tmp_path)
    xs, t, lb = torch.randn(4, 1, 8, 8), torch.tensor([10.0, 200.0, 500.0, 999.0]), torch.arange(4)
    with torch.no_grad():
        assert torch.equal(loaded(xs, t, labels=lb), res.ema(xs, t, labels=lb))
    den = load_denoiser(tmp_path, labels=lb)
    assert den.prediction == "v_prediction" and isinstance(den.schedule, ts.VPDiscreteSchedule)
    with torch.no_grad():
        out = ts.sample(den, torch.randn(4, 1, 8, 8), "ddim", 4)
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    x = torch.randn(256, 2)

    def run(out, steps, resume=False):
        torch.manual_seed(0)
        m = make_model("mlp", {"dim": 2, "hidden": 16, "depth": 1}, ts.RectifiedFlowSchedule())
        return train(
            m,
            flow_matching(),
            x,
            steps=steps,
            batch_size=32,
            seed=3,
            progress=False,
            out=out,
            resume=resume,
            ema_decay=0.9,
        )

    full = run(tmp_path / "a", 20)
    run(tmp_path / "b", 10)
    resumed = run(tmp_path / "b", 20, resume=True)
    assert resumed.losses == full.losses
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(full.ema.parameters(), resumed.ema.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_errors(tmp_path):
    m = make_model("mlp", {"dim": 2}, ts.RectifiedFlowSchedule())
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(
            m,
            flow_matching(),
            torch.randn(8, 2),
            steps=2,
            out=tmp_path,
            resume=True,
            progress=False,
        )
    with pytest.raises(ValueError, match="schedule"):
        train(
            m, DenoisingObjective(ts.VPLinearSchedule()), torch.randn(8, 2), steps=2, progress=False
        )


def test_ema_is_the_moving_average():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)  # warm-up decay min(0.5, 2/11)
    d = 2 / 11
    assert abs(float(ema.module.weight) - (1 - d)) < 1e-7
    ema.update(lin)
    d2 = min(0.5, 3 / 12)
    assert abs(float(ema.module.weight) - (1 - d * d2)) < 1e-6


def test_training_under_a_process_group_uses_ddp_and_matches(tmp_path):
    """In an initialised torch.distributed group (here gloo, one process) the loop trains
    through DistributedDataParallel; with one rank the result equals a plain run."""
    import torch.distributed as dist

    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(0))

    def run(out):
        torch.manual_seed(0)
        m = make_model("mlp", {"dim": 2, "hidden": 16, "depth": 1}, ts.RectifiedFlowSchedule())
        return train(
            m,
            flow_matching(),
            x,
            steps=6,
            batch_size=16,
            seed=1,
            progress=False,
            out=out,
            max_seconds=60,
        )

    plain = run(tmp_path / "plain")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = run(tmp_path / "ddp")
    finally:
        dist.destroy_process_group()
    assert ddp.losses == plain.losses
    for p, q in zip(plain.model.parameters(), ddp.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert (tmp_path / "ddp" / "step-00000006" / "model.safetensors").is_file()
