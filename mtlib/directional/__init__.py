"""Exact one-sided and lexicographic directional derivatives through max, relu, abs, clamp, maxpool.

The directional derivative of ``f`` at ``x`` in the direction ``d`` is the one-sided limit

.. math::

    f'(x; d) = \\lim_{h \\to 0^+} \\frac{f(x + h d) - f(x)}{h}.

It exists for every composition of smooth maps with ``max``, ``relu``, ``abs``, ``clamp`` and
the maxpools, and it obeys the chain rule ``(v o u)'(x; d) = v'(u(x); u'(x; d))`` when ``v`` is
locally Lipschitz and ``u`` is directionally differentiable (Shapiro 1990; Scholtes 2012 for
piecewise-C^1 maps). At a kink it is a property of the *function*,
not of a representation: where an associated gradient (Def 1, eq 7) depends on the tie rule,
``f'(x; d)`` does not. For Boustany's zero function (Sec 4.3) and its maxpool variant (Sec 4.4)
it is ``0`` in both directions, where autograd returns ``-1.5`` and ``-3``.

:func:`jvp` evaluates ``f`` on a :class:`Dual`, a tensor carrying the tangent ``d``;
:func:`ld_jvp` carries ``k`` tangents at once and resolves each kink lexicographically (the
LD-derivative of Nesterov 2005 and Khan & Barton 2015), and :func:`lexicographic_gradient`
turns it into an element of Clarke's generalized gradient at every point;
:func:`perturbed_gradient` gets one with probability one from a single tangent and one reverse
pass, at the cost of a gradient. See
:mod:`mtlib.directional._dual` (the tensor and its dispatch), :mod:`mtlib.directional._order`
(the lexicographic order), :mod:`mtlib.directional._smooth` (smooth ops, comparisons,
metadata), :mod:`mtlib.directional._kinks` (the kinks) and
:mod:`mtlib.directional._lexicographic` (LD-derivatives), :mod:`mtlib.directional._perturbed`
(the perturbed-branch gradient).

Chapter: boustany, directional, lexicographic, related, training_valid.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import pandas as pd
import torch
from torch.utils._pytree import tree_map

from mtlib._autodiff import one_sided_difference, reverse_jacobian
from mtlib._validate import check_direction, check_positive
from mtlib.directional import _kinks, _pools  # noqa: F401  (importing registers the kink rules)
from mtlib.directional._dual import Dual, Rule
from mtlib.directional._dual import register_rule as _register_rule
from mtlib.directional._lexicographic import evaluate, ld_jvp, lexicographic_gradient
from mtlib.directional._perturbed import perturbed_gradient
from mtlib.directional._smooth import smooth_rule  # importing also registers the smooth rules

__all__ = ["Dual", "compare_directional", "jvp", "ld_jvp", "lexicographic_gradient",
           "one_sided_difference", "perturbed_gradient", "register_rule", "register_smooth"]


def jvp(f: Callable, x: torch.Tensor, d: torch.Tensor):
    """``(f(x), f'(x; d))``: the value and the exact one-sided directional derivative.

    ``f`` is evaluated once on the dual point ``x + h d`` (``h -> 0+``). Smooth torch ops push
    the tangent forward with the ordinary chain rule; at a kink the one-sided rules apply,

    .. math::

        \\max{}'(x; d) = \\max_{i \\in T(x)} d_i, \\qquad \\mathrm{relu}'(0; d) = \\max(d, 0),
        \\qquad |\\cdot|'(0; d) = |d|,

    with ``T(x)`` the tie set of ``x`` (Sec 4.3, eq 19); maxpool applies the max rule per
    window. Comparisons (``>``, ``<=``, ``==`` ...) order ``(value, tangent)`` pairs
    lexicographically, the order of ``x + h d`` for small ``h > 0``, so a Python ``if`` on
    tensor values (the paper's ``max1``, Table 1) follows the perturbed point. The result is
    exact whenever the branches of such an ``if`` agree where its condition switches and are
    defined there, as they are in a program computing a continuous function from ops defined
    at every point it visits. An equality test is decided on the perturbed point as well:
    ``x == 0`` is false along every ``d != 0``, so ``torch.where(x == 0, 1.0, torch.sin(x) / x)``
    takes the ``sin(x) / x`` branch at ``x = 0`` and returns NaN for the value and the
    derivative, although the function is ``1`` there; write it with an op that is defined at
    the switch (``torch.sinc(x / math.pi)``, after :func:`register_smooth`). Smooth ops that
    are singular at a point (``sqrt`` or ``log`` at 0) give there what forward-mode autodiff
    gives.

    Args:
        f: a function of one tensor, returning a tensor or a tuple/list/dict of tensors, built
            from torch ops (``mtlib.directional`` lists the supported ones by raising for others).
        x: the point, floating-point tensor.
        d: the direction, same shape as ``x``.

    Returns:
        ``(value, derivative)`` with the structure of ``f``'s output; a plain-tensor output
        (one that does not depend on ``x``) gets a zero derivative. Code that reads the raw
        data of a tensor outside torch's Python API (a Triton kernel, a C++ extension that is
        not a registered torch op) sees only the primal, and its result counts as a constant.

    Raises:
        TypeError: ``f`` not callable, ``x`` or ``d`` not floating-point tensors, or ``f``
            returning something other than tensors.
        ValueError: ``d`` and ``x`` of different shapes.
        NotImplementedError: ``f`` uses an op without a rule (the message names it and says how
            to register one), an in-place op, or reads a dual's value with ``.item()``.

    Examples:
        >>> from mtlib.examples import boustany_f
        >>> t = torch.tensor(0.0, dtype=torch.float64)
        >>> [jvp(boustany_f, t, torch.tensor(s, dtype=torch.float64))[1].item() for s in (1.0, -1.0)]
        [0.0, 0.0]
        >>> jvp(torch.abs, t, torch.tensor(-1.0, dtype=torch.float64))[1].item()
        1.0

    References:
        Shapiro (1990), On concepts of directional differentiability, JOTA 66(3); Scholtes (2012),
        Introduction to Piecewise Differentiable Equations; Despres (2024), Sec 4.3-4.4.
    """
    d = check_direction("jvp", f, x, d)
    value, tangents = evaluate("jvp", f, x, d.unsqueeze(0))  # the k = 1 case of ld_jvp
    return value, tree_map(lambda t: t[0], tangents)


def register_smooth(*funcs: Callable) -> None:
    """Declare torch ops differentiable everywhere: their tangent is pushed by ``torch.func.jvp``.

    Use this for an op without a kink that :func:`jvp` rejects (``torch.sinc``, ``torch.erfc``
    ...). Do not register an op with a kink this way: at the kink ``torch.func.jvp`` returns
    an associated derivative, not the one-sided one. The registration is global.

    Raises:
        TypeError: an argument that is not callable.

    Examples:
        >>> register_smooth(torch.sinc)
        >>> jvp(torch.sinc, torch.tensor(0.0), torch.tensor(1.0))[1].item()
        0.0
    """
    _register_rule(funcs, smooth_rule)


def register_rule(funcs, rule: Rule) -> None:
    """Answer calls of the torch ops ``funcs`` on duals with ``rule(func, args, kwargs)``.

    ``rule`` receives the op and its arguments, some of which are :class:`Dual` (read
    ``a.primal`` and ``a.tangents``, the ``k`` stacked tangents of shape ``(k, *a.shape)``;
    ``k = 1`` under :func:`jvp`, where ``a.tangent`` is the one tangent), and returns the
    result: a :class:`Dual` built with ``Dual(value, tangents=...)`` (or ``Dual(value,
    tangent)`` for ``k = 1``), or the same function written with supported ops, which works
    for every ``k``, as below for ``softshrink(x) = x - clamp(x, -lambd, lambd)``. At a kink
    a rule for :func:`ld_jvp` must pick the lexicographically largest perturbed point
    (``mtlib.directional._order``). The registration is global.

    Raises:
        TypeError: ``rule`` or an entry of ``funcs`` not callable.

    Examples:
        >>> import torch.nn.functional as F
        >>> def softshrink(x, lambd=0.5):
        ...     return x - x.clamp(-lambd, lambd)
        >>> register_rule([F.softshrink], lambda func, args, kwargs: softshrink(*args, **kwargs))
        >>> jvp(F.softshrink, torch.tensor([0.5, 0.5]), torch.tensor([1.0, -1.0]))[1].tolist()
        [1.0, 0.0]
    """
    _register_rule(funcs, rule)


def compare_directional(f: Callable, points: torch.Tensor, directions: torch.Tensor, *,
                        h: float = 1e-7, atol: float = 1e-6) -> pd.DataFrame:
    """Directional derivative vs finite differences vs autograd, one row per (point, direction).

    ``f`` must act row by row and return one number per row (shape ``(n,)`` or ``(n, 1)``), like
    a network of :func:`mtlib.networks.random_network` with one output. For each row ``x`` and
    direction ``d`` the columns are:

    * ``directional``: ``f'(x; d)`` from :func:`jvp`, and ``reverse`` = ``f'(x; -d)``;
    * ``fd1``, ``fd2``: :func:`one_sided_difference` of order 1 and 2 with step ``h``;
    * ``autograd``: ``g . d`` with ``g`` the associated gradient autograd returns (Cor 2);
    * ``kink``: ``f'(x; d) != -f'(x; -d)`` (beyond ``atol``), a certificate that ``f`` is not
      differentiable at ``x``;
    * ``matches_d_side``: ``|g . d - f'(x; d)| <= atol``, autograd's slope is the slope of
      ``s -> f(x + s d)`` for ``s > 0``; ``matches_opposite_side``: ``|g . d + f'(x; -d)| <= atol``,
      the slope for ``s < 0``. At a kink no vector matches both for every ``d`` (``f'(x; .)`` is
      not linear), so neither column alone says autograd is wrong;
    * ``outside_interval``: ``g . d`` is outside the interval between the one-sided slopes
      ``-f'(x; -d)`` and ``f'(x; d)`` (beyond ``atol``): outside Clarke's generalized derivative
      of the section ``s -> f(x + s d)`` at 0, the slope of no piece met along the line. It does
      not show ``g`` outside Clarke's generalized gradient of ``f``: Clarke's chain rule is only
      an inclusion, so ``{v . d : v in partial_C f(x)}`` can be larger than that interval.

    Raises:
        TypeError / ValueError: bad arguments, ``points`` not 2-d, or ``atol`` negative.

    Examples:
        >>> pts = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        >>> df = compare_directional(lambda x: x.abs().sum(-1), pts, torch.ones_like(pts))
        >>> df[["directional", "autograd", "kink", "matches_d_side", "outside_interval"]].values.tolist()
        [[1.0, 0.0, True, False, False], [1.0, 1.0, False, True, False]]
    """
    directions = check_direction("compare_directional", f, points, directions)
    if points.dim() != 2:
        raise ValueError(
            f"compare_directional: `points` must be 2-d (n, dim), got shape {tuple(points.shape)}"
        )
    check_positive("compare_directional", "h", h)
    if isinstance(atol, bool) or not isinstance(atol, numbers.Real) or not atol >= 0:
        raise ValueError(f"compare_directional: `atol` must be a real number >= 0, got {atol!r}")
    value, forward = jvp(f, points, directions)
    _, backward = jvp(f, points, -directions)
    g = reverse_jacobian(f, points, batched=True).reshape(points.shape)
    columns = {
        "f": value,
        "directional": forward,
        "reverse": backward,
        "fd1": one_sided_difference(f, points, directions, h, order=1),
        "fd2": one_sided_difference(f, points, directions, h, order=2),
        "autograd": (g * directions).sum(-1),
    }
    df = pd.DataFrame({k: v.detach().reshape(len(points)).cpu().numpy() for k, v in columns.items()})
    df["kink"] = (df["directional"] + df["reverse"]).abs() > atol
    df["matches_d_side"] = (df["autograd"] - df["directional"]).abs() <= atol
    df["matches_opposite_side"] = (df["autograd"] + df["reverse"]).abs() <= atol
    low = df[["directional", "reverse"]].assign(reverse=-df["reverse"]).min(axis=1)
    high = df[["directional", "reverse"]].assign(reverse=-df["reverse"]).max(axis=1)
    df["outside_interval"] = (df["autograd"] < low - atol) | (df["autograd"] > high + atol)
    return df
