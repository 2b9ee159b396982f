"""The model abstraction: a network plus its noise schedule and prediction type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from .predictions import canonical_prediction
from .schedules import NoiseSchedule


class Denoiser:
    """A network ``model_fn(x, t, **model_kwargs)`` together with the schedule it was trained on
    and what it predicts. Models of other libraries are wrapped by
    :func:`timestepper.integrations.diffusers.denoiser_from_diffusers` and
    :func:`timestepper.integrations.k_diffusion.denoiser_from_k_diffusion`.

    Args:
        model_fn: callable taking the noisy state ``x`` (the schedule's own space:
            ``x = alpha x0 + sigma eps``) and a 1-D tensor ``t`` of batch size holding the
            schedule's own time (diffusers timesteps for :class:`VPDiscreteSchedule`, sigma for
            :class:`EDMSchedule`, ``t in [0, 1]`` for flows).
        schedule: a :class:`~timestepper.diffusion.schedules.NoiseSchedule`.
        prediction: ``epsilon``, ``sample``, ``v_prediction``, ``velocity`` or ``score``.
        model_kwargs: extra keyword arguments passed to every call (class labels, conditioning).
    """

    #: set by :mod:`timestepper.integrations.diffusers` when it is imported (it is, with the
    #: package): a lower layer may not import the front that knows diffusers' models
    _diffusers_builder: ClassVar[Callable[..., Denoiser] | None] = None

    @classmethod
    def from_diffusers(cls, model: Any, scheduler_or_config: Any = None,
                       model_kwargs: dict[str, Any] | None = None) -> Denoiser:
        """A denoiser over a diffusers ``UNet2DModel``/``UNet2DConditionModel`` (with its
        scheduler or config), ``SD3Transformer2DModel`` or ``FluxTransformer2DModel``, the
        conditioning in ``model_kwargs``; see
        :func:`timestepper.integrations.diffusers.denoiser_from_diffusers`."""
        if cls._diffusers_builder is None:
            raise RuntimeError("import timestepper.integrations.diffusers first")
        return cls._diffusers_builder(model, scheduler_or_config, model_kwargs)

    def __init__(self, model_fn: Callable[..., Tensor], schedule: NoiseSchedule,
                 prediction: str = "epsilon", model_kwargs: dict[str, Any] | None = None) -> None:
        if not callable(model_fn):
            raise TypeError(f"model_fn must be callable, got {type(model_fn).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self.model_fn = model_fn
        self.schedule = schedule
        self.prediction = canonical_prediction(prediction)
        self.model_kwargs = dict(model_kwargs or {})

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The raw network output at ``(x, t)``."""
        return self.model_fn(x, t, **self.model_kwargs)

    def __repr__(self) -> str:
        return f"Denoiser(prediction={self.prediction!r}, schedule={self.schedule!r})"
