"""``timestepper tune CHECKPOINT --nfe 5 --method s3 --out FILE``: search a solver schedule.

The checkpoint is a folder written by ``timestepper train``. The training noise (``--samples``
draws) and the held-out noise (as many again) come from ``--seed``; the search's evaluations are
journaled to ``FILE.journal`` as they happen, so an interrupted run (Ctrl-C) started again with
the same arguments resumes where it stopped and returns what the uninterrupted run would have.
``--fresh`` discards the journal. Budget options go as ``--budget name=value`` (repeatable).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cli_args import UsageError, int_at_least, nonnegative_int, output_file


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``tune`` with the ``timestepper`` command's parsers."""
    p = sub.add_parser("tune", help="search a solver schedule for a checkpoint and an NFE budget")
    p.add_argument("checkpoint", help="checkpoint folder written by `timestepper train`")
    p.add_argument("--nfe", type=int_at_least(2), default=5, help="model calls per sample (default 5)")
    p.add_argument("--method", type=_method_name, default=None, help="search method (default: the best measured)")
    p.add_argument("--out", type=output_file, required=True, help="the schedule JSON to write")
    p.add_argument("--samples", type=int_at_least(2), default=256, help="training noises (default 256)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--budget", action="append", default=[], metavar="NAME=VALUE",
                   help="a budget option of the method, e.g. generations=8 (repeatable)")
    p.add_argument("--guard", choices=("pixels", "digits"), default=None,
                   help="keep the search only if its samples are, as a set, as close to the model's as the best "
                        "fixed grid's (Fréchet distance on the training noise) of the flattened samples (pixels) "
                        "or of the digits classifier's features (digits; 8x8 digits checkpoints)")
    p.add_argument("--guard-data", default=None, metavar="digits|FILE.pt",
                   help="with --guard: compare with real samples instead of the model's own: the training split "
                        "of the bundled digits (digits), or a tensor (N, *sample shape) saved with torch.save")
    p.add_argument("--fresh", action="store_true", help="ignore the journal of an earlier run")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tune)


def _method_name(text: str) -> str:
    from . import available_methods

    if text not in available_methods():
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; available: {', '.join(available_methods())}")
    return text


def parse_budget(items: list[str]) -> dict[str, Any]:
    """``["generations=8", "mutation_prob=0.2"]`` -> ``{"generations": 8, "mutation_prob": 0.2}``
    (values read as JSON, else kept as text)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--budget takes NAME=VALUE, got {item!r}")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def _guard(name: str | None, shape: tuple[int, ...]) -> Any:
    """The ``guard`` of ``tune`` that ``--guard name`` stands for."""
    if name == "pixels":
        return True
    if name == "digits":
        if shape != (1, 8, 8):
            raise UsageError(f"--guard digits needs an 8x8 digits checkpoint (samples (1, 8, 8)), "
                             f"this one makes {shape}")
        from ..train.metrics import digit_features

        return digit_features
    return None


def _guard_data(source: str | None, guard: Any, shape: tuple[int, ...]) -> Any:
    """The ``guard_data`` of ``tune`` that ``--guard-data source`` stands for."""
    if source is None:
        return None
    if guard is None:
        raise UsageError("--guard-data needs --guard (pixels or digits)")
    if source == "digits":
        if shape != (1, 8, 8):
            raise UsageError(f"--guard-data digits needs an 8x8 digits checkpoint (samples (1, 8, 8)), "
                             f"this one makes {shape}")
        from ..train.data import digits

        return digits("train")[0]
    import torch

    path = Path(source)
    if not path.is_file():
        raise UsageError(f"--guard-data: {source!r} is neither 'digits' nor a file")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, torch.Tensor) or tuple(data.shape[1:]) != shape:
        got = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise UsageError(f"--guard-data {source}: expected a tensor (N, {', '.join(map(str, shape))}), got {got}")
    return data


def cmd_tune(args: argparse.Namespace) -> int:
    """Run the search and write the schedule (and its journal beside it)."""
    import torch

    from ..train.checkpoint import load_denoiser, read_config
    from .tune import DEFAULT_METHOD, tune

    cfg = read_config(args.checkpoint)
    shape = tuple(cfg["data"]["shape"])
    n = args.samples
    classes = cfg.get("data", {}).get("num_classes", 0)
    kwargs = {"labels": torch.arange(n) % classes} if classes else {}
    den = load_denoiser(args.checkpoint, **kwargs)
    g = torch.Generator().manual_seed(args.seed)
    noise = torch.randn((n, *shape), generator=g)
    held_out = torch.randn((n, *shape), generator=g)
    journal = Path(str(args.out) + ".journal")
    if args.fresh and journal.exists():
        journal.unlink()
    budget = parse_budget(args.budget)
    method = args.method or DEFAULT_METHOD
    guard = _guard(args.guard, shape)
    guard_data = _guard_data(args.guard_data, guard, shape)
    try:
        sched = tune(den, args.nfe, method, noise=noise, held_out=held_out, seed=args.seed, guard=guard,
                     guard_data=guard_data,
                     progress=not args.no_progress, journal=journal, model_id=str(args.checkpoint), **budget)
    except TypeError as e:  # a budget name the method does not take
        raise UsageError(str(e)) from e
    sched.save(args.out)
    p = sched.provenance
    print(f"{method} nfe={args.nfe}: objective {p['objective_train']:.4g} (train), "
          f"{p['objective_held_out']:.4g} (held out); {p['search_cost']['model_calls']} model calls, "
          f"{p['search_cost']['seconds']:.1f} s -> {args.out}")
    return 0
