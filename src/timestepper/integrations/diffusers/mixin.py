"""The :class:`Scheduler` as a diffusers ``SchedulerMixin``/``ConfigMixin`` (imported only when
diffusers is installed, on first use of ``timestepper.integrations.diffusers.Scheduler``).

With it a pipeline whose scheduler is ours saves and reloads: ``model_index.json`` names this
module and class (``["timestepper.integrations.diffusers.mixin", "Scheduler"]``),
``scheduler_config.json`` holds the diffusers config it reproduces plus our ``ts_*`` options, and
``DiffusionPipeline.from_pretrained`` rebuilds it through :meth:`Scheduler.from_config`.
"""

from __future__ import annotations

from typing import Any

from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from . import scheduler as _plain
from .classes import CLASSES

__all__ = ["ConfigMixin", "Scheduler", "SchedulerMixin"]


class Scheduler(SchedulerMixin, ConfigMixin, _plain.Scheduler):
    """:class:`timestepper.integrations.diffusers.scheduler.Scheduler` with diffusers' config
    machinery (``save_pretrained``, ``from_pretrained``, ``compatibles``, ``.config``)."""

    config_name = "scheduler_config.json"  # type: ignore[assignment]
    _compatibles = list(CLASSES)
    order = 1

    _REBUILT = ("schedule", "prediction", "_solver_spec", "_solver_options", "solver",
                "grid_name", "final", "grid_options", "recipe", "_base")

    def _register(self) -> None:
        self.__dict__["_registering"] = True
        self.__dict__.pop("_ts_internal_dict", None)  # re-registration replaces the whole config
        try:
            self.register_to_config(**self._record())
        finally:
            self.__dict__["_registering"] = False

    @property
    def _internal_dict(self) -> Any:
        try:
            return self.__dict__["_ts_internal_dict"]
        except KeyError as e:
            raise AttributeError("_internal_dict") from e

    @_internal_dict.setter
    def _internal_dict(self, value: Any) -> None:
        """Pipelines rewrite a scheduler's config in place (Stable Diffusion sets
        ``clip_sample=False`` and ``steps_offset=1`` on old configs): rebuild from it then."""
        self.__dict__["_ts_internal_dict"] = value
        if not self.__dict__.get("_registering", False):
            fresh = type(self).from_config(dict(value))
            for name in self._REBUILT:
                setattr(self, name, getattr(fresh, name))
            self._reset_plan()
            self.__dict__["_ts_internal_dict"] = fresh.__dict__["_ts_internal_dict"]

    @classmethod
    def from_config(cls, config: Any = None, solver: Any = None, grid: Any = None,  # type: ignore[override]
                    return_unused_kwargs: bool = False, **options: Any) -> Any:
        """As :meth:`timestepper.integrations.diffusers.scheduler.Scheduler.from_config`; also
        the loader diffusers' ``from_pretrained`` calls with a saved config."""
        sched = _plain.Scheduler.from_config.__func__(cls, config, solver, grid, **options)  # type: ignore[attr-defined]
        return (sched, {}) if return_unused_kwargs else sched
