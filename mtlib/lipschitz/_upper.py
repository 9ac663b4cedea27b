"""Upper bound on the Lipschitz constant of a Linear/ReLU/maxpool network: the product of the
layers' constants (AutoLip, Virmaux & Scaman 2018), and the layer check the other bounds share.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mtlib.maxpool._geometry import vector_windows
from mtlib.networks import walk_layers


def pool_multiplicity(n: int, kernel: int, stride: int) -> int:
    """Largest number of pooling windows that share one entry of an input of length ``n``.

    A vector max pool ``P`` with multiplicity ``m`` has l2 Lipschitz constant exactly
    ``sqrt(m)``. Upper bound: ``|max_w a - max_w b| <= max_{i in w} |a_i - b_i|``, so
    ``||P a - P b||^2 <= sum_w sum_{i in w} |a_i - b_i|^2 <= m ||a - b||^2``. Equality: ``a = 0``
    and ``b = e_i`` for an entry ``i`` in ``m`` windows. Non-overlapping windows
    (``stride >= kernel``) give ``m = 1``.

    Args:
        n: input length.
        kernel, stride: the windows, as in :class:`StridedMaxPool`.

    Returns:
        ``m``, so that the pool's l2 Lipschitz constant is ``sqrt(m)``.

    Raises:
        ValueError: ``kernel > n``.

    Examples:
        >>> pool_multiplicity(8, 2, 2), pool_multiplicity(8, 3, 1), pool_multiplicity(8, 3, 2)
        (1, 3, 2)
    """
    if kernel > n:
        raise ValueError(f"pool_multiplicity: `kernel` ({kernel}) must be <= `n` ({n})")
    return int(torch.bincount(vector_windows(n, kernel, stride).reshape(-1)).max())


def _layers(fn: str, net) -> list[tuple[nn.Module, int]]:
    """The layers of ``net`` with their input widths (:func:`mtlib.networks.walk_layers`), for a
    ``nn.Sequential`` that starts with ``nn.Linear``."""
    if not isinstance(net, nn.Sequential) or not len(net) or not isinstance(net[0], nn.Linear):
        raise TypeError(
            f"{fn}: `net` must be an nn.Sequential starting with nn.Linear, got {type(net).__name__}"
        )
    walk = walk_layers(fn, net)
    walk[0] = (net[0], net[0].in_features)
    return walk


def layer_lipschitz_constants(net: nn.Sequential) -> list[float]:
    """The l2 Lipschitz constant of each layer of ``net``, in order.

    ``Linear``: the spectral norm ``||W_r||_2`` (the bias does not count); ``ReLU``: 1;
    :class:`~mtlib.networks.VectorMaxPool` (disjoint windows): 1; :class:`StridedMaxPool`:
    ``sqrt(m)`` with ``m`` from :func:`pool_multiplicity` on the layer's input length.
    Their product is :func:`upper_bound`.

    Args:
        net: ``nn.Sequential`` of Linear, ReLU, VectorMaxPool and StridedMaxPool layers.

    Returns:
        One float per layer.

    Raises:
        TypeError: ``net`` is not such a sequence.

    Examples:
        >>> from mtlib.networks import StridedMaxPool
        >>> net = nn.Sequential(nn.Linear(2, 3), StridedMaxPool(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(3, 2))
        >>> layer_lipschitz_constants(net)
        [1.0, 1.4142135623730951]
    """
    return _layer_constants("layer_lipschitz_constants", net)


def _layer_constants(fn: str, net) -> list[float]:
    constants = []
    for layer, width in _layers(fn, net):
        if isinstance(layer, nn.Linear):
            constants.append(torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item())
        elif isinstance(layer, nn.ReLU):
            constants.append(1.0)
        else:
            constants.append(math.sqrt(pool_multiplicity(width, layer.kernel, layer.stride)))
    return constants


def upper_bound(net: nn.Sequential) -> float:
    """Upper bound on ``Lip(f)``: the product of the layers' constants (AutoLip).

    .. math::

        \\operatorname{Lip}(f) \\le \\prod_r \\|W_r\\|_2 \\cdot \\prod_{\\text{pools}} \\sqrt{m},

    since ReLU is 1-Lipschitz and a max pool with multiplicity ``m`` is ``sqrt(m)``-Lipschitz
    (1 for non-overlapping windows). Sec 5 of the paper; Virmaux & Scaman (2018).

    Raises:
        TypeError: if ``net`` holds a layer other than Linear, ReLU or a vector max pool.

    Examples:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(-3.0), net[2].weight.fill_(0.5)
        >>> upper_bound(net)
        1.5

    References:
        Virmaux & Scaman (2018); Combettes & Pesquet (2020).
    """
    return math.prod(_layer_constants("upper_bound", net))


