"""The compiled per-sample loop as one ``while_loop`` graph (:mod:`timestepper.loop.device_loop`):
it runs every attempt after the first, agrees with the eager loop step for step, counts the
evaluations the same way, stops on the same failures with the same errors, carries gradients,
and gives way to one compiled call per attempt when it cannot be captured.

These use the dynamo-only ``aot_eager`` backend (the same graphs without code generation); the
inductor run with its C++ wrapper is marked slow.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import timestepper as ts
from timestepper.loop.compiled import CompileFallbackWarning
from timestepper.loop.device_loop import _Packing, flatten, loop_compile_options, unflatten

F64 = torch.float64
FAST = {"backend": "aot_eager"}


def _vdp(b: int = 6, t1: float = 3.0):
    mu = torch.linspace(0.5, 3.0, b, dtype=F64)
    y0 = torch.zeros(b, 2, dtype=F64)
    y0[:, 0] = 2.0

    def f(t, y):
        x, v = y[:, 0], y[:, 1]
        return torch.stack([v, mu * (1 - x * x) * v - x], dim=1)

    return ts.ODETerm(f), y0, t1


def _solve(term, y0, t1, compile, solver="dopri5", **kw):
    """``integrate`` over ``(0, t1)`` (or the span ``t1``) with no compile fallback allowed."""
    ctrl = kw.pop("ctrl", ts.PIDController(rtol=1e-7, atol=1e-7))
    span = t1 if isinstance(t1, tuple) else (0.0, t1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileFallbackWarning)
        return ts.integrate(term, solver, ctrl, y0, t_span=span, compile=compile, **kw)


@pytest.mark.parametrize("solver", ["dopri5", "tsit5", "bosh3", "dopri8"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per-sample", "shared"])
def test_loop_runs_every_attempt_after_the_first_and_matches_eager(solver, per_sample):
    term, y0, t1 = _vdp()
    eager = _solve(term, y0, t1, False, solver, per_sample=per_sample)
    looped = _solve(term, y0, t1, FAST, solver, per_sample=per_sample)
    steps = int(torch.as_tensor(looped.stats.steps).max())
    assert looped.extras["loop_attempts"] == steps - 1 > 10
    assert torch.allclose(looped.x, eager.x, rtol=1e-10, atol=1e-12)
    for name in ("nfe", "steps", "accepted", "rejected"):
        got, want = (torch.as_tensor(getattr(sol.stats, name)) for sol in (looped, eager))
        assert torch.equal(got, want), name


def test_pi_controller_history_is_carried_through_the_loop():
    """A PI controller's error history starts as floats and becomes tensors after the first step:
    the first attempt, traced before the loop, settles that structure."""
    term, y0, t1 = _vdp()
    ctrl = ts.PIDController(rtol=1e-7, atol=1e-7, pcoeff=0.2, icoeff=0.4)
    eager = _solve(term, y0, t1, False, per_sample=True, ctrl=ctrl)
    looped = _solve(term, y0, t1, FAST, per_sample=True, ctrl=ctrl)
    assert looped.extras["loop_attempts"] > 10
    assert torch.allclose(looped.x, eager.x, rtol=1e-10, atol=1e-12)
    assert torch.equal(looped.stats.accepted, eager.stats.accepted)


def test_max_steps_inside_the_loop():
    k = torch.tensor([[0.1], [50.0]], dtype=F64)
    term = ts.ODETerm(lambda t, y: -k * torch.sin(k * t.reshape(-1, 1)) * torch.ones_like(y))
    y0 = torch.zeros(2, 1, dtype=F64)
    ctrl = ts.PIDController(rtol=1e-8, atol=1e-8)
    sol = _solve(term, y0, 5.0, FAST, per_sample=True, ctrl=ctrl, max_steps=40, on_failure="return")
    assert sol.status.tolist() == [ts.Status.SUCCESS, ts.Status.MAX_STEPS]
    assert int(sol.stats.steps[1]) == 40
    with pytest.raises(ts.MaxStepsError, match="max_steps=40"):
        _solve(term, y0, 5.0, FAST, per_sample=True, ctrl=ctrl, max_steps=40)


def test_a_nonfinite_sample_stops_the_loop_with_the_eager_error():
    bad = torch.tensor([True, False, False])

    def field(t, y):
        return torch.where(bad[:, None], y * math.nan, -y)

    y0 = torch.ones(3, 2, dtype=F64)
    sol = _solve(ts.ODETerm(field), y0, 1.0, FAST, per_sample=True, on_failure="return")
    assert sol.status.tolist() == [ts.Status.NONFINITE, ts.Status.SUCCESS, ts.Status.SUCCESS]
    assert torch.allclose(sol.x[1:], torch.full((2, 2), math.exp(-1.0), dtype=F64), rtol=1e-6)
    with pytest.raises(ts.NonFiniteError, match="sample 0: the proposals from t=0 were NaN/inf"):
        _solve(ts.ODETerm(field), y0, 1.0, FAST, per_sample=True)


def test_gradients_flow_through_the_loop():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    term = ts.ODETerm(lambda t, y: net(y))
    y0 = torch.randn(5, 2, dtype=F64, requires_grad=True)
    grads = []
    for compile in (False, FAST):
        net.zero_grad()
        y0.grad = None
        sol = _solve(term, y0, 2.0, compile, "tsit5", per_sample=True)
        sol.x.square().sum().backward()
        grads.append((net[0].weight.grad.clone(), y0.grad.clone(), sol.extras["loop_attempts"]))
    assert grads[1][2] > 3
    assert torch.allclose(grads[1][0], grads[0][0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(grads[1][1], grads[0][1], rtol=1e-10, atol=1e-12)


def test_an_uncapturable_loop_gives_way_to_one_compiled_call_per_attempt(monkeypatch):
    """When the loop cannot be one graph, nothing of it ran: the per-attempt path finishes the
    solve, with the same steps, and no warning (the step itself compiled)."""
    import timestepper.loop.per_sample as per_sample

    def refuse(*args):
        raise NotImplementedError("the carried state changes structure from step to step")

    loops = per_sample.CompiledLoops(per_sample._device_solve, compiler=lambda fn, **options: refuse)
    monkeypatch.setattr(per_sample, "LOOPS", loops)
    term, y0, t1 = _vdp()
    eager = _solve(term, y0, t1, False, per_sample=True)
    looped = _solve(term, y0, t1, FAST, per_sample=True)
    assert looped.extras["loop_attempts"] == 0
    assert torch.equal(looped.stats.accepted, eager.stats.accepted)
    assert torch.equal(looped.stats.nfe, eager.stats.nfe)
    assert torch.allclose(looped.x, eager.x, rtol=1e-10, atol=1e-12)
    reason = "NotImplementedError: the carried state changes structure from step to step"
    assert list(loops.uncaptured.values()) == [reason]


def test_flatten_round_trip_keeps_structure_and_leaves():
    from timestepper.core.controllers import PIDState

    obj = ({"a": torch.ones(2), "b": [torch.zeros(1), 3]}, PIDState(torch.ones(2), 1.0, torch.ones(2), 5), None)
    tensors, spec = flatten(obj)
    assert len(tensors) == 4
    back = unflatten(spec, [t + 1 for t in tensors])
    assert back[0]["b"][1] == 3 and back[1].error_order == 5 and back[1].prev == 1.0 and back[2] is None
    assert torch.equal(back[1].prev2, torch.full((2,), 2.0))
    assert flatten(back)[1] == spec
    assert flatten(PIDState(torch.ones(2), torch.ones(2)))[1] != flatten(PIDState(torch.ones(2), 1.0))[1]


def test_packing_groups_small_real_tensors_by_dtype_and_round_trips():
    g = torch.Generator().manual_seed(0)
    values = [torch.zeros((), dtype=torch.int64), torch.randn(8, 2, generator=g, dtype=torch.float64),
              torch.tensor(3, dtype=torch.int64), torch.randn(8, generator=g, dtype=torch.float64),
              torch.ones(8, dtype=torch.bool), torch.randn(4, 3, dtype=torch.complex128),
              torch.randn(_Packing.SMALL + 1, generator=g, dtype=torch.float64), torch.zeros(5, dtype=torch.bool)]
    packing = _Packing(values)
    carried = packing.pack(values)
    # complex and large tensors travel as they are, then one pack per dtype (int64, float64, bool)
    assert carried[0] is values[5] and carried[1] is values[6] and len(carried) == 5
    assert sorted(str(c.dtype) for c in carried[2:]) == ["torch.bool", "torch.float64", "torch.int64"]
    back = packing.unpack(carried)
    assert all(b.shape == v.shape and b.dtype == v.dtype and torch.equal(b, v) for b, v in zip(back, values))


def test_loop_options_drop_dynamic_floats_and_use_the_cpp_wrapper_on_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert loop_compile_options({"dynamic": True, "fullgraph": True}, cpu) == {
        "dynamic": None, "fullgraph": True, "options": {"cpp_wrapper": True, "cpp.enable_tiling_heuristics": False}}
    assert "options" not in loop_compile_options({"dynamic": True}, cuda)
    assert "options" not in loop_compile_options({"backend": "aot_eager"}, cpu)
    assert loop_compile_options({"options": {"max_autotune": True}}, cpu)["options"] == {"max_autotune": True}


@pytest.mark.slow
def test_inductor_loop_with_cpp_wrapper_matches_eager():
    term, y0, t1 = _vdp(16)
    eager = _solve(term, y0, t1, False, per_sample=True)
    looped = _solve(term, y0, t1, True, per_sample=True)
    assert looped.extras["loop_attempts"] > 10
    assert torch.allclose(looped.x, eager.x, rtol=1e-10, atol=1e-12)
    assert torch.equal(looped.stats.nfe, eager.stats.nfe)


def test_a_field_that_cannot_be_captured_does_not_block_the_loop_for_other_fields():
    def host_read(t, y):
        if float(y.abs().max().item()) > 1e6:  # a host read: no graph of it
            raise RuntimeError("blow-up")
        return -y

    y0 = torch.ones(4, 2, dtype=F64)
    with pytest.warns(CompileFallbackWarning):
        ts.integrate(ts.ODETerm(host_read), "tsit5", ts.PIDController(rtol=1e-6, atol=1e-6), y0,
                     t_span=(0.0, 1.0), per_sample=True, compile=FAST)
    term, y0, t1 = _vdp()
    assert _solve(term, y0, t1, FAST, "tsit5", per_sample=True).extras["loop_attempts"] > 10


def test_backward_in_time_and_per_sample_intervals():
    term, y0, _ = _vdp()
    ctrl = ts.PIDController(rtol=1e-7, atol=1e-7)
    t1 = torch.linspace(1.0, 2.5, y0.shape[0], dtype=F64)
    for span in ((2.0, 0.0), (torch.zeros(y0.shape[0], dtype=F64), t1)):
        eager = ts.integrate(term, "tsit5", ctrl, y0, t_span=span, per_sample=True)
        looped = _solve(term, y0, span, FAST, "tsit5", per_sample=True, ctrl=ctrl)
        assert looped.extras["loop_attempts"] > 5
        assert torch.allclose(looped.x, eager.x, rtol=1e-10, atol=1e-12)
        assert torch.equal(looped.extras["t"], eager.extras["t"])
        assert torch.equal(looped.stats.nfe, eager.stats.nfe)



def test_clone_tensors_copies_every_tensor_and_keeps_the_rest():
    from timestepper.core.controllers import PIDState
    from timestepper.loop.compiled import clone_tensors, replays_cuda_graphs

    obj = ([torch.ones(2)], {"s": PIDState(torch.zeros(3), 1.0)}, 7)
    out = clone_tensors(obj)
    assert out[0][0] is not obj[0][0] and torch.equal(out[0][0], obj[0][0])
    assert out[1]["s"].dt is not obj[1]["s"].dt and out[1]["s"].prev == 1.0 and out[2] == 7
    assert replays_cuda_graphs({"mode": "reduce-overhead"}) and not replays_cuda_graphs({"dynamic": True})
    assert not replays_cuda_graphs(None)
