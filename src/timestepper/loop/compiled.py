"""The loop's compiled path (``integrate(..., compile=True)``): what is compiled and the fallback.

A function of the loop (a fixed-grid step with its finiteness probe, or a per-sample attempt:
step, error norm, controller and accept/reject merge) is compiled with ``torch.compile`` as one
graph (``fullgraph=True``). When it cannot be captured -- a field that calls ``.item()``,
branches in Python on tensor values, or anything else dynamo refuses -- the first call warns with
dynamo's reason and the solve goes on eagerly; it never fails because of compilation.

Compiled code is cached by dynamo on the function's code object, guarded on the shapes, dtypes and
devices of the arguments and on the objects the function reads (solver, controller, term): a
second solve of the same kind pays no compilation. :func:`compile_stats` reports the graphs
compiled so far (recompiles are bounded by dynamo's ``recompile_limit``; ``dynamic=True`` marks
the batch dimension dynamic from the start so that a new batch size does not recompile).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .device_loop import flatten, unflatten

DEFAULT_OPTIONS: dict[str, Any] = {"dynamic": True, "fullgraph": True}
SYNC_EVERY = 8
"""Compiled per-sample solves read the "anyone still running?" flag from the device once every
this many attempted steps (eager ones every step); the extra attempts after the last sample has
finished are zero-length steps that change nothing."""


class CompileFallbackWarning(UserWarning):
    """``compile=True`` could not capture a step; the solve ran eagerly (the message says why)."""


def compile_options(compile: bool | dict[str, Any]) -> dict[str, Any] | None:
    """``None`` for ``compile=False``; else the options handed to ``torch.compile``."""
    if compile is False:
        return None
    if compile is True:
        return dict(DEFAULT_OPTIONS)
    if not isinstance(compile, dict):
        raise TypeError(f"compile must be a bool or a dict of torch.compile options, got {type(compile).__name__}")
    return {**DEFAULT_OPTIONS, **compile}


_CAPTURE_FAILURES = (torch._dynamo.exc.TorchDynamoException,
                     getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", torch._dynamo.exc.TorchDynamoException))
"""What dynamo raises, before running anything, when it cannot capture a call in one graph: an
unsupported construct, a failed backend, or (``fullgraph=True``) the recompile limit reached
because a value the graph was specialised on changes from call to call."""


class CompiledCall:
    """``fn`` through ``torch.compile(fn, **options)``, falling back to ``fn`` itself (with a
    :class:`CompileFallbackWarning` naming the reason, once) when dynamo cannot capture it.

    Args:
        fn: the eager function.
        options: ``torch.compile`` options.
        what: what ``fn`` is, for the warning (e.g. ``"the step of 'tsit5'"``).
    """

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any], what: str) -> None:
        self.eager, self.what, self.options = fn, what, options
        self.compiled: Callable[..., Any] | None = None  # made on the first call (a solve may not call it)
        self.reason: str | None = None

    def __call__(self, *args: Any) -> Any:
        if self.reason is None:
            if self.compiled is None:
                self.compiled = torch.compile(self.eager, **self.options)
            try:
                return self.compiled(*args)
            except _CAPTURE_FAILURES as exc:  # capture failed: nothing ran
                self.reason = _reason(exc)
                warnings.warn(f"compile=True: {self.what} could not be compiled ({self.reason}); "
                              "running it eagerly", CompileFallbackWarning, stacklevel=3)
        return self.eager(*args)

    @property
    def fell_back(self) -> bool:
        """True once the call has fallen back to eager execution."""
        return self.reason is not None


def _reason(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."


def clone_tensors(obj: Any) -> Any:
    """``obj`` with every tensor in it (tuples, lists, dicts, dataclasses) replaced by a copy."""
    tensors, spec = flatten(obj)
    return unflatten(spec, [t.clone() for t in tensors])


def replays_cuda_graphs(options: dict[str, Any] | None) -> bool:
    """Whether compiled calls replay CUDA graphs (mode ``"reduce-overhead"``): each replay writes
    into the same output memory, so what a loop keeps from one step to the next must be copied."""
    return options is not None and "reduce-overhead" in str(options.get("mode", ""))


def compile_stats() -> dict[str, int]:
    """Graphs dynamo compiled in this process so far (``unique_graphs``) and the calls that were
    captured (``captured``) -- for reporting recompiles; counters reset with ``torch._dynamo.reset``."""
    counters = importlib.import_module("torch._dynamo.utils").counters
    return {"graphs": int(counters["stats"]["unique_graphs"]), "captured": int(counters["stats"]["calls_captured"])}


__all__ = ["SYNC_EVERY", "CompileFallbackWarning", "CompiledCall", "clone_tensors", "compile_options", "compile_stats",
           "replays_cuda_graphs"]
