"""Checkpoints are written whole or not at all, and a damaged one is refused naming the file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import timestepper as ts
from timestepper.train import flow_matching, make_model, train
from timestepper.train import store as store_module
from timestepper.train.checkpoint import (
    CONFIG,
    RAW,
    TRAIN_STATE,
    WEIGHTS,
    load_denoiser,
    load_model,
    read_config,
    save_checkpoint,
)
from timestepper.train.store import CheckpointError

_X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))


def _mlp(hidden=8):
    torch.manual_seed(0)
    return make_model("mlp", {"dim": 2, "hidden": hidden, "depth": 1}, ts.RectifiedFlowSchedule())


def _train(out, steps=4, **kw):
    kw = {"batch_size": 8, "progress": False, "save_every": 2, **kw}
    return train(_mlp(), flow_matching(), _X, steps=steps, out=out, **kw)


def _same_weights(a, b):
    wa, wb = load_model(a)[0].state_dict(), load_model(b)[0].state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _folder(out):
    return out / read_config(out)["checkpoint"]["dir"]


def test_exception_between_two_file_writes_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    _train(tmp_path, steps=2)
    before = {p.name: p.read_bytes() for p in _folder(tmp_path).iterdir()}
    real, calls = store_module.write_file, []

    def failing(path, data):
        calls.append(path.name)
        if len(calls) == 2:  # the second file of the next save
            raise OSError(28, "No space left on device (injected)")
        real(path, data)

    monkeypatch.setattr(store_module, "write_file", failing)
    with pytest.raises(OSError, match="injected"):
        _train(tmp_path, steps=4, resume=True)
    cfg = read_config(tmp_path)
    assert cfg["training"]["step"] == 2
    assert {p.name: p.read_bytes() for p in _folder(tmp_path).iterdir()} == before
    load_model(tmp_path)  # verified against its checksums
    monkeypatch.setattr(store_module, "write_file", real)
    res = _train(tmp_path, steps=4, resume=True)
    assert len(res.losses) == 4
    # the unfinished folder of the failed save is gone after the next complete one
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]


def test_layout_config_names_the_folder_and_the_checksum_of_each_file(tmp_path):
    _train(tmp_path, steps=4)
    cfg = json.loads((tmp_path / CONFIG).read_text())
    assert cfg["version"] == 2 and cfg["checkpoint"]["dir"] == "step-00000004"
    assert set(cfg["checkpoint"]["files"]) == {WEIGHTS, RAW, TRAIN_STATE}
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG, "step-00000004"]
    assert sorted(p.name for p in (tmp_path / "step-00000004").iterdir()) == sorted(
        [CONFIG, WEIGHTS, RAW, TRAIN_STATE]
    )
    # the folder is a checkpoint on its own too
    assert _same_weights(tmp_path, tmp_path / "step-00000004")


def test_truncated_weights_are_refused_naming_the_file(tmp_path):
    _train(tmp_path)
    path = _folder(tmp_path) / WEIGHTS
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS} is truncated or was replaced: it has 100 bytes"):
        load_denoiser(tmp_path)


def test_weights_mixed_in_from_another_checkpoint_are_refused_naming_the_file(tmp_path):
    _train(tmp_path / "a")
    _train(tmp_path / "b", seed=1)  # same shapes and sizes, other values
    shutil.copy(_folder(tmp_path / "b") / RAW, _folder(tmp_path / "a") / RAW)
    with pytest.raises(CheckpointError, match=rf"{RAW} does not match the checksum"):
        _train(tmp_path / "a", steps=6, resume=True)


def test_a_missing_file_is_refused_naming_it(tmp_path):
    _train(tmp_path)
    (_folder(tmp_path) / TRAIN_STATE).unlink()
    with pytest.raises(CheckpointError, match=rf"{TRAIN_STATE} is missing"):
        _train(tmp_path, steps=6, resume=True)


def test_truncated_config_is_refused_naming_the_file(tmp_path):
    _train(tmp_path)
    path = tmp_path / CONFIG
    path.write_text(path.read_text()[:-40])
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON \(.* line \d+"):
        load_denoiser(tmp_path)


def test_binary_garbage_config_is_refused_naming_the_file(tmp_path):
    _train(tmp_path)
    (tmp_path / CONFIG).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CheckpointError, match="config.json is not a text file"):
        read_config(tmp_path)


def test_config_of_another_format_is_refused(tmp_path):
    (tmp_path / CONFIG).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="is not a timestepper checkpoint"):
        load_denoiser(tmp_path)
    (tmp_path / CONFIG).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a JSON list, not an object"):
        load_denoiser(tmp_path)


def test_config_without_a_network_is_refused_naming_the_file(tmp_path):
    _train(tmp_path)
    cfg = read_config(tmp_path)
    del cfg["network"]
    (tmp_path / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config.json does not describe a model \(KeyError"):
        load_model(tmp_path)


def test_corrupt_weights_of_a_folder_without_checksums_are_refused_naming_the_file(tmp_path):
    _train(tmp_path)
    folder = _folder(tmp_path)
    (folder / WEIGHTS).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS} is not a readable safetensors file"):
        load_denoiser(folder)  # the folder alone: no manifest, so the reader must catch it


def test_corrupt_training_state_without_checksums_is_refused_naming_the_file(tmp_path):
    _train(tmp_path)
    folder = _folder(tmp_path)
    (folder / TRAIN_STATE).write_bytes(b"not a zip archive")
    with pytest.raises(CheckpointError, match=rf"{TRAIN_STATE} is not a readable training state"):
        _train(folder, steps=6, resume=True)


def test_weights_of_another_shape_are_refused_naming_the_checkpoint(tmp_path):
    _train(tmp_path)
    other = _mlp(hidden=4)
    save_checkpoint(tmp_path / "x", read_config(tmp_path), other)
    with pytest.raises(CheckpointError, match="do not fit the network its config.json describes"):
        load_model(tmp_path / "x")


def test_version_1_checkpoints_with_the_files_beside_the_config_still_load(tmp_path):
    _train(tmp_path / "new")
    folder = _folder(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    for name in (WEIGHTS, RAW, TRAIN_STATE):
        shutil.copy(folder / name, old / name)
    cfg = read_config(tmp_path / "new")
    del cfg["checkpoint"], cfg["data"]["fingerprint"], cfg["data"]["rows"]  # not in version 1
    cfg["version"] = 1
    (old / CONFIG).write_text(json.dumps(cfg))
    assert _same_weights(old, tmp_path / "new")
    # resuming rewrites it in the new layout and removes the flat files
    _train(old, steps=6, resume=True)
    assert sorted(p.name for p in old.iterdir()) == [CONFIG, "step-00000006"]


def test_a_newer_version_is_refused(tmp_path):
    _train(tmp_path)
    cfg = read_config(tmp_path)
    cfg["version"] = 99
    (tmp_path / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="has version 99, newer than this library's 2"):
        load_denoiser(tmp_path)


def test_no_checkpoint_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json in .*not a timestepper checkpoint"):
        load_denoiser(tmp_path)
