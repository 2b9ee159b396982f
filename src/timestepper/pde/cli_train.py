"""``timestepper pde train`` and ``timestepper pde eval``: surrogates from data files.

::

    timestepper pde generate ks --n-train 512 --n-test 128 --out ks.h5
    timestepper pde train ks.h5 --model unet --model-dt 0.8 --steps 20000 --out runs/ks-unet
    torchrun --nproc_per_node 2 -m timestepper.cli pde train ks.h5 --out runs/ks-unet   # DDP
    timestepper pde eval runs/ks-unet ks.h5 --horizons 1,10,50 --plot rollouts.png

``train`` reads the ``train`` split of one or more files of the same equation and grid, trains with
:func:`~timestepper.pde.train_surrogate` and writes a checkpoint
(:mod:`timestepper.pde.checkpoint`) that records the equation, resolution, model step and the
surrogate's configuration. Under ``torchrun`` every process trains on its share of each global
batch (:mod:`timestepper.train.distributed`) and rank 0 writes the checkpoint. ``--resume``
continues the checkpoint in ``--out`` on data of the same equation and grid.

``eval`` rolls a checkpoint out from the first frame of each test trajectory and reports the
one-step error, the error at fixed horizons and the high-correlation time (Pearson correlation
above 0.8; :func:`~timestepper.pde.metrics.high_correlation_time`), and draws rollouts against
the reference (``--plot``, matplotlib).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from .. import cli_args as kinds  # argparse types
from ..cli_args import UsageError, require_modules
from ..train.distributed import is_main_process, local_device, process_group
from ..train.store import write_json_atomically
from . import metrics
from .buffer import BUFFER_POLICIES as BUFFERS
from .checkpoint import (
    SURROGATES,
    DataRecord,
    build_surrogate,
    load_surrogate,
    load_train_state,
    read_surrogate_config,
    save_surrogate,
)
from .data import frames_per_model_step, read_hdf5, recipe_from_attrs
from .rollout import rollout
from .train import TrainConfig, train_surrogate

# Options of the surrogates, by name: (option, keyword of the builder, type, help).
_MODEL_OPTIONS = (
    ("--width", "width", kinds.positive_int, "channels: U-Net/SineNet hidden, FNO width (default 32; SineNet 16)"),
    ("--modes", "modes", kinds.positive_int, "FNO Fourier modes per dimension (default 16)"),
    ("--layers", "layers", kinds.positive_int, "FNO layers (default 4)"),
    ("--refine-steps", "num_steps", kinds.positive_int, "PDE-Refiner refinement steps K (default 3)"),
    ("--min-noise-std", "min_noise_std", kinds.positive_float, "PDE-Refiner sigma_min (default 4e-7)"),
)
_ACCEPTS = {
    "unet": {"width": "hidden"},
    "fno": {"width": "width", "modes": "modes", "layers": "layers"},
    "refiner": {"width": "hidden", "num_steps": "num_steps", "min_noise_std": "min_noise_std"},
    "sinenet": {"width": "hidden"},
}


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``pde train`` and ``pde eval`` with the ``pde`` command's parsers."""
    _add_train_parser(sub)
    _add_eval_parser(sub)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a neural surrogate on data files (DDP under torchrun)")
    p.add_argument("data", nargs="+", help="HDF5 file(s) from `timestepper pde generate` (train split)")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--model", choices=sorted(SURROGATES), default=None, help="surrogate (default unet)")
    for option, dest, kind, text in _MODEL_OPTIONS:
        p.add_argument(option, dest=dest, type=kind, default=None, help=text)
    p.add_argument("--residual", action="store_true", help="unet/fno: predict the increment")
    p.add_argument("--model-dt", type=kinds.positive_float, default=None,
                   help="time of one model step, a multiple of the data's frame step (default: one frame)")
    p.add_argument("--steps", type=kinds.positive_int, default=1000, help="optimizer steps (total, with --resume)")
    p.add_argument("--batch-size", type=kinds.positive_int, default=32, help="global batch (split across processes)")
    p.add_argument("--lr", type=kinds.positive_float, default=1e-3)
    p.add_argument("--unroll", type=kinds.nonnegative_int, default=0, help="pushforward steps")
    p.add_argument("--seed", type=kinds.nonnegative_int, default=0)
    p.add_argument("--time-budget", type=kinds.positive_float, default=None,
                   help="wall-clock seconds; the learning rate decays over the budget and training stops")
    p.add_argument("--threads", type=kinds.positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--save-every", type=kinds.nonnegative_int, default=0,
                   help="also checkpoint every N steps (default 0: at the end only); --resume continues")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    again.add_argument("--overwrite", action="store_true", help="train afresh over the checkpoint in --out")
    online = p.add_argument_group("online training (Meyer et al. 2023; pip install 'timestepper[ray]')")
    online.add_argument("--online", action="store_true",
                        help="stream fresh trajectories from solver workers on Ray with DATA's generation "
                             "settings (equation, grid, solver, frame step) instead of reading DATA's trajectories")
    online.add_argument("--online-trajectories", type=kinds.positive_int, default=128,
                        help="unique trajectories the workers generate in all (default 128)")
    online.add_argument("--workers", type=kinds.positive_int, default=2, help="solver workers (default 2)")
    online.add_argument("--buffer", choices=BUFFERS, default="reservoir", help="training buffer policy")
    online.add_argument("--buffer-size", type=kinds.positive_int, default=4096, help="buffer capacity in windows")
    online.add_argument("--ray-address", default=None,
                        help="a running Ray cluster (default: a local ray.init(num_cpus=workers + 1))")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)


def _add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="rollout metrics of a surrogate checkpoint on test data")
    p.add_argument("checkpoint", help="directory written by `timestepper pde train`")
    p.add_argument("data", help="HDF5 file of the same equation and grid")
    p.add_argument("--split", default="test", help="split of the file (default test)")
    p.add_argument("--steps", type=kinds.positive_int, default=None,
                   help="rollout model steps (default: as many as the trajectories hold)")
    p.add_argument("--horizons", type=kinds.positive_ints, default=[1, 10, 50],
                   help="model steps at which to report the rollout error (default 1,10,50)")
    p.add_argument("--threshold", type=kinds.positive_float, default=0.8, help="correlation threshold")
    p.add_argument("--seed", type=kinds.nonnegative_int, default=0, help="noise of stochastic surrogates")
    p.add_argument("--plot", type=kinds.output_file, default=None, help="PNG of rollouts vs reference")
    p.add_argument("--json", type=kinds.output_file, default=None, help="write the metrics as JSON")
    p.set_defaults(func=_eval)


# --- timestepper pde train --------------------------------------------------------------------


def read_training_data(paths: list[str]) -> tuple[torch.Tensor, dict[str, Any], DataRecord]:
    """The ``train`` splits of ``paths`` concatenated, the first file's attributes and its record;
    files of another equation, grid or frame step are refused, naming both."""
    parts, first_attrs, record = [], None, None
    for path in paths:
        u, attrs = read_hdf5(path, "train")
        rec = DataRecord.from_attrs(attrs, tuple(u.shape[2:]), path)
        if record is None:
            first_attrs, record = attrs, rec
        else:
            record.check_same_equation(rec)
            if not math.isclose(rec.dt_frame, record.dt_frame, rel_tol=1e-9):
                raise ValueError(f"{path} saves frames every {rec.dt_frame:g}, {record.source} every "
                                 f"{record.dt_frame:g}: train on files of one frame step")
            if u.shape[1] != parts[0].shape[1]:
                raise ValueError(f"{path} has trajectories of {u.shape[1]} frames, {record.source} of "
                                 f"{parts[0].shape[1]}: concatenate files of one duration")
        parts.append(u)
    assert first_attrs is not None and record is not None
    return torch.cat(parts), first_attrs, record


def _surrogate_spec(args: argparse.Namespace, dim: int) -> dict[str, Any]:
    """``{"name", "dim", "kwargs"}`` of the surrogate the options describe."""
    name = args.model or "unet"
    accepts = _ACCEPTS.get(name, {})
    kwargs: dict[str, Any] = {}
    for _, dest, _, _ in _MODEL_OPTIONS:
        value = getattr(args, dest)
        if value is None:
            continue
        if dest not in accepts:
            raise UsageError(f"--{dest.replace('_', '-')} does not apply to --model {name}")
        kwargs[accepts[dest]] = value
    if args.residual:
        if name not in ("unet", "fno"):
            raise UsageError(f"--residual applies to --model unet or fno, not {name}")
        kwargs["residual"] = True
    return {"name": name, "dim": dim, "kwargs": kwargs}


def _check_out(args: argparse.Namespace) -> dict[str, Any] | None:
    """The checkpoint config to resume (``--resume``), ``None`` to train afresh; a folder that
    already holds a checkpoint needs ``--resume`` or ``--overwrite``."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {str(out)!r} is a file; the checkpoint needs a directory")
    held = (out / "config.json").is_file()
    if args.resume:
        if not held:
            raise FileNotFoundError(f"cannot --resume: {out} holds no checkpoint (no config.json)")
        return read_surrogate_config(out)
    if held and not args.overwrite:
        raise FileExistsError(f"{out} already holds a checkpoint: pass --resume to continue it, "
                              f"--overwrite to replace it, or choose another --out")
    return None


def _resumed_spec(args: argparse.Namespace, saved: dict[str, Any], record: DataRecord) -> dict[str, Any]:
    """The saved surrogate, after checking the data and options agree with the checkpoint."""
    DataRecord.from_config(saved, f"the checkpoint {args.out}").check_same_equation(record)
    spec = saved["surrogate"]
    if args.model is not None and args.model != spec["name"]:
        raise UsageError(f"--model {args.model} differs from the checkpoint's {spec['name']!r} in {args.out}")
    if args.model_dt is not None and not math.isclose(args.model_dt, saved["model_dt"], rel_tol=1e-9):
        raise UsageError(f"--model-dt {args.model_dt:g} differs from the checkpoint's {saved['model_dt']:g}")
    return spec


def _train(args: argparse.Namespace) -> int:
    """``timestepper pde train``: read, build (or resume), train, checkpoint (rank 0)."""
    require_modules("timestepper pde train", {"h5py": "h5py", "safetensors": "safetensors"})
    if args.threads:
        torch.set_num_threads(args.threads)
    _check_online_options(args)
    saved = _check_out(args)
    traj, attrs, record = read_training_data(args.data)
    spec = _resumed_spec(args, saved, record) if saved else _surrogate_spec(args, len(record.shape))
    model_dt = saved["model_dt"] if saved else (args.model_dt or record.dt_frame)
    k = frames_per_model_step(attrs, model_dt)
    cfg = TrainConfig(iterations=args.steps, batch_size=args.batch_size, lr=args.lr,
                      frames_per_step=k, unroll=args.unroll, seed=args.seed, time_budget_s=args.time_budget)
    device = torch.device(args.device) if args.device else local_device()
    with process_group("gloo" if device.type == "cpu" else None):
        torch.manual_seed(args.seed)
        surrogate, state = _initial(args, spec, saved, device)
        config = {"equation": record.to_config(), "surrogate": spec, "model_dt": model_dt,
                  "frames_per_step": k, "training": _training_record(args, cfg, traj)}

        def save(at: dict[str, Any]) -> None:  # rank 0 writes; the state is the same on every rank
            if is_main_process():
                save_surrogate(args.out, surrogate, config, at)

        t0 = time.perf_counter()
        if args.online:
            losses = _train_online(args, surrogate, cfg, attrs)
            config["training"]["online"] = {"trajectories": args.online_trajectories, "buffer": args.buffer}
            state = {"iteration": len(losses), "losses": losses}  # weights only: online runs do not resume
        else:
            losses = train_surrogate(surrogate, traj, cfg, progress=not args.no_progress, state=state,
                                     save_every=args.save_every, save=save)
        save(state)
        if is_main_process():
            _report(args, losses, time.perf_counter() - t0, spec, record, state)
    return 0


def _check_online_options(args: argparse.Namespace) -> None:
    """``--online`` takes one recipe file, trains afresh in one process; ``--ray-address`` needs it."""
    if not args.online:
        if args.ray_address is not None:
            raise UsageError("--ray-address applies to --online training only")
        return
    require_modules("timestepper pde train --online", {"ray": "'timestepper[ray]'"})
    if len(args.data) != 1:
        raise UsageError(f"--online takes one data file as the generation recipe, got {len(args.data)}")
    if args.resume or args.save_every:
        raise UsageError("--online runs are not resumable: drop --resume and --save-every")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("--online trains in one process (its solver workers are Ray's): do not launch it "
                         "under torchrun")


def _train_online(args: argparse.Namespace, surrogate: torch.nn.Module, cfg: TrainConfig,
                  attrs: dict[str, Any]) -> list[float]:
    """Train from solver workers on Ray with the generation settings of the recipe file."""
    from .online import OnlineConfig, train_online

    equation, gen = recipe_from_attrs(attrs)
    online = OnlineConfig(workers=args.workers, trajectories=args.online_trajectories, buffer=args.buffer,
                          buffer_size=args.buffer_size, ray_address=args.ray_address)
    res = train_online(equation, surrogate, cfg, gen, online, progress=not args.no_progress)
    print(f"online: {res.trajectories} trajectories, {res.windows} windows received, {res.served} served, "
          f"{res.evicted} evicted; waited {res.wait_s:.1f} s for data")
    return list(res.losses)


def _initial(args: argparse.Namespace, spec: dict[str, Any], saved: dict[str, Any] | None,
             device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The surrogate to train on ``device`` and the resume state (empty when training afresh)."""
    if saved is None:
        return build_surrogate(spec["name"], spec["dim"], spec["kwargs"]).to(device), {}
    surrogate, _ = load_surrogate(args.out, device)
    return surrogate, load_train_state(args.out, saved)


def _training_record(args: argparse.Namespace, cfg: TrainConfig, traj: torch.Tensor) -> dict[str, Any]:
    """The ``training`` entry of the checkpoint (the iterations done are in its folder's name and
    training state)."""
    return {"iterations": cfg.iterations, "batch_size": cfg.batch_size,
            "lr": cfg.lr, "unroll": cfg.unroll, "seed": cfg.seed, "data": [str(p) for p in args.data],
            "trajectories": int(traj.shape[0]), "frames": int(traj.shape[1])}


def _report(args: argparse.Namespace, losses: list[float], seconds: float, spec: dict[str, Any],
            record: DataRecord, state: dict[str, Any] | None = None) -> None:
    k = min(50, len(losses))
    tail = sum(losses[-k:]) / k if k else float("nan")
    total = (state or {}).get("iteration", len(losses))
    print(f"trained {spec['name']} on {record.describe()}: {len(losses)} steps ({total} in all) in {seconds:.1f}s, "
          f"mean loss of the last {k} {tail:.4g}; saved to {args.out}")


# --- timestepper pde eval ---------------------------------------------------------------------


def evaluate_surrogate(checkpoint: str, data: str, *, split: str = "test", steps: int | None = None,
                       horizons: tuple[int, ...] = (1, 10, 50), threshold: float = 0.8,
                       seed: int = 0) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    """Roll the checkpoint's surrogate out on the ``split`` trajectories of ``data``.

    Returns ``(metrics, prediction, reference)``: the one-step normalised RMSE and MSE, the
    normalised RMSE at each horizon (model steps; those beyond the rollout are left out), the
    high-correlation time (mean and standard error over trajectories, and of the mean
    correlation), and the ``(B, steps + 1, *space)`` tensors at the model step.

    Raises:
        ValueError: ``data`` holds another equation or resolution than the checkpoint (naming
            both), or its frame step does not divide the model step.
    """
    surrogate, cfg = load_surrogate(checkpoint)
    u, attrs = read_hdf5(data, split)
    DataRecord.from_config(cfg, f"the checkpoint {checkpoint}").check_same_equation(
        DataRecord.from_attrs(attrs, tuple(u.shape[2:]), data))
    model_dt = float(cfg["model_dt"])
    ref = u[:, :: frames_per_model_step(attrs, model_dt)]
    if ref.shape[1] < 2:
        raise ValueError(f"the {split!r} trajectories of {data} are shorter than one model step ({model_dt:g})")
    n = ref.shape[1] - 1 if steps is None else min(steps, ref.shape[1] - 1)
    ref = ref[:, : n + 1]
    pred = rollout(surrogate, ref[:, 0], n, dt=model_dt, generator=torch.Generator().manual_seed(seed))
    return _metrics(pred, ref, model_dt, horizons, threshold), pred, ref


def _metrics(pred: torch.Tensor, ref: torch.Tensor, dt: float, horizons: tuple[int, ...],
             threshold: float) -> dict[str, Any]:
    nrmse = metrics.nrmse_per_step(pred, ref).double()
    corr = metrics.pearson_per_step(pred, ref)
    hct = metrics.high_correlation_time(corr, dt, threshold=threshold)
    sem = float(hct.std() / math.sqrt(len(hct))) if len(hct) > 1 else float("nan")
    return {
        "trajectories": int(ref.shape[0]),
        "rollout_steps": int(ref.shape[1] - 1),
        "model_dt": dt,
        "one_step_nrmse": float(nrmse[:, 1].mean()),
        "one_step_mse": float(metrics.mse_per_step(pred[:, 1:2], ref[:, 1:2]).mean()),
        "nrmse_at": {str(h): float(nrmse[:, h].nan_to_num(math.inf).mean()) for h in horizons
                     if h < ref.shape[1]},
        "threshold": threshold,
        "high_correlation_time": float(hct.mean()),
        "high_correlation_time_sem": sem,
        "high_correlation_time_of_mean": float(
            metrics.high_correlation_time(corr.nan_to_num(-1.0).mean(0), dt, threshold=threshold)),
    }


def _eval(args: argparse.Namespace) -> int:
    """``timestepper pde eval``: metrics table, ``--json`` and ``--plot``."""
    need = {"h5py": "h5py", "safetensors": "safetensors"}
    if args.plot is not None:
        need["matplotlib"] = "matplotlib"
    require_modules("timestepper pde eval", need)
    res, pred, ref = evaluate_surrogate(args.checkpoint, args.data, split=args.split, steps=args.steps,
                                        horizons=tuple(args.horizons), threshold=args.threshold,
                                        seed=args.seed)
    _print_metrics(res)
    if args.json is not None:
        write_json_atomically(Path(args.json), res)
    if args.plot is not None:
        from .plots import plot_rollouts

        plot_rollouts(pred, ref, res["model_dt"], args.plot)
        print(f"plot -> {args.plot}")
    return 0


def _print_metrics(res: dict[str, Any]) -> None:
    print(f"{res['trajectories']} trajectories, {res['rollout_steps']} model steps of {res['model_dt']:g}")
    print(f"one-step nRMSE {res['one_step_nrmse']:.4g} (MSE {res['one_step_mse']:.4g})")
    for h, err in res["nrmse_at"].items():
        print(f"nRMSE after {h} steps (t = {int(h) * res['model_dt']:g}): {err:.4g}")
    print(f"high-correlation time (corr >= {res['threshold']:g}): {res['high_correlation_time']:.4g} "
          f"+- {res['high_correlation_time_sem']:.2g}; of the mean correlation "
          f"{res['high_correlation_time_of_mean']:.4g}")


__all__ = ["add_train_commands", "evaluate_surrogate", "read_training_data"]
