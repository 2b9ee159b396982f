"""Loops compiled as one graph: the carried values flattened to tensors, ``torch.while_loop``.

A compiled step or attempt still pays the entry of a compiled call each time -- guards, argument
unpacking, the generated wrapper -- about a hundred microseconds on a CPU, far more than the
arithmetic of a small state. Here the loop itself is compiled (:func:`loop_in_graph`): what it
carries (times, state, solver and controller state, counters, stop flags) is flattened to
tensors (:func:`flatten`), the body is one step or attempt of the same code the eager loop runs,
and the host enters the graph once per solve. On a CPU the wrapper of the loop graph is
generated in C++ (:func:`loop_compile_options`), so the loop does not return to Python between
iterations. The per-sample solve (:mod:`.per_sample`, and the shared-step adaptive solve through
it) and the fixed-grid solve (:mod:`.grid_device`) use it. Evaluations are counted in the graph.

When a loop cannot be captured -- a carried state that changes structure from step to step, an
op the loop operator refuses, a host read in the user's field -- nothing of it has run, the
caller goes on with its per-step path, and :class:`CompiledLoops` remembers the failure (and its
reason) for that code, so it is not traced again.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class CompiledLoops:
    """The compiled functions that run a loop graph, one per set of ``torch.compile`` options,
    and the loops that could not be captured (with the reason), so they are not traced again.

    ``fn(*args)`` must build the loop with :func:`loop_in_graph`; :meth:`run` returns its result,
    or ``None`` when dynamo could not capture it (nothing ran). ``compiler`` is ``torch.compile``.
    """

    def __init__(self, fn: Callable[..., Any], compiler: Callable[..., Any] | None = None) -> None:
        self.fn, self.compiler = fn, compiler or torch.compile
        self.compiled: dict[str, Callable[..., Any]] = {}
        self.uncaptured: dict[Any, str] = {}

    def known_uncapturable(self, options: dict[str, Any], key: Any) -> bool:
        """Whether the loop of ``key`` under ``options`` failed to capture before."""
        return (_options_name(options), key) in self.uncaptured

    def run(self, options: dict[str, Any], device: torch.device, key: Any, *args: Any) -> Any:
        """``fn(*args)`` compiled with ``options`` (see :func:`loop_compile_options`); ``key``
        names the user code involved (a failure is remembered under it)."""
        name = _options_name(options)
        if not while_loop_available() or (name, key) in self.uncaptured:
            return None
        if name not in self.compiled:
            self.compiled[name] = self.compiler(self.fn, **loop_compile_options(options, device))
        try:
            return self.compiled[name](*args)
        except (torch._dynamo.exc.TorchDynamoException, NotImplementedError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            self.uncaptured[(name, key)] = f"{type(exc).__name__}: {first}"
            return None


def _options_name(options: dict[str, Any]) -> str:
    return repr(sorted(options.items(), key=str))


def code_key(obj: Any) -> tuple:
    """What identifies the user's code in a term (part of the key under which a loop that could
    not be captured is remembered): its type and the code of each function it holds (the type of
    any other callable), recursively through nested terms."""
    key: list[Any] = [type(obj)]
    for name, value in sorted(vars(obj).items()):
        if hasattr(value, "__dict__") and not callable(value) and type(value).__module__.startswith("timestepper"):
            key.append((name, code_key(value)))
        elif callable(value):
            func = getattr(value, "__func__", value)
            key.append((name, getattr(func, "__code__", type(value))))
    return tuple(key)


def while_loop_available() -> bool:
    """Whether this torch has the ``while_loop`` operator that :func:`loop_in_graph` needs."""
    try:
        importlib.import_module("torch._higher_order_ops.while_loop")
    except ImportError:  # pragma: no cover - every supported torch has it
        return False
    return True


def loop_compile_options(options: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The ``torch.compile`` options of the loop graph, from the solve's.

    ``dynamic=True`` becomes ``None`` (automatic): with every Python float of the problem a
    symbol, the loop operator would receive symbolic floats, which it refuses. On the CPU with
    the default backend, the generated wrapper is C++ (``cpp_wrapper``): the loop then runs
    without returning to Python between iterations (about twice as fast on small states), and
    the loops it generates are vectorized without the tiling heuristics: those fall back to
    scalar code for a loop with many strided reads, and the per-sample controller's loop -- its
    powers, read across the few entries of each sample -- ran scalar (5 % of a per-sample
    Van der Pol solve). Both unless the caller set inductor options of their own.
    """
    out = {**options, "fullgraph": True}
    if out.get("dynamic") is True:
        out["dynamic"] = None
    if device.type == "cpu" and out.get("backend", "inductor") == "inductor" and "options" not in out \
            and "mode" not in out:
        out["options"] = {"cpp_wrapper": True, "cpp.enable_tiling_heuristics": False}
    return out


def flatten(obj: Any) -> tuple[list[Tensor], Any]:
    """The tensors in ``obj`` (tuples, lists, dicts, dataclasses, in order) and a spec that
    :func:`unflatten` rebuilds ``obj`` from; non-tensor leaves are kept in the spec."""
    tensors: list[Tensor] = []

    def walk(o: Any) -> Any:
        if isinstance(o, Tensor):
            tensors.append(o)
            return _Slot()
        if isinstance(o, (tuple, list)):
            return (type(o), tuple(walk(v) for v in o))
        if isinstance(o, dict):
            return (dict, tuple((k, walk(v)) for k, v in o.items()))
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return (type(o), tuple((f.name, walk(getattr(o, f.name))) for f in dataclasses.fields(o) if f.init))
        return ("leaf", o)

    return tensors, walk(obj)


def unflatten(spec: Any, tensors: list[Tensor] | tuple[Tensor, ...]) -> Any:
    """The object :func:`flatten` took apart, with ``tensors`` in its tensor slots."""
    it = iter(tensors)

    def build(s: Any) -> Any:
        if isinstance(s, _Slot):
            return next(it)
        kind, parts = s
        if kind == "leaf":
            return parts
        if kind is dict:
            return {k: build(v) for k, v in parts}
        if kind in (tuple, list):
            return kind(build(v) for v in parts)
        return kind(**{name: build(v) for name, v in parts})

    return build(spec)


def _distinct(tensors: list[Tensor], others: tuple[Tensor, ...] | list[Tensor]) -> list[Tensor]:
    """``tensors`` with each one that is also in ``others`` or earlier in the list replaced by a copy."""
    out: list[Tensor] = []
    for t in tensors:
        seen = any(t is o for o in others) or any(t is o for o in out)
        out.append(t.clone() if seen else t)
    return out


def _dense_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


class _Slot:
    """A tensor's place in a spec (specs compare equal when their structure and leaves do)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Slot)

    def __hash__(self) -> int:
        return 0


def row_at(stacked: Any, i: Tensor) -> Any:
    """Entry ``i`` (a 0-d int64 tensor) along the leading dimension of every tensor in
    ``stacked`` (a solver's table rows stacked by :meth:`~timestepper.core.solver.Solver.stacked_rows`),
    by indexing on the device (no host read)."""
    tensors, spec = flatten(stacked)
    index = i.reshape(1)
    return unflatten(spec, [t.index_select(0, index).squeeze(0) for t in tensors])


def loop_in_graph(body: Callable[[Any], tuple[Any, int]], keep_going: Callable[[Any], Tensor], carry: Any,
                  limit: int) -> tuple[Any, Tensor, Tensor]:
    """Repeat ``carry, n = body(carry)`` while ``keep_going(carry)`` and fewer than ``limit``
    times, as one ``while_loop`` (called inside a compiled function).

    ``body`` returns the next carry (the same structure, tensors of the same shapes and dtypes)
    and the evaluations of the attempt (a Python int, the same on every iteration).

    Returns the final carry, the iterations made and the evaluations spent (0-d int64 tensors).
    Raises ``NotImplementedError`` (at trace time) when the carry changes structure.
    """
    from torch._higher_order_ops.while_loop import while_loop

    tensors, spec = flatten(carry)
    # the loop's outputs are dense, so its inputs must be too (a broadcast time has stride 0); they
    # must also be distinct (a solver state that keeps the step's start carries it twice) and not
    # views (a time kept by the state may be a view of the grid the body reads): those are copied
    tensors = _distinct([t if t._base is None and t.is_contiguous() and t.stride() == _dense_strides(t.shape)
                         else t.clone(memory_format=torch.contiguous_format) for t in tensors], ())
    zero = torch.zeros((), dtype=torch.int64, device=tensors[0].device)
    values = [zero, zero.clone(), *tensors]  # the iterations, the evaluations, the carry
    packing = _Packing(values)

    def cond(*carried: Tensor) -> Tensor:
        i, _, *flat = packing.unpack(carried)
        return keep_going(unflatten(spec, flat)) & (i < limit)

    def step(*carried: Tensor) -> tuple[Tensor, ...]:
        i, spent, *flat = packing.unpack(carried)
        new, n = body(unflatten(spec, flat))
        out, new_spec = flatten(new)
        if new_spec != spec:
            raise NotImplementedError("the carried state changes structure from step to step")
        # the loop's outputs may not alias its inputs or each other: a value passed through, or
        # returned twice, is copied (a pack is a fresh tensor)
        return tuple(_distinct(packing.pack([i + 1, spent + n, *out]), carried))

    out = packing.unpack(while_loop(cond, step, tuple(packing.pack(values))))
    return unflatten(spec, out[2:]), out[0], out[1]


class _Packing:
    """The small carried tensors of each real dtype packed into one 1-D tensor per dtype.

    Every carried tensor costs the generated loop a few tensor handles per iteration (a fresh
    output buffer, and an alias for the condition and for the body), about what the arithmetic of
    a small state costs on a CPU. An adaptive per-sample solve carries some twenty of them (the
    state, times, step sizes, controller memory, counters, flags); packed, it carries a handful,
    and the body reads and writes slices of the packs, which the compiler turns into indexing.
    Tensors above ``SMALL`` elements, and complex ones, are carried as they are (for them the
    handles cost nothing next to the arithmetic, and a pack would copy a tensor an external
    kernel produced).
    """

    SMALL = 1 << 14

    def __init__(self, tensors: list[Tensor]) -> None:
        groups: dict[torch.dtype, list[int]] = {}
        for k, t in enumerate(tensors):
            if t.numel() <= self.SMALL and not t.is_complex():
                groups.setdefault(t.dtype, []).append(k)
        self.groups = [members for members in groups.values() if len(members) > 1]
        packed = {k for members in self.groups for k in members}
        self.own = [k for k in range(len(tensors)) if k not in packed]
        self.shapes = [t.shape for t in tensors]
        self.count = len(tensors)

    def pack(self, tensors: list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        """The carried tensors: the unpacked ones, then one pack per group."""
        return [tensors[k] for k in self.own] + [torch.cat([tensors[k].reshape(-1) for k in members])
                                                 for members in self.groups]

    def unpack(self, carried: list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
        """The tensors :meth:`pack` was given (views of the packs)."""
        out: list[Tensor | None] = [None] * self.count
        for k, t in zip(self.own, carried):
            out[k] = t
        for members, pack in zip(self.groups, carried[len(self.own):]):
            offset = 0
            for k in members:
                n = self.shapes[k].numel()
                out[k] = pack[offset:offset + n].view(self.shapes[k])
                offset += n
        return out  # type: ignore[return-value]


__all__ = ["CompiledLoops", "code_key", "flatten", "loop_compile_options", "loop_in_graph", "row_at", "unflatten",
           "while_loop_available"]
