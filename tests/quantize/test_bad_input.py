"""Quantization's bad input: unsupported layers named, checkpoints of the wrong kind refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import timestepper as ts
from timestepper import quantize as tq
from timestepper.train import load_denoiser, save_checkpoint
from timestepper.train.checkpoint import model_config
from timestepper.train.store import CheckpointError

from .conftest import CAL, SHAPE, tiny


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.gain


def test_unsupported_layers_are_named():
    model = tiny()
    model.net.inp = nn.Sequential(nn.ConvTranspose2d(1, 8, 3, padding=1), _Scaled())
    den = ts.Denoiser(model, model.schedule, "velocity")
    with pytest.raises(ValueError, match=r"unsupported layers inp\.0 \(ConvTranspose2d\), inp\.1 \(_Scaled\)"):
        tq.quantize(den, "ptq4dm", SHAPE, calibration=CAL)


def test_unknown_method_and_non_module_models():
    model = tiny()
    with pytest.raises(ValueError, match="unknown method 'int4'"):
        tq.quantize(ts.Denoiser(model, model.schedule, "velocity"), "int4", SHAPE)
    with pytest.raises(TypeError, match="model_fn to be an nn.Module"):
        tq.quantize(ts.Denoiser(lambda x, t: x, model.schedule, "velocity"), "ptq4dm", SHAPE)


def test_quantizing_twice_is_refused(quantized):
    with pytest.raises(ValueError, match="already quantized"):
        tq.quantize(quantized["weight-only"], "ptq4dm", SHAPE)


def test_temporal_methods_need_an_unconditional_time_module():
    model = ts.train.make_model("unet", {"size": 8, "channels": [8, 16], "emb_dim": 8, "num_classes": 3},
                                ts.RectifiedFlowSchedule()).eval()
    den = ts.Denoiser(model, model.schedule, "velocity")
    with pytest.raises(ValueError, match="unconditional networks only"):
        tq.quantize(den, "tfmq", SHAPE, calibration=CAL, tiar_iters=5)
    with pytest.raises(ValueError, match="no time module 'time_embed'"):
        tq.quantize(ts.Denoiser(tiny(), model.schedule, "velocity"), "tfm", SHAPE, calibration=CAL,
                    time_module="time_embed")


def test_add_times_needs_a_temporal_model(quantized):
    with pytest.raises(ValueError, match="'tfmq' or 'tfm'"):
        tq.add_times(quantized["ptq4dm"], torch.tensor([0.5]))


def test_quantized_checkpoint_refused_by_the_full_precision_loader(tmp_path, quantized):
    tq.save_quantized(tmp_path, quantized["ptq4dm"])
    with pytest.raises(CheckpointError, match="holds a quantized model; load it with timestepper.quantize.load_q"):
        load_denoiser(tmp_path)


def test_full_precision_checkpoint_refused_by_the_quantized_loader(tmp_path):
    model = tiny()
    save_checkpoint(tmp_path, model_config(model, "velocity"), model)
    with pytest.raises(CheckpointError, match="holds a full-precision model"):
        tq.load_quantized(tmp_path)


def test_quantized_state_into_another_network_config(tmp_path, quantized):
    import json

    tq.save_quantized(tmp_path, quantized["ptq4dm"])
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["network"]["kwargs"]["channels"] = [8, 32]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not fit the network its config.json describes"):
        tq.load_quantized(tmp_path)
