"""``quantize``: 8-bit post-training quantization of a denoiser, four ways.

* ``"ptq4dm"`` -- PTQ4DM (Shang et al. 2023, CVPR): static W8A8 of every ``Linear``/``Conv``
  (``torch.ao`` eager mode, int8 CPU kernels), calibrated on NDTC inputs
  (:mod:`timestepper.quantize.calibration`) with the MSE-minimising histogram observer.
* ``"weight-only"`` -- int8 per-channel weights, float activations (data-free).
* ``"tfmq"`` -- TFMQ-DM (Huang et al. 2024, CVPR): as ``"ptq4dm"`` for the layers that see
  ``x_t``; the temporal information block quantized separately (TIAR weights, FSC activation
  ranges per time step; :mod:`timestepper.quantize.tiar`) and its finitely many outputs cached
  per time step.
* ``"tfm"`` -- Temporal Feature Matters (Huang et al. 2024/2025, TPAMI): as ``"tfmq"``, with the
  cache-based maintenance: the full-precision temporal features of the sampler's actual grid are
  precomputed and looked up; disturbance-aware selection keeps, per temporal feature, the
  quantized block's feature where its disturbance (relative squared error against full precision
  over the grid) is within ``disturbance_tolerance`` and the full-precision cache elsewhere.

The result is a :class:`~timestepper.Denoiser` over a copy of the model (the original is left as
it is) that runs on the CPU; ``denoiser.model_fn.quantization`` records what was done. The
temporal methods answer only at the cached times: :func:`add_grid` adds a sampler's times.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn

from ..diffusion.denoiser import Denoiser
from .calibration import Calibration, calibration_set, evaluation_times
from .layers import (
    check_supported,
    convert_static,
    quantizable_leaves,
    to_weight_only,
    wrap_static,
)
from .temporal import cached_features, extend_cache, find_block, install_cache
from .tiar import Block, feature_disturbance, tiar

METHODS = ("ptq4dm", "weight-only", "tfmq", "tfm")
TEMPORAL = ("tfmq", "tfm")


def _network(denoiser: Denoiser) -> tuple[nn.Module, nn.Module]:
    """``(model, net)``: the denoiser's module and the network inside it (``model.net`` for a
    :class:`~timestepper.train.model.DenoisingModel`, else the module itself)."""
    if not isinstance(denoiser, Denoiser):
        raise TypeError(f"denoiser must be a timestepper Denoiser, got {type(denoiser).__name__}")
    model = denoiser.model_fn
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantization needs the denoiser's model_fn to be an nn.Module, got {type(model).__name__}")
    if getattr(model, "quantization", None) is not None:
        raise ValueError("the model is already quantized")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 inference runs on the CPU: move the model there first (model.cpu())")
    return model, getattr(model, "net", model)


def quantize(  # noqa: PLR0913 - keyword options of the front
    denoiser: Denoiser,
    method: str,
    shape: tuple[int, ...],
    *,
    calibration: Calibration | None = None,
    time_module: str = "cond",
    tiar_iters: int = 1000,
    disturbance_tolerance: float = 0.0,
    reduce_range: bool = False,
) -> Denoiser:
    """An int8 copy of ``denoiser`` by ``method`` (``ptq4dm``, ``weight-only``, ``tfmq``, ``tfm``).

    Args:
        denoiser: a CPU, float32 model (a :class:`~timestepper.train.model.DenoisingModel` for
            the temporal methods).
        method: see the module docstring.
        shape: the shape of one sample (calibration noise, and the probe that finds the temporal
            information block).
        calibration: the calibration sampler and NDTC settings (default :class:`Calibration`()).
        time_module: the name, inside the network, of the module that embeds the time input.
        tiar_iters: TIAR's AdaRound iterations (``tfmq``, ``tfm``).
        disturbance_tolerance: ``tfm``'s selection threshold on a temporal feature's relative
            squared error: the quantized block's feature is kept where its disturbance is at most
            this, the full-precision cache is used elsewhere (default 0: every feature the
            quantized block disturbs at all is cached in full precision).
        reduce_range: 7-bit activations (PyTorch's x86 default, for CPUs without VNNI; see
            :func:`~timestepper.quantize.layers.static_qconfig`); default the full 8 bits.

    Raises:
        ValueError: unknown method, a layer that cannot be quantized (named), a network without
            the time module the temporal methods need, a GPU model.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    cal = calibration or Calibration()
    source, net0 = _network(denoiser)
    skip = (time_module,) if method in TEMPORAL else ()
    check_supported(net0, skip)
    start = time.perf_counter()
    model = copy.deepcopy(source).eval()
    net = getattr(model, "net", model)
    info: dict[str, Any] = {"method": method, "time_module": time_module, "reduce_range": bool(reduce_range)}
    if method == "weight-only":
        to_weight_only(net, quantizable_leaves(net))
        info["calibration"] = None
    else:
        x, t = calibration_set(denoiser, shape, cal)
        info["calibration"] = {"solver": cal.solver, "steps": cal.steps, "grid": cal.grid,
                               "samples": cal.samples, "mean": cal.mean, "std": cal.std, "seed": cal.seed}
        if method in TEMPORAL:
            info.update(_maintain_temporal(net, method, x, _time_inputs(model, t),
                                           {"time_module": time_module, "iters": tiar_iters,
                                            "tolerance": disturbance_tolerance}))
        _static_int8(model, net, info, x, t, cal.batch_size)
    info["calibration_s"] = time.perf_counter() - start
    model.quantization = info
    return Denoiser(model, denoiser.schedule, denoiser.prediction, denoiser.model_kwargs)


def _skipped(info: dict[str, Any]) -> tuple[str, ...]:
    return (info["time_module"], *info["consumers"]) if info["method"] in TEMPORAL else ()


def output_layer(net: nn.Module, skip: tuple[str, ...]) -> str:
    """The network's output layer: its last ``Linear``/``Conv`` leaf in registration order."""
    leaves = quantizable_leaves(net, skip)
    if not leaves:
        raise ValueError("the network has no Linear or Conv layer to quantize")
    return leaves[-1]


def quantize_structure(net: nn.Module, info: dict[str, Any]) -> None:
    """Apply the int8 layer structure of ``info`` to the float ``net`` (observers in place, not
    converted): the output layer weight-only, the other leaves wrapped for static int8."""
    skip = _skipped(info)
    out = output_layer(net, skip)
    to_weight_only(net, [out])
    wrap_static(net, [n for n in quantizable_leaves(net, skip) if n != out], info.get("reduce_range", False))


@torch.no_grad()
def _static_int8(model: nn.Module, net: nn.Module, info: dict[str, Any], x: Tensor, t: Tensor, batch: int) -> None:
    """Static W8A8: wrap, observe the calibration inputs through the whole model, convert."""
    quantize_structure(net, info)
    for i in range(0, x.shape[0], batch):
        model(x[i : i + batch], t[i : i + batch])
    convert_static(net)


def _maintain_temporal(net: nn.Module, method: str, x: Tensor, c_noise: Tensor,
                       options: dict[str, Any]) -> dict[str, Any]:
    """Install the temporal cache on the calibration grid (time inputs ``c_noise``): TIAR + FSC
    block (``tfmq``) or the disturbance-aware choice between it and full-precision features
    (``tfm``). ``options``: ``time_module``, TIAR ``iters``, selection ``tolerance``."""
    time_module, iters, tolerance = options["time_module"], options["iters"], options["tolerance"]
    probe = (x[:1] * 0, c_noise[:1])
    consumers = find_block(net, time_module, probe)
    block = Block(net.get_submodule(time_module), {n: net.get_submodule(n) for n in consumers})
    keys = torch.unique(c_noise)
    qblock = tiar(block, keys, iters=iters)
    with torch.no_grad():
        disturbance = feature_disturbance(block(keys), qblock.features(block, keys))
    if method == "tfmq":
        modes = ["tib"] * len(consumers)
    else:
        modes = ["tib" if disturbance[n] <= tolerance else "fp" for n in consumers]
    install_cache(net, time_module, consumers, modes, qblock if "tib" in modes else None)
    extend_cache(net, keys)
    return {"consumers": consumers, "modes": modes, "disturbance": disturbance, "tiar_iters": iters}


def _time_inputs(model: nn.Module, t: Tensor) -> Tensor:
    """The network's time inputs ``c_noise`` of schedule times ``t`` (float32)."""
    c_noise = getattr(model, "c_noise", None)
    if c_noise is None:
        raise ValueError("the temporal methods need a DenoisingModel (its c_noise maps time to the network's input)")
    return c_noise(t).to(torch.float32)


def add_times(denoiser: Denoiser, times: Tensor) -> int:
    """Cache the temporal features of schedule times ``times`` in a ``tfmq``/``tfm`` model;
    returns the number of new times."""
    model = denoiser.model_fn
    if getattr(model, "quantization", {}).get("method") not in TEMPORAL:
        raise ValueError("add_times needs a model quantized with method 'tfmq' or 'tfm'")
    net = getattr(model, "net", model)
    return extend_cache(net, _time_inputs(model, torch.as_tensor(times).reshape(-1)))


def add_grid(denoiser: Denoiser, shape: tuple[int, ...], solver: str, steps: int,
             grid: str | Tensor | None = None, **sample_kwargs: Any) -> int:
    """Cache the temporal features of every time at which ``solver`` evaluates the model with
    ``steps`` steps on ``grid`` (the sampler's actual grid, intermediate stages included)."""
    times = evaluation_times(denoiser, shape, solver, steps, grid, **sample_kwargs)
    return add_times(denoiser, times)


def cached_temporal_features(denoiser: Denoiser) -> tuple[Tensor, dict[str, Tensor]]:
    """``(c_noise keys, {consumer: table})`` of a ``tfmq``/``tfm`` model's cache."""
    net = getattr(denoiser.model_fn, "net", denoiser.model_fn)
    cache, consumers = cached_features(net)
    return cache.keys.clone(), {n: m.table.clone() for n, m in consumers.items()}


__all__ = ["METHODS", "add_grid", "add_times", "cached_temporal_features", "quantize"]
