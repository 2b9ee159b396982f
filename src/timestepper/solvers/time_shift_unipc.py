"""Time-Shift UniPC: the Time-Shift Sampler's rule (Li et al., ICLR 2024; :mod:`~timestepper.solvers.time_shift`)
on the UniPC predictor-corrector (Zhao et al. 2023; :mod:`~timestepper.solvers.unipc`).

The paper shifts DDIM and the multistep DPM-Solvers; UniPC is a multistep method of the same
family, and on few steps often the best one, so its shifted form is what a tuned schedule needs
where UniPC beats DPM-Solver. Step ``i`` of UniPC calls the model once, at the predicted state
``x_i``; that output corrects ``x_i`` (UniC, from the previous start ``x_{i-1}``) and feeds the next
prediction (UniP). With the shift, each sample's output is taken at the window time ``t'_i`` whose
noise level matches the variance of ``x_i`` (the same rule and candidates as TS-DPM-Solver), and
every log-SNR of a node is the shifted one:

* UniC integrates from the previous (shifted) start ``lambda'_{i-1}`` to the nominal ``lambda_i``;
  its new output sits at ``lambda'_i``, so its offset ``r = (lambda'_i - lambda'_{i-1}) / h`` enters
  the system and the difference ``(m_i - m_{i-1}) / r`` in place of ``r = 1``
  (:func:`~timestepper.solvers.unipc.unipc_weights`, ``new_log_snr``);
* UniP starts from ``lambda'_i`` with the history at ``lambda'_{i-1}, ...``, to the nominal
  ``lambda_{i+1}``.

Both sets of weights depend on which candidate each node took; they are tabulated once per grid,
in float64, for every combination (``(w + 1)^(p + 1)`` for predictor order ``p``) with UniPC's own
coefficient rule evaluated on the batch of grids of the combinations, and a step gathers each
sample's weights by index: no host synchronisation, no data-dependent Python branch. Window 0 (or
a cutoff above the grid) is UniPC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.term import EvalPoint
from .expint import PhiTable
from .registry import register
from .time_shift import (
    Candidates,
    TimeShift,
    combination_index,
    device_column,
    grid_point,
    node_combinations,
    per_sample,
)
from .unipc import UniPC, UniPCRow, unipc_weights


@dataclass(slots=True)
class ShiftedUniPCRow:
    """A UniPC step one of whose nodes was shifted: ``pcx[c]``, ``pw[:, c]`` (UniP) and ``ccx[c]``,
    ``cw[:, c]`` (UniC; ``cw=None``: no correction) for candidate combination ``c``
    (:class:`~timestepper.solvers.time_shift.NodeCombinations`)."""

    point: EvalPoint
    cand: Candidates | None
    pcx: Tensor
    pw: Tensor
    ccx: Tensor | None
    cw: Tensor | None
    strides: tuple[int | None, ...]


class TimeShiftUniPC(TimeShift, UniPC):
    """Time-Shift UniPC (module docstring). One model call per step.

    Args:
        order, variant, lower_order_final, disable_corrector: as :class:`~timestepper.solvers.unipc.UniPC`.
        window, cutoff, time_step, data_variance: as
            :class:`~timestepper.solvers.time_shift.TimeShiftSampler` (``(window + 1)^(order + 1)``
            combinations are tabulated per step).
    """

    def __init__(  # noqa: PLR0913 - UniPC's options plus the shift's
        self,
        order: int = 2,
        variant: str = "bh2",
        window: int = 10,
        cutoff: float | None = None,
        time_step: float | None = None,
        data_variance: float = 0.0,
        lower_order_final: bool = True,
        disable_corrector: tuple[int, ...] = (),
    ) -> None:
        UniPC.__init__(self, order, variant, lower_order_final, disable_corrector)
        self.init_shift(window, cutoff, time_step, data_variance, self.predictor_order + 1, self.predictor_order)

    def start_state(self, x0):
        return (), ()

    def table(self, term, grid, points, x0):
        cands = self.shift_candidates(term.schedule, grid)
        orders, phis = self.orders_and_phis(grid)
        rows: list[UniPCRow | ShiftedUniPCRow] = []
        for i in range(grid.steps):
            k, k_c = self.step_orders_at(grid, i, orders)
            nodes = list(range(min(i - k + 1, i - k_c), i + 1))  # oldest first, every node either update uses
            if not any(n in cands for n in nodes):
                rows.append(self.row(grid, i, orders, phis, points[i]))
            else:
                cand = self.candidates(term, cands[i], x0) if i in cands else None
                rows.append(self.shifted_row(grid, i, k, k_c, nodes, cands, points[i], cand, x0))
        return rows

    def shifted_row(self, grid, i, k, k_c, nodes, cands, point, cand, x0) -> ShiftedUniPCRow:  # noqa: PLR0913
        """UniP's and UniC's weights of step ``i`` for every candidate combination of ``nodes``
        (UniPC's own rule on the batch of grids of the combinations, float64, moved once)."""
        combos = node_combinations(grid, nodes, cands)
        none = PhiTable([], 0)
        pgrid = combos.grid(list(range(i - k + 1, i + 1)), grid_point(grid, i + 1))
        pcx, pw = unipc_weights(pgrid, k - 1, k, k, self.variant, False, none)
        ccx = cw = None
        if k_c:
            cgrid = combos.grid(list(range(i - k_c, i)), grid_point(grid, i))
            c, w = unipc_weights(cgrid, k_c - 1, k_c, k_c, self.variant, True, none,
                                 new_log_snr=combos.fields[i][3])
            ccx = device_column(c, combos.count, x0)
            cw = torch.stack([device_column(v, combos.count, x0) for v in w])
        return ShiftedUniPCRow(point, cand, device_column(pcx, combos.count, x0),
                               torch.stack([device_column(v, combos.count, x0) for v in pw]), ccx, cw, combos.strides)

    def advance(self, term, x, state, row):
        # state = ((x_{i-1}, m_{i-1}, m_{i-2}, ...), (candidate of i-1, of i-2, ...))
        hist, idxs = state
        keep = self.predictor_order
        if type(row) is UniPCRow:
            out, new_hist, _, nfe = UniPC.advance(self, term, x, hist, row)
            return out, (new_hist, (None, *idxs)[:keep]), None, nfe
        m, k_now = self.evaluate(term, x, row.point, row.cand)
        preds, hidx = (m, *hist[1:]), (k_now, *idxs)
        combo = combination_index(hidx, row.strides)
        if row.cw is not None:
            x = per_sample(row.ccx, combo, x) * hist[0]
            for j in range(row.cw.shape[0]):
                x = x + preds[j] * per_sample(row.cw[j], combo, x)
        out = x * per_sample(row.pcx, combo, x)
        for j in range(row.pw.shape[0]):
            out = out + preds[j] * per_sample(row.pw[j], combo, x)
        return out, ((x, *preds[:keep]), hidx[:keep]), None, 1


register("ts-unipc-bh1", TimeShiftUniPC, variant="bh1",
         summary="Time-Shift UniPC-bh1: UniPC with the Time-Shift Sampler's shifted start times "
                 "(Li et al. 2024 on Zhao et al. 2023). One model call per step.")
register("ts-unipc-bh2", TimeShiftUniPC, variant="bh2",
         summary="Time-Shift UniPC-bh2: UniPC with the Time-Shift Sampler's shifted start times "
                 "(Li et al. 2024 on Zhao et al. 2023). One model call per step.")

__all__ = ["ShiftedUniPCRow", "TimeShiftUniPC"]
