"""Fault injection: ``timestepper train`` killed with SIGKILL at each point of a save, then resumed.

A driver runs the real command in a subprocess with the checkpoint store's file operations
wrapped: the process kills itself (SIGKILL, no clean-up of any kind) just before operation number
``KILL_AT_OP``. The run saves every 2 steps of 6; a save is 8 operations (4 file writes into the
temporary folder, the folder's rename, the new config.json written and renamed over the old one,
the removal of superseded folders), so operations 9..16 are the second save (of step 4). After the
kill the previous complete checkpoint must load, and ``--resume`` must finish the run with exactly
the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import timestepper
from timestepper.cli import main
from timestepper.train.checkpoint import RAW, load_denoiser, load_tensors, read_config

SRC = str(Path(timestepper.__file__).resolve().parents[1])
DRIVER = """
import os, signal, sys
from timestepper.train import store

kill_at, count = int(os.environ["KILL_AT_OP"]), 0


def hooked(fn):
    def wrapped(*args, **kwargs):
        global count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*args, **kwargs)
    return wrapped


for name in ("write_file", "rename", "remove_superseded"):
    setattr(store, name, hooked(getattr(store, name)))
from timestepper.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _argv(out: Path, *extra: str) -> list[str]:
    return [
        "train", "moons", "--steps", "6", "--batch-size", "16", "--hidden", "8",
        "--save-every", "2", "--threads", "1", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    assert main(_argv(out)) == 0
    return load_tensors(out, read_config(out), RAW)


def _killed_run(tmp_path: Path, kill_at: int) -> Path:
    out = tmp_path / "run"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "KILL_AT_OP": str(kill_at), "PYTHONPATH": SRC}
    proc = subprocess.run(
        [sys.executable, str(driver), *_argv(out)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    return out


def _check_kill_then_resume(tmp_path, uninterrupted, kill_at, saved_step):
    out = _killed_run(tmp_path, kill_at)
    # the last complete save is intact and loadable, whatever the kill interrupted
    assert read_config(out)["training"]["step"] == saved_step
    load_denoiser(out)
    assert main(_argv(out, "--resume")) == 0
    cfg = read_config(out)
    assert cfg["training"]["step"] == 6
    final = load_tensors(out, cfg, RAW)
    assert final.keys() == uninterrupted.keys()
    for key, value in uninterrupted.items():
        assert torch.equal(final[key], value), key
    # one folder left: the published one (the partial and superseded ones are removed)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", cfg["checkpoint"]["dir"]]


@pytest.mark.slow  # a subprocess that imports torch's optimisers: several seconds
def test_kill_between_two_file_writes_of_a_save_resumes_from_the_previous_save(
    tmp_path, uninterrupted
):
    _check_kill_then_resume(tmp_path, uninterrupted, kill_at=11, saved_step=2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at,saved_step",
    [
        (13, 2),  # before the temporary folder's rename
        (14, 2),  # before the new config.json is written
        (15, 2),  # before the new config.json replaces the old one
        (16, 4),  # after publishing, before the superseded folder is removed
    ],
)
def test_kill_at_each_point_of_a_save_loses_at_most_one_save_interval(
    tmp_path, uninterrupted, kill_at, saved_step
):
    _check_kill_then_resume(tmp_path, uninterrupted, kill_at, saved_step)
