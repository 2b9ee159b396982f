"""Hermetic runs: the package's only cache (the digits metric's classifier) lives where
``TIMESTEPPER_CACHE`` says, which the test session sets to a fresh folder, so a clean machine and a
developer's machine run the same thing; CI starts from an empty cache too."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import timestepper
from timestepper.train import metrics

SRC = Path(timestepper.__file__).resolve().parent
ROOT = SRC.parents[1]


def test_the_session_cache_is_a_fresh_folder_not_the_home_cache():
    folder = metrics.cache_dir()
    assert folder == Path(os.environ["TIMESTEPPER_CACHE"])
    assert not folder.resolve().is_relative_to((Path.home() / ".cache").resolve())


def test_no_other_module_reads_the_home_folder():
    pattern = re.compile(r"Path\.home\(\)|expanduser|XDG_CACHE_HOME|~/\.cache")
    users = sorted(
        {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if pattern.search(p.read_text())}
    )
    assert users == ["train/metrics.py"]  # cache_dir(): $TIMESTEPPER_CACHE, else ~/.cache


def test_ci_runs_with_a_fresh_cache_folder():
    script = (ROOT / ".ci" / "run").read_text()
    assert 'export TIMESTEPPER_CACHE="$(mktemp -d)"' in script


def test_a_corrupt_cached_classifier_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("TIMESTEPPER_CACHE", str(tmp_path))
    monkeypatch.setattr(metrics, "_CACHED", {})
    monkeypatch.setattr(metrics, "classifier_accuracy", lambda model: 0.5)
    monkeypatch.setattr(metrics, "train_classifier", lambda: metrics.DigitsClassifier().eval())
    path = tmp_path / f"digits_classifier_v{metrics.CLASSIFIER_VERSION}.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    with pytest.warns(RuntimeWarning, match=rf"cached digits classifier {re.escape(str(path))} is unreadable"):
        metrics.digits_classifier()
    monkeypatch.setattr(metrics, "_CACHED", {})
    metrics.digits_classifier()  # the rebuilt file loads
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
