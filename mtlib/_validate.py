"""Input checks shared by mtlib's public functions.

Every check raises ``TypeError`` or ``ValueError`` with a message that names the function and
the offending argument, so a user sees at once which call and which argument were wrong.
"""

from __future__ import annotations

import numbers

import torch


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


def check_real(fn: str, name: str, value) -> float:
    """Return ``value`` as a float if it is a real number (not a bool), else raise ``TypeError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: `{name}` must be a real number, got {type(value).__name__}")
    return float(value)


def check_int(fn: str, name: str, value, *, min: int = 1) -> int:
    """Return ``value`` if it is an int >= ``min``.

    The one integer check of mtlib: ``TypeError`` for a wrong type (a float, a bool, a string),
    ``ValueError`` for a wrong value (below ``min``).

    Examples:
        >>> check_int("f", "n", 3)
        3
        >>> check_int("f", "n", 0, min=0)
        0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: `{name}` must be an int, got {type(value).__name__}")
    if value < min:
        raise ValueError(f"{fn}: `{name}` must be >= {min}, got {value}")
    return int(value)


def check_positive(fn: str, name: str, value) -> None:
    """Raise ``TypeError`` for a non-real ``value`` and ``ValueError`` unless it is > 0."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or not bool((value > 0).all()):
            raise ValueError(f"{fn}: `{name}` must be > 0, got {value}")
        return
    if not check_real(fn, name, value) > 0:
        raise ValueError(f"{fn}: `{name}` must be > 0, got {value}")


def check_direction(fn: str, f, x, d) -> torch.Tensor:
    """Check a callable ``f``, a point ``x`` and a direction ``d`` of ``x``'s shape (floating
    tensors); return ``d`` in ``x``'s dtype and device."""
    if not callable(f):
        raise TypeError(f"{fn}: `f` must be callable, got {type(f).__name__}")
    check_tensor(fn, "x", x)
    check_tensor(fn, "d", d)
    if d.shape != x.shape:
        raise ValueError(f"{fn}: `d` must have the shape of `x` {tuple(x.shape)}, got {tuple(d.shape)}")
    return d.to(x)
