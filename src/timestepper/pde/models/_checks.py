"""Argument checks shared by the surrogate networks."""

from __future__ import annotations


def check_architecture(dim: int, **sizes: object) -> None:
    """``dim`` is 1 or 2 and every size is an integer >= 1, else ValueError naming it."""
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim!r}")
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
