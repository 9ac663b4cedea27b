"""Input checks shared by mtlib's public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that names the function and
the offending argument, so a user sees at once which call and which argument were wrong.
"""

from __future__ import annotations

import numbers

import torch

TIE_RULES = ("first", "last", "uniform")


def check_tensor(fn: str, name: str, x) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor, else raise ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: `{name}` must be a torch.Tensor, got {type(x).__name__}")
    check_float_dtype(fn, name, x)
    return x


def check_float_dtype(fn: str, name: str, x: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating-point dtype (gradients need one)."""
    if not x.is_floating_point():
        raise TypeError(
            f"{fn}: `{name}` must have a floating-point dtype (float16, bfloat16, float32, "
            f"float64), got {x.dtype}"
        )


def check_nonempty_last_dim(fn: str, name: str, x: torch.Tensor) -> None:
    """Raise ``ValueError`` if ``x`` is 0-d or its last dimension is empty."""
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(
            f"{fn}: `{name}` needs a non-empty last dimension to take a max over, "
            f"got shape {tuple(x.shape)}"
        )


def check_positive(fn: str, name: str, value) -> None:
    """Raise ``TypeError`` for a non-real ``value`` and ``ValueError`` unless it is > 0."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not bool((value > 0).all()):
            raise ValueError(f"{fn}: `{name}` must be > 0, got {value}")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: `{name}` must be a real number, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{fn}: `{name}` must be > 0, got {value}")


def check_ties(fn: str, ties) -> str:
    """Return ``ties`` if it names a known tie rule, else raise ``ValueError``."""
    if ties not in TIE_RULES:
        raise ValueError(f"{fn}: `ties` must be one of {TIE_RULES}, got {ties!r}")
    return ties
