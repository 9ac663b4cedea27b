"""Lipschitz bounds for small ReLU/maxpool networks from associated gradients (Sec 5).

For a Lipschitz ``f`` (eq 1) the l2 Lipschitz constant is the essential supremum of the
operator norm of its gradient (Rademacher),

.. math::

    \\operatorname{Lip}(f) = \\operatorname*{ess\\,sup}_x \\|\\nabla f(x)\\|_2 .

Autograd returns an associated gradient (Def 1, Cor 2), which equals ``nabla f`` almost
everywhere (Cor 1): at points drawn from a continuous distribution its norm is, with
probability one, a valid *lower* bound. At a kink it need not be (Boustany's zero function has
``|f'(0)| = 1.5``), so :func:`lower_bound` also returns a secant quotient, a lower bound at every
point. The *upper* bound multiplies the layers' constants (Virmaux & Scaman 2018). For networks
with one input, :func:`exact_lipschitz_1d` follows every linear piece and returns the exact value.

Chapter: lipschitz.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd
import torch

from mtlib.lipschitz._exact import exact_lipschitz_1d, linear_pieces_1d, steepest_piece_1d
from mtlib.lipschitz._lower import LowerBound, jacobian_norms, lower_bound, smoothed_network
from mtlib.lipschitz._upper import layer_lipschitz_constants, pool_multiplicity, upper_bound
from mtlib.networks import StridedMaxPool, random_network

__all__ = [
    "LowerBound",
    "StridedMaxPool",
    "bounds_sweep",
    "exact_lipschitz_1d",
    "jacobian_norms",
    "layer_lipschitz_constants",
    "linear_pieces_1d",
    "lower_bound",
    "pool_multiplicity",
    "smoothed_network",
    "steepest_piece_1d",
    "upper_bound",
]


def bounds_sweep(configs: Iterable[tuple[int, int, int]], *, pool: int = 2, seed: int = 0,
                 n_starts: int = 64, steps: int = 30, scale: float = 2.0) -> pd.DataFrame:
    """Lower, upper (and, with one input, exact) Lipschitz constants of random networks.

    For each distinct ``(input_dim, width, depth)`` the network is
    ``random_network([input_dim] + [width] * depth + [1], pool=pool, seed=seed)``. Column
    ``ascent`` is :func:`lower_bound` from ``n_starts`` points ``scale * N(0, I)``; ``sampled``
    the best norm over as many fresh random points as the ascent evaluates
    (``n_starts * (steps + 1)``); ``lower`` the better of the two, ``certified`` its secant
    quotient and ``gap = upper / lower``.

    Args:
        configs: ``(input_dim, width, depth)`` triples (duplicates are run once).
        pool: maxpool window after each ReLU (0: none), as in :func:`random_network`.
        seed: seed of the weights and of the points.
        n_starts, steps: arguments of :func:`lower_bound`.
        scale: standard deviation of the starting points.

    Returns:
        A DataFrame with columns ``input_dim, width, depth, upper, ascent, sampled, lower,
        certified, exact, gap`` (``exact`` is NaN when ``input_dim > 1``).

    Examples:
        >>> bounds_sweep([(1, 4, 1)], steps=2, n_starts=4).columns.tolist()[:5]
        ['input_dim', 'width', 'depth', 'upper', 'ascent']
    """
    rows = []
    for input_dim, width, depth in dict.fromkeys(configs):
        net = random_network([input_dim] + [width] * depth + [1], pool=pool, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        starts = scale * torch.randn(n_starts, input_dim, generator=gen, dtype=torch.float64)
        ascent = lower_bound(net, starts, steps=steps)
        sample = scale * torch.randn(n_starts * (steps + 1), input_dim, generator=gen, dtype=torch.float64)
        sampled = lower_bound(net, sample, steps=0)
        best = max(ascent, sampled, key=lambda found: found.value)
        rows.append({
            "input_dim": input_dim, "width": width, "depth": depth, "upper": upper_bound(net),
            "ascent": ascent.value, "sampled": sampled.value, "lower": best.value,
            "certified": best.certified,
            "exact": exact_lipschitz_1d(net) if input_dim == 1 else math.nan,
        })
    table = pd.DataFrame(rows)
    table["gap"] = table["upper"] / table["lower"]
    return table
