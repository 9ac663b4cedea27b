"""The exact Lipschitz constant of a network with one input: the steepest of its linear pieces,
found by propagating the pieces layer by layer (:mod:`mtlib.lipschitz._linear_regions`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtlib.lipschitz._linear_regions import maxpool_pieces, relu_pieces
from mtlib.lipschitz._upper import _layers


def linear_pieces_1d(net: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear pieces of a network with one input: knots and the slope on each interval.

    ``t -> f(t)`` is continuous and piecewise linear. Each layer is propagated exactly as knots,
    values at the knots and one slope per interval (the two rays included): a ReLU adds the
    zeros of its inputs as knots, a max pool the crossings of every pair in a window, and then
    each interval keeps the slope of the active branch. Knots are a superset of the true
    breakpoints (neighbouring intervals may share a slope).

    Returns:
        ``(knots, slopes)``: ``knots`` of shape ``(K,)``, increasing; ``slopes`` of shape
        ``(n_out, K + 1)``: column 0 is the derivative on the ray ``t < knots[0]``, column
        ``j`` on ``(knots[j-1], knots[j])``, column ``K`` on the ray ``t > knots[K-1]``.

    Raises:
        TypeError: unsupported layer in ``net``.
        ValueError: the first layer has more than one input.

    Examples:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(2.0), net[0].bias.fill_(-1.0)
        >>> knots, slopes = linear_pieces_1d(net)
        >>> knots.tolist(), slopes.tolist()
        ([0.0, 0.5], [[0.0, 0.0, 2.0]])
    """
    return _pieces_1d("linear_pieces_1d", net)


def _pieces_1d(fn: str, net) -> tuple[torch.Tensor, torch.Tensor]:
    layers = _layers(fn, net)
    if layers[0][1] != 1:
        raise ValueError(f"{fn}: `net` must have one input, got {layers[0][1]}")
    dtype = torch.float64
    knots, values = torch.zeros(1, dtype=dtype), torch.zeros(1, 1, dtype=dtype)
    slopes = torch.ones(1, 2, dtype=dtype)
    for layer, _ in layers:
        if isinstance(layer, nn.Linear):
            weight, bias = layer.weight.detach().to(dtype), layer.bias
            values, slopes = weight @ values, weight @ slopes
            if bias is not None:
                values = values + bias.detach().to(dtype)[:, None]
        elif isinstance(layer, nn.ReLU):
            knots, values, slopes = relu_pieces(knots, values, slopes)
        else:
            knots, values, slopes = maxpool_pieces(knots, values, slopes, layer.windows(values.shape[0]))
    return knots, slopes


def exact_lipschitz_1d(net: nn.Sequential) -> float:
    """Exact ``Lip(f)`` of a network with one input: the steepest of its linear pieces.

    .. math::

        \\operatorname{Lip}(f) = \\max_{\\text{pieces } p} \\|f'_p\\|_2,

    with the pieces of :func:`linear_pieces_1d`; exact up to rounding in the knot positions.

    Raises:
        TypeError: unsupported layer in ``net``.
        ValueError: the first layer has more than one input.

    Examples:
        >>> net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[1.0], [-1.0]])), net[0].bias.zero_()
        ...     _ = net[2].weight.copy_(torch.tensor([[1.0, 3.0]]))
        >>> exact_lipschitz_1d(net)          # f(t) = relu(t) + 3 relu(-t)
        3.0
    """
    return torch.linalg.vector_norm(_pieces_1d("exact_lipschitz_1d", net)[1], dim=0).max().item()


def steepest_piece_1d(net: nn.Sequential) -> tuple[float, float, float]:
    """The interval ``(left, right)`` of the steepest linear piece of a one-input network, and its slope norm.

    The slope norm is :func:`exact_lipschitz_1d`; the length ``right - left`` says how likely
    random sampling is to land on it (``left``/``right`` may be infinite for a ray).

    Raises:
        TypeError: unsupported layer in ``net``.
        ValueError: the first layer has more than one input.

    Examples:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(2.0), net[0].bias.fill_(-1.0)
        >>> steepest_piece_1d(net)
        (0.5, inf, 2.0)
    """
    knots, slopes = _pieces_1d("steepest_piece_1d", net)
    norms = torch.linalg.vector_norm(slopes, dim=0)
    j = int(norms.argmax())
    edges = [-math.inf, *knots.tolist(), math.inf]
    return edges[j], edges[j + 1], norms[j].item()


