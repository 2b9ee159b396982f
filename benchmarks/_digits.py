"""The small digits model of the benchmarks: trained as ``timestepper train digits`` trains it
(unconditional flow matching, or the epsilon objective on the discrete VP schedule; U-Net on the
8x8 digits train split, EMA weights), with fewer steps and channels, or loaded from a checkpoint.
Shared by ``benchmarks/mmd.py``, ``benchmarks/inversion.py`` and ``benchmarks/distill.py``.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

import timestepper as ts
from timestepper.train import DenoisingObjective, flow_matching, make_model, train
from timestepper.train.data import digits

SHAPE = (1, 8, 8)


def pretrain_digits(train_steps: int, channels: Sequence[int], seed: int = 0,
                    objective: str = "flow-matching") -> tuple[ts.Denoiser, dict]:
    """The model `timestepper train digits` builds (the CLI's defaults are 4000 steps and
    channels 32, 64): ``train_steps`` Adam steps of batch 128 at lr 2e-3.

    ``objective``: ``"flow-matching"`` (the CLI's default: the linear interpolant, velocity) or
    ``"eps"`` (``--objective eps --schedule vp-discrete``: DDPM's linear-beta schedule, epsilon
    target, uniform weighting).

    Returns the :class:`~timestepper.Denoiser` of the EMA weights and
    ``{"train_s": seconds, "train_steps": steps}``.
    """
    schedule, obj, prediction = _objective(objective)
    x, _ = digits("train")
    torch.manual_seed(seed)
    model = make_model("unet", {"size": SHAPE[-1], "channels": list(channels)}, schedule)
    t0 = time.perf_counter()
    res = train(model, obj, x, steps=train_steps, batch_size=128, lr=2e-3, seed=seed, progress=False)
    info = {"train_s": time.perf_counter() - t0, "train_steps": len(res.losses)}
    return ts.Denoiser(res.sampling_model, schedule, prediction), info


def _objective(name: str) -> tuple[ts.NoiseSchedule, DenoisingObjective, str]:
    if name == "flow-matching":
        return ts.RectifiedFlowSchedule(), flow_matching(), "velocity"
    if name == "eps":
        vp = ts.VPDiscreteSchedule.from_betas()
        return vp, DenoisingObjective(vp, "epsilon"), "epsilon"
    raise ValueError(f"unknown objective {name!r}; choose from 'flow-matching', 'eps'")


def load_digits(path: str) -> ts.Denoiser:
    """The :class:`~timestepper.Denoiser` of a ``timestepper train digits`` checkpoint folder."""
    from timestepper.train.checkpoint import load_denoiser

    return load_denoiser(path)


def in_dtype(den: ts.Denoiser, dtype: torch.dtype) -> ts.Denoiser:
    """A copy of ``den`` whose network computes in ``dtype`` (the original is left as it is).

    The U-Net computes its sinusoidal time embedding in float32 whatever its weights are; every
    layer with weights therefore casts its floating inputs to its weights' dtype. The time input
    is then rounded to float32, the same at sampling and at inversion, so the network is still
    one deterministic map: a float64 round trip stays exact.
    """
    model = copy.deepcopy(den.model_fn)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"den.model_fn must be an nn.Module to change its dtype, got {type(model).__name__}")
    model.to(dtype)
    for layer in model.modules():
        if any(True for _ in layer.parameters(recurse=False)):
            layer.register_forward_pre_hook(_cast_inputs)
    return ts.Denoiser(model, den.schedule, den.prediction, model_kwargs=den.model_kwargs)


def _cast_inputs(layer: torch.nn.Module, args: tuple) -> tuple:
    dtype = next(layer.parameters(recurse=False)).dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def run_and_write(name: str, run: Callable[[Callable[[str], None]], dict], render: Callable[[dict], str],
                  threads: int = 1, out: Path | None = None) -> dict:
    """Run a benchmark with ``threads`` torch threads and a log that prints the seconds since the
    start; write ``NAME.json`` and ``NAME.md`` (``render`` of the results, which gain ``total_s``)
    into ``out`` (default ``benchmarks/results``)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)

    res = run(log)
    res["total_s"] = time.perf_counter() - start
    results = Path(__file__).parent / "results" if out is None else Path(out)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(res, indent=2))
    (results / f"{name}.md").write_text(render(res))
    log(f"wrote {results / name}.md")
    return res
