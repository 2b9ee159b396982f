import pytest
import torch

from timestepper.train.data import digits, digits_to_unit, toy_2d


def test_digits_splits_are_disjoint_and_cover_the_set():
    xa, ya = digits("all")
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    assert xa.shape == (1797, 1, 8, 8) and xtr.shape[0] + xte.shape[0] == 1797
    assert xtr.shape[0] == 1257 and xte.shape[0] == 540
    assert float(xa.min()) == -1.0 and float(xa.max()) == 1.0
    # every test image is an image of the full set and none is in the train split
    flat_tr = {tuple(r.tolist()) for r in xtr.flatten(1)}
    assert (
        sum(tuple(r.tolist()) in flat_tr for r in xte.flatten(1)) <= 5
    )  # the set has a few duplicates
    assert torch.bincount(yte).min() >= 50  # stratified
    assert float(digits_to_unit(xa).min()) == 0.0


@pytest.mark.parametrize("name", ["moons", "circles", "swiss_roll"])
def test_toy_sets_are_standardised(name):
    x = toy_2d(name, 500, seed=1)
    assert x.shape == (500, 2)
    assert torch.allclose(x.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(0), torch.ones(2), atol=1e-5)
    assert torch.equal(x, toy_2d(name, 500, seed=1))


def test_data_errors_name_the_argument():
    with pytest.raises(ValueError, match="split"):
        digits("val")
    with pytest.raises(ValueError, match="toy set"):
        toy_2d("spiral", 10)
