"""phi functions: values against a high-precision series, and the identities they satisfy."""

import math
from fractions import Fraction

import pytest
import torch

from timestepper.core import phi


def _phi_reference(k: int, z: float) -> float:
    """phi_k(z) = sum_j z^j / (j + k)! summed with exact rationals (z a short decimal)."""
    zf = Fraction(z).limit_denominator(10**12)
    total, term = Fraction(0), Fraction(1)
    for j in range(200):
        total += term / math.factorial(j + k)
        term *= zf
    return float(total)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("z", [-30.0, -5.0, -1.0, -0.6, -0.4, -1e-3, -1e-9, 0.0, 1e-7, 0.3, 0.49, 0.51, 2.0])
def test_phi_matches_exact_series(k, z):
    got = float(phi(k, torch.tensor(z, dtype=torch.float64)))
    ref = _phi_reference(k, z)
    assert abs(got - ref) <= 1e-14 * max(1.0, abs(ref)), (k, z, got, ref)


def test_phi_recurrence_and_limits():
    z = torch.linspace(-8, 3, 101, dtype=torch.float64)
    for k in range(1, 4):
        lhs = phi(k + 1, z) * z
        rhs = phi(k, z) - 1.0 / math.factorial(k)
        assert torch.allclose(lhs, rhs, atol=1e-13)
    assert float(phi(1, torch.tensor(-math.inf))) == 0.0
    assert float(phi(2, torch.tensor(-math.inf))) == 0.0
    assert float(phi(0, torch.tensor(0.0))) == 1.0


def test_phi_complex_and_bad_k():
    z = torch.tensor([0.1 + 0.2j, -3.0 + 4.0j], dtype=torch.complex128)
    p1 = phi(1, z)
    assert torch.allclose(p1, torch.expm1(z) / z)
    with pytest.raises(ValueError, match="k must be"):
        phi(-1, z)


@pytest.mark.parametrize("kmax", [1, 2, 4, 9])
def test_phi_rows_is_phi_bit_for_bit(kmax):
    """The per-grid tables evaluate every k in one pass; the values must be phi's exactly, on both
    sides of the series radius, at 0 and at -inf (a step to zero noise)."""
    from timestepper.core.phi import phi_rows

    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(40, generator=g, dtype=torch.float64) * 0.7,
                   torch.tensor([0.0, -0.5, 0.5, 0.4999999, -30.0, 12.0, -math.inf], dtype=torch.float64)])
    rows = torch.from_numpy(phi_rows(kmax, z.numpy()))
    assert rows.shape == (kmax, z.numel())
    for k in range(1, kmax + 1):
        assert torch.equal(rows[k - 1], phi(k, z)), k
    large = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)  # no entry in the series' range
    assert torch.equal(torch.from_numpy(phi_rows(3, large.numpy()))[2], phi(3, large))
