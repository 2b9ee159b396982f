"""User errors in every ``timestepper`` command: one ``error:`` line naming the option, exit code
2 (argparse's convention), no traceback; bugs still raise."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import timestepper
from timestepper.cli import main
from timestepper.train import cli as train_cli
from timestepper.train.checkpoint import WEIGHTS, read_config

SRC = str(Path(timestepper.__file__).resolve().parents[1])
TRAIN = ["train", "moons", "--steps", "2", "--batch-size", "8", "--hidden", "8", "--no-progress"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "moons"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def _parse_error(argv, capsys) -> str:
    """argparse refuses ``argv``: exit code 2; the stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def _user_error(argv, capsys) -> str:
    """The command refuses ``argv`` after parsing: return code 2; the stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv,phrase",
    [
        (["train", "moons", "--steps", "0"], "argument --steps: must be an integer >= 1, got '0'"),
        (["train", "moons", "--steps", "-5"], "argument --steps: must be an integer >= 1, got '-5'"),
        (["train", "moons", "--steps", "2.5"], "argument --steps: expected an integer, got '2.5'"),
        (["train", "moons", "--lr", "nan"], "argument --lr: must be finite, got 'nan'"),
        (["train", "moons", "--lr", "0"], "argument --lr: must be > 0, got '0'"),
        (["train", "moons", "--ema-decay", "1"], "argument --ema-decay: must be in [0, 1), got '1'"),
        (["train", "moons", "--channels", "8,x"], "argument --channels: expected an integer, got 'x'"),
        (["train", "moons", "--label-dropout", "2"], "argument --label-dropout: must be in [0, 1), got '2'"),
        (["train", "moons", "--save-minutes", "0"], "argument --save-minutes: must be > 0"),
        (["train", "moons", "--save-every", "-1"], "argument --save-every: must be an integer >= 0"),
        (["train", "mnist"], "argument dataset: invalid choice: 'mnist'"),
        (["train", "moons", "--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
        (["sample", "x", "--solver", "nope"], "argument --solver: unknown solver 'nope'; available:"),
        (["sample", "x", "--grid", "nope"], "argument --grid: unknown grid 'nope'; choose from uniform"),
        (["sample", "x", "--n", "0"], "argument --n: must be an integer >= 1"),
        (["sample", "x", "--label", "-1"], "argument --label: must be an integer >= 0"),
        (["eval", "x", "--nfe", "0,5"], "argument --nfe: must be an integer >= 1, got '0'"),
        (["eval", "x", "--solvers", "ddim,nope"], "argument --solvers: unknown solver 'nope'"),
        (["eval", "x", "--n", "1"], "argument --n: must be an integer >= 2"),
        (["pde", "generate", "ks", "--dt", "0"], "argument --dt: must be > 0, got '0'"),
        (["pde", "generate", "ks", "--n-train", "-1"], "argument --n-train: must be an integer >= 0"),
        (["pde", "generate", "ks", "--solver", "nope"], "argument --solver: unknown solver 'nope'"),
        (["pde", "generate", "ks", "--nu", "-1"], "argument --nu: must be > 0"),
        (["pde", "generate", "ks", "--workers", "-2"], "argument --workers: must be an integer >= 0"),
        (["pde", "generate", "ks", "--store-dtype", "int8"], "argument --store-dtype: invalid choice"),
        (["detest", "--tol", "0"], "argument --tol: must be > 0, got '0'"),
        (["detest", "--solver", "nope"], "argument --solver: unknown solver 'nope'"),
        (["bench", "gmm", "--dims", "0"], "argument --dims: must be an integer >= 1, got '0'"),
        (["bench", "gmm", "--nfe", "5,x"], "argument --nfe: expected an integer, got 'x'"),
        (["bench", "gmm", "--solvers", "nope"], "argument --solvers: unknown solver 'nope'"),
        (["bench", "gmm", "--samples", "1"], "argument --samples: must be an integer >= 2"),
        (["bench", "gmm", "--grid", "nope"], "argument --grid: unknown grid 'nope'"),
    ],
)
def test_bad_option_values_are_refused_by_the_parser(argv, phrase, tmp_path, capsys):
    if argv[0] in ("train", "pde"):
        argv = [*argv, "--out", str(tmp_path / "out.h5")]
    err = _parse_error(argv, capsys)
    assert phrase in err and "Traceback" not in err


def test_missing_checkpoint_names_the_folder(tmp_path, capsys):
    err = _user_error(["sample", str(tmp_path / "none"), "--out", str(tmp_path / "s.png")], capsys)
    assert f"timestepper sample: error: no config.json in {tmp_path / 'none'}" in err


def test_corrupt_checkpoint_names_the_file(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((ckpt / "config.json").read_text()[:50])
    err = _user_error(["sample", str(bad), "--out", str(tmp_path / "s.png")], capsys)
    assert f"error: {bad / 'config.json'} is not valid JSON" in err


def test_truncated_weights_name_the_file(ckpt, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ckpt, copy)
    weights = copy / read_config(copy)["checkpoint"]["dir"] / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:64])
    err = _user_error(["sample", str(copy), "--out", str(tmp_path / "s.png")], capsys)
    assert f"error: {weights} is truncated or was replaced" in err


def test_training_into_a_checkpoint_without_resume_names_the_options(ckpt, capsys):
    err = _user_error([*TRAIN, "--out", str(ckpt)], capsys)
    assert "timestepper train: error:" in err and "already holds a checkpoint" in err
    assert "--resume" in err and "--overwrite" in err


def test_resume_with_another_width_names_the_key(ckpt, capsys):
    argv = [*TRAIN, "--out", str(ckpt), "--resume", "--hidden", "16", "--steps", "4"]
    err = _user_error(argv, capsys)
    assert "network.kwargs.hidden (checkpoint 8, now 16)" in err


def test_resume_on_another_data_set_names_the_key(ckpt, capsys):
    argv = ["train", "circles", *TRAIN[2:], "--out", str(ckpt), "--resume", "--steps", "4"]
    err = _user_error(argv, capsys)
    assert "dataset (checkpoint 'moons', now 'circles')" in err and "data.fingerprint" in err


def test_resume_with_fewer_steps_is_refused(ckpt, capsys):
    argv = [*TRAIN[:2], "--steps", "1", *TRAIN[4:], "--out", str(ckpt), "--resume"]
    err = _user_error(argv, capsys)
    assert "steps=1 is below the step 2 of the checkpoint" in err


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    err = _user_error([*TRAIN, "--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert "cannot resume:" in err and "holds no checkpoint" in err


def test_label_out_of_range_names_the_option(ckpt, tmp_path, capsys):
    err = _user_error(["sample", str(ckpt), "--label", "3", "--out", str(tmp_path / "s.png")], capsys)
    assert "error: --label needs a class-conditional checkpoint" in err


def test_unknown_detest_problem_names_the_option(capsys):
    err = _user_error(["detest", "--problems", "A1,Z9"], capsys)
    assert "timestepper detest: error: --problems: unknown problems ['Z9']" in err


def test_missing_matplotlib_is_reported_before_sampling(ckpt, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a)
    )
    monkeypatch.setattr(train_cli, "_load", lambda d: pytest.fail("work started"))
    err = _user_error(["sample", str(ckpt), "--out", str(tmp_path / "s.png")], capsys)
    assert "timestepper sample needs matplotlib, which is not installed: pip install matplotlib" in err


@pytest.mark.parametrize("exc", [RuntimeError("bug"), TypeError("bug"), KeyError("bug")])
def test_internal_bugs_still_raise(monkeypatch, tmp_path, exc):
    def broken(args):
        raise exc

    monkeypatch.setattr(train_cli, "cmd_train", broken)
    with pytest.raises(type(exc), match="bug"):
        main([*TRAIN, "--out", str(tmp_path / "x")])


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, tmp_path, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "cmd_train", interrupted)
    assert main([*TRAIN, "--out", str(tmp_path / "x")]) == 130
    assert capsys.readouterr().err == "timestepper train: interrupted\n"


def test_traceback_of_a_user_error_on_request(ckpt, monkeypatch):
    monkeypatch.setenv("TIMESTEPPER_TRACEBACK", "1")
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        main([*TRAIN, "--out", str(ckpt)])


@pytest.mark.slow  # a subprocess importing torch: a few seconds
def test_the_installed_command_prints_no_traceback_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "timestepper.cli", "sample", str(tmp_path / "none")],
        env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"timestepper sample: error: no config.json in {tmp_path / 'none'}: not a timestepper checkpoint"
    ]

