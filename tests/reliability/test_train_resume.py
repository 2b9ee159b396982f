"""Training never mixes runs: an existing checkpoint needs resume or overwrite, a resume must
match the checkpoint's settings and data, and periodic saves bound the work a crash can lose."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import timestepper as ts
from timestepper.train import DenoisingObjective, flow_matching, make_model, train
from timestepper.train import loop as loop_module
from timestepper.train.checkpoint import read_config

_X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))


def _mlp(hidden=8, schedule=None):
    torch.manual_seed(0)
    return make_model(
        "mlp", {"dim": 2, "hidden": hidden, "depth": 1}, schedule or ts.RectifiedFlowSchedule()
    )


def _train(out, steps=2, model=None, objective=None, data=_X, **kw):
    kw = {"batch_size": 8, "progress": False, **kw}
    return train(model or _mlp(), objective or flow_matching(), data, steps=steps, out=out, **kw)


def test_training_into_a_checkpoint_without_resume_is_refused(tmp_path):
    _train(tmp_path)
    before = (tmp_path / "config.json").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a checkpoint: pass resume=True"):
        _train(tmp_path)
    assert (tmp_path / "config.json").read_bytes() == before


def test_overwrite_trains_afresh_and_replaces_the_checkpoint(tmp_path):
    _train(tmp_path, steps=4)
    res = _train(tmp_path, steps=2, overwrite=True)
    assert len(res.losses) == 2 and read_config(tmp_path)["training"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "step-00000002"]


def test_resume_and_overwrite_together_are_refused(tmp_path):
    _train(tmp_path)
    with pytest.raises(ValueError, match="resume=True and overwrite=True exclude each other"):
        _train(tmp_path, resume=True, overwrite=True)


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot resume: .* holds no checkpoint"):
        _train(tmp_path, resume=True)


def test_out_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="out='.*f' is a file"):
        _train(tmp_path / "f")


def _resume_vp(out, saved, now, phrase):
    """Train an eps model on schedule ``saved``; resuming on ``now`` = (schedule, prediction)
    must be refused with ``phrase``."""
    _train(out, model=_mlp(schedule=saved), objective=DenoisingObjective(saved, "epsilon"))
    schedule, prediction = now
    with pytest.raises(ValueError, match=phrase):
        _train(
            out, steps=4, resume=True, model=_mlp(schedule=schedule),
            objective=DenoisingObjective(schedule, prediction),
        )  # fmt: skip


def test_resume_with_another_objective_names_the_prediction(tmp_path):
    sched = ts.VPCosineSchedule()
    phrase = r"other settings: .*prediction \(checkpoint 'epsilon', now 'v"
    _resume_vp(tmp_path, sched, (sched, "v_prediction"), phrase)


def test_resume_with_another_schedule_names_the_schedule(tmp_path):
    phrase = r"schedule.name \(checkpoint 'vp-cosine', now 'vp-linear'\)"
    _resume_vp(tmp_path, ts.VPCosineSchedule(), (ts.VPLinearSchedule(), "epsilon"), phrase)


def test_resume_with_another_model_shape_names_the_network_key(tmp_path):
    _train(tmp_path)
    with pytest.raises(ValueError, match=r"network.kwargs.hidden \(checkpoint 8, now 16\)"):
        _train(tmp_path, steps=4, resume=True, model=_mlp(hidden=16))


def test_resume_on_other_data_names_the_data_fingerprint(tmp_path):
    _train(tmp_path)
    with pytest.raises(ValueError, match=r"data.fingerprint \(checkpoint '[0-9a-f]{16}', now"):
        _train(tmp_path, steps=4, resume=True, data=_X + 1.0)


def test_resume_with_another_batch_size_names_it(tmp_path):
    _train(tmp_path)
    with pytest.raises(ValueError, match=r"training.batch_size \(checkpoint 8, now 16\)"):
        _train(tmp_path, steps=4, resume=True, batch_size=16)


def test_resume_with_fewer_steps_than_saved_is_refused(tmp_path):
    _train(tmp_path, steps=4)
    with pytest.raises(ValueError, match="steps=3 is below the step 4 of the checkpoint"):
        _train(tmp_path, steps=3, resume=True)


def test_resume_continues_exactly(tmp_path):
    _train(tmp_path, steps=2)
    resumed = _train(tmp_path, steps=5, resume=True)
    full = _train(None, steps=5)
    assert resumed.losses == full.losses


def test_saves_by_wall_time(tmp_path, monkeypatch):
    written = []
    real = loop_module.save_checkpoint

    def spy(directory, config, weights, raw=None, train_state=None):
        written.append(train_state["step"])
        return real(directory, config, weights, raw=raw, train_state=train_state)

    monkeypatch.setattr(loop_module, "save_checkpoint", spy)
    _train(tmp_path, steps=4, save_seconds=1e-9)
    assert written == [1, 2, 3, 4]


def test_default_periodic_save_is_every_ten_minutes():
    assert inspect.signature(train).parameters["save_seconds"].default == 600.0


def test_numpy_integers_are_accepted_and_bools_refused(tmp_path):
    res = _train(None, steps=np.int64(3), batch_size=np.int32(8), save_every=np.int64(1))
    assert len(res.losses) == 3
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got True"):
        _train(None, steps=True)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 2.0"):
        _train(None, batch_size=2.0)


@pytest.mark.parametrize(
    "option,value,phrase",
    [
        ("lr", 0.0, "lr must be a finite number > 0"),
        ("lr", float("nan"), "lr must be a finite number > 0"),
        ("ema_decay", 1.0, r"ema_decay must be in \[0, 1\)"),
        ("grad_clip", -1.0, "grad_clip must be a finite number > 0"),
        ("save_seconds", 0.0, "save_seconds must be a finite number > 0"),
        ("save_every", -1, "save_every must be an integer >= 0"),
        ("warmup", -1, "warmup must be an integer >= 0"),
        ("max_seconds", -1.0, "max_seconds must be a finite number >= 0"),
    ],
)
def test_bad_training_options_name_the_option(option, value, phrase):
    with pytest.raises(ValueError, match=phrase):
        _train(None, **{option: value})
