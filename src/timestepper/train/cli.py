"""``timestepper train``, ``timestepper sample`` and ``timestepper eval``.

::

    timestepper train digits --objective flow-matching --steps 4000 --out runs/digits
    timestepper sample runs/digits --solver dpmpp-2m --steps 10 --out grid.png
    timestepper sample runs/digits-cond --cfg 3 --label 7 --out sevens.png
    timestepper eval runs/digits --solvers ddim,dpmpp-2m,heun --nfe 5,10,20

``train`` checkpoints atomically every ``--save-minutes`` (default 10) and every ``--save-every``
steps; after a crash or a kill, the same command with ``--resume`` continues from the last
complete save. A directory that already holds a checkpoint needs ``--resume`` or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..cli_args import (
    UsageError,
    below_one,
    grid_name,
    int_at_least,
    nonnegative_float,
    nonnegative_int,
    output_file,
    positive_float,
    positive_int,
    positive_ints,
    require_modules,
    solver_name,
    solver_names,
)
from .store import write_json_atomically

if TYPE_CHECKING:
    from ..diffusion.denoiser import Denoiser
    from ..diffusion.schedules import NoiseSchedule
    from .objectives import DenoisingObjective

OBJECTIVES = ("flow-matching", "eps", "v", "x0")
DATASETS = ("digits", "moons", "circles", "swiss_roll")
SCHEDULE_CHOICES = ("vp-cosine", "vp-linear", "vp-discrete", "edm")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``train``, ``sample`` and ``eval`` with the ``timestepper`` command's parsers."""
    _add_train_parser(sub)
    _add_sample_parser(sub)
    _add_eval_parser(sub)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a reference model on a shipped data set")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--objective", choices=OBJECTIVES, default="flow-matching")
    p.add_argument(
        "--schedule",
        choices=SCHEDULE_CHOICES,
        default="vp-cosine",
        help="noise schedule of the eps/v/x0 objectives (flow matching: the linear interpolant)",
    )
    p.add_argument("--weighting", choices=("uniform", "min-snr", "edm"), default="uniform")
    p.add_argument(
        "--time-distribution",
        default=None,
        choices=("uniform", "log-normal", "logit-normal", "u-shaped"),
    )
    p.add_argument("--steps", type=positive_int, default=4000)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--ema-decay", type=below_one, default=0.999)
    p.add_argument(
        "--channels", type=positive_ints, default=[32, 64], help="U-Net widths per level (digits)"
    )
    p.add_argument("--hidden", type=positive_int, default=128, help="MLP width (2-D sets)")
    p.add_argument("--conditional", action="store_true", help="class-conditional (digits)")
    p.add_argument("--label-dropout", type=below_one, default=0.1)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument(
        "--save-every",
        type=nonnegative_int,
        default=0,
        help="also checkpoint every N steps (default 0: by wall time only)",
    )
    p.add_argument(
        "--save-minutes",
        type=positive_float,
        default=10.0,
        help="checkpoint every M minutes of training (default 10); a kill loses at most that",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume", action="store_true", help="continue the checkpoint in --out (same settings)"
    )
    again.add_argument(
        "--overwrite", action="store_true", help="train afresh over the checkpoint in --out"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)


def _add_sample_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample a trained checkpoint to a PNG")
    p.add_argument("dir", help="checkpoint directory")
    p.add_argument("--solver", type=solver_name, default="dpmpp-2m")
    p.add_argument("--steps", type=positive_int, default=10)
    p.add_argument(
        "--grid", type=grid_name, default=None, help="grid spacing (default: logsnr; uniform for flows)"
    )
    p.add_argument("--n", type=positive_int, default=64)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--cfg", type=nonnegative_float, default=None, help="classifier-free guidance scale")
    p.add_argument(
        "--label", type=nonnegative_int, default=None, help="class to draw (conditional models)"
    )
    p.add_argument("--out", type=output_file, default="samples.png")
    p.set_defaults(func=cmd_sample)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Fréchet distance of a digits checkpoint per solver and NFE")
    p.add_argument("dir", help="checkpoint directory")
    p.add_argument("--solvers", type=solver_names, default=["ddim", "dpmpp-2m"])
    p.add_argument("--nfe", type=positive_ints, default=[5, 10, 20])
    p.add_argument("--grid", type=grid_name, default=None)
    p.add_argument("--n", type=int_at_least(2), default=1000)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--plot", type=output_file, default=None, help="PNG path (default: DIR/eval.png)")
    p.set_defaults(func=cmd_eval)


def _schedule(name: str) -> NoiseSchedule:
    from ..diffusion.schedules import (
        EDMSchedule,
        VPCosineSchedule,
        VPDiscreteSchedule,
        VPLinearSchedule,
    )

    return {
        "vp-cosine": VPCosineSchedule,
        "vp-linear": VPLinearSchedule,
        "vp-discrete": VPDiscreteSchedule.from_betas,
        "edm": EDMSchedule,
    }[name]()


# --- timestepper train ------------------------------------------------------------------------


@dataclass
class _TrainingSet:
    """The data of ``timestepper train`` and the network that fits it."""

    data: torch.Tensor
    labels: torch.Tensor | None
    network: str
    network_kwargs: dict[str, Any]


def cmd_train(args: argparse.Namespace) -> int:
    """``timestepper train``: build the data set, objective and model, train and checkpoint."""
    from .checkpoint import make_model
    from .distributed import is_main_process, local_device, process_group

    require_modules("timestepper train", {"sklearn": "scikit-learn", "safetensors": "safetensors"})
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ds = _training_set(args)
    schedule, objective = _objective(args, conditional=ds.labels is not None)
    with process_group() as ranks:  # under torchrun: DDP, each process on its share of the batch
        model = make_model(ds.network, ds.network_kwargs, schedule)
        if ranks.distributed:  # one device per process (nccl needs the model on it)
            model = model.to(local_device())
        t0 = time.perf_counter()
        res = _train_model(args, ds, model, objective)
        if not is_main_process():
            return 0
    k = min(100, len(res.losses))
    print(
        f"trained {args.steps} steps in {time.perf_counter() - t0:.1f}s; "
        f"mean loss of the last {k} steps {sum(res.losses[-k:]) / k:.4f}; saved to {args.out}"
    )
    return 0


def _train_model(args: argparse.Namespace, ds: _TrainingSet, model: Any, objective: Any) -> Any:
    """:func:`~timestepper.train.train` with the options of ``timestepper train``."""
    from .loop import train

    return train(
        model,
        objective,
        ds.data,
        labels=ds.labels,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=args.ema_decay,
        seed=args.seed,
        out=args.out,
        save_every=args.save_every,
        save_seconds=60.0 * args.save_minutes,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        extra_config={"dataset": args.dataset},
    )


def _training_set(args: argparse.Namespace) -> _TrainingSet:
    """Digits (a U-Net, labels when ``--conditional``) or a 2-D toy set (an MLP)."""
    from .data import digits, toy_2d

    if args.dataset == "digits":
        data, y = digits("train")
        labels, num_classes = (y, 10) if args.conditional else (None, 0)
        channels = list(args.channels)
        net_kw = {"size": 8, "channels": channels, "num_classes": num_classes}
        return _TrainingSet(data, labels, "unet", net_kw)
    if args.conditional:
        raise UsageError("--conditional needs a labelled data set (digits)")
    data = toy_2d(args.dataset, 10000, seed=args.seed)
    return _TrainingSet(data, None, "mlp", {"dim": 2, "hidden": args.hidden, "depth": 3})


def _objective(
    args: argparse.Namespace, *, conditional: bool
) -> tuple[NoiseSchedule, DenoisingObjective]:
    """The schedule and objective named by ``--objective``, ``--schedule``, ``--weighting``."""
    from ..diffusion.schedules import RectifiedFlowSchedule
    from .objectives import DenoisingObjective, flow_matching

    extra = {"label_dropout": args.label_dropout, "null_label": 10} if conditional else {}
    if args.time_distribution:
        extra["time_distribution"] = args.time_distribution
    if args.objective == "flow-matching":
        return RectifiedFlowSchedule(), flow_matching(**extra)
    schedule = _schedule(args.schedule)
    pred = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}[args.objective]
    return schedule, DenoisingObjective(schedule, pred, args.weighting, **extra)


# --- timestepper sample -----------------------------------------------------------------------


def _load(directory: str) -> tuple[Denoiser, dict[str, Any]]:
    from .checkpoint import load_denoiser, read_config

    cfg = read_config(directory)
    return load_denoiser(directory), cfg


def _labels(
    cfg: dict, n: int, label: int | None, seed: int
) -> tuple[torch.Tensor | None, int | None]:
    """``(labels, null_label)`` of ``n`` samples: one class, or all classes in turn; ``None``s
    for an unconditional checkpoint."""
    num_classes = cfg.get("data", {}).get("num_classes", 0)
    if not num_classes:
        if label is not None:
            raise UsageError("--label needs a class-conditional checkpoint")
        return None, None
    if label is not None:
        if not 0 <= label < num_classes:
            raise UsageError(f"--label must be in 0..{num_classes - 1}, got {label}")
        return torch.full((n,), label, dtype=torch.long), num_classes
    return torch.arange(n) % num_classes, num_classes


def cmd_sample(args: argparse.Namespace) -> int:
    """``timestepper sample``: draw ``--n`` samples of a checkpoint and save them as a PNG."""
    from .generate import generate

    require_modules("timestepper sample", {"matplotlib": "matplotlib"})
    den, cfg = _load(args.dir)
    shape = tuple(cfg["data"]["shape"])
    labels, null = _labels(cfg, args.n, args.label, args.seed)
    if args.cfg is not None and labels is None:
        raise UsageError("--cfg needs a class-conditional checkpoint")
    x, nfe = generate(
        den,
        args.n,
        shape,
        args.solver,
        args.steps,
        args.grid,
        seed=args.seed,
        labels=labels,
        cfg_scale=args.cfg,
        null_label=null,
    )
    save_png(x, args.out)
    print(f"{args.n} samples, {args.solver}, {args.steps} steps ({nfe:g} NFE) -> {args.out}")
    return 0


def save_png(x: torch.Tensor, path: str | Path) -> None:
    """A grid of 8x8 digits, or a scatter plot of 2-D points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _scatter_figure(plt, x) if x.ndim == 2 else _digits_figure(plt, x)
    save_figure(fig, path)
    plt.close(fig)


def save_figure(fig: Any, path: str | Path) -> None:
    """Save ``fig`` as a PNG under a temporary name, then rename it to ``path`` (an interrupted
    save never leaves a partial image at ``path``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    try:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _scatter_figure(plt: Any, x: torch.Tensor) -> Any:
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(x[:, 0], x[:, 1], s=2)
    ax.set_aspect("equal")
    return fig


def _digits_figure(plt: Any, x: torch.Tensor) -> Any:
    """The 8x8 images of ``x`` tiled on a near-square grid with one-pixel gaps."""
    from .data import digits_to_unit

    n = x.shape[0]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    img = torch.ones(rows * 9 + 1, cols * 9 + 1)
    u = digits_to_unit(x[:, 0])
    for k in range(n):
        r, c = divmod(k, cols)
        img[1 + 9 * r : 9 + 9 * r, 1 + 9 * c : 9 + 9 * c] = u[k]
    fig, ax = plt.subplots(figsize=(cols * 0.5, rows * 0.5))
    ax.imshow(img.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    return fig


# --- timestepper eval -------------------------------------------------------------------------


@dataclass(frozen=True)
class _EvalSetup:
    """What every (solver, NFE) cell of :func:`evaluate` shares."""

    denoiser: Denoiser
    shape: tuple[int, ...]
    labels: torch.Tensor | None
    n: int
    seed: int
    grid: str | None


def evaluate(
    directory: str,
    solvers: list[str],
    nfes: list[int],
    n: int = 1000,
    seed: int = 0,
    grid: str | None = None,
) -> list[dict]:
    """Fréchet distance (to the test split) of ``n`` samples per solver and NFE budget; the
    steps are ``nfe // nfe_per_step`` and the NFE reported is the one measured."""
    den, cfg = _load(directory)
    shape = tuple(cfg["data"]["shape"])
    if shape != (1, 8, 8):
        raise UsageError(f"eval measures digits checkpoints (shape (1, 8, 8)), got {shape}")
    labels, _ = _labels(cfg, n, None, seed)
    setup = _EvalSetup(den, shape, labels, n, seed, grid)
    rows = []
    for name in solvers:
        rows.extend(_evaluate_solver(setup, name, nfes))
    return rows


def _evaluate_solver(setup: _EvalSetup, name: str, nfes: list[int]) -> list[dict]:
    """The rows of solver ``name``, one per NFE budget."""
    from ..solvers.registry import get

    per = get(name).nfe_per_step
    return [_evaluate_cell(setup, name, budget, max(1, budget // per)) for budget in nfes]


def _evaluate_cell(setup: _EvalSetup, name: str, budget: int, steps: int) -> dict:
    """One row of :func:`evaluate`: solver ``name`` with ``steps`` steps (``budget`` NFE)."""
    from .generate import generate
    from .metrics import digits_report

    x, nfe = generate(
        setup.denoiser,
        setup.n,
        setup.shape,
        name,
        steps,
        setup.grid,
        seed=setup.seed,
        labels=setup.labels,
    )
    rep = digits_report(x)
    return {
        "solver": name,
        "nfe_budget": budget,
        "steps": steps,
        "nfe": nfe,
        "frechet": rep["frechet"],
        "confidence": rep["confidence"],
    }


def cmd_eval(args: argparse.Namespace) -> int:
    """``timestepper eval``: table, plot (``--plot``) and ``eval.json`` of :func:`evaluate`."""
    from .metrics import split_half_distance

    require_modules("timestepper eval", {"matplotlib": "matplotlib", "sklearn": "scikit-learn"})
    solvers, nfes = list(args.solvers), list(args.nfe)
    rows = evaluate(args.dir, solvers, nfes, args.n, args.seed, args.grid)
    _print_eval_table(rows)
    print(f"real test split, half vs half: {split_half_distance():.3f}")
    plot = args.plot or str(Path(args.dir) / "eval.png")
    _plot_eval(rows, solvers, plot)
    write_json_atomically(Path(args.dir) / "eval.json", rows)
    print(f"plot -> {plot}")
    return 0


def _print_eval_table(rows: list[dict]) -> None:
    print(f"{'solver':<12} {'NFE':>5} {'steps':>5} {'Fréchet':>9} {'confidence':>10}")
    for r in rows:
        print(
            f"{r['solver']:<12} {r['nfe']:>5g} {r['steps']:>5} {r['frechet']:>9.3f} "
            f"{r['confidence']:>10.3f}"
        )


def _plot_eval(rows: list[dict], solvers: list[str], path: str | Path) -> None:
    """Fréchet distance against the measured NFE, one line per solver, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in solvers:
        rr = [r for r in rows if r["solver"] == name]
        ax.plot([r["nfe"] for r in rr], [r["frechet"] for r in rr], "o-", label=name)
    ax.set_xlabel("NFE")
    ax.set_ylabel("Fréchet distance (digits)")
    ax.set_yscale("log")
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)
