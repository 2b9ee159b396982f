"""``timestepper bench gmm``: the main job's table, JSON and plot."""

import json

from timestepper.bench import runner
from timestepper.cli import main


def test_bench_gmm_cli_writes_table_json_and_plot(tmp_path, capsys):
    rc = main(["bench", "gmm", "--dims", "2", "--nfe", "5,8", "--solvers", "ddim,heun,dpmpp-2m", "--samples", "200",
               "--no-progress", "--stochastic", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Gaussian mixture d=2" in out and "dpmpp-2m" in out and "Stochastic samplers, d=2" in out
    result = json.loads((tmp_path / "gmm.json").read_text())
    rows = {(r["solver"], r["nfe_budget"]): r for r in result["rows"]}
    assert rows[("heun", 8)]["nfe"] == 7 and rows[("heun", 8)]["steps"] == 4  # no correction on the last step
    assert rows[("dpmpp-2m", 8)]["error"] < rows[("ddim", 8)]["error"]  # second order beats first order
    assert (tmp_path / "gmm.png").stat().st_size > 10_000
    md = runner.format_table({**result, "baseline_sw2": {2: 0.0}}, 2, markdown=True)
    assert md.splitlines()[0] == "| solver | NFE 5 | NFE 8 |"


def test_deterministic_solver_list_excludes_stochastic_and_adaptive():
    names = runner.deterministic_solvers()
    assert {"ddim", "euler", "heun", "dpmpp-2m", "unipc-bh2", "lms"} <= set(names)
    assert not {"ddpm", "euler-ancestral", "dpm-adaptive", "tsit5", "etdrk4"} & set(names)
