"""``timestepper tune``: a checkpoint in, a schedule JSON out; an interrupted run resumes to the
result of an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

import timestepper as ts
from timestepper.cli import main
from timestepper.train.checkpoint import make_model, model_config, save_checkpoint
from timestepper.tuning.objective import Objective


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = make_model("mlp", {"dim": 2, "hidden": 16, "depth": 1}, ts.VPDiscreteSchedule.from_betas("linear"))
    folder = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(folder, model_config(model, "epsilon", data={"shape": [2]}), model)
    return folder


ARGS = ["--nfe", "3", "--method", "autodiffusion", "--samples", "8", "--no-progress",
        "--budget", "population=4", "--budget", "generations=4", "--budget", "top_k=1"]


def _content(path):
    d = json.loads(path.read_text())
    cost = d["provenance"].pop("search_cost")
    return d, cost["model_calls"]


@pytest.mark.slow
def test_interrupted_tune_resumes_to_the_uninterrupted_result(checkpoint, tmp_path, monkeypatch):
    whole = tmp_path / "whole.json"
    assert main(["tune", str(checkpoint), *ARGS, "--out", str(whole)]) == 0
    part = tmp_path / "part.json"
    real = Objective.__call__
    done = []

    def interrupted(self, schedule):
        if self.key(schedule) not in self._cache:
            done.append(1)
            if len(done) > 9:  # past the baseline and into the generations
                raise KeyboardInterrupt
        return real(self, schedule)

    monkeypatch.setattr(Objective, "__call__", interrupted)
    assert main(["tune", str(checkpoint), *ARGS, "--out", str(part)]) == 130
    assert not part.exists() and (tmp_path / "part.json.journal").exists()
    monkeypatch.setattr(Objective, "__call__", real)
    assert main(["tune", str(checkpoint), *ARGS, "--out", str(part)]) == 0
    (a, calls_a), (b, calls_b) = _content(whole), _content(part)
    assert a["times"] == b["times"] and a["steps"] == b["steps"] and a["solver"] == b["solver"]
    assert a["provenance"]["objective_train"] == b["provenance"]["objective_train"]
    assert calls_a == calls_b  # the journal's calls are counted once


def test_tune_cli_refuses_a_bad_budget(checkpoint, tmp_path, capsys):
    code = main(["tune", str(checkpoint), "--nfe", "3", "--method", "s3", "--samples", "4", "--no-progress",
                 "--budget", "populaton=3", "--out", str(tmp_path / "x.json")])
    assert code == 2
    assert "takes no budget argument 'populaton'" in capsys.readouterr().err


def test_tune_cli_guard(checkpoint, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["tune", str(checkpoint), "--nfe", "3", "--method", "ays", "--samples", "16", "--no-progress",
                 "--budget", "sweeps=1", "--budget", "iters=2", "--guard", "pixels", "--out", str(out)]) == 0
    guard = json.loads(out.read_text())["provenance"]["guard"]
    assert guard.get("same_as_fixed") or guard["kept"] == (guard["frechet_found"] <= guard["frechet_fixed"])
    code = main(["tune", str(checkpoint), "--nfe", "3", "--samples", "4", "--no-progress", "--guard", "digits",
                 "--out", str(tmp_path / "d.json")])
    assert code == 2
    assert "--guard digits needs an 8x8 digits checkpoint" in capsys.readouterr().err


def test_tune_cli_guard_data(checkpoint, tmp_path, capsys):
    data = tmp_path / "data.pt"
    torch.save(torch.randn(32, 2, generator=torch.Generator().manual_seed(1)), data)
    out = tmp_path / "g.json"
    assert main(["tune", str(checkpoint), "--nfe", "3", "--method", "ays", "--samples", "16", "--no-progress",
                 "--budget", "sweeps=1", "--budget", "iters=2", "--guard", "pixels", "--guard-data", str(data),
                 "--out", str(out)]) == 0
    guard = json.loads(out.read_text())["provenance"]["guard"]
    assert guard.get("same_as_fixed") or guard["reference"] == "data (32 samples)"
    bad = {"--guard-data needs --guard": ["--guard-data", str(data)],
           "is neither 'digits' nor a file": ["--guard", "pixels", "--guard-data", str(tmp_path / "no.pt")],
           "--guard-data digits needs an 8x8 digits checkpoint": ["--guard", "pixels", "--guard-data", "digits"]}
    wrong = tmp_path / "wrong.pt"
    torch.save(torch.zeros(4, 3), wrong)
    bad["expected a tensor (N, 2), got (4, 3)"] = ["--guard", "pixels", "--guard-data", str(wrong)]
    for message, extra in bad.items():
        code = main(["tune", str(checkpoint), "--nfe", "3", "--samples", "4", "--no-progress", *extra,
                     "--out", str(tmp_path / "d.json")])
        assert code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_bench_gmm_tuned_reports_the_search_against_the_fixed_grid(tmp_path, capsys):
    code = main(["bench", "gmm", "--dims", "2", "--nfe", "4", "--solvers", "ddim", "--samples", "32",
                 "--tuned", "--no-progress", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "Searched schedules, d=2" in out
    rows = json.loads((tmp_path / "gmm.json").read_text())["tuned"]
    by = {r["method"]: r for r in rows}
    assert set(by) == {"fixed", ts.tuning.DEFAULT_METHOD}
    assert by[ts.tuning.DEFAULT_METHOD]["train"] <= by["fixed"]["train"]
