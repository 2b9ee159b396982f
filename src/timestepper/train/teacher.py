"""The teacher of a distillation: a :class:`~timestepper.diffusion.denoiser.Denoiser` whose
prediction type the caller declares, and its data prediction at per-sample times.

A teacher checkpoint whose network output is read as the wrong type (an epsilon network wrapped as
``v_prediction``, a checkpoint config naming another type) produces plausible-looking but wrong
targets, and a student distilled from it learns them silently. The distillation fronts therefore
take the prediction type as a separate, required declaration and refuse a teacher whose
:class:`Denoiser` names another type (:func:`check_teacher`): the mismatch is detected by
comparing the declared type with the Denoiser's own ``prediction`` (both canonicalised, so
``eps`` and ``epsilon`` agree), and both are named in the error.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..diffusion.denoiser import Denoiser
from ..diffusion.predictions import canonical_prediction, data_coefficients


def check_teacher(teacher: object, prediction: str, name: str = "teacher") -> Denoiser:
    """``teacher`` itself, after checking it is a :class:`Denoiser` predicting ``prediction``.

    Raises:
        TypeError: ``teacher`` is not a :class:`Denoiser`.
        ValueError: ``prediction`` is not a prediction type, or the teacher's Denoiser predicts
            another type than the declared one (both named).
    """
    if not isinstance(teacher, Denoiser):
        raise TypeError(f"{name} must be a timestepper Denoiser, got {type(teacher).__name__}")
    declared = canonical_prediction(prediction)
    if teacher.prediction != declared:
        raise ValueError(
            f"{name} prediction type mismatch: its Denoiser predicts {teacher.prediction!r} but "
            f"prediction={declared!r} was declared; wrap the network with the type it was trained "
            f"for, or declare that type"
        )
    return teacher


def teacher_data_prediction(teacher: Denoiser, x: Tensor, t: Tensor) -> Tensor:
    """The teacher's ``x0`` prediction at states ``x (B, ...)`` and float64 times ``t (B,)``
    (one time per sample), in ``x``'s dtype; no gradient."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    tdtype = torch.promote_types(x.dtype, torch.float32)
    with torch.no_grad():
        m = teacher(x, t.to(device=x.device, dtype=tdtype))
    if not isinstance(m, Tensor) or m.shape != x.shape:
        got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"teacher output {got} must have the state's shape {tuple(x.shape)}")
    with torch.no_grad():
        a, b = data_coefficients(teacher.prediction, teacher.schedule, t)
    a = a.to(device=x.device, dtype=x.dtype).view(shape)
    b = b.to(device=x.device, dtype=x.dtype).view(shape)
    return a * x + b * m.to(x.dtype)


__all__ = ["check_teacher", "teacher_data_prediction"]
