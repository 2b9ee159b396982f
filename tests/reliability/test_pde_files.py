"""``timestepper pde generate`` files: written whole or not at all, finite in the stored dtype,
and every check (options, h5py, output folder) made before the first trajectory."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import timestepper
from timestepper import NonFiniteError, pde
from timestepper.cli import main
from timestepper.pde import cli as pde_cli
from timestepper.pde import data as data_module
from timestepper.pde.data import GenerationConfig, generate, read_hdf5, write_hdf5

h5py = pytest.importorskip("h5py")

SRC = str(Path(timestepper.__file__).resolve().parents[1])
SMALL = [
    "pde", "generate", "ks", "--n-train", "2", "--n-test", "1", "--length", "22", "--n", "32",
    "--dt", "0.25", "--save-every", "2", "--duration-train", "1", "--duration-test", "1",
    "--no-progress",
]  # fmt: skip


def _eq_cfg(**kw):
    return pde.KuramotoSivashinsky(22.0, 32), GenerationConfig(
        dt=0.25, save_every=2, duration=1.0, **kw
    )


def _good_file(path: Path) -> bytes:
    eq, cfg = _eq_cfg()
    write_hdf5(path, eq, cfg, {"train": generate(eq, 2, cfg)})
    return path.read_bytes()


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def test_a_write_that_fails_midway_keeps_the_existing_file_and_leaves_no_partial(
    tmp_path, monkeypatch
):
    path = tmp_path / "ks.h5"
    before = _good_file(path)
    real = data_module._write_groups

    def failing(f, eq, cfg, splits):
        real(f, eq, cfg, {k: v for k, v in list(splits.items())[:1]})
        raise OSError(28, "No space left on device (injected)")

    monkeypatch.setattr(data_module, "_write_groups", failing)
    eq, cfg = _eq_cfg(seed=3)
    u = generate(eq, 2, cfg)
    with pytest.raises(OSError, match="injected"):
        write_hdf5(path, eq, cfg, {"train": u, "test": u})
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_a_failing_first_write_leaves_no_file_at_the_final_path(tmp_path, monkeypatch):
    def failing(f, eq, cfg, splits):
        raise KeyboardInterrupt  # Ctrl-C during the write

    monkeypatch.setattr(data_module, "_write_groups", failing)
    eq, cfg = _eq_cfg()
    with pytest.raises(KeyboardInterrupt):
        write_hdf5(tmp_path / "new.h5", eq, cfg, {"train": generate(eq, 1, cfg)})
    assert list(tmp_path.iterdir()) == []


KILL_DRIVER = """
import os, signal, sys
from timestepper.pde import data

real = data._write_groups


def dying(f, eq, cfg, splits):
    real(f, eq, cfg, splits)
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # the file is written but not yet renamed


data._write_groups = dying
from timestepper.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a subprocess importing torch: a few seconds
def test_sigkill_during_the_write_leaves_the_existing_file_intact(tmp_path):
    path = tmp_path / "ks.h5"
    before = _good_file(path)
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), *SMALL, "--seed", "5", "--out", str(path)],
        env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == before
    read_hdf5(path, "train")
    # the orphaned temporary file is hidden and never at the final path
    assert all(name.startswith(".ks.h5.partial-") for name in _leftovers(tmp_path))


def test_float16_overflow_is_refused_naming_the_dtype_before_writing(tmp_path):
    eq, cfg = _eq_cfg(store_dtype="float16")
    u = torch.full((1, 3, 32), 1e5)
    phrase = r"not finite in float16: the largest \|u\| = 1e\+05 exceeds float16's maximum 65504"
    with pytest.raises(NonFiniteError, match=phrase):
        write_hdf5(tmp_path / "x.h5", eq, cfg, {"train": u})
    assert list(tmp_path.iterdir()) == []


def test_nan_in_trajectories_is_refused_before_writing(tmp_path):
    eq, cfg = _eq_cfg()
    u = torch.zeros(1, 3, 32)
    u[0, 1, 4] = float("nan")
    phrase = "'train' trajectories are not finite in float32: the simulation produced NaN"
    with pytest.raises(NonFiniteError, match=phrase):
        write_hdf5(tmp_path / "x.h5", eq, cfg, {"train": u})
    assert list(tmp_path.iterdir()) == []


def test_generation_checks_each_batch_in_the_stored_dtype(monkeypatch):
    eq, cfg = _eq_cfg(store_dtype="float16", batch_size=1)
    real = eq.simulate
    monkeypatch.setattr(eq, "simulate", lambda *a, **k: real(*a, **k) * 1e6)
    with pytest.raises(NonFiniteError, match="trajectories 0..0 of split 'train' are not finite in float16"):
        generate(eq, 2, cfg)


def test_store_dtype_float16_is_written_and_read_back(tmp_path):
    out = tmp_path / "ks16.h5"
    assert main([*SMALL, "--store-dtype", "float16", "--out", str(out)]) == 0
    u, attrs = read_hdf5(out, "train")
    assert u.dtype == torch.float16 and attrs["store_dtype"] == "float16"
    eq, cfg = _eq_cfg()
    assert torch.equal(u, generate(eq, 2, cfg).half())


def test_missing_h5py_is_reported_before_any_work(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "h5py" else real(name, *a)
    )

    def no_work(*a, **k):
        raise AssertionError("generation started before the dependency check")

    monkeypatch.setattr(pde_cli, "generate", no_work)
    assert main([*SMALL, "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err
    assert "error: timestepper pde generate needs h5py, which is not installed: pip install h5py" in err


def test_output_in_a_missing_folder_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*SMALL, "--out", str(tmp_path / "nope" / "x.h5")])
    assert e.value.code == 2
    assert "argument --out: the folder of" in capsys.readouterr().err


def test_duration_not_a_multiple_of_the_frame_names_the_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pde_cli, "generate", lambda *a, **k: pytest.fail("generation started"))
    argv = [*SMALL, "--duration-test", "0.7", "--out", str(tmp_path / "x.h5")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: --duration-test/--dt/--save-every: duration=0.7 must be a positive multiple" in err


def test_numpy_integers_are_accepted_and_bools_refused():
    eq = pde.KuramotoSivashinsky(22.0, 32)
    cfg = GenerationConfig(dt=0.25, save_every=np.int64(2), duration=1.0, batch_size=np.int32(4))
    assert type(cfg.save_every) is int and cfg.save_every == 2
    assert generate(eq, np.int64(2), cfg, workers=np.int64(0)).shape == (2, 3, 32)
    with pytest.raises(ValueError, match="save_every must be an integer >= 1, got True"):
        GenerationConfig(dt=0.25, save_every=True, duration=1.0)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1, got 2.0"):
        generate(eq, 2.0, cfg)
