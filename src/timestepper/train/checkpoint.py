"""Checkpoints: safetensors weights plus a JSON config, loadable without the training code.

A checkpoint directory holds

* ``config.json``: network name and hyper-parameters, schedule name and parameters, prediction
  type, the time-input map of :class:`~timestepper.train.model.DenoisingModel`, data shape and
  number of classes, and (informative) the objective and training settings;
* ``model.safetensors``: the weights to sample with (the EMA weights when EMA was used);
* ``raw.safetensors`` and ``train_state.pt`` (optimiser, EMA counters, random state, step):
  only needed to resume training.

:func:`load_model` / :func:`load_denoiser` read the first two files only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import (
    SCHEDULES,
    EDMSchedule,
    NoiseSchedule,
    RectifiedFlowSchedule,
    VESchedule,
    VPCosineSchedule,
    VPDiscreteSchedule,
    VPLinearSchedule,
)
from .model import DenoisingModel
from .networks import build_network

FORMAT = "timestepper-checkpoint"
VERSION = 1
CONFIG, WEIGHTS, RAW, TRAIN_STATE = (
    "config.json",
    "model.safetensors",
    "raw.safetensors",
    "train_state.pt",
)

_SCHEDULE_FIELDS = {
    VPLinearSchedule: ("beta_min", "beta_max", "t_min", "t_max"),
    VPCosineSchedule: ("s", "t_min", "t_max"),
    VESchedule: ("sigma_min", "sigma_max", "t_min", "t_max"),
    EDMSchedule: ("sigma_min", "sigma_max"),
    RectifiedFlowSchedule: ("t_min", "t_max"),
}


def schedule_to_config(schedule: NoiseSchedule) -> dict[str, Any]:
    """``{"name": ..., "kwargs": {...}}`` rebuilding ``schedule`` exactly (float64 reprs)."""
    names = {cls: name for name, cls in SCHEDULES.items()}
    cls = type(schedule)
    if cls not in names:
        raise ValueError(
            f"cannot serialise schedule of type {cls.__name__}; supported: "
            f"{', '.join(c.__name__ for c in names)}"
        )
    if cls is VPDiscreteSchedule:
        kwargs = {"alphas_cumprod": schedule.alphas_cumprod.tolist()}
    else:
        kwargs = {f: getattr(schedule, f) for f in _SCHEDULE_FIELDS[cls]}
    return {"name": names[cls], "kwargs": kwargs}


def schedule_from_config(cfg: dict[str, Any]) -> NoiseSchedule:
    """The schedule described by ``cfg`` (the inverse of :func:`schedule_to_config`)."""
    name = cfg["name"]
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    kwargs = dict(cfg.get("kwargs", {}))
    if name == "vp-discrete":
        return VPDiscreteSchedule(torch.tensor(kwargs["alphas_cumprod"], dtype=torch.float64))
    return SCHEDULES[name](**kwargs)


def model_config(model: DenoisingModel, prediction: str, **extra: Any) -> dict[str, Any]:
    """The config dict of a :class:`DenoisingModel` built by :func:`make_model`."""
    network = getattr(model, "network_spec", None)
    if network is None:
        raise ValueError("the model has no network_spec; build it with make_model(...)")
    cfg = {
        "format": FORMAT,
        "version": VERSION,
        "network": {"name": network["name"], "kwargs": dict(network.get("kwargs", {}))},
        "schedule": schedule_to_config(model.schedule),
        "prediction": prediction,
        "model": {
            "time_transform": model.time_transform,
            "time_scale": model.time_scale,
            "sigma_data": model.sigma_data,
        },
    }
    cfg.update(extra)
    return cfg


def save_checkpoint(
    directory: str | os.PathLike,
    config: dict[str, Any],
    weights: nn.Module,
    raw: nn.Module | None = None,
    train_state: dict | None = None,
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (and the resume files when given)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp, d / CONFIG)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in weights.state_dict().items()},
        str(d / WEIGHTS),
    )
    if raw is not None:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in raw.state_dict().items()}, str(d / RAW)
        )
    if train_state is not None:
        torch.save(train_state, d / TRAIN_STATE)
    return d


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory, checked for format and version."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG} in {directory}: not a timestepper checkpoint")
    cfg = json.loads(path.read_text())
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{path} is not a timestepper checkpoint (format={cfg.get('format')!r})")
    if cfg.get("version", 0) > VERSION:
        raise ValueError(
            f"{path} has version {cfg['version']}, newer than this library's {VERSION}"
        )
    return cfg


def build_model(cfg: dict[str, Any]) -> DenoisingModel:
    """An untrained :class:`DenoisingModel` as described by a config."""
    return make_model(
        cfg["network"]["name"],
        cfg["network"].get("kwargs", {}),
        schedule_from_config(cfg["schedule"]),
        **cfg.get("model", {}),
    )


def make_model(
    network: str, network_kwargs: dict[str, Any], schedule: NoiseSchedule, **model_options: Any
) -> DenoisingModel:
    """Build network ``network`` (``mlp``, ``unet``) wrapped in a :class:`DenoisingModel`; the
    model remembers its spec (``model.network_spec``) so checkpoints can describe it."""
    net = build_network(network, **network_kwargs)
    model = DenoisingModel(net, schedule, **model_options)
    model.network_spec = {"name": network, "kwargs": dict(network_kwargs)}
    return model


def load_model(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu", weights: str = WEIGHTS
) -> tuple[DenoisingModel, dict[str, Any]]:
    """``(model, config)`` from a checkpoint directory; the model is in eval mode."""
    from safetensors.torch import load_file

    cfg = read_config(directory)
    model = build_model(cfg)
    model.load_state_dict(load_file(str(Path(directory) / weights), device=str(map_location)))
    return model.to(map_location).eval(), cfg


def load_denoiser(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu", **model_kwargs: Any
) -> Denoiser:
    """A :class:`Denoiser` ready for :func:`timestepper.sample` from a checkpoint directory.

    ``model_kwargs`` (e.g. ``labels=``) are passed to every model call.
    """
    model, cfg = load_model(directory, map_location)
    return Denoiser(model, model.schedule, cfg["prediction"], model_kwargs=model_kwargs)
