"""Convex hulls of piece gradients: the linear programmes of kinkcheck and the census's judge.

Clarke's generalized gradient of a piecewise-linear ``f`` at ``x`` is the convex hull of the
gradients ``p_1, ..., p_m`` of the pieces active around ``x``. Membership of ``g`` is the LP

.. math::

    t^* = \\min_{\\lambda \\ge 0,\\ \\sum \\lambda = 1} \\Big| \\sum_i \\lambda_i p_i - g \\Big|_\\infty
        = \\max_{|d|_1 \\le 1} \\Big( g \\cdot d - \\max_i p_i \\cdot d \\Big)

(:func:`convex_weights`; the right side is its dual, :func:`separating_direction`): ``g`` is in
the hull iff ``t^* = 0``, and otherwise the dual ``d`` is a direction along which ``g`` sticks out.
:func:`generate_columns` turns that into column generation: ask for the piece entered along the
sum of the dual directions so far, add it, repeat.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import linprog

__all__ = ["convex_weights", "generate_columns", "separating_direction"]


def convex_weights(points: np.ndarray, g: np.ndarray, atol: float) -> np.ndarray | None:
    """Weights ``lambda >= 0``, ``sum = 1``, with ``|points^T lambda - g|_inf <= atol``, or None.

    The LP: minimise ``t`` over ``(lambda, t)`` with ``-t <= (points^T lambda - g)_i <= t``
    (``points``: one candidate per row). Also used by the census's judge on flattened Jacobians.

    Examples:
        >>> convex_weights(np.eye(2), np.array([0.25, 0.75]), 1e-9).round(6).tolist()
        [0.25, 0.75]
    """
    m, n = points.shape
    cost = np.r_[np.zeros(m), 1.0]
    upper = np.block([[points.T, -np.ones((n, 1))], [-points.T, -np.ones((n, 1))]])
    res = linprog(cost, A_ub=upper, b_ub=np.r_[g, -g], A_eq=np.r_[np.ones(m), 0.0][None, :],
                  b_eq=[1.0], bounds=[(0, None)] * (m + 1), method="highs")
    if res.status != 0 or res.x[-1] > atol:
        return None
    return res.x[:m]


def separating_direction(points: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, float]:
    """``(d, margin)``: the dual of :func:`convex_weights`' LP, a direction with
    ``|d|_1 <= 1`` maximising ``margin = g . d - max_i points_i . d``.

    By LP duality ``margin`` is the distance ``min_lambda |points^T lambda - g|_inf`` of ``g``
    to the hull, so ``margin > 0`` iff ``g`` is outside it, and then ``d`` separates them: a
    piece gradient ``p`` with ``p . d > max_i points_i . d`` is what the hull is missing.

    Examples:
        >>> d, margin = separating_direction(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1.0, 1.0]))
        >>> round(margin, 9), d.round(9).tolist()
        (0.5, [0.5, 0.5])
    """
    m, n = points.shape
    # variables (d+, d-, z), all but z >= 0: maximise g.(d+ - d-) - z
    cost = np.r_[-g, g, 1.0]
    upper = np.block([[points, -points, -np.ones((m, 1))], [np.ones((1, 2 * n)), np.zeros((1, 1))]])
    res = linprog(cost, A_ub=upper, b_ub=np.r_[np.zeros(m), 1.0],
                  bounds=[(0, None)] * (2 * n) + [(None, None)], method="highs")
    d = res.x[:n] - res.x[n:2 * n]
    return d, float(-res.fun)


def generate_columns(hull: Callable[[], np.ndarray], g: np.ndarray, query: Callable[[np.ndarray], bool],
                     columns: int, atol: float, patience: int) -> tuple[bool, bool]:
    """Column generation for ``g`` in the hull of the points ``hull()`` (one per row).

    While the LP fails, add the piece that ``query(v)`` finds along ``v``, the sum of the
    (l1-normalised) dual directions so far: a direction that keeps separating ``g`` from every
    piece found, its ties broken by the earlier ones. ``query`` returns whether a new piece was
    added. For a convex ``f`` the piece entered along ``v`` maximises ``p . v`` over Clarke's
    set, so this is a cutting-plane method; otherwise a heuristic.

    Returns:
        ``(inside, stalled)``: ``g`` is now in the hull (to ``atol``); ``patience`` queries in a
        row added nothing. Both ``False`` when ``columns`` queries were spent.
    """
    v, idle = np.zeros(len(g)), 0
    for _ in range(columns):
        d, margin = separating_direction(hull(), g)
        if margin <= atol:
            return True, False
        v = v + d / max(float(np.abs(d).sum()), 1e-300)
        idle = 0 if query(v) else idle + 1
        if idle == patience:
            return False, True
    return separating_direction(hull(), g)[1] <= atol, False
