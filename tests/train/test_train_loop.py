"""The training loop's bookkeeping: periodic checkpoints, the time budget, argument checks and
the coupling of data, labels and paired noise in a batch."""

import json

import pytest
import torch

import timestepper as ts
from timestepper.train import DenoisingObjective, flow_matching, make_model, train
from timestepper.train import loop as loop_module
from timestepper.train.objectives import sample_times


def _mlp(num_classes=0):
    torch.manual_seed(0)
    return make_model(
        "mlp",
        {"dim": 2, "hidden": 8, "depth": 1, "num_classes": num_classes},
        ts.RectifiedFlowSchedule(),
    )


_X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "steps,save_every,saved", [(10, 4, [4, 8, 10]), (8, 4, [4, 8]), (5, 0, [5])]
)
def test_checkpoints_every_save_every_steps_and_at_the_end(
    tmp_path, monkeypatch, steps, save_every, saved
):
    written = []
    real = loop_module.save_checkpoint

    def spy(directory, config, weights, raw=None, train_state=None):
        assert config["training"]["step"] == train_state["step"] == len(train_state["losses"])
        written.append(train_state["step"])
        return real(directory, config, weights, raw=raw, train_state=train_state)

    monkeypatch.setattr(loop_module, "save_checkpoint", spy)
    train(
        _mlp(),
        flow_matching(),
        _X,
        steps=steps,
        batch_size=8,
        save_every=save_every,
        out=tmp_path,
        progress=False,
    )
    assert written == saved


def test_time_budget_stops_after_one_step_and_the_run_resumes_exactly(tmp_path):
    def run(steps, **kw):
        return train(
            _mlp(), flow_matching(), _X, steps=steps, batch_size=8, seed=5, progress=False, **kw
        )

    cut = run(4, out=tmp_path, max_seconds=0.0)
    assert len(cut.losses) == 1
    assert json.loads((tmp_path / "config.json").read_text())["training"]["step"] == 1
    resumed = run(4, out=tmp_path, resume=True)
    full = run(4)
    assert resumed.losses == full.losses
    for p, q in zip(resumed.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_argument_checks_name_the_first_problem(tmp_path):
    m = _mlp()
    with pytest.raises(ValueError, match="steps must be an integer"):
        train(m, flow_matching(), _X, steps=0, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has 3 rows but data has 64"):
        train(m, flow_matching(), _X, labels=torch.zeros(3, dtype=torch.long), noise=_X[:2])
    with pytest.raises(ValueError, match="noise has 2 rows"):
        train(m, flow_matching(), _X, noise=_X[:2])
    with pytest.raises(ValueError, match="resume=True needs out="):
        train(m, flow_matching(), _X, resume=True)
    with pytest.raises(TypeError, match="objective must be a DenoisingObjective"):
        train(m, object(), _X, steps=0)
    frozen = _mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        train(frozen, flow_matching(), _X, progress=False)


def test_resuming_a_run_without_ema_needs_ema_decay_none(tmp_path):
    train(
        _mlp(),
        flow_matching(),
        _X,
        steps=2,
        batch_size=8,
        ema_decay=None,
        out=tmp_path,
        progress=False,
    )
    with pytest.raises(ValueError, match=r"training.ema_decay \(checkpoint None, now 0.999\)"):
        train(
            _mlp(),
            flow_matching(),
            _X,
            steps=3,
            batch_size=8,
            out=tmp_path,
            resume=True,
            progress=False,
        )
    res = train(
        _mlp(),
        flow_matching(),
        _X,
        steps=3,
        batch_size=8,
        ema_decay=None,
        out=tmp_path,
        resume=True,
        progress=False,
    )
    assert len(res.losses) == 3 and res.ema is None and res.sampling_model is res.model


class _Recording(DenoisingObjective):
    """Flow matching that remembers the batches it was given."""

    def __call__(self, model, x0, noise=None, labels=None, generator=None):
        self.batches.append((x0, noise, labels))
        return super().__call__(model, x0, noise=noise, labels=labels, generator=generator)


def test_a_batch_keeps_data_labels_and_paired_noise_together():
    labels = torch.arange(64) % 3
    noise = -2.0 * _X
    obj = _Recording(ts.RectifiedFlowSchedule(), "velocity")
    obj.batches = []
    res = train(
        _mlp(3), obj, _X, labels=labels, noise=noise, steps=3, batch_size=16, progress=False
    )
    assert len(obj.batches) == 3 == len(res.losses)
    for x0, nz, lb in obj.batches:
        assert x0.shape == (16, 2)
        torch.testing.assert_close(nz, -2.0 * x0, rtol=0, atol=0)
        rows = [int((_X == r).all(1).nonzero()[0]) for r in x0]
        assert lb.tolist() == [labels[i].item() for i in rows]
    assert not res.model.training  # evaluation mode after training


def test_objective_times_are_sample_times_with_its_parameters():
    obj = DenoisingObjective(
        ts.RectifiedFlowSchedule(),
        "velocity",
        time_distribution="logit-normal",
        logit_mean=0.3,
        logit_std=0.7,
    )
    a = obj.times(9, generator=torch.Generator().manual_seed(4))
    b = sample_times(
        obj.schedule,
        9,
        "logit-normal",
        generator=torch.Generator().manual_seed(4),
        logit_mean=0.3,
        logit_std=0.7,
    )
    assert torch.equal(a, b)
    obj.time_distribution = "beta"
    with pytest.raises(ValueError, match="time_distribution"):
        obj.times(2)
