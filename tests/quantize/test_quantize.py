"""Quantized denoisers: close to full precision, with every deterministic solver and the diffusers
Scheduler loop; NDTC's draw; the temporal cache equals the full-precision features on the grid."""

from __future__ import annotations

import pytest
import torch

import timestepper as ts
from timestepper import quantize as tq
from timestepper.bench.runner import deterministic_solvers
from timestepper.integrations.diffusers import Scheduler
from timestepper.quantize.layers import WeightOnlyInt8

from .conftest import CAL, SHAPE, noise, rel

# relative L2 error of a sample against full precision, 6 steps on the tiny random U-Net
BOUND = {"ptq4dm": 0.03, "weight-only": 0.015, "tfmq": 0.03, "tfm": 0.03}
# relative L2 error of one evaluation on trajectory inputs
BOUND_ONE = {"ptq4dm": 0.06, "weight-only": 0.025, "tfmq": 0.06, "tfm": 0.06}


@pytest.mark.parametrize("method", tq.METHODS)
def test_one_evaluation_is_close_to_full_precision(teacher, quantized, method):
    """On inputs of the full-precision trajectory (another seed than the calibration's)."""
    x, t = tq.calibration_set(teacher, SHAPE, tq.Calibration(steps=6, samples=64, grid="uniform", seed=5))
    assert rel(quantized[method](x, t), teacher(x, t)) < BOUND_ONE[method]


@pytest.mark.parametrize("method", tq.METHODS)
def test_the_int8_layers_are_torch_ao_modules(quantized, method):
    kinds = {type(m).__module__.split(".")[0:4] == ["torch", "ao", "nn", "quantized"]
             for m in quantized[method].model_fn.modules()}
    if method == "weight-only":
        assert any(isinstance(m, WeightOnlyInt8) for m in quantized[method].model_fn.modules())
        assert kinds == {False}
    else:
        assert True in kinds  # converted torch.ao.nn.quantized Conv2d/Linear


def test_static_int8_runs_int8_kernels(quantized):
    conv = quantized["ptq4dm"].model_fn.net.inp.module
    assert isinstance(conv, torch.ao.nn.quantized.Conv2d)
    assert conv.weight().dtype == torch.qint8


@pytest.mark.slow
@pytest.mark.parametrize("solver", deterministic_solvers())
def test_every_deterministic_solver(teacher, quantized, solver):
    z = noise()
    try:
        ref = ts.sample(teacher, z, solver, 6, "uniform")
    except ValueError:
        pytest.skip(f"{solver} does not run 6 uniform steps on a flow")
    for method, q in quantized.items():
        if method in ("tfmq", "tfm"):
            tq.add_grid(q, SHAPE, solver, 6, "uniform")
        out = ts.sample(q, z, solver, 6, "uniform")
        assert torch.isfinite(out).all()
        assert rel(out, ref) < BOUND[method], (solver, method)


def test_diffusers_scheduler_loop(teacher, quantized):
    """Quantized models in the diffusers Scheduler drop-in's pipeline loop (a flow: the scheduler's
    timesteps are ``1000 t``) stay close to the full-precision model in the same loop."""
    sched = Scheduler(ts.RectifiedFlowSchedule(), "velocity", solver="dpmpp-2m")

    def loop(den):
        sched.set_timesteps(6)
        x = noise() * sched.init_noise_sigma
        for t in sched.timesteps:
            out = den(sched.scale_model_input(x, t), (t / 1000).reshape(1).expand(x.shape[0]))
            x = sched.step(out, t, x).prev_sample
        return x

    ref = loop(teacher)
    for method, q in quantized.items():
        if method in ("tfmq", "tfm"):
            sched.set_timesteps(6)
            tq.add_times(q, sched.timesteps / 1000)
        assert rel(loop(q), ref) < BOUND[method], method


def test_cached_features_equal_full_precision_on_the_grid(teacher, quantized):
    q = quantized["tfm"]
    tq.add_grid(q, SHAPE, "heun", 5, "uniform")
    keys, tables = tq.cached_temporal_features(q)
    grid = teacher.model_fn.c_noise(tq.evaluation_times(teacher, SHAPE, "heun", 5, "uniform"))
    assert torch.isin(grid, keys).all()
    net = teacher.model_fn.net
    with torch.no_grad():
        emb = net.cond(keys, None, keys.numel())
        for name, table in tables.items():
            torch.testing.assert_close(table, net.get_submodule(name)(emb), rtol=1e-6, atol=1e-7)
    assert q.model_fn.quantization["modes"] == ["fp"] * len(tables)


def test_tfmq_cache_holds_the_quantized_block(teacher, quantized):
    """TFMQ's cached features are the TIAR/FSC block's: close to, not equal to, full precision."""
    keys, tables = tq.cached_temporal_features(quantized["tfmq"])
    net = teacher.model_fn.net
    with torch.no_grad():
        emb = net.cond(keys, None, keys.numel())
        for name, table in tables.items():
            ref = net.get_submodule(name)(emb)
            assert 0 < rel(table, ref) < 0.05, name


def test_a_time_off_the_cached_grid_is_refused(quantized):
    with pytest.raises(ValueError, match="not among the .* cached times"):
        quantized["tfmq"](noise(2), torch.full((2,), 0.123456))


def test_ndtc_draw_follows_the_released_rule():
    gen = torch.Generator().manual_seed(0)
    pos = tq.ndtc_positions(20000, 50, 0.4, 0.4, gen)
    u = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.4 + 0.4
    expected = 49 - (u * 50).trunc().clamp(0, 49).long()
    assert torch.equal(pos, expected)
    k = 49 - pos  # steps from the data end
    assert abs(float(k.double().median()) - 20) <= 1  # mu = 0.4 T, leaning to the data end


def test_calibration_inputs_lie_on_the_full_precision_trajectory(teacher):
    x, t = tq.calibration_set(teacher, SHAPE, CAL)
    gen = torch.Generator().manual_seed(CAL.seed)
    z = torch.randn((CAL.samples, *SHAPE), generator=gen)
    xs, ts_ = tq.record_trajectory(teacher, z, CAL)
    pos = tq.ndtc_positions(CAL.samples, len(xs), CAL.mean, CAL.std, gen)
    for i in (0, 7, 31):
        assert torch.equal(x[i], xs[int(pos[i])][i]) and t[i] == ts_[int(pos[i])][i]
    assert len(xs) == 6  # one evaluation per dpmpp-2m step


@pytest.mark.parametrize("method", tq.METHODS)
def test_save_and_load_give_the_same_model(tmp_path, teacher, quantized, method):
    q = quantized[method]
    tq.save_quantized(tmp_path, q)
    back = tq.load_quantized(tmp_path)
    x, t = noise(4), torch.full((4,), float(tq.evaluation_times(teacher, SHAPE, "dpmpp-2m", 6, "uniform")[2]))
    assert torch.equal(back(x, t), q(x, t))
    assert back.prediction == q.prediction and back.model_fn.quantization["method"] == method
