"""Saving and loading quantized models.

A quantized checkpoint is a folder with ``config.json`` (format ``timestepper-quantized``: the
full-precision model's config as :func:`timestepper.train.checkpoint.model_config` writes it, plus
the ``quantization`` record: method, calibration, temporal block and cache size) and
``quantized.pt`` (the state dict: int8 weights, scales and zero points, cached temporal features;
``torch.save``, read back with ``weights_only=True``). :func:`load_quantized` rebuilds the float
network from the config, gives it the int8 structure the record describes and loads the state.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from ..diffusion.denoiser import Denoiser
from ..train.checkpoint import build_model, model_config
from ..train.store import CheckpointError, read_json, rename, write_file
from .layers import convert_static, quantizable_leaves, to_weight_only
from .quantize import TEMPORAL, quantize_structure
from .temporal import install_cache, resize_cache
from .tiar import Block, QuantizedBlock

FORMAT = "timestepper-quantized"
VERSION = 1
CONFIG, STATE = "config.json", "quantized.pt"


def _record(model: torch.nn.Module) -> dict[str, Any]:
    info = getattr(model, "quantization", None)
    if info is None:
        raise ValueError("the denoiser's model is not quantized (build it with timestepper.quantize.quantize)")
    out = dict(info)
    if out["method"] in TEMPORAL:
        out["cache_size"] = int(next(b for n, b in model.named_buffers() if n.endswith(".keys")).numel())
    return out


def save_quantized(directory: str | os.PathLike, denoiser: Denoiser) -> Path:
    """Write a quantized denoiser (of a :func:`~timestepper.train.make_model` model) to
    ``directory``; returns the folder."""
    model = denoiser.model_fn
    record = _record(model)
    cfg = model_config(model, denoiser.prediction, format=FORMAT, version=VERSION, quantization=record)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    # the training checkpoints' crash-safe writes: each file under a temporary name, renamed when
    # complete, the config (which makes the folder a checkpoint) last
    for name, data in ((STATE, buffer.getvalue()), (CONFIG, json.dumps(cfg, indent=1, default=str).encode())):
        tmp = folder / f".{name}.partial-{uuid.uuid4().hex[:12]}"
        write_file(tmp, data)
        rename(tmp, folder / name)
    return folder


def _read(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG} in {directory}: not a checkpoint")
    cfg = read_json(path)
    if cfg.get("format") == "timestepper-checkpoint":
        raise CheckpointError(f"{directory} holds a full-precision model; quantize it with "
                              "timestepper.quantize.quantize(load_denoiser(...), ...) instead of loading it as int8")
    if cfg.get("format") != FORMAT or not isinstance(cfg.get("quantization"), dict):
        raise CheckpointError(f"{path} is not a quantized timestepper checkpoint (format={cfg.get('format')!r})")
    if cfg.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has version {cfg.get('version')!r}, newer than this library's {VERSION}")
    return cfg


def _structure(cfg: dict[str, Any]) -> torch.nn.Module:
    """The float model of ``cfg`` given the int8 structure its record describes (empty state)."""
    model = build_model(cfg).eval()
    net = getattr(model, "net", model)
    info = cfg["quantization"]
    if info["method"] == "weight-only":
        to_weight_only(net, quantizable_leaves(net))
        return model
    if info["method"] in TEMPORAL:
        consumers, modes = info["consumers"], info["modes"]
        block = Block(net.get_submodule(info["time_module"]), {n: net.get_submodule(n) for n in consumers})
        install_cache(net, info["time_module"], consumers, modes, QuantizedBlock(block) if "tib" in modes else None)
        resize_cache(net, int(info["cache_size"]))
    quantize_structure(net, info)
    convert_static(net)
    return model


def load_quantized(directory: str | os.PathLike) -> Denoiser:
    """The quantized :class:`~timestepper.Denoiser` saved in ``directory``.

    Raises:
        CheckpointError: the folder holds a full-precision checkpoint, or a state that does not fit
            the network its config describes (the first mismatch named).
    """
    cfg = _read(directory)
    model = _structure(cfg)
    state = torch.load(Path(directory) / STATE, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"the quantized state in {directory} does not fit the network its "
                              f"config.json describes: {first}") from e
    model.quantization = cfg["quantization"]
    return Denoiser(model, model.schedule, cfg["prediction"])


__all__ = ["load_quantized", "save_quantized"]
