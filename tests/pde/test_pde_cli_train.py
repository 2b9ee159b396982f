"""``timestepper pde train`` / ``pde eval``, surrogate checkpoints, and the bad input of the PDE
front: odd or too coarse grids, ``dt <= 0``, a ``dt`` that blows up, data of another equation or
resolution than a checkpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import timestepper as ts
from timestepper import pde
from timestepper.cli import build_parser
from timestepper.cli_args import UsageError
from timestepper.pde import metrics
from timestepper.pde.checkpoint import load_surrogate, read_surrogate_config

pytest.importorskip("h5py")
pytest.importorskip("safetensors")

FNO_OPTIONS = ["--model", "fno", "--width", "8", "--modes", "6", "--layers", "2", "--threads", "1",
               "--no-progress"]


def _run(argv: list[str]) -> int:
    """The command's function, so that its exceptions reach the test (``main`` prints them)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def _write(path: Path, eq, n_train: int = 6, n_test: int = 3) -> Path:
    train = pde.GenerationConfig(dt=0.2, save_every=1, duration=2.0, seed=0)
    test = pde.GenerationConfig(dt=0.2, save_every=1, duration=3.2, seed=0)
    pde.write_hdf5(path, eq, test, {"train": pde.generate(eq, n_train, train),
                                    "test": pde.generate(eq, n_test, test, split="test")})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pde-data")
    return {
        "ks": _write(d / "ks.h5", pde.KuramotoSivashinsky(22.0, 32)),
        "ks64": _write(d / "ks64.h5", pde.KuramotoSivashinsky(22.0, 64)),
        "burgers": _write(d / "burgers.h5", pde.Burgers(22.0, 32, nu=0.5)),
    }


def _train(files, out: Path, *extra: str, data: str = "ks") -> int:
    return _run(["pde", "train", str(files[data]), "--out", str(out), "--model-dt", "0.4",
                 "--steps", "12", "--batch-size", "4", *FNO_OPTIONS, *extra])


def test_train_then_eval_records_the_equation_and_measures_the_rollout(files, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(files, out) == 0
    cfg = read_surrogate_config(out)
    assert cfg["equation"]["name"] == "KuramotoSivashinsky" and cfg["equation"]["shape"] == [32]
    assert cfg["equation"]["params"]["length"] == 22.0
    assert cfg["surrogate"] == {"name": "fno", "dim": 1, "kwargs": {"width": 8, "modes": 6, "layers": 2}}
    assert cfg["model_dt"] == 0.4 and cfg["frames_per_step"] == 2 and cfg["training"]["iterations"] == 12

    report = tmp_path / "m.json"
    assert _run(["pde", "eval", str(out), str(files["ks"]), "--horizons", "1,3,99",
                 "--json", str(report)]) == 0
    res = json.loads(report.read_text())
    # The same numbers by hand: the checkpoint rolled out on every second frame of the test split.
    model, _ = load_surrogate(out)
    ref, _ = pde.read_hdf5(files["ks"], "test")
    ref = ref[:, ::2]
    pred = pde.rollout(model, ref[:, 0], ref.shape[1] - 1, dt=0.4)
    nrmse = metrics.nrmse_per_step(pred, ref)
    assert res["rollout_steps"] == 8 and res["trajectories"] == 3
    assert res["one_step_nrmse"] == pytest.approx(float(nrmse[:, 1].mean()), rel=1e-6)
    assert set(res["nrmse_at"]) == {"1", "3"}  # 99 is beyond the 8-step rollout
    assert res["nrmse_at"]["3"] == pytest.approx(float(nrmse[:, 3].mean()), rel=1e-6)
    hct = pde.high_correlation_time(metrics.pearson_per_step(pred, ref), 0.4)
    assert res["high_correlation_time"] == pytest.approx(float(hct.mean()))
    assert "high-correlation time" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_eval_plots_rollouts_as_png(files, tmp_path):
    out = tmp_path / "run"
    _train(files, out)
    png = tmp_path / "r.png"
    assert _run(["pde", "eval", str(out), str(files["ks"]), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_plot_without_matplotlib_names_the_install(files, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _train(files, out)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(UsageError, match="pip install matplotlib"):
        _run(["pde", "eval", str(out), str(files["ks"]), "--plot", str(tmp_path / "r.png")])


def test_resume_continues_the_checkpoint(files, tmp_path):
    out = tmp_path / "run"
    _train(files, out)
    first = torch.load(next(out.glob("step-*")) / "train_state.pt", weights_only=True)
    with pytest.raises(FileExistsError, match="--resume"):
        _train(files, out)
    assert _train(files, out, "--resume", "--steps", "20") == 0
    cfg = read_surrogate_config(out)
    state = torch.load(out / cfg["checkpoint"]["dir"] / "train_state.pt", weights_only=True)
    assert state["iteration"] == 20 and state["losses"][:12] == first["losses"]
    with pytest.raises(ValueError, match="below the 20 iterations"):
        _train(files, out, "--resume", "--steps", "15")
    with pytest.raises(UsageError, match="differs from the checkpoint"):
        _train(files, out, "--resume", "--steps", "30", "--model", "unet")


def test_a_run_killed_after_a_periodic_save_resumes_to_the_uninterrupted_weights(files, tmp_path, monkeypatch):
    from timestepper.pde import cli_train

    assert _train(files, tmp_path / "whole", "--steps", "12") == 0
    real, saves = cli_train.save_surrogate, []

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        saves.append(args[3]["iteration"])
        raise KeyboardInterrupt  # killed right after the first periodic save

    monkeypatch.setattr(cli_train, "save_surrogate", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(files, tmp_path / "killed", "--steps", "12", "--save-every", "5")
    monkeypatch.undo()
    assert saves == [5] and (tmp_path / "killed" / "step-00000005").is_dir()
    assert _train(files, tmp_path / "killed", "--steps", "12", "--resume") == 0
    a, _ = load_surrogate(tmp_path / "whole")
    b, _ = load_surrogate(tmp_path / "killed")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_data_of_another_equation_or_resolution_is_refused_naming_both(files, tmp_path):
    out = tmp_path / "run"
    _train(files, out)
    with pytest.raises(ValueError, match=r"ks64\.h5 holds KuramotoSivashinsky at resolution 64, but the "
                                         r"checkpoint .*run is KuramotoSivashinsky at resolution 32"):
        _train(files, out, "--resume", "--steps", "20", data="ks64")
    with pytest.raises(ValueError, match=r"burgers\.h5 holds Burgers at resolution 32, but the checkpoint"):
        _run(["pde", "eval", str(out), str(files["burgers"])])
    with pytest.raises(ValueError, match=r"ks64\.h5 holds KuramotoSivashinsky at resolution 64, but .*ks\.h5"):
        _run(["pde", "train", str(files["ks"]), str(files["ks64"]), "--out", str(tmp_path / "two"),
              *FNO_OPTIONS])


def test_model_options_are_checked(files, tmp_path):
    with pytest.raises(UsageError, match="--modes does not apply to --model unet"):
        _run(["pde", "train", str(files["ks"]), "--out", str(tmp_path / "u"), "--model", "unet",
              "--modes", "4"])
    with pytest.raises(ValueError, match="multiple of the frame step"):
        _run(["pde", "train", str(files["ks"]), "--out", str(tmp_path / "u"), "--model-dt", "0.3"])


# --- bad input of the PDE front -------------------------------------------------------------------


def test_odd_or_too_coarse_grids_are_refused_naming_n():
    with pytest.raises(ValueError, match=r"n \(grid points\) must be an even integer >= 4 .*de-aliasing.*got 31"):
        pde.KuramotoSivashinsky(22.0, 31)
    with pytest.raises(ValueError, match=r"n \(grid points\) must be an even integer >= 4 .*got 33"):
        pde.NavierStokes2D(n=33)
    cfg = pde.GenerationConfig(dt=0.2, save_every=1, duration=0.4)
    with pytest.raises(ValueError, match=r"n=8 is too small: .*wavenumbers up to 3.*de-aliasing.*use n >= 10"):
        pde.generate(pde.KuramotoSivashinsky(22.0, 8), 1, cfg)
    with pytest.raises(ValueError, match=r"n=10 is too small: .*wavenumbers up to 4.*use n >= 12"):
        pde.generate(pde.NavierStokes2D(n=10), 1, cfg)
    assert pde.generate(pde.KuramotoSivashinsky(22.0, 10), 1, cfg).shape == (1, 3, 10)


def test_dt_must_be_positive():
    with pytest.raises(ValueError, match="dt must be a finite number > 0, got 0"):
        pde.GenerationConfig(dt=0, save_every=1, duration=1.0)
    with pytest.raises(ValueError, match="dt must be a positive finite number, got -0.1"):
        pde.KuramotoSivashinsky(22.0, 32).simulate(torch.zeros(32), t_end=1.0, dt=-0.1)
    with pytest.raises(SystemExit):  # argparse: "argument --dt: must be > 0, got '0'"
        build_parser().parse_args(["pde", "generate", "ks", "--dt", "0", "--out", "x.h5"])


def test_a_dt_that_blows_up_names_the_trajectories_the_step_and_a_smaller_dt():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    cfg = pde.GenerationConfig(dt=0.5, save_every=1, duration=20.0, solver="rk4")
    with pytest.raises(ts.NonFiniteError, match=r"trajectories 0\.\.1 of split 'train' blew up in the saved "
                                                r"part: .*at step \d+ .*a smaller dt"):
        pde.generate(eq, 2, cfg)


def test_cli_prints_user_errors_in_one_line(files, tmp_path, capsys):
    from timestepper.cli import main

    os.environ.pop("TIMESTEPPER_TRACEBACK", None)
    assert main(["pde", "eval", str(tmp_path / "nothing"), str(files["ks"])]) == 2
    assert "no config.json" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_pde_train_under_torchrun_matches_one_process(files, tmp_path):
    """``torchrun --nproc_per_node 2 -m timestepper.cli pde train``: two gloo processes, rank 0
    writes the checkpoint, and its weights equal one process's on the same global batches."""
    argv = ["pde", "train", str(files["ks"]), "--model-dt", "0.4", "--steps", "6", "--batch-size", "4",
            *FNO_OPTIONS]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "timestepper.cli", *argv, "--out", str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained fno") == 1  # rank 0 reports and saves
    assert _run([*argv, "--out", str(tmp_path / "one")]) == 0
    a, _ = load_surrogate(tmp_path / "ddp")
    b, _ = load_surrogate(tmp_path / "one")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)


def test_every_registered_surrogate_trains_and_reloads(files, tmp_path):
    """Each name of ``SURROGATES`` trains a few steps from the command line and reloads with the
    same weights."""
    from timestepper.pde.checkpoint import SURROGATES

    for name in sorted(SURROGATES):
        out = tmp_path / name
        assert _run(["pde", "train", str(files["ks"]), "--out", str(out), "--model-dt", "0.4", "--steps", "2",
                     "--batch-size", "2", "--model", name, "--width", "4", "--threads", "1",
                     "--no-progress"]) == 0
        model, _ = load_surrogate(out)
        assert read_surrogate_config(out)["surrogate"]["name"] == name
        assert sum(p.numel() for p in model.parameters()) > 0
