"""Pictures of surrogate rollouts against the reference (matplotlib, imported when called).

1-D fields: for up to three trajectories, space-time images of the reference, the rollout and
their difference (time upwards). 2-D fields: the first trajectory's reference and rollout at four
times. The PNG is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..train.cli import save_figure


def plot_rollouts(pred: torch.Tensor, ref: torch.Tensor, dt: float, path: str | Path) -> None:
    """Draw ``pred`` against ``ref`` (both ``(B, T, *space)`` at model steps of ``dt``) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, ref = pred.detach().cpu().float(), ref.detach().cpu().float()
    fig = _space_time(plt, pred, ref, dt) if ref.ndim == 3 else _snapshots(plt, pred, ref, dt)
    save_figure(fig, path)
    plt.close(fig)


def _space_time(plt: Any, pred: torch.Tensor, ref: torch.Tensor, dt: float) -> Any:
    rows = min(3, ref.shape[0])
    fig, axes = plt.subplots(rows, 3, figsize=(10, 3 * rows), squeeze=False, layout="constrained")
    extent = (0, ref.shape[-1], 0, dt * (ref.shape[1] - 1))
    lim = float(ref[:rows].abs().max())
    for i in range(rows):
        images = (("reference", ref[i]), ("rollout", pred[i]), ("rollout - reference", pred[i] - ref[i]))
        for ax, (title, field) in zip(axes[i], images):
            im = ax.imshow(field.nan_to_num().numpy(), origin="lower", aspect="auto", extent=extent,
                           cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(f"trajectory {i}: {title}", fontsize=9)
            ax.set_xlabel("grid point")
            ax.set_ylabel("t")
        fig.colorbar(im, ax=axes[i].tolist())
    return fig


def _snapshots(plt: Any, pred: torch.Tensor, ref: torch.Tensor, dt: float) -> Any:
    last = ref.shape[1] - 1
    times = sorted({0, last // 3, (2 * last) // 3, last})
    fig, axes = plt.subplots(2, len(times), figsize=(3 * len(times), 6), squeeze=False, layout="constrained")
    lim = float(ref[0].abs().max())
    for j, k in enumerate(times):
        for i, (title, field) in enumerate((("reference", ref[0, k]), ("rollout", pred[0, k]))):
            axes[i, j].imshow(field.nan_to_num().numpy(), origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[i, j].set_title(f"{title}, t = {k * dt:g}", fontsize=9)
            axes[i, j].axis("off")
    return fig


__all__ = ["plot_rollouts"]
