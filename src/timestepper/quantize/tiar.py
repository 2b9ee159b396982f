"""TFMQ-DM's quantized temporal information block: TIAR weights and FSC activation ranges.

TFMQ-DM (Huang et al. 2024, CVPR, Sec. 4.2-4.3):

* **Temporal information aware reconstruction (TIAR)**: the block's weights are quantized by
  learned rounding (AdaRound; Nagel et al. 2020, eqs. 21-24) with the reconstruction target of the
  block's own outputs -- the temporal features of all residual blocks, loss the sum over features
  of their mean squared errors -- instead of the outputs of the residual blocks that mix in
  ``x_t``. The inputs are the time steps of the finite set only (data-free).
* **Finite set calibration (FSC)**: as ``t`` takes finitely many values, the activation range of
  every layer of the block is calibrated for each time step separately (min-max over that step's
  activation; ``torch.ao``'s ``PerChannelMinMaxObserver`` along the time axis, applied with
  ``torch.fake_quantize_per_channel_affine``), after TIAR, as the released code calibrates the
  activations after the weights.

Since the block's input is the time step alone, its quantized outputs are computed once per time of
the finite set and cached (:mod:`timestepper.quantize.temporal`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .layers import per_channel_int8, quiet_ao

ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the rectified sigmoid (Nagel et al. 2020, eq. 23)


class Block(nn.Module):
    """The temporal information block as one module: ``c -> {consumer: feature}`` (no copies of
    the layers it is built from)."""

    def __init__(self, time_module: nn.Module, consumers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.time = time_module
        self.names = list(consumers)
        self.consumers = nn.ModuleList(consumers.values())

    def forward(self, c: Tensor) -> dict[str, Tensor]:
        """The temporal feature of every consumer at time inputs ``c`` ``(K,)``."""
        emb = self.time(c, None, c.shape[0])
        return {n: m(emb) for n, m in zip(self.names, self.consumers, strict=True)}

    def linears(self) -> list[str]:
        """The names of the block's ``Linear`` layers (the ones TIAR quantizes)."""
        return [n for n, m in self.named_modules() if isinstance(m, nn.Linear)]


def fsc_fake_quant(x: Tensor) -> Tensor:
    """``x`` ``(K, D)`` fake-quantized to 8 bits with one min-max range per row (time step)."""
    with quiet_ao():
        obs = torch.ao.quantization.PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine)
        obs(x.detach())
        scale, zero = obs.calculate_qparams()
    return torch.fake_quantize_per_channel_affine(x, scale.float(), zero.int(), 0, 0, 255)


class QuantizedBlock(nn.Module):
    """The int8 weights (per output channel) of a temporal information block, learned by TIAR.

    Holds no float copies: :meth:`features` runs the float block's structure with these weights and
    FSC activations.

    Args:
        block: the float block (its ``Linear`` layers give the shapes and the starting point).
    """

    def __init__(self, block: Block) -> None:
        super().__init__()
        self.layers = block.linears()
        for i, name in enumerate(self.layers):
            q, scale = per_channel_int8(block.get_submodule(name).weight)
            self.register_buffer(f"w{i}", q)
            self.register_buffer(f"s{i}", scale)

    def weights(self) -> dict[str, Tensor]:
        """The dequantized weights by parameter name of the block."""
        return {f"{n}.weight": getattr(self, f"w{i}").float() * getattr(self, f"s{i}")[:, None]
                for i, n in enumerate(self.layers)}

    def features(self, block: Block, c: Tensor) -> dict[str, Tensor]:
        """The quantized block's temporal features at ``c`` (TIAR weights, FSC activations)."""
        hooks = [block.get_submodule(n).register_forward_pre_hook(lambda m, a: (fsc_fake_quant(a[0]),))
                 for n in self.layers]
        try:
            with torch.no_grad():
                return functional_call(block, self.weights(), (c,))
        finally:
            for h in hooks:
                h.remove()


def tiar(block: Block, c: Tensor, iters: int = 1000, lr: float = 1e-3, reg: float = 0.01,
         warmup: float = 0.2, beta: tuple[float, float] = (20.0, 2.0)) -> QuantizedBlock:
    """TIAR: the block's int8 weights by AdaRound on its temporal features at time inputs ``c``.

    Loss: ``sum_i mean |f_i(c; W_soft) - f_i(c; W)|^2 + reg * sum (1 - |2h - 1|^b)``, the rounding
    term off for the first ``warmup`` fraction of ``iters`` and ``b`` annealed linearly from
    ``beta[0]`` to ``beta[1]`` after it (AdaRound's defaults: 20 to 2, ``reg = 0.01``, Adam
    ``lr = 1e-3``). Activations stay in float here (FSC follows).
    """
    qb = QuantizedBlock(block)
    with torch.no_grad():
        target = {k: v.detach() for k, v in block(c).items()}
    base, scale, alpha = {}, {}, {}
    for i, name in enumerate(qb.layers):
        w = block.get_submodule(name).weight.detach()
        s = getattr(qb, f"s{i}")[:, None]
        floor = torch.floor(w / s)
        rest = (w / s - floor).clamp(1e-4, 1 - 1e-4)
        base[name], scale[name] = floor, s
        alpha[name] = (-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)).requires_grad_(True)
    opt = torch.optim.Adam(alpha.values(), lr=lr)
    start = int(warmup * iters)
    for it in range(iters):
        h = {n: (torch.sigmoid(a) * (ZETA - GAMMA) + GAMMA).clamp(0, 1) for n, a in alpha.items()}
        params = {f"{n}.weight": scale[n] * (base[n] + h[n]).clamp(-128, 127) for n in h}
        out = functional_call(block, params, (c,))
        loss = sum(((out[k] - target[k]) ** 2).mean() for k in target)
        if it >= start:
            b = beta[1] + (beta[0] - beta[1]) * (1 - (it - start) / max(1, iters - start))
            loss = loss + reg * sum((1 - (2 * v - 1).abs().pow(b)).sum() for v in h.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for i, name in enumerate(qb.layers):
            hard = (alpha[name] >= 0).to(base[name].dtype)
            getattr(qb, f"w{i}").copy_((base[name] + hard).clamp(-128, 127).to(torch.int8))
    return qb


def feature_disturbance(reference: dict[str, Tensor], other: dict[str, Tensor]) -> dict[str, float]:
    """Relative squared error ``|f' - f|^2 / |f|^2`` of every temporal feature (over all times)."""
    return {k: float(((other[k] - v) ** 2).sum() / (v**2).sum().clamp_min(math.ulp(1.0)))
            for k, v in reference.items()}
