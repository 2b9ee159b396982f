import argparse
import json

import pytest

from timestepper.cli_args import UsageError
from timestepper.train import cli


def _run(argv):
    parser = argparse.ArgumentParser(prog="timestepper")
    cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_train_sample_moons(tmp_path):
    out = tmp_path / "moons"
    assert (
        _run(
            [
                "train",
                "moons",
                "--steps",
                "20",
                "--batch-size",
                "32",
                "--hidden",
                "16",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "moons" and cfg["prediction"] == "velocity"
    png = tmp_path / "m.png"
    assert (
        _run(
            ["sample", str(out), "--solver", "ddim", "--steps", "3", "--n", "50", "--out", str(png)]
        )
        == 0
    )
    assert png.stat().st_size > 0


def test_train_resume_sample_eval_conditional_digits(tmp_path, capsys):
    out = tmp_path / "digits"
    common = [
        "train",
        "digits",
        "--objective",
        "v",
        "--batch-size",
        "8",
        "--channels",
        "8,16",
        "--conditional",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert _run(common + ["--steps", "3"]) == 0
    assert _run(common + ["--steps", "5", "--resume"]) == 0
    assert json.loads((out / "config.json").read_text())["training"]["step"] == 5
    png = tmp_path / "g.png"
    assert (
        _run(
            [
                "sample",
                str(out),
                "--cfg",
                "2",
                "--label",
                "3",
                "--n",
                "4",
                "--steps",
                "2",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert png.is_file()
    assert _run(["eval", str(out), "--solvers", "ddim,heun", "--nfe", "3", "--n", "40"]) == 0
    rows = json.loads((out / "eval.json").read_text())
    assert [(r["solver"], r["nfe"]) for r in rows] == [("ddim", 3), ("heun", 1)]
    assert "half vs half" in capsys.readouterr().out
    with pytest.raises(UsageError, match="label"):
        _run(["sample", str(out), "--label", "12", "--out", str(png)])


def test_cli_errors_name_the_option(tmp_path):
    with pytest.raises(UsageError, match="--conditional needs a labelled data set"):
        _run(["train", "circles", "--conditional", "--out", str(tmp_path / "c")])
    out = tmp_path / "moons"
    args = ["train", "moons", "--steps", "2", "--batch-size", "8", "--hidden", "8"]
    assert _run(args + ["--out", str(out), "--no-progress"]) == 0
    with pytest.raises(UsageError, match="--label needs a class-conditional checkpoint"):
        _run(["sample", str(out), "--label", "1", "--out", str(tmp_path / "x.png")])
    with pytest.raises(UsageError, match="--cfg needs a class-conditional checkpoint"):
        _run(["sample", str(out), "--cfg", "2", "--out", str(tmp_path / "x.png")])
    with pytest.raises(UsageError, match="eval measures digits checkpoints"):
        _run(["eval", str(out)])
