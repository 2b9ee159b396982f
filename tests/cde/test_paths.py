"""Control paths against torchcde (coefficients, values, derivatives) and bad input."""

from __future__ import annotations

import pytest
import torch

from timestepper.cde import (
    CubicPath,
    LinearPath,
    control_path,
    hermite_cubic_coeffs,
    linear_knots,
    natural_cubic_coeffs,
    rectilinear_knots,
)

torchcde = pytest.importorskip("torchcde")


def _series(seed=0, b=3, n=12, c=4, drop=0.4):
    g = torch.Generator().manual_seed(seed)
    t = torch.sort(torch.rand(n, generator=g, dtype=torch.float64) * 10).values
    x = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    mask = torch.rand(b, n, c, generator=g) > drop
    mask[0, :, 1] = False  # a channel never observed
    mask[1, :3, 2] = False  # missing at the start
    mask[1, -4:, 3] = False  # and at the end
    return t, x, mask, x.masked_fill(~mask, float("nan"))


def test_linear_knots_match_torchcde_with_missing_values():
    t, x, mask, xn = _series()
    torch.testing.assert_close(linear_knots(t, x, mask), torchcde.linear_interpolation_coeffs(xn, t),
                               rtol=0, atol=1e-14)


def test_rectilinear_knots_match_torchcde():
    t, x, mask, xn = _series()
    mask[..., 0] = True
    xn = x.masked_fill(~mask, float("nan"))
    with pytest.warns(UserWarning):  # torchcde warns about the back-filled start
        ref = torchcde.linear_interpolation_coeffs(xn, rectilinear=0)
    got = rectilinear_knots(t, x, mask, time_index=0)
    assert got.shape == (3, 23, 4)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("kind", ["hermite-cubic", "natural-cubic"])
def test_cubic_coefficients_match_torchcde(kind, masked):
    t, x, mask, xn = _series(1)
    ours, theirs = {
        "hermite-cubic": (hermite_cubic_coeffs, torchcde.hermite_cubic_coefficients_with_backward_differences),
        "natural-cubic": (natural_cubic_coeffs, torchcde.natural_cubic_coeffs),
    }[kind]
    got = torch.cat(ours(t, x, mask if masked else None), -1)
    torch.testing.assert_close(got, theirs(xn if masked else x, t), rtol=1e-9, atol=1e-9)


def _torchcde_path(kind, xn, t):
    if kind == "linear":
        return torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(xn, t), t)
    coeffs = (torchcde.natural_cubic_coeffs if kind == "natural-cubic"
              else torchcde.hermite_cubic_coefficients_with_backward_differences)(xn, t)
    return torchcde.CubicSpline(coeffs, t)


@pytest.mark.parametrize("kind", ["linear", "hermite-cubic", "natural-cubic"])
def test_path_values_and_derivatives_match_torchcde(kind):
    t, x, mask, xn = _series(3)
    ours = control_path(t, x, mask, kind=kind, time_channel=False)
    ref = _torchcde_path(kind, xn, t)
    for s in torch.linspace(float(t[0]) - 0.5, float(t[-1]) + 0.5, 41, dtype=torch.float64):
        torch.testing.assert_close(ours.evaluate(float(s)), ref.evaluate(s), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours.derivative(s), ref.derivative(s), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours.evaluate(s.expand(3)), ref.evaluate(s), rtol=1e-10, atol=1e-10)
    assert ours.knots.tolist() == t.tolist() and ours.interval == (float(t[0]), float(t[-1]))


@pytest.mark.parametrize("kind", ["linear", "hermite-cubic", "natural-cubic"])
def test_paths_interpolate_the_observations(kind):
    t, x, mask, _ = _series(4)
    path = control_path(t, x, mask, kind=kind, time_channel=False)
    for i, s in enumerate(t.tolist()):
        got = path.evaluate(s)
        assert torch.allclose(got[mask[:, i]], x[:, i][mask[:, i]], atol=1e-10)


def test_natural_spline_is_c2_and_hermite_is_c1():
    t, x, _, _ = _series(5)
    nat = control_path(t, x, kind="natural-cubic", time_channel=False)
    her = control_path(t, x, kind="hermite-cubic", time_channel=False)
    assert isinstance(nat, CubicPath) and isinstance(her, CubicPath)
    h = (t[1:] - t[:-1]).view(-1, 1)
    for p in (nat, her):  # the left piece's derivative at each knot is the right piece's b
        end = p.b[:, :-1] + (p.two_c[:, :-1] + p.three_d[:, :-1] * h[:-1]) * h[:-1]
        torch.testing.assert_close(end, p.b[:, 1:], rtol=1e-9, atol=1e-9)
        for j, s in enumerate(t[1:-1].tolist()):  # and derivative() at a knot is the left piece's
            torch.testing.assert_close(p.derivative(s), end[:, j], rtol=1e-9, atol=1e-9)
    second_end = nat.two_c[:, :-1] + 2 * nat.three_d[:, :-1] * h[:-1]
    torch.testing.assert_close(second_end, nat.two_c[:, 1:], rtol=1e-8, atol=1e-8)
    assert not torch.allclose(her.two_c[:, :-1] + 2 * her.three_d[:, :-1] * h[:-1], her.two_c[:, 1:])


def test_time_and_intensity_channels():
    t = torch.arange(6, dtype=torch.float64)
    x = torch.arange(12, dtype=torch.float64).view(1, 6, 2)
    mask = torch.tensor([[[1, 1], [0, 1], [1, 0], [0, 0], [0, 0], [0, 0]]], dtype=torch.bool)
    path = control_path(t, x, mask, kind="linear", intensity=True)
    assert isinstance(path, LinearPath) and path.channels == 5
    knots = path.values[0]
    assert knots[:, 0].tolist() == [0, 1, 2, 2, 2, 2]  # time held after the last observation
    assert (6 * knots[:, 3]).tolist() == [1, 1, 2, 2, 2, 2]  # cumulative observations / L
    assert (6 * knots[:, 4]).tolist() == [1, 2, 2, 2, 2, 2]
    assert knots[:, 1].tolist() == [0, 2, 4, 4, 4, 4]  # x channel 0, linear through the gap
    rect = control_path(t, x, mask, kind="rectilinear")
    assert rect.knots.tolist() == list(range(11)) and rect.channels == 3
    assert rect.values[0, :4, 0].tolist() == [0, 1, 1, 2]  # time moves, then values jump
    assert rect.values[0, :4, 1].tolist() == [0, 0, 0, 0]


def test_per_sample_times_pick_one_piece_per_series():
    t, x, _, _ = _series(6)
    path = control_path(t, x, kind="hermite-cubic", time_channel=False)
    s = torch.tensor([2.0, 5.0, 7.5], dtype=torch.float64)
    got = path.derivative(s)
    for b in range(3):
        torch.testing.assert_close(got[b], path.derivative(float(s[b]))[b])


# -- bad input -----------------------------------------------------------------------------


def test_non_increasing_times_are_refused():
    x = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match=r"times must be strictly increasing: times\[2\]"):
        control_path(torch.tensor([0.0, 1.0, 1.0, 2.0]), x)
    with pytest.raises(ValueError, match="times must be a 1-D tensor"):
        control_path(torch.zeros(2, 4), x)


def test_nan_without_mask_is_refused():
    x = torch.zeros(1, 4, 2)
    x[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="values contain NaN/inf but no mask was given: pass mask="):
        control_path(torch.arange(4.0), x)
    mask = torch.ones(1, 4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="values are NaN/inf where mask is True"):
        control_path(torch.arange(4.0), x, mask)
    mask[0, 1, 0] = False
    assert control_path(torch.arange(4.0), x, mask).evaluate(1.0).isfinite().all()


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="values has 3 time points"):
        control_path(torch.arange(4.0), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="mask must be a bool tensor shaped like values"):
        control_path(torch.arange(4.0), torch.zeros(1, 4, 2), torch.ones(1, 4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="kind must be one of"):
        control_path(torch.arange(4.0), torch.zeros(1, 4, 2), kind="spline")
    with pytest.raises(ValueError, match="time_index must be an int"):
        rectilinear_knots(torch.arange(4.0), torch.zeros(1, 4, 2), time_index=2)
