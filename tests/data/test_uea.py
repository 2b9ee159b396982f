"""The bundled UEA sets as padded values, times and masks (skipped only without sktime)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sktime")

from timestepper.data import drop_observations, load_uea  # noqa: E402


@pytest.fixture(scope="module")
def basic():
    return load_uea("BasicMotions")


def test_basic_motions_layout(basic):
    train, test = basic
    assert (len(train), len(test)) == (40, 40)
    assert train.values.shape == (40, 100, 6) and train.mask.shape == (40, 100, 6)
    assert bool(train.mask.all()) and train.times.tolist() == list(range(100))
    assert train.classes == ("badminton", "running", "standing", "walking")
    assert torch.bincount(train.labels).tolist() == [10, 10, 10, 10]
    # standardised with the training statistics
    v = train.values[train.mask].double()
    assert abs(float(v.mean())) < 1e-6 and abs(float(v.std()) - 1) < 1e-2


def test_japanese_vowels_variable_length_is_padded_and_masked():
    train, test = load_uea("JapaneseVowels")
    assert (len(train), len(test), train.channels) == (270, 370, 12)
    assert int(train.lengths.min()) == 7 and train.values.shape[1] == 29
    i = int(train.lengths.argmin())
    assert bool(train.mask[i, :7].all()) and not bool(train.mask[i, 7:].any())
    assert bool((train.values[i, 7:] == 0).all())
    assert len(train.classes) == 9


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7])
def test_drop_rate_removes_that_fraction_of_time_points_seeded(rate):
    train, _ = load_uea("BasicMotions", drop_rate=rate, seed=3)
    kept = train.mask.all(-1).sum(1)  # whole time points
    assert kept.tolist() == [100 - int(100 * rate)] * 40
    again, _ = load_uea("BasicMotions", drop_rate=rate, seed=3)
    other, _ = load_uea("BasicMotions", drop_rate=rate, seed=4)
    assert torch.equal(again.mask, train.mask) and not torch.equal(other.mask, train.mask)


def test_drop_values_independently_per_channel():
    mask = torch.ones(2, 10, 3, dtype=torch.bool)
    out = drop_observations(mask, torch.tensor([10, 6]), 0.5, seed=0, drop="values")
    assert out[0].sum() == 15 and out[1, :6].sum() == 9 and out[1, 6:].all()
    assert not (out[0].all(-1) == out[0].any(-1)).all()  # some time point partly observed


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="drop_rate must be in"):
        drop_observations(torch.ones(1, 4, 1, dtype=torch.bool), torch.tensor([4]), 1.0)
    with pytest.raises(ValueError, match="drop must be one of"):
        drop_observations(torch.ones(1, 4, 1, dtype=torch.bool), torch.tensor([4]), 0.5, drop="rows")
    with pytest.raises(ValueError, match="name must be one of"):
        load_uea("Epilepsy")


def test_subset(basic):
    train, _ = basic
    sub = train.subset(train.labels == 0)
    assert len(sub) == 10 and bool((sub.labels == 0).all()) and sub.times is train.times


def test_missing_sktime_names_the_pip_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sktime", None)  # import sktime now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'timestepper\[data\]'"):
        load_uea("BasicMotions")
