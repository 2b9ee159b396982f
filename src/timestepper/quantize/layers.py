"""Which layers are quantized, and how: PyTorch's own ``torch.ao.quantization`` tooling.

* Static W8A8 (:func:`wrap_static`, :func:`convert_static`): every ``Linear``/``Conv1d``/
  ``Conv2d`` leaf is put in a :class:`torch.ao.quantization.QuantWrapper` (eager mode: a
  ``QuantStub`` before it, a ``DeQuantStub`` after it), observed on a calibration set and
  converted to ``torch.ao.nn.quantized`` modules, which run fbgemm/onednn int8 kernels on the CPU
  (engine ``x86``). Activations use PyTorch's x86 default observer, ``HistogramObserver`` (over
  the full 8-bit range by default, see :func:`static_qconfig`), whose
  range search minimises the L2 (MSE) error of the quantized histogram: PTQ4DM's calibration
  metric (Shang et al. 2023, Sec. 4.3, MSE over cosine/KL). Weights: int8, per output channel,
  symmetric. The elementwise operations between layers (GroupNorm, SiLU, additions, skips) stay in
  float, as the network's own code calls them functionally.
* Weight-only int8 (:class:`WeightOnlyInt8`): int8 per-channel weights (scale from
  ``torch.ao``'s ``PerChannelMinMaxObserver``, rounding by ``torch.quantize_per_channel``),
  dequantized at each call; activations stay in float.

The network's output layer keeps float activations (int8 weights only), as PTQ4DM's released
code disables the output quantization of the noise-estimation network.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

#: layers replaced by int8 ones
QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d)
#: layers with parameters that are kept in float (normalisations, label embeddings)
FLOAT_KEPT: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm, nn.Embedding)
ENGINE = "x86"


@contextmanager
def quiet_ao() -> Iterator[None]:
    """``torch.ao.quantization`` calls with its deprecation notices (pointing at ``torchao``) and
    observer notices silenced: they concern its future, not this use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao.*")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=r".*must run observer before calling.*")
        yield


def check_supported(net: nn.Module, skip: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming every layer with parameters that can be neither quantized nor
    kept in float (``skip``: prefixes of submodules handled elsewhere)."""
    skip = tuple(skip)
    bad = []
    for name, mod in net.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        own = any(True for _ in mod.parameters(recurse=False))
        if own and not isinstance(mod, QUANTIZABLE + FLOAT_KEPT):
            bad.append(f"{name or '<root>'} ({type(mod).__name__})")
    if bad:
        raise ValueError(
            f"cannot quantize the network: unsupported layers {', '.join(bad)}; int8 layers are "
            f"{', '.join(c.__name__ for c in QUANTIZABLE)}, kept in float "
            f"{', '.join(c.__name__ for c in FLOAT_KEPT)} (and parameter-free modules)")


def quantizable_leaves(net: nn.Module, skip: Iterable[str] = ()) -> list[str]:
    """Names of the ``Linear``/``Conv`` leaves of ``net`` in registration order (``skip``:
    prefixes left alone)."""
    skip = tuple(skip)
    return [n for n, m in net.named_modules() if isinstance(m, QUANTIZABLE)
            and not any(n == s or n.startswith(s + ".") for s in skip)]


def replace(net: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted path ``name`` of ``net``."""
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, new)


def static_qconfig(reduce_range: bool = False) -> torch.ao.quantization.QConfig:
    """W8A8 qconfig: ``HistogramObserver`` activations (quint8; the full 8-bit range unless
    ``reduce_range``), per-channel symmetric int8 weights (PyTorch's x86 default observers).

    PyTorch's own x86 default reduces activations to 7 bits, against the overflow of the 16-bit
    intermediate sums of fbgemm's kernels on CPUs without VNNI instructions; on CPUs with VNNI (and
    on onednn) the full range is exact, and it halves the activation rounding error."""
    with quiet_ao():
        return torch.ao.quantization.QConfig(
            activation=torch.ao.quantization.HistogramObserver.with_args(reduce_range=reduce_range),
            weight=torch.ao.quantization.default_per_channel_weight_observer)


def wrap_static(net: nn.Module, names: list[str], reduce_range: bool = False) -> None:
    """Wrap the leaves ``names`` of ``net`` for static quantization and insert the observers."""
    torch.backends.quantized.engine = ENGINE
    qconfig = static_qconfig(reduce_range)
    for name in names:
        wrapper = torch.ao.quantization.QuantWrapper(net.get_submodule(name))
        wrapper.qconfig = qconfig
        replace(net, name, wrapper)
    with quiet_ao():
        torch.ao.quantization.prepare(net, inplace=True)


def convert_static(net: nn.Module) -> None:
    """Replace the observed wrappers of ``net`` by int8 modules (``torch.ao`` ``convert``)."""
    torch.backends.quantized.engine = ENGINE
    with quiet_ao():
        torch.ao.quantization.convert(net, inplace=True)


def per_channel_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(int8 values, float32 scale per output channel)`` of ``weight``: symmetric per-channel
    quantization with the scale of ``torch.ao``'s ``PerChannelMinMaxObserver``."""
    with quiet_ao():
        obs = torch.ao.quantization.PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        obs(weight.detach().float())
        scale, zero = obs.calculate_qparams()
        q = torch.quantize_per_channel(weight.detach().float(), scale.double(), zero, 0, torch.qint8)
    return q.int_repr(), scale.float()


class WeightOnlyInt8(nn.Module):
    """A ``Linear``/``Conv1d``/``Conv2d`` whose weight is stored as int8 per output channel and
    dequantized at each call (float activations and accumulation).

    Args:
        layer: the float layer (its options: stride, padding, ... are kept).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise TypeError(f"WeightOnlyInt8 takes a {', '.join(c.__name__ for c in QUANTIZABLE)}, "
                            f"got {type(layer).__name__}")
        q, scale = per_channel_int8(layer.weight)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.kind = type(layer).__name__
        self.options = ({} if isinstance(layer, nn.Linear) else
                        {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation,
                         "groups": layer.groups})
        if getattr(layer, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"padding_mode={layer.padding_mode!r} is not supported (only 'zeros')")

    def weight(self) -> Tensor:
        """The dequantized weight (float32)."""
        shape = (-1,) + (1,) * (self.weight_int8.ndim - 1)
        return self.weight_int8.float() * self.weight_scale.view(shape)

    def forward(self, x: Tensor) -> Tensor:
        """The layer's output with the dequantized weight."""
        w = self.weight()
        if self.kind == "Linear":
            return nn.functional.linear(x, w, self.bias)
        conv = nn.functional.conv1d if self.kind == "Conv1d" else nn.functional.conv2d
        return conv(x, w, self.bias, **self.options)


def to_weight_only(net: nn.Module, names: list[str]) -> None:
    """Replace the leaves ``names`` of ``net`` by :class:`WeightOnlyInt8` layers."""
    for name in names:
        replace(net, name, WeightOnlyInt8(net.get_submodule(name)))
