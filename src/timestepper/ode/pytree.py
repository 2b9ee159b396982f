"""States that are (nested) tuples, lists or dicts of tensors, flattened to one tensor.

Solvers advance one tensor; :class:`Flattener` concatenates the leaves of a nested state
(``reshape(-1)`` each, or ``reshape(B, -1)`` with a leading batch dimension) and restores the
structure afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _leaves(tree, out: list) -> object:
    if isinstance(tree, Tensor):
        out.append(tree)
        return None
    if isinstance(tree, (tuple, list)):
        return (type(tree), [_leaves(v, out) for v in tree])
    if isinstance(tree, dict):
        return (dict, {k: _leaves(v, out) for k, v in tree.items()})
    raise TypeError(f"y0 must be a tensor or a (nested) tuple/list/dict of tensors, "
                    f"found {type(tree).__name__}")


def leaves(tree) -> list[Tensor]:
    """The tensors of a nested tuple/list/dict state, in the order :class:`Flattener` uses."""
    out: list[Tensor] = []
    _leaves(tree, out)
    return out


def _build(spec, it):
    if spec is None:
        return next(it)
    kind, children = spec
    if kind is dict:
        return {k: _build(v, it) for k, v in children.items()}
    return kind(_build(v, it) for v in children)


def _describe(tree) -> str:
    return "tensor" if isinstance(tree, Tensor) else type(tree).__name__


def _describe_spec(spec) -> str:
    return "tensor" if spec is None else spec[0].__name__


class Flattener:
    """Flatten a nested state to one tensor and back.

    Args:
        tree: the initial state (its structure, shapes and dtype are recorded).
        batch: keep the leading dimension (per-sample mode): flat shape ``(B, n)``.
    """

    def __init__(self, tree, batch: bool = False) -> None:
        leaves: list[Tensor] = []
        self.spec = _leaves(tree, leaves)
        self.is_tensor = self.spec is None
        if not leaves:
            raise ValueError("y0 holds no tensors")
        dtypes = {v.dtype for v in leaves}
        if len(dtypes) > 1:
            raise TypeError("all tensors of y0 must share one dtype, got "
                            f"{sorted(map(str, dtypes))}")
        self.batch = batch
        if batch:
            sizes = {v.shape[0] if v.ndim else None for v in leaves}
            if len(sizes) != 1 or None in sizes:
                raise ValueError("per-sample mode needs every tensor of y0 to share the leading "
                                 f"batch dimension, got {sorted(map(str, sizes))}")
        self.dtype = leaves[0].dtype
        self.leaf_shapes = [v.shape for v in leaves]
        self.shapes = [v.shape[1:] if batch else v.shape for v in leaves]
        self.sizes = [math.prod(s) for s in self.shapes]

    def check_like(self, tree, name: str) -> None:
        """Refuse ``tree`` (e.g. a vector field's output) unless it has the state's structure,
        shapes and dtype, naming what differs: a broadcasting output would otherwise grow the
        state step after step."""
        leaves: list[Tensor] = []
        try:
            spec = _leaves(tree, leaves)
        except TypeError:
            raise TypeError(f"{name} must return the structure of y0 (tensors), got "
                            f"{type(tree).__name__}") from None
        if spec != self.spec:
            raise TypeError(f"{name} returned a {_describe(tree)} but y0 is a {_describe_spec(self.spec)}: "
                            "it must return the structure of y0")
        for i, (v, shape) in enumerate(zip(leaves, self.leaf_shapes)):
            where = "" if self.is_tensor else f" (leaf {i})"
            if v.shape != shape:
                raise ValueError(f"{name} returned shape {tuple(v.shape)}{where} but the state has shape "
                                 f"{tuple(shape)}: the vector field must return a tensor shaped like y")
            if v.dtype != self.dtype:
                raise TypeError(f"{name} returned dtype {v.dtype}{where} but the state is {self.dtype}: "
                                "cast the output (or y0) so that they agree")

    def flatten(self, tree) -> Tensor:
        if self.is_tensor:
            return tree
        leaves: list[Tensor] = []
        _leaves(tree, leaves)
        if self.batch:
            return torch.cat([v.reshape(v.shape[0], -1) for v in leaves], dim=1)
        return torch.cat([v.reshape(-1) for v in leaves])

    def unflatten(self, flat: Tensor, lead: tuple[int, ...] = ()) -> object:
        """Inverse of :meth:`flatten`; ``lead`` are extra leading dims (e.g. saved times)."""
        if self.is_tensor:
            return flat
        dim = len(lead) + (1 if self.batch else 0)
        pieces = torch.split(flat, self.sizes, dim=dim)
        pre = flat.shape[:dim]
        return _build(self.spec, iter(p.reshape(pre + s) for p, s in zip(pieces, self.shapes)))
