"""The digits model shared by benchmarks/mmd.py, inversion.py and distill.py (benchmarks/_digits.py)."""

import pytest
import torch

import timestepper as ts

pytest.importorskip("sklearn")
from benchmarks._digits import SHAPE, in_dtype, pretrain_digits  # noqa: E402


@pytest.fixture(scope="module")
def den():
    d, info = pretrain_digits(3, [8, 16])
    assert info["train_steps"] == 3
    return d


def test_pretrain_builds_the_cli_digits_flow(den):
    assert isinstance(den.schedule, ts.RectifiedFlowSchedule) and den.prediction == "velocity"
    x = torch.randn(5, *SHAPE)
    out = den(x, torch.full((5,), 0.5))
    assert out.shape == (5, 1, 8, 8) and out.dtype == torch.float32
    assert den.model_fn.network_spec["kwargs"]["channels"] == [8, 16]


def test_in_dtype_runs_the_network_in_float64_and_leaves_the_original(den):
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 0.3)
    d64 = in_dtype(den, torch.float64)
    out64 = d64(x.double(), t.double())
    out32 = den(x, t)
    assert out64.dtype == torch.float64 and out32.dtype == torch.float32
    assert next(den.model_fn.parameters()).dtype == torch.float32
    assert torch.allclose(out64.float(), out32, rtol=1e-4, atol=1e-4)
    assert not torch.equal(out64, out32.double())  # computed in float64, not upcast afterwards


def test_in_dtype_needs_a_module():
    den = ts.Denoiser(lambda x, t: x, ts.RectifiedFlowSchedule(), "velocity")
    with pytest.raises(TypeError, match="must be an nn.Module"):
        in_dtype(den, torch.float64)


def test_pretrain_builds_the_cli_vp_epsilon_model_and_refuses_other_objectives():
    d, info = pretrain_digits(2, [8, 16], objective="eps")
    assert info["train_steps"] == 2
    assert isinstance(d.schedule, ts.VPDiscreteSchedule) and d.prediction == "epsilon"
    assert d.schedule.num_train_timesteps == 1000
    torch.testing.assert_close(d.schedule.alphas_cumprod, ts.VPDiscreteSchedule.from_betas().alphas_cumprod)
    with pytest.raises(ValueError, match="unknown objective 'v'"):
        pretrain_digits(1, [8, 16], objective="v")


def test_run_and_write_writes_json_and_markdown(tmp_path, capsys):
    import json

    from benchmarks._digits import run_and_write

    threads = torch.get_num_threads()
    try:
        res = run_and_write("demo", lambda log: (log("hello"), {"a": 1})[1], lambda r: f"a = {r['a']}\n",
                            out=tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert res["a"] == 1 and res["total_s"] >= 0
    assert json.loads((tmp_path / "demo.json").read_text())["a"] == 1
    assert (tmp_path / "demo.md").read_text() == "a = 1\n"
    assert "hello" in capsys.readouterr().out
