"""Sharded generation: one HDF5 file per shard plus index.json, written atomically, resumable
(only missing shards are made again, bit-identical), read back as one data set, mixed data sets
refused; the ``pde generate --shards`` CLI; Ray as the engine."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile

import pytest
import torch

from timestepper import pde
from timestepper.pde import cli, shards
from timestepper.pde.data import GenerationConfig, generate, read_hdf5
from timestepper.pde.shards import ShardedTrajectories, generate_shards, plan_shards, read_shards

pytest.importorskip("h5py")


def _small(n: int = 32):
    return pde.KuramotoSivashinsky(22.0, n), GenerationConfig(
        dt=0.25, save_every=2, duration=1.0, batch_size=2
    )


def test_plan_covers_the_range_evenly():
    plan = plan_shards(10, 4)
    assert [(s.start, s.stop) for s in plan] == [(0, 2), (2, 5), (5, 8), (8, 10)]
    assert plan[1].file == "train-000002-000005.h5"
    with pytest.raises(ValueError, match="shards=5 must not exceed n_samples=4"):
        plan_shards(4, 5)
    with pytest.raises(ValueError, match="split must be one of"):
        plan_shards(4, 2, "dev")


def test_shards_index_and_reader_equal_one_generate_call(tmp_path):
    eq, cfg = _small()
    index = generate_shards(eq, 7, cfg, tmp_path, shards=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["index.json", "train-000000-000002.h5", "train-000002-000005.h5", "train-000005-000007.h5"]
    on_disk = json.loads((tmp_path / "index.json").read_text())
    assert on_disk == index and on_disk["format"] == "timestepper-shards/1"
    entry = on_disk["splits"]["train"]
    assert entry["trajectories"] == 7 and [s["count"] for s in entry["shards"]] == [2, 3, 2]
    assert entry["attributes"]["equation"] == "KuramotoSivashinsky" and entry["attributes"]["space"] == [32]
    ds = ShardedTrajectories(tmp_path)
    u, attrs = ds.load()
    whole = generate(eq, 7, cfg)  # same seeds per trajectory index, same batches within a shard
    torch.testing.assert_close(u, whole, atol=1e-6, rtol=0)
    assert len(ds) == 7 and torch.equal(ds[3], u[3]) and torch.equal(ds[-1], u[6])
    assert attrs["dt_frame"] == 0.5 and attrs["equation"] == "KuramotoSivashinsky"
    assert torch.equal(read_shards(tmp_path / "index.json")[0], u)


def test_rerun_skips_finished_shards_and_regenerates_a_deleted_one_bit_identically(tmp_path, monkeypatch):
    eq, cfg = _small()
    generate_shards(eq, 6, cfg, tmp_path, shards=3)
    victim = tmp_path / "train-000002-000004.h5"
    before = {p.name: read_hdf5(p)[0] for p in tmp_path.glob("*.h5")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}
    victim.unlink()
    made = []
    original = shards.make_shard
    monkeypatch.setattr(shards, "make_shard", lambda eq, cfg, s, f: made.append(s.file) or original(eq, cfg, s, f))
    generate_shards(eq, 6, cfg, tmp_path, shards=3)
    assert made == [victim.name]
    for p in tmp_path.glob("*.h5"):
        assert torch.equal(read_hdf5(p)[0], before[p.name])  # bit for bit
        if p.name != victim.name:
            assert p.stat().st_mtime_ns == mtimes[p.name]  # untouched


def test_an_interrupted_shard_leaves_no_file_that_looks_complete(tmp_path, monkeypatch):
    eq, cfg = _small()
    from timestepper.pde import data

    real_groups = data._write_groups
    calls = []

    def dying(f, *args):  # the second shard dies half-written, inside its HDF5 file
        calls.append(f.filename)
        real_groups(f, *args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(data, "_write_groups", dying)
    with pytest.raises(KeyboardInterrupt):
        generate_shards(eq, 4, cfg, tmp_path, shards=2)
    assert ".partial-" in calls[1]  # it was written under a temporary name ...
    assert sorted(os.listdir(tmp_path)) == ["train-000000-000002.h5"]  # ... removed: no index, no partial shard
    monkeypatch.setattr(data, "_write_groups", real_groups)
    generate_shards(eq, 4, cfg, tmp_path, shards=2)
    assert len(ShardedTrajectories(tmp_path)) == 4


def test_mixed_resolutions_or_settings_are_refused(tmp_path):
    eq32, cfg = _small(32)
    eq64, _ = _small(64)
    a, b = tmp_path / "a", tmp_path / "b"
    generate_shards(eq32, 4, cfg, a, shards=2)
    generate_shards(eq64, 4, cfg, b, shards=2)
    # a shard of another resolution found where this run would write: refused, not skipped
    with pytest.raises(ValueError, match=r"exists but was made with other settings \(equation_params"):
        generate_shards(eq64, 4, cfg, a, shards=2)
    # a folder whose shards mix two resolutions: the reader refuses it, naming both files
    shutil.copy(b / "train-000002-000004.h5", a / "train-000002-000004.h5")
    with pytest.raises(ValueError, match=r"train-000000-000002.h5 and train-000002-000004.h5 .* different data sets"):
        ShardedTrajectories(a)
    # another split of another resolution in the same index
    with pytest.raises(ValueError, match="lists split 'train' of another data set"):
        generate_shards(eq64, 2, cfg, b.parent / "a", shards=1, split="test")
    os.remove(a / "train-000000-000002.h5")
    with pytest.raises(FileNotFoundError, match="listed in the index is missing; rerun"):
        ShardedTrajectories(a)
    with pytest.raises(FileNotFoundError, match="not a sharded data set"):
        ShardedTrajectories(tmp_path)


def test_cli_generate_shards_writes_a_resumable_folder(tmp_path, capsys):
    out = tmp_path / "ks"
    argv = ["generate", "ks", "--n-train", "3", "--n-test", "2", "--length", "22", "--n", "32",
            "--dt", "0.25", "--duration-train", "1", "--duration-test", "1", "--shards", "2",
            "--out", str(out), "--no-progress"]  # fmt: skip
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli.add_commands(sub)
    args = parser.parse_args(["pde", *argv])
    assert args.func(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["splits"]) == ["test", "train"]
    assert [s["count"] for s in index["splits"]["train"]["shards"]] == [2, 1]
    assert ShardedTrajectories(out, "test").load()[0].shape == (2, 5, 32)
    assert args.func(args) == 0  # rerun: nothing to do, same index
    assert json.loads((out / "index.json").read_text()) == index
    (tmp_path / "file").write_text("x")
    args = parser.parse_args(["pde", *argv[:-3], "--out", str(tmp_path / "file")])
    with pytest.raises(cli.UsageError, match="--out must be a folder with --shards: .* is a file"):
        args.func(args)
    args = parser.parse_args(["pde", *argv[:-5], "--out", str(out), "--ray-address", "127.0.0.1:1"])
    with pytest.raises(cli.UsageError, match="--ray-address runs shards on a Ray cluster: give --shards N"):
        args.func(args)
    if importlib.util.find_spec("ray") is not None:
        args = parser.parse_args(["pde", *argv, "--ray-address", "127.0.0.1:1"])
        with pytest.raises(cli.UsageError, match="--ray-address: ray_address='127.0.0.1:1' cannot be reached"):
            args.func(args)


@pytest.mark.slow
def test_shards_on_ray_equal_shards_in_processes(tmp_path):
    ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'timestepper[ray]'")
    eq, cfg = _small()
    generate_shards(eq, 4, cfg, tmp_path / "local", shards=2)
    if ray.is_initialized():
        ray.shutdown()
    ray_dir = tempfile.mkdtemp(prefix="tsray")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir)
    try:
        generate_shards(eq, 4, cfg, tmp_path / "ray_out", shards=2, use_ray=True)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    for name in ("train-000000-000002.h5", "train-000002-000004.h5"):
        assert torch.equal(read_hdf5(tmp_path / "local" / name)[0], read_hdf5(tmp_path / "ray_out" / name)[0])
