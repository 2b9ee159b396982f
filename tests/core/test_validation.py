"""``check_finite_state``: one reduction when the state is finite, the entrywise test (naming the
first bad index) otherwise, and no false alarm when finite values overflow their sum."""

from __future__ import annotations

import math
import re

import pytest
import torch

from timestepper.core.status import NonFiniteError
from timestepper.core.validation import check_finite_state


@pytest.mark.parametrize("x", [
    torch.randn(4, 3),
    torch.full((3,), 3e38),  # finite entries whose float32 sum overflows
    torch.full((4,), 6e4, dtype=torch.float16),  # the same in half precision
    torch.full((2,), 1.5e308, dtype=torch.float64),
    torch.randn(3, dtype=torch.complex64),
    torch.arange(5),  # integers are always finite
], ids=["f32", "f32-overflowing-sum", "f16-overflowing-sum", "f64-overflowing-sum", "complex", "int"])
def test_finite_states_pass(x):
    check_finite_state(x, "x0")


@pytest.mark.parametrize("bad,index", [
    (torch.tensor([[1.0, 2.0], [math.nan, 0.0]]), (1, 0)),
    (torch.tensor([math.inf, -math.inf, 1.0]), (0,)),  # inf - inf: a NaN sum
    (torch.tensor([1.0, 3e38, 3e38, math.inf]), (3,)),  # overflow and a real inf
    (torch.tensor([1 + 1j, complex(0, math.nan)]), (1,)),
    (torch.tensor([1.0, math.nan], dtype=torch.bfloat16), (1,)),
])
def test_a_nonfinite_entry_is_refused_naming_its_index(bad, index):
    message = r"x0 contains \d NaN/inf value\(s\) " + re.escape(f"(first at index {index})")
    with pytest.raises(NonFiniteError, match=message):
        check_finite_state(bad, "x0")
