"""Reading diffusers scheduler configs: the training schedule, the prediction type, and the check
that refuses options this integration does not reproduce (never ignored silently)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...diffusion.predictions import canonical_prediction
from ...diffusion.schedules import VPDiscreteSchedule

PREDICTIONS = ("epsilon", "sample", "v_prediction", "flow_prediction")


def as_dict(config: Any) -> dict[str, Any]:
    """A diffusers scheduler, its ``FrozenDict`` config, or a plain mapping, as a dict."""
    owner = None
    if hasattr(config, "config") and not isinstance(config, dict):
        owner, config = type(config).__name__, config.config
    try:
        cfg = dict(config)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"expected a diffusers scheduler or its config, got {type(config).__name__}"
        ) from e
    if owner is not None and not owner.startswith("_"):
        cfg.setdefault("_class_name", owner)  # a live scheduler's config does not carry it
    return cfg


#: classes that replace the zero terminal ``alphas_cumprod`` of ``rescale_betas_zero_snr`` by
#: ``2**-24`` (finite sigma at the last training step); the others (DDPM, DDIM) keep 0
TERMINAL_2_24 = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                 "DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
#: what stands for ``alphas_cumprod = 0`` in our schedule (which needs ``alpha > 0``): at
#: ``alpha = 1e-10`` a v-prediction's data estimate differs from its ``alpha = 0`` value by
#: ``1e-10 |x|``, far below float32 rounding
ZERO_ALPHAS_CUMPROD = 1e-20


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2024), "Common Diffusion Noise Schedules and Sample Steps are Flawed",
    Algorithm 1: shift ``sqrt(alphas_cumprod)`` so that its last value is 0 and scale it so that
    its first is unchanged; the betas of that schedule (float32, as the input)."""
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    bar = root**2
    ratios = torch.cat([bar[:1], bar[1:] / bar[:-1]])
    return 1.0 - ratios


def diffusers_alphas_cumprod(cfg: dict[str, Any]) -> torch.Tensor:
    """``alphas_cumprod`` as diffusers forms it: float32 betas, float32 cumulative product (the
    schedule the model was trained with, bit for bit); with ``rescale_betas_zero_snr`` the
    rescaled betas and the class's terminal value (0, or ``2**-24``, :data:`TERMINAL_2_24`)."""
    n = int(cfg.get("num_train_timesteps", 1000))
    betas = cfg.get("trained_betas")
    if betas is not None:
        b = torch.as_tensor(betas, dtype=torch.float32)
    else:
        ac64 = VPDiscreteSchedule.from_betas(
            cfg.get("beta_schedule", "linear"),
            float(cfg.get("beta_start", 1e-4)),
            float(cfg.get("beta_end", 0.02)),
            n,
        ).alphas_cumprod
        # the float32 betas, recovered exactly from the float64 product of (1 - beta)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac64[:-1]])
        b = (1.0 - ac64 / prev).to(torch.float32)
    if cfg.get("rescale_betas_zero_snr"):
        b = rescale_zero_terminal_snr(b)
    ac = torch.cumprod(1.0 - b, dim=0)
    if cfg.get("rescale_betas_zero_snr") and cfg.get("_class_name") in TERMINAL_2_24:
        ac[-1] = 2**-24
    return ac


def schedule_from_config(config: Any) -> VPDiscreteSchedule:
    """The :class:`VPDiscreteSchedule` of a diffusers DDPM-family scheduler (or its config); a
    zero terminal ``alphas_cumprod`` (``rescale_betas_zero_snr``) becomes
    :data:`ZERO_ALPHAS_CUMPROD`."""
    ac = diffusers_alphas_cumprod(as_dict(config)).to(torch.float64)
    return VPDiscreteSchedule(ac.clamp(min=ZERO_ALPHAS_CUMPROD))


def prediction_from_config(config: Any) -> str:
    """Our name of the config's ``prediction_type`` (``flow_prediction`` is ``velocity``)."""
    kind = as_dict(config).get("prediction_type", "epsilon")
    if kind not in PREDICTIONS:
        raise ValueError(
            f"unsupported diffusers prediction_type {kind!r}; supported: {', '.join(PREDICTIONS)}"
        )
    return "velocity" if kind == "flow_prediction" else canonical_prediction(kind)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isinf(a) and math.isinf(b):
        return a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return bool(a == b)


def refuse_options(cfg: dict[str, Any], class_name: str, fixed: dict[str, Any],
                   allowed: dict[str, tuple[Any, ...]] | None = None) -> None:
    """Raise naming every option of ``cfg`` this integration does not reproduce.

    ``fixed``: options reproduced only at the given value (diffusers' default). ``allowed``:
    options reproduced for the listed values. Keys of other scheduler classes are ignored, as
    diffusers ignores them."""
    bad = [f"{k}={cfg[k]!r} (reproduced: {v!r})" for k, v in fixed.items()
           if k in cfg and cfg[k] is not None and not _same(cfg[k], v)]
    for k, values in (allowed or {}).items():
        if k in cfg and cfg[k] not in values:
            bad.append(f"{k}={cfg[k]!r} (reproduced: {', '.join(map(repr, values))})")
    if bad:
        raise ValueError(
            f"{class_name}: these options are not reproduced by timestepper's Scheduler: "
            + "; ".join(bad) + ". Pass solver=... to sample with our solver instead."
        )
