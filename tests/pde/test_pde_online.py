"""Online training from running solvers (Meyer et al. 2023): the training buffers' exact eviction
and draw rules (seeded, no Ray), the window cutting, and the Ray stream end to end on a tiny
Kuramoto-Sivashinsky problem (one local Ray with 2 CPUs per module, in a temporary folder)."""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time

import pytest
import torch

from timestepper import pde
from timestepper.pde.buffer import FIFOBuffer, FIROBuffer, ReservoirBuffer, make_buffer
from timestepper.pde.data import GenerationConfig, generate
from timestepper.pde.models import FNO1d
from timestepper.pde.online import OnlineConfig, connect_ray, require_ray, train_online, windows_of
from timestepper.pde.train import sample_windows


def _items(n: int) -> list[torch.Tensor]:
    return [torch.tensor([float(i)]) for i in range(n)]


def _ids(batch: torch.Tensor) -> list[int]:
    return [int(v) for v in batch[:, 0]]


# --- buffers -------------------------------------------------------------------------------------


def test_fifo_serves_oldest_first_removes_them_and_refuses_when_full():
    buf = FIFOBuffer(4, threshold=1)
    assert [buf.put(x) for x in _items(5)] == [True, True, True, True, False]
    g = torch.Generator().manual_seed(0)
    assert buf.can_sample(3) and not buf.can_sample(4)  # one sample must stay (threshold)
    assert _ids(buf.sample(2, g)) == [0, 1]
    assert len(buf) == 2 and _ids(buf.held()) == [2, 3]
    assert buf.put(torch.tensor([9.0]))
    assert _ids(buf.sample(2, g)) == [2, 3]
    assert not buf.can_sample(2)
    with pytest.raises(RuntimeError, match="needs 3 while data still arrives"):
        buf.sample(2, g)
    buf.close()  # no more data: the threshold stops applying, a short last batch drains it
    assert _ids(buf.sample(2, g)) == [9] and len(buf) == 0 and not buf.can_sample(1)
    assert (buf.received, buf.served, buf.evicted) == (5, 5, 0)
    with pytest.raises(RuntimeError, match="closed buffer"):
        buf.put(torch.tensor([1.0]))


def test_firo_draws_a_seeded_random_subset_without_replacement_and_removes_it():
    buf = FIROBuffer(8)
    for x in _items(8):
        assert buf.put(x)
    expected = torch.randperm(8, generator=torch.Generator().manual_seed(3))[:3].tolist()
    got = _ids(buf.sample(3, torch.Generator().manual_seed(3)))
    assert got == expected and len(set(got)) == 3
    assert sorted(_ids(buf.held())) == sorted(set(range(8)) - set(got))
    assert _ids(buf.held()) == sorted(_ids(buf.held()))  # survivors keep arrival order
    assert (buf.times_served() == 0).all()  # served samples are gone


def test_reservoir_keeps_served_samples_and_replaces_only_served_ones():
    buf = ReservoirBuffer(4, threshold=2, seed=5)
    for x in _items(4):
        assert buf.put(x)
    assert not buf.put(torch.tensor([10.0]))  # full and nothing served yet: the producer waits
    g = torch.Generator().manual_seed(1)
    draws = torch.randint(4, (3,), generator=torch.Generator().manual_seed(1)).tolist()
    assert _ids(buf.sample(3, g)) == draws  # with replacement, not removed
    assert len(buf) == 4
    served = sorted(set(draws))
    assert buf.times_served().tolist() == [draws.count(i) for i in range(4)]
    pick = torch.randint(len(served), (1,), generator=torch.Generator().manual_seed(5))
    victim = served[int(pick)]
    assert buf.put(torch.tensor([10.0]))
    held = _ids(buf.held())
    assert held[victim] == 10 and sorted(held[:victim] + held[victim + 1 :]) == sorted(set(range(4)) - {victim})
    assert buf.times_served()[victim] == 0 and buf.evicted == 1
    # every put now evicts only served samples: the unserved ones survive any number of puts
    unserved = set(range(4)) - set(served)
    for k in range(11, 40):
        if not buf.put(torch.tensor([float(k)])):
            break
    assert unserved <= set(_ids(buf.held()))


def test_reservoir_threshold_gates_the_first_batch_only_while_data_arrives():
    buf = ReservoirBuffer(8, threshold=3)
    buf.put(torch.zeros(1))
    buf.put(torch.ones(1))
    assert not buf.can_sample(16)
    buf.close()
    assert buf.can_sample(16) and buf.sample(16, torch.Generator()).shape == (16, 1)


def test_buffer_arguments_are_checked():
    with pytest.raises(ValueError, match="buffer must be one of"):
        make_buffer("lifo", 4)
    with pytest.raises(ValueError, match="threshold must be an integer in"):
        FIFOBuffer(4, threshold=4)
    with pytest.raises(ValueError, match="capacity must be an integer >= 1"):
        ReservoirBuffer(0)
    buf = FIFOBuffer(4)
    buf.put(torch.zeros(2))
    with pytest.raises(ValueError, match="sample shape"):
        buf.put(torch.zeros(3))


# --- windows and configuration -------------------------------------------------------------------


def test_windows_of_lists_every_window_sample_windows_can_draw():
    traj = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)
    all_windows = windows_of(traj, frames_per_step=2, length=3)
    assert all_windows.shape == (2 * 3, 3, 3)
    torch.testing.assert_close(all_windows[4], traj[1, 1:6:2])
    drawn = sample_windows(traj, 20, 2, 3, torch.Generator().manual_seed(0)).transpose(0, 1)
    keys = {tuple(w.flatten().tolist()) for w in all_windows}
    assert all(tuple(w.flatten().tolist()) in keys for w in drawn)


def test_online_config_is_checked():
    with pytest.raises(ValueError, match="buffer must be one of"):
        OnlineConfig(buffer="lru")
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        OnlineConfig(workers=0)
    with pytest.raises(ValueError, match="buffer_size=8 is too small"):
        OnlineConfig(buffer="fifo", buffer_size=8).threshold_for(batch_size=8)
    assert OnlineConfig(buffer="reservoir", buffer_size=9).threshold_for(batch_size=8) == 8


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'timestepper\[ray\]'"):
        require_ray()


def test_unreachable_ray_address_fails_fast_and_clearly():
    pytest.importorskip("ray", reason="ray is an optional extra: pip install 'timestepper[ray]'")
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"ray_address='127.0.0.1:1' cannot be reached within 2 s"):
        connect_ray(1, "127.0.0.1:1", timeout_s=2.0)
    assert time.perf_counter() - start < 30  # ray.init itself would retry for minutes
    with pytest.raises(ValueError, match="ray_address must be 'host:port'"):
        connect_ray(1, "no-port-here", timeout_s=1.0)


# --- on Ray --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for this module, in its own short temporary folder (Ray's socket
    paths must fit 107 bytes), shut down and removed afterwards."""
    ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'timestepper[ray]'")
    if ray.is_initialized():
        ray.shutdown()
    ray_dir = tempfile.mkdtemp(prefix="tsray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
    yield ray
    ray.shutdown()
    shutil.rmtree(ray_dir, ignore_errors=True)


def _tiny():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    data = GenerationConfig(dt=0.25, save_every=2, duration=2.0, t_burn_in=1.0)
    return eq, data


@pytest.mark.slow
def test_ray_stream_delivers_exactly_the_windows_of_the_offline_data_set(local_ray):
    from timestepper.pde.online import _SolverStream

    eq, data = _tiny()
    online = OnlineConfig(workers=2, trajectories=5, trajectories_per_task=2, buffer="fifo", buffer_size=10**4)
    buf = make_buffer("fifo", 10**4)
    stream = _SolverStream(eq, data, online, (1, 2))
    while not stream.exhausted:
        stream.pump(buf, block=True)
    offline = windows_of(generate(eq, 5, data), 1, 2)
    received = buf.held()
    assert stream.trajectories == 5 and received.shape == offline.shape
    order = lambda w: sorted(w.flatten(1).tolist())  # noqa: E731 - arrival order varies
    assert order(received) == order(offline)  # bit for bit


@pytest.mark.slow
def test_train_online_on_ray_fifo_serves_every_window_once(local_ray):
    eq, data = _tiny()
    torch.manual_seed(0)
    model = pde.OneStepSurrogate(FNO1d(width=8, modes=4, layers=2), residual=True)
    before = [p.detach().clone() for p in model.parameters()]
    train = pde.TrainConfig(iterations=1000, batch_size=8, seed=0)
    online = OnlineConfig(workers=2, trajectories=4, buffer="fifo", buffer_size=64, threshold=4)
    seen = []
    res = train_online(eq, model, train, data, online, callback=lambda it, m: seen.append(it))
    windows = 4 * (data.frames - 1)
    assert (res.trajectories, res.windows, res.served, res.evicted) == (4, windows, windows, 0)
    assert res.iterations == math.ceil(windows / 8) == len(res.losses) == len(seen) == seen[-1]
    assert all(math.isfinite(x) for x in res.losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert local_ray.is_initialized()  # the caller's session is left running


@pytest.mark.slow
def test_train_online_on_ray_reservoir_runs_the_asked_iterations(local_ray):
    eq, data = _tiny()
    model = pde.OneStepSurrogate(FNO1d(width=8, modes=4, layers=2), residual=True)
    train = pde.TrainConfig(iterations=25, batch_size=4, unroll=1, seed=1)
    online = OnlineConfig(workers=2, trajectories=3, buffer="reservoir", buffer_size=16, threshold=8)
    res = train_online(eq, model, train, data, online)
    assert res.iterations == 25 and res.served == 25 * 4
    assert 1 <= res.trajectories <= 3 and res.windows <= 3 * (data.frames - 2)
    assert res.windows - res.evicted <= 16  # never more than the capacity held


def _cli(argv: list[str]) -> int:
    from timestepper.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


@pytest.mark.slow
def test_pde_train_online_from_the_command_line(local_ray, tmp_path):
    """``pde train DATA --online`` generates fresh trajectories with DATA's recipe on Ray and
    writes a checkpoint that ``pde eval`` reads; the recipe is the file's equation and settings."""
    pytest.importorskip("h5py")
    pytest.importorskip("safetensors")
    from timestepper.pde.checkpoint import read_surrogate_config
    from timestepper.pde.data import read_hdf5, recipe_from_attrs

    eq, data = _tiny()
    path = tmp_path / "ks.h5"
    splits = {"train": pde.generate(eq, 2, data), "test": pde.generate(eq, 2, data, split="test")}
    pde.write_hdf5(path, eq, data, splits)
    rebuilt, recipe = recipe_from_attrs(read_hdf5(path)[1])
    assert recipe == data and type(rebuilt) is type(eq) and rebuilt.n == eq.n and rebuilt.length == eq.length
    out = tmp_path / "run"
    assert _cli(["pde", "train", str(path), "--out", str(out), "--online", "--online-trajectories", "4",
                 "--buffer", "fifo", "--buffer-size", "64", "--steps", "5", "--batch-size", "4", "--model", "fno",
                 "--width", "4", "--modes", "4", "--layers", "1", "--no-progress"]) == 0
    cfg = read_surrogate_config(out)
    assert cfg["training"]["online"] == {"trajectories": 4, "buffer": "fifo"}
    assert _cli(["pde", "eval", str(out), str(path)]) == 0


def test_pde_train_online_options_are_checked(tmp_path):
    from timestepper.cli_args import UsageError

    with pytest.raises(UsageError, match="--ray-address applies to --online"):
        _cli(["pde", "train", "x.h5", "--out", str(tmp_path / "o"), "--ray-address", "127.0.0.1:1"])
    pytest.importorskip("ray")
    with pytest.raises(UsageError, match="one data file as the generation recipe"):
        _cli(["pde", "train", "a.h5", "b.h5", "--out", str(tmp_path / "o"), "--online"])
    with pytest.raises(UsageError, match="not resumable"):
        _cli(["pde", "train", "a.h5", "--out", str(tmp_path / "o"), "--online", "--resume"])
