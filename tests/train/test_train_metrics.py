import torch

from timestepper.train import digits
from timestepper.train import metrics as M


def test_classifier_reaches_97_percent_on_the_test_split():
    assert M.classifier_accuracy(M.digits_classifier(), "test") >= 0.97


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    """For commuting covariances d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    d = M.frechet_distance(
        (mu1.double(), torch.diag(a).double()), (mu2.double(), torch.diag(b).double())
    )
    want = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert abs(d - want) < 1e-9
    # a non-diagonal covariance and its rotation give the same distance against the identity
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    s = q @ torch.diag(a.double()) @ q.T
    d_rot = M.frechet_distance((mu1.double(), s), (mu1.double(), torch.eye(3, dtype=torch.float64)))
    assert abs(d_rot - float((a.sqrt() - 1).pow(2).sum())) < 1e-9


def test_metric_ranks_real_above_blurred_above_noise():
    x, y = digits("test")
    real = M.digits_report(x, labels=y, reference="train")
    blurred = torch.nn.functional.avg_pool2d(
        torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1
    )
    blur = M.digits_report(blurred, reference="train")
    noise = M.digits_report(
        torch.rand(540, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1,
        reference="train",
    )
    assert real["frechet"] < 0.1 * blur["frechet"] and blur["frechet"] < noise["frechet"]
    assert real["accuracy"] >= 0.97 and real["confidence"] > 0.9
    assert abs(sum(real["histogram"]) - 1) < 1e-12 and min(real["histogram"]) > 0.08
    # the split-half distance is the noise floor: small compared with any corruption
    assert M.split_half_distance() < 0.1 * blur["frechet"]
