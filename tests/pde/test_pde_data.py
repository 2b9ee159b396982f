"""Data generation: deterministic per seed, HDF5 layout and attributes, CLI."""

from __future__ import annotations

import argparse

import pytest
import torch

from timestepper import pde
from timestepper.pde import cli
from timestepper.pde.data import GenerationConfig, frames_per_model_step, generate, read_hdf5


def _small():
    return pde.KuramotoSivashinsky(22.0, 32), GenerationConfig(
        dt=0.25, save_every=2, duration=2.0, t_burn_in=1.0
    )


def test_generate_is_deterministic_and_batch_independent():
    eq, cfg = _small()
    a = generate(eq, 5, cfg, split="train")
    b = generate(eq, 5, cfg, split="train")
    assert a.shape == (5, cfg.frames, 32) == (5, 5, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    c = generate(eq, 5, GenerationConfig(**{**vars(cfg), "batch_size": 2}), split="train")
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
    d = generate(eq, 3, cfg, split="test")
    assert not torch.allclose(a[:3], d)
    e = generate(eq, 5, GenerationConfig(**{**vars(cfg), "seed": 1}), split="train")
    assert not torch.allclose(a, e)


def test_burn_in_and_frames_match_direct_simulation():
    eq, cfg = _small()
    u = generate(eq, 1, cfg)[0]
    from timestepper.pde.data import initial_conditions

    u0 = initial_conditions(eq, range(1), cfg.seed, 0)[0]
    ref = eq.simulate(u0, t_end=3.0, dt=0.25, save_every=2)[-5:]
    torch.testing.assert_close(u, ref.float(), atol=1e-6, rtol=0)


def test_cli_writes_hdf5_with_attributes(tmp_path):
    pytest.importorskip("h5py")
    parser = argparse.ArgumentParser()
    cli.add_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "ks.h5"
    args = parser.parse_args(
        [
            "pde",
            "generate",
            "ks",
            "--n-train",
            "3",
            "--n-test",
            "2",
            "--length",
            "22",
            "--n",
            "32",
            "--dt",
            "0.25",
            "--save-every",
            "2",
            "--duration-train",
            "2",
            "--duration-test",
            "4",
            "--t-burn-in",
            "1",
            "--seed",
            "7",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert args.func(args) == 0
    train, attrs = read_hdf5(out, "train")
    test, tattrs = read_hdf5(out, "test")
    assert train.shape == (3, 5, 32) and test.shape == (2, 9, 32)
    assert attrs["equation"] == "KuramotoSivashinsky" and attrs["seed"] == 7
    assert attrs["t_burn_in"] == 1.0 and attrs["dt_frame"] == 0.5 and tattrs["duration"] == 4.0
    eq, cfg = _small()
    again = generate(eq, 3, GenerationConfig(**{**vars(cfg), "seed": 7}))
    torch.testing.assert_close(train, again, atol=0, rtol=0)
    assert frames_per_model_step(attrs, 1.0) == 2
    with pytest.raises(ValueError, match="multiple"):
        frames_per_model_step(attrs, 0.75)


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="duration"):
        GenerationConfig(dt=0.2, save_every=3, duration=1.0)
    with pytest.raises(ValueError, match="save_every"):
        GenerationConfig(dt=0.2, save_every=0, duration=1.0)
    eq, cfg = _small()
    with pytest.raises(ValueError, match="split"):
        generate(eq, 2, cfg, split="dev")
