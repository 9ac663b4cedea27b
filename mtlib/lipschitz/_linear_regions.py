"""Exact piecewise-linear propagation for networks with one input (used by :mod:`mtlib.lipschitz._exact`).

A vector of continuous piecewise-linear functions of ``t`` is stored as ``knots`` ``(K,)``
(increasing), ``values`` ``(n, K)`` at the knots and ``slopes`` ``(n, K + 1)``, one per
interval: column 0 is the left ray ``t < knots[0]``, column ``K`` the right ray. Between two
consecutive knots every row is linear, so a layer only has to add the knots where its
nonlinearity switches branch and then pick, interval by interval, the active branch's slope.
"""

from __future__ import annotations

import torch


def _evaluate(knots, values, slopes, t):
    """Values of every row at the points ``t``."""
    j = torch.searchsorted(knots, t, right=True)
    base = (j - 1).clamp_min(0)
    return values[:, base] + slopes[:, j] * (t - knots[base])


def _interval_points(knots):
    """One point inside each interval, rays included."""
    return torch.cat([knots[:1] - 1, (knots[:-1] + knots[1:]) / 2, knots[-1:] + 1])


def _roots(knots, values, slopes):
    """Zeros of the rows strictly inside an interval or on a ray (zeros at knots are known)."""
    inside = values[:, :-1] * values[:, 1:] < 0
    t_in = knots[:-1] - values[:, :-1] / slopes[:, 1:-1].where(inside, torch.ones_like(values[:, 1:]))
    t_left = knots[0] - values[:, 0] / slopes[:, 0].where(slopes[:, 0] != 0, torch.ones_like(knots[:1]))
    t_right = knots[-1] - values[:, -1] / slopes[:, -1].where(slopes[:, -1] != 0, torch.ones_like(knots[:1]))
    return torch.cat([t_in[inside], t_left[(slopes[:, 0] != 0) & (t_left < knots[0])],
                      t_right[(slopes[:, -1] != 0) & (t_right > knots[-1])]])


def _refine(knots, values, slopes, new):
    """Insert the knots ``new``; each new interval inherits the slope of the old one holding it."""
    merged = torch.unique(torch.cat([knots, new]))
    old = torch.searchsorted(knots, _interval_points(merged), right=True)
    return merged, _evaluate(knots, values, slopes, merged), slopes[:, old]


def relu_pieces(knots, values, slopes):
    """Apply ReLU to every row: new knots at sign changes, slope kept where the row is positive."""
    knots, values, slopes = _refine(knots, values, slopes, _roots(knots, values, slopes))
    positive = _evaluate(knots, values, slopes, _interval_points(knots)) > 0
    return knots, values.clamp_min(0), slopes * positive


def maxpool_pieces(knots, values, slopes, pools):
    """Max over the rows of each window in ``pools`` ``(n_windows, kernel)``.

    New knots at the crossings of every pair of rows in a window; on each interval the window's
    order is then fixed, and the slope is that of its largest row.
    """
    first, second = torch.triu_indices(pools.shape[1], pools.shape[1], offset=1)
    a, b = pools[:, first].reshape(-1), pools[:, second].reshape(-1)
    crossings = _roots(knots, values[a] - values[b], slopes[a] - slopes[b])
    knots, values, slopes = _refine(knots, values, slopes, crossings)
    inside = _evaluate(knots, values, slopes, _interval_points(knots))[pools]
    winner = pools.gather(1, inside.argmax(dim=1))
    return knots, values[pools].amax(dim=1), slopes.gather(0, winner)
