"""Integer arguments of the training front accept any integer type (``numpy.int64``) and refuse
``bool`` and floats, naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import timestepper as ts
from timestepper.train import make_model, toy_2d
from timestepper.train.generate import generate
from timestepper.train.model import DenoisingModel


def _denoiser():
    torch.manual_seed(0)
    model = make_model("mlp", {"dim": 2, "hidden": 8, "depth": 1}, ts.RectifiedFlowSchedule())
    assert isinstance(model, DenoisingModel)
    return ts.Denoiser(model.eval(), model.schedule, "velocity")


def test_generate_accepts_numpy_integers_and_matches_python_ints():
    den = _denoiser()
    a, _ = generate(den, np.int64(6), (2,), "ddim", 3, batch_size=np.int32(4), seed=np.int64(2))
    b, _ = generate(den, 6, (2,), "ddim", 3, batch_size=4, seed=2)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,phrase",
    [
        ({"n": True}, "n must be an integer >= 1, got True"),
        ({"n": 4.0}, "n must be an integer >= 1, got 4.0"),
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        ({"batch_size": np.int64(0)}, "batch_size must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ],
)
def test_generate_refuses_non_integers_naming_the_argument(kwargs, phrase):
    args = {"n": 4, **kwargs}
    with pytest.raises(ValueError, match=phrase):
        generate(_denoiser(), args.pop("n"), (2,), "ddim", 3, **args)


def test_toy_sets_accept_numpy_integers_and_refuse_bools():
    assert torch.equal(toy_2d("moons", np.int64(10)), toy_2d("moons", 10))
    with pytest.raises(ValueError, match="n must be an integer >= 2, got True"):
        toy_2d("moons", True)
