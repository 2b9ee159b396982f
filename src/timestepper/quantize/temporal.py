"""The temporal information block and its cache (TFMQ-DM; Temporal Feature Matters).

TFMQ-DM (Huang et al. 2024, CVPR, Sec. 4) defines the *temporal information block* (TIB): the
modules whose output depends on the time step only, never on ``x_t`` -- the time embedding and,
in every residual block, the layer that maps the embedding to that block's *temporal feature*.
Since ``t`` takes a finite set of values, the block's outputs form a finite set too.

Here the TIB of a :mod:`timestepper.train.networks` network is its time module ``cond`` (the
sinusoidal embedding and its MLP) plus every ``Linear`` that reads ``cond``'s output directly (one
per residual block): the *consumers*. :func:`install_cache` replaces ``cond`` by a
:class:`TemporalCache`, which maps the network's time input to a row of the cache, and each
consumer by a :class:`CachedFeature`, which returns that row of its table of temporal features.
The tables are filled for a finite set of time inputs (the times at which a sampler evaluates the
model; :func:`extend_cache` adds more); a time outside it is refused by name.

What the tables hold is chosen per consumer (``modes``): ``"fp"`` the full-precision features
(Temporal Feature Matters' cache-based maintenance) or ``"tib"`` the features of the quantized
block (TFMQ's TIAR weights with FSC activation ranges, :mod:`timestepper.quantize.tiar`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import replace
from .tiar import Block

MODES = ("fp", "tib")


def find_block(net: nn.Module, time_module: str, probe: tuple[Tensor, Tensor]) -> list[str]:
    """The names of the ``Linear`` layers of ``net`` fed directly by ``time_module``'s output,
    found by one forward of ``probe = (x, c_noise)``."""
    try:
        cond = net.get_submodule(time_module)
    except AttributeError:
        raise ValueError(f"the network has no time module {time_module!r} (time_module=); the temporal "
                         f"methods need the module that embeds the time input") from None
    if getattr(cond, "label", None) is not None:
        raise ValueError("temporal caching supports unconditional networks only (the time module "
                         "adds a class embedding, so its output is not a function of t alone)")
    out: dict[str, Tensor] = {}
    consumers: list[str] = []
    hooks = [cond.register_forward_hook(lambda m, a, o: out.__setitem__("emb", o))]
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear) and not name.startswith(time_module + "."):
            hooks.append(mod.register_forward_pre_hook(
                lambda m, a, name=name: consumers.append(name) if a and a[0] is out.get("emb") else None))
    try:
        with torch.no_grad():
            net(*probe)
    finally:
        for h in hooks:
            h.remove()
    if not consumers:
        raise ValueError(f"no Linear layer reads the output of {time_module!r}: no temporal features to cache")
    return consumers


class TemporalCache(nn.Module):
    """Stands in for the time module: returns, per sample, the row of the cached tables that
    belongs to its time input (exact match; a time off the cached set raises ``ValueError``).

    Args:
        time_module: the full-precision time module (kept to extend the cache to new times).
        tib: the quantized temporal information block (:class:`~timestepper.quantize.tiar.QuantizedBlock`)
            or ``None`` when no consumer uses it.
    """

    def __init__(self, time_module: nn.Module, tib: nn.Module | None = None) -> None:
        super().__init__()
        self.time_module = time_module
        self.tib = tib
        self.register_buffer("keys", torch.empty(0, dtype=torch.float32))

    def forward(self, c_noise: Tensor, labels: Tensor | None = None, batch: int | None = None) -> Tensor:
        """Row indices ``(B,)`` of the time inputs ``c_noise`` in the cache."""
        if labels is not None:
            raise ValueError("labels were given to a network whose temporal features are cached "
                             "(unconditional only)")
        c = c_noise.to(torch.float32).reshape(-1)
        if c.numel() == 1 and batch is not None:
            c = c.expand(batch)
        match = c[:, None] == self.keys[None, :]
        hit = match.any(1)
        if not bool(hit.all()):  # CPU int8 inference: no device to sync with
            missing = float(c[~hit][0])
            raise ValueError(f"time input {missing!r} is not among the {self.keys.numel()} cached times; "
                             "add the sampler's times with timestepper.quantize.add_grid(...) or add_times(...)")
        return match.to(torch.uint8).argmax(1)


class CachedFeature(nn.Module):
    """Stands in for a consumer layer: the cached temporal feature of each row index.

    Args:
        source: the full-precision consumer layer (kept to extend the cache).
        mode: ``"fp"`` (full-precision features) or ``"tib"`` (the quantized block's).
    """

    def __init__(self, source: nn.Linear, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.source = source
        self.mode = mode
        self.register_buffer("table", torch.empty(0, source.out_features, dtype=torch.float32))

    def forward(self, index: Tensor) -> Tensor:
        """The features ``(B, out_features)`` of row indices ``(B,)``."""
        if index.dtype != torch.long:
            raise TypeError("a CachedFeature takes the row indices of a TemporalCache")
        return self.table.index_select(0, index)


def install_cache(net: nn.Module, time_module: str, consumers: list[str], modes: list[str],
                  tib: nn.Module | None) -> TemporalCache:
    """Replace ``time_module`` and ``consumers`` of ``net`` by an empty cache; returns it."""
    cache = TemporalCache(net.get_submodule(time_module), tib)
    for name, mode in zip(consumers, modes, strict=True):
        replace(net, name, CachedFeature(net.get_submodule(name), mode))
    replace(net, time_module, cache)
    return cache


def cached_features(net: nn.Module) -> tuple[TemporalCache, dict[str, CachedFeature]]:
    """The cache and the cached consumers of a network that has them."""
    caches = [m for m in net.modules() if isinstance(m, TemporalCache)]
    if len(caches) != 1:
        raise ValueError("the model has no temporal cache (quantize it with method 'tfmq' or 'tfm')")
    return caches[0], {n: m for n, m in net.named_modules() if isinstance(m, CachedFeature)}


@torch.no_grad()
def full_precision_features(cache: TemporalCache, consumers: dict[str, CachedFeature], c: Tensor) -> dict[str, Tensor]:
    """The full-precision temporal features of every consumer at time inputs ``c`` ``(K,)``."""
    emb = cache.time_module(c, None, c.shape[0])
    return {n: m.source(emb) for n, m in consumers.items()}


@torch.no_grad()
def extend_cache(net: nn.Module, c_noise: Tensor) -> int:
    """Add the time inputs ``c_noise`` (float32, any order, repeats allowed) to the cache of
    ``net``: each consumer's table gets its features there. Returns the number of new times."""
    cache, consumers = cached_features(net)
    c = torch.unique(c_noise.detach().to(torch.float32).reshape(-1))
    new = c[~torch.isin(c, cache.keys)]
    if new.numel() == 0:
        return 0
    fp = full_precision_features(cache, consumers, new)
    quant = {}
    if cache.tib is not None:
        quant = cache.tib.features(Block(cache.time_module, {n: m.source for n, m in consumers.items()}), new)
    for name, m in consumers.items():
        rows = fp[name] if m.mode == "fp" else quant[name]
        m.table = torch.cat([m.table, rows.to(torch.float32)])
    cache.keys = torch.cat([cache.keys, new])
    return int(new.numel())


def resize_cache(net: nn.Module, n: int) -> None:
    """Give the cache of ``net`` ``n`` empty rows (before loading a saved state into it)."""
    cache, consumers = cached_features(net)
    cache.keys = torch.zeros(n)
    for m in consumers.values():
        m.table = torch.zeros(n, m.source.out_features)
