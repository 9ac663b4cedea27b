"""Lexicographic directional derivatives (LD-derivatives) and the lexicographic gradient.

For a matrix of directions ``M = [m_1 ... m_k]`` the LD-derivative of Khan & Barton (2015),
after Nesterov's lexicographic derivative (2005), is the matrix

.. math::

    f'(x; M) = [f^{(0)}_{x,M}{}'(0; m_1) \\; \\cdots \\; f^{(k-1)}_{x,M}{}'(0; m_k)],
    \\qquad f^{(0)}_{x,M} = f'(x; \\cdot), \\quad
    f^{(j)}_{x,M} = [f^{(j-1)}_{x,M}]'(m_j; \\cdot),                      \\qquad (\\text{LD})

the directional derivative of each successive directional derivative: column ``j`` is the
slope in direction ``m_j`` of the piece that ``m_1, ..., m_{j-1}`` selected. For a
composition of smooth maps with max/min/abs/relu/clamp/maxpool it is computed in one forward
pass carrying the ``k`` tangents, each kink taking the entry that is largest at the perturbed
point ``x + e m_1 + e^2 m_2 + ... + e^k m_k`` for small ``e > 0`` (lexicographic order,
:mod:`mtlib.directional._order`), and it obeys the chain rule
``(g o f)'(x; M) = g'(f(x); f'(x; M))`` (Khan & Barton 2015).

When ``M`` is square and nonsingular, ``J = f'(x; M) M^{-1}`` is a lexicographic derivative of
Nesterov, an element of the lexicographic subdifferential, which lies in Clarke's generalized
Jacobian (Nesterov 2005; Khan & Barton 2015); for a
piecewise-C^1 function it is the Jacobian of a piece that is active on an open set around the
perturbed point, an element of the B-subdifferential (Khan & Barton 2013, 2015). For a
piecewise-linear function it equals the gradient at ``x + e m_1 + ... + e^k m_k`` for every
small ``e > 0``; the tests check exactly that. (We cite these papers by their results, without
section or theorem numbers, which we could not check against the published texts.)

Chapter: lexicographic (also used by kinkcheck and census for exact verdicts).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map

from mtlib._validate import check_tensor
from mtlib.directional._dual import Dual


def evaluate(fn: str, f: Callable, x: torch.Tensor, tangents: torch.Tensor):
    """Run ``f`` once on the dual ``Dual(x, tangents=tangents)``; return ``(value, tangents)``
    with ``f``'s output structure, tangents stacked ``(k, *shape)`` (0 for constants)."""
    k = tangents.shape[0]
    out = f(Dual(x.detach(), tangents=tangents.detach()))
    leaves, _ = tree_flatten(out)
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            raise TypeError(f"{fn}: `f` must return tensors, got {type(leaf).__name__}")
    value = tree_map(lambda o: o.primal if isinstance(o, Dual) else o, out)

    def tangent(o):
        if not isinstance(o, Dual):
            return o.new_zeros(k, *o.shape)
        return o.tangents.expand(k, *o.shape)

    return value, tree_map(tangent, out)


def ld_jvp(f: Callable, x: torch.Tensor, M: torch.Tensor):
    """``(f(x), f'(x; M))``: the value and the LD-derivative for ``k`` directions at once.

    ``M[..., j]`` is direction ``m_{j+1}``; column ``j`` of the result is the directional
    derivative, in direction ``m_{j+1}``, of the piece selected by ``m_1, ..., m_j`` (eq LD of
    :mod:`mtlib.directional._lexicographic`; Khan & Barton 2015). ``f`` runs
    once on a :class:`Dual` carrying the ``k`` tangents (a batched pass, not ``k`` passes):
    smooth ops apply their Jacobian to every column; at a kink the lexicographically largest
    row ``(value, t_1, ..., t_k)`` wins (the first direction that breaks a tie decides, then
    the next); ``abs`` multiplies by ``fsign(value, t_1, ..., t_k)``, the sign of the first
    nonzero; a Python ``if`` compares lexicographically. With ``k = 1`` the result is the
    one-sided derivative of :func:`mtlib.directional.jvp`, exactly.

    Supported ops: those of :func:`mtlib.directional.jvp` (smooth torch ops, max/amax/maximum,
    min, relu, abs, clamp, hardtanh, relu6, leaky_relu, max_pool1d/2d and mtlib's tie-aware
    pools); any other op raises ``NotImplementedError`` naming it.

    Args:
        f: a function of one tensor returning a tensor (or a tuple/list/dict of tensors).
        x: the point, floating-point tensor.
        M: the directions, shape ``(*x.shape, k)`` with ``k >= 1``.

    Returns:
        ``(value, D)`` with ``D`` of shape ``(*value.shape, k)`` (per output for structured
        outputs).

    Raises:
        TypeError: ``f`` not callable, ``x`` or ``M`` not floating-point tensors, ``f``
            returning something other than tensors.
        ValueError: ``M`` not of shape ``(*x.shape, k)``.
        NotImplementedError: an op without a rule (the message names it).

    Examples:
        >>> t = torch.tensor(0.0, dtype=torch.float64)
        >>> ld_jvp(torch.abs, t, torch.tensor([-1.0, 1.0], dtype=torch.float64))[1].tolist()
        [1.0, -1.0]
        >>> y = torch.zeros(2, dtype=torch.float64)
        >>> ld_jvp(torch.max, y, torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64))[1].tolist()
        [1.0, 1.0]

    References:
        Nesterov (2005), Lexicographic differentiation of nonsmooth functions, Math. Program.
        104; Khan & Barton (2015), A vector forward mode of automatic differentiation for
        generalized derivative evaluation, Optim. Methods Softw. 30(6).
    """
    M = _check_directions("ld_jvp", f, x, M)
    value, tangents = evaluate("ld_jvp", f, x, M.movedim(-1, 0))
    return value, tree_map(lambda t: t.movedim(0, -1), tangents)


def lexicographic_gradient(f: Callable, x: torch.Tensor, M: torch.Tensor | None = None) -> torch.Tensor:
    """A lexicographic gradient of a scalar ``f`` at ``x``: ``f'(x; M) M^{-1}``, of ``x``'s shape.

    With ``M`` square (``k = x.numel()`` directions) and nonsingular, the row vector
    ``g = f'(x; M) M^{-1}`` (:func:`ld_jvp`) is a lexicographic derivative (Nesterov 2005;
    Khan & Barton 2015), an element of Clarke's generalized gradient
    ``\\partial_C f(x)`` at *every* point, ties included: for Boustany's zero function
    (Sec 4.3, Table 2) and the maxpool one (Sec 4.4, Table 3) it is 0 where autograd returns
    -1.5 and -3. For piecewise-linear ``f`` it is the gradient at ``x + e m_1 + e^2 m_2 + ...``
    for small ``e > 0``, the gradient of the piece that the perturbation enters. Where ``f``
    is differentiable it is the gradient. The default ``M`` is the identity (``x.numel()``
    coordinate directions, ``e_1`` first). Cost: one forward pass with ``x.numel()`` tangents.
    Comparisons are decided at the perturbed point, as in :func:`mtlib.directional.jvp`: a branch
    of ``torch.where`` or ``if`` must be defined where its condition switches (``where(x == 0,
    1, sin(x) / x)`` gives NaN at 0).

    Args:
        f: a function of one tensor returning a single-element tensor.
        x: the point, floating-point tensor.
        M: ``None`` (identity) or a square nonsingular matrix of directions, shape
            ``(*x.shape, n)`` or ``(n, n)`` with ``n = x.numel()``; column ``j`` is ``m_{j+1}``.

    Returns:
        A tensor of ``x``'s shape.

    Raises:
        TypeError: bad ``f``/``x``/``M`` types, or ``f`` returning a non-tensor.
        ValueError: ``M`` not square with ``x.numel()`` columns, or singular; ``f`` not scalar.
        NotImplementedError: an op without a rule (the message names it).

    Examples:
        >>> from mtlib.examples import boustany_f
        >>> lexicographic_gradient(boustany_f, torch.tensor(0.0, dtype=torch.float64)).item()
        0.0
        >>> y = torch.zeros(2, dtype=torch.float64)
        >>> lexicographic_gradient(lambda v: v.max(), y).tolist()
        [1.0, 0.0]
        >>> swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
        >>> lexicographic_gradient(lambda v: v.max(), y, swap).tolist()
        [0.0, 1.0]

    References:
        Nesterov (2005); Khan & Barton (2013), Evaluating an element of the Clarke generalized
        Jacobian of a composite piecewise differentiable function, ACM TOMS 39(4); Khan &
        Barton (2015). Chapter: lexicographic.
    """
    if not callable(f):
        raise TypeError(f"lexicographic_gradient: `f` must be callable, got {type(f).__name__}")
    check_tensor("lexicographic_gradient", "x", x)
    n = x.numel()
    if M is None:
        square = torch.eye(n, dtype=x.dtype, device=x.device)
    else:
        check_tensor("lexicographic_gradient", "M", M)
        if M.shape not in ((*x.shape, n), (n, n)):
            raise ValueError(
                f"lexicographic_gradient: `M` must be square, of shape (*x.shape, n) = "
                f"{(*x.shape, n)} or (n, n) = {(n, n)} with n = x.numel(), got {tuple(M.shape)}"
            )
        square = M.to(x).reshape(n, n)
    if M is not None and n and _singular(square):
        raise ValueError("lexicographic_gradient: `M` must be nonsingular (its columns, the "
                         "directions, must span the input space); got a singular matrix")
    value, D = ld_jvp(f, x, square.reshape(*x.shape, n))
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"lexicographic_gradient: `f` must return one number, got {shape}")
    row = D.reshape(1, n)
    if M is None:
        return row.reshape(x.shape)
    return torch.linalg.solve(square, row, left=False).reshape(x.shape)


def _singular(square: torch.Tensor) -> bool:
    """Whether ``square`` is singular to working precision: LU with partial pivoting reports an
    exact zero pivot, or the smallest pivot is below ``n * eps`` times the largest (then the
    solve would be meaningless in this precision)."""
    lu, _, info = torch.linalg.lu_factor_ex(square)
    pivots = lu.diagonal().abs()
    tol = square.shape[0] * torch.finfo(square.dtype).eps * pivots.max()
    return bool(info != 0) or bool(pivots.min() <= tol)


def _check_directions(fn: str, f, x, M) -> torch.Tensor:
    if not callable(f):
        raise TypeError(f"{fn}: `f` must be callable, got {type(f).__name__}")
    check_tensor(fn, "x", x)
    check_tensor(fn, "M", M)
    if M.dim() != x.dim() + 1 or M.shape[:-1] != x.shape or M.shape[-1] < 1:
        raise ValueError(
            f"{fn}: `M` must have shape (*x.shape, k) = {(*x.shape, 'k')} with k >= 1, "
            f"got {tuple(M.shape)}"
        )
    return M.to(x)
