"""diffusers models as :class:`~timestepper.diffusion.denoiser.Denoiser` s.

* ``UNet2DModel`` / ``UNet2DConditionModel`` (DDPM-family schedules): called as
  ``unet(x, t, **model_kwargs)`` with ``t`` in training steps (``encoder_hidden_states``,
  ``added_cond_kwargs`` for SDXL, ``class_labels`` go in ``model_kwargs``).
* ``SD3Transformer2DModel``: a rectified flow (``x_t = (1 - t) x0 + t eps``) predicting the
  velocity, called as ``transformer(hidden_states=x, timestep=1000 t, **model_kwargs)``
  (``encoder_hidden_states``, ``pooled_projections``).
* ``FluxTransformer2DModel``: the same flow on packed latents, called with ``timestep=t``
  (Flux's own convention) and ``img_ids``, ``txt_ids``, ``guidance`` in ``model_kwargs``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ...diffusion.denoiser import Denoiser
from ...diffusion.schedules import NoiseSchedule, RectifiedFlowSchedule
from .config import as_dict, prediction_from_config, schedule_from_config

#: transformer class name -> factor from our flow time ``t`` to the model's ``timestep``
FLOW_TRANSFORMERS = {"SD3Transformer2DModel": 1000.0, "FluxTransformer2DModel": 1.0}


class DiffusersModel:
    """``unet(x, t, **kw)`` -> tensor; keeps the first ``C`` channels of learned-variance models."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        return _first_output(self.unet(x, t, **kwargs), x)


class FlowTransformer:
    """``transformer(hidden_states=x, timestep=scale * t, **kw).sample`` (SD3, Flux)."""

    def __init__(self, transformer: Any, scale: float) -> None:
        self.transformer, self.scale = transformer, scale

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        out = self.transformer(hidden_states=x, timestep=(t * self.scale).to(x.dtype), **kwargs)
        return _first_output(out, x)


def _first_output(out: Any, x: Tensor) -> Tensor:
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == x.ndim and out.ndim > 1 and out.shape[1] == 2 * x.shape[1]:
        out = out[:, : x.shape[1]]  # variance_type="learned"/"learned_range": mean part
    return out


def denoiser_from_diffusers(
    model: Any, scheduler_or_config: Any = None, model_kwargs: dict[str, Any] | None = None
) -> Denoiser:
    """A :class:`Denoiser` over a diffusers UNet or flow transformer (module docstring).

    Args:
        model: ``UNet2DModel``, ``UNet2DConditionModel``, ``SD3Transformer2DModel``,
            ``FluxTransformer2DModel`` (or any module called like the UNet).
        scheduler_or_config: the pipeline's scheduler or its config: the training schedule and
            prediction type of a UNet (not needed for the flow transformers).
        model_kwargs: the conditioning passed to every call.
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    name = type(model).__name__
    if name in FLOW_TRANSFORMERS:
        return Denoiser(FlowTransformer(model, FLOW_TRANSFORMERS[name]), RectifiedFlowSchedule(),
                        "velocity", model_kwargs=model_kwargs)
    if scheduler_or_config is None:
        raise ValueError(f"a {name} needs the scheduler (or its config) it was trained with")
    schedule: NoiseSchedule
    if str(as_dict(scheduler_or_config).get("_class_name", "")).startswith("FlowMatch"):
        schedule, prediction = RectifiedFlowSchedule(), "velocity"
    else:
        schedule = schedule_from_config(scheduler_or_config)
        prediction = prediction_from_config(scheduler_or_config)
    return Denoiser(DiffusersModel(model), schedule, prediction, model_kwargs=model_kwargs)
