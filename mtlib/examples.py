"""The paper's worked examples: Boustany's function (Sec 4.3) and its maxpool variant (Sec 4.4).

Both functions are identically zero, yet PyTorch's autograd returns a non-zero derivative at
``t = 0``: -1.5 for :func:`boustany_f` with ``x = (1, 2, 3, 4)`` (Table 2) and -3 for
:func:`maxpool_f` (Table 3). The derivative is an associated gradient (Def 1) that mixes two
different representations of the same ``max``.

Chapter: intro, notation, theorem, tangent, boustany, maxpool, census, jax, directional,
lexicographic, related, results, training_valid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import pandas as pd
import torch

from mtlib._validate import check_tensor
from mtlib.maxpool import max_pool1d
from mtlib.piecewise import associated_gradient
from mtlib.ties import check_ties


def max1(x: torch.Tensor) -> torch.Tensor:
    """The paper's ``max1`` (Table 1, after Boustany 2024): a Python loop with a strict ``>``.

    The branch keeps the first maximal entry, so its associated gradient is the one-hot vector
    of the first maximal index: representation (17), gradient (18).

    Examples:
        >>> max1(torch.tensor([1.0, 3.0, 3.0])).item()
        3.0
    """
    check_tensor("max1", "x", x)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"max1: `x` must be a non-empty vector, got shape {tuple(x.shape)}")
    res = x[0]
    for i in range(1, x.numel()):
        if x[i] > res:
            res = x[i]
    return res


def _as_tensor(fn: str, name: str, value, dtype=torch.float64) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return check_tensor(fn, name, value)
    return check_tensor(fn, name, torch.as_tensor(value, dtype=dtype))


def boustany_f(t: torch.Tensor, x=(1.0, 2.0, 3.0, 4.0)) -> torch.Tensor:
    """Boustany's function ``f(t) = max1(t x) - torch.max(t x)`` (Sec 4.3), identically 0.

    ``max1`` is the Python-loop max of Table 1 (first-index rule, eq 18) and ``torch.max`` the
    built-in full reduction, which splits its gradient uniformly over ties (eq 20). At
    ``t = 0`` every entry of ``t x`` ties, so autograd returns

    .. math::

        \\tilde f'(0) = x_1 - \\frac{1}{a}\\sum_{i=1}^a x_i,

    which is ``1 - 10/4 = -1.5`` for ``x = (1, 2, 3, 4)`` (Table 2).

    Args:
        t: tensor of any shape; ``f`` is applied to each element.
        x: the vector ``x`` (sequence or 1-d tensor).

    Returns:
        A tensor of ``t``'s shape (all zeros, up to rounding).

    Examples:
        >>> t = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        >>> boustany_f(t).backward()
        >>> t.grad.item()
        -1.5
    """
    check_tensor("boustany_f", "t", t)
    x = _as_tensor("boustany_f", "x", x, dtype=t.dtype).to(t)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"boustany_f: `x` must be a non-empty vector, got shape {tuple(x.shape)}")
    values = [max1(ti * x) - torch.max(ti * x) for ti in t.reshape(-1)]
    return torch.stack(values).reshape(t.shape)


def maxpool_f(t: torch.Tensor, a: float = 1.0, b: float = 4.0, ties: str = "first") -> torch.Tensor:
    """``f(t) = maxpool1d(a t, b t) - maxpool1d(b t, a t)`` (Sec 4.4), identically 0.

    The pool is a window of 2 with stride 1 (``torch.nn.MaxPool1d(2, stride=1)``). With
    ``ties="first"`` PyTorch's own ``max_pool1d`` is used: its associated gradient at a tie is
    ``(1, 0)``, so ``f'(0) = a - b`` (-3 for the paper's ``a = 1, b = 4``, Table 3). With
    ``ties="last"`` (``mtlib.max_pool1d``) it is ``b - a``, and with ``ties="uniform"`` the
    symmetric split (eq 20) gives the true derivative 0.

    Args:
        t: tensor of any shape; ``f`` is applied to each element.
        a, b: the two slopes.
        ties: ``"first"`` (PyTorch), ``"last"`` or ``"uniform"``.

    Examples:
        >>> t = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
        >>> maxpool_f(t).backward()
        >>> t.grad.item()
        -3.0
    """
    check_tensor("maxpool_f", "t", t)
    check_ties("maxpool_f", ties)
    pool = torch.nn.functional.max_pool1d if ties == "first" else partial(max_pool1d, ties=ties)
    tt = t.reshape(-1, 1, 1)
    left = pool(torch.cat([a * tt, b * tt], dim=-1), 2, 1)
    right = pool(torch.cat([b * tt, a * tt], dim=-1), 2, 1)
    return (left - right).reshape(t.shape)


def derivative_table(f: Callable[[torch.Tensor], torch.Tensor], ts: Iterable[float]) -> pd.DataFrame:
    """Autograd's derivative of a scalar function ``f`` at each ``t`` (Tables 2 and 3).

    Each ``t`` is a float64 scalar tensor; the derivative is :func:`mtlib.associated_gradient`.

    Returns:
        A DataFrame with columns ``t``, ``f(t)`` and ``f'(t)`` (autograd).

    Examples:
        >>> derivative_table(boustany_f, [0.0, 1.0])["f'(t)"].tolist()
        [-1.5, 0.0]
    """
    if not callable(f):
        raise TypeError(f"derivative_table: `f` must be callable, got {type(f).__name__}")
    rows = []
    for t in ts:
        tt = torch.tensor(float(t), dtype=torch.float64)
        rows.append(
            {"t": float(t), "f(t)": f(tt).item(), "f'(t)": associated_gradient(f, tt).item()}
        )
    if not rows:
        raise ValueError("derivative_table: `ts` must hold at least one point")
    return pd.DataFrame(rows)
