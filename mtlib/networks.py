"""Small ReLU/maxpool networks (eq 1) for checking Cor 1-2 and for the Lipschitz chapter.

``f = f_l o S_l o ... o S_1 o f_0`` with affine ``f_r(x) = W_r x + b_r`` and ``S_r`` a ReLU,
optionally followed by a max over windows of size ``pool`` (a 1-d maxpool of the hidden vector).
With ``integer=True`` the weights, biases and test points are small integers, stored exactly in
floating point, so pre-activations hit 0 and pooled entries tie *exactly*: the kinks where the
choice of associated gradient matters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class VectorMaxPool(nn.Module):
    """Max over consecutive windows of ``kernel`` entries of a vector (stride = kernel).

    A 1-d maxpool on unbatched hidden vectors of shape ``(n,)``: ``(n,) -> (n // kernel,)``,
    with PyTorch's tie rule (first maximal entry of each window).
    """

    def __init__(self, kernel: int):
        super().__init__()
        if kernel < 1:
            raise ValueError(f"VectorMaxPool: `kernel` must be >= 1, got {kernel}")
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool1d(x.unsqueeze(-2), self.kernel).squeeze(-2)


def random_network(
    widths: Sequence[int],
    *,
    pool: int = 0,
    seed: int = 0,
    integer: bool = False,
    dtype: torch.dtype = torch.float64,
) -> nn.Sequential:
    """A random feed-forward network (eq 1) as an ``nn.Sequential`` of its layers.

    Hidden layer ``r`` is ``Linear(widths[r], widths[r+1])``, ``ReLU`` and, when ``pool > 1``,
    a :class:`VectorMaxPool` of that size (the next layer then takes ``widths[r+1] // pool``
    inputs). The last layer is affine. Iterating the result gives the list of layers that
    :func:`mtlib.chain_jacobian` multiplies (Cor 2, eq 14).

    Args:
        widths: ``(a_0, a_1, ..., a_{l+1})``: input, hidden and output sizes (at least 2 entries).
        pool: window of the maxpool after each ReLU (0 or 1: none). Must divide hidden widths.
        seed: seed of the generator drawing the parameters.
        integer: draw weights and biases from {-2, ..., 2} (exact ties and zeros).
        dtype: parameter dtype.

    Examples:
        >>> net = random_network([3, 4, 1], pool=2, seed=0)
        >>> [type(layer).__name__ for layer in net]
        ['Linear', 'ReLU', 'VectorMaxPool', 'Linear']
        >>> net(torch.zeros(3, dtype=torch.float64)).shape
        torch.Size([1])
    """
    widths = list(widths)
    if len(widths) < 2 or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"random_network: `widths` must be >= 2 positive ints, got {widths}")
    if pool > 1 and any(w % pool for w in widths[1:-1]):
        raise ValueError(f"random_network: `pool`={pool} must divide the hidden widths {widths[1:-1]}")
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    fan_in = widths[0]
    for r, width in enumerate(widths[1:]):
        linear = nn.Linear(fan_in, width, dtype=dtype)
        with torch.no_grad():
            if integer:
                linear.weight.copy_(torch.randint(-2, 3, linear.weight.shape, generator=gen))
                linear.bias.copy_(torch.randint(-2, 3, linear.bias.shape, generator=gen))
            else:
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen, dtype=dtype) / fan_in**0.5)
                linear.bias.copy_(0.1 * torch.randn(linear.bias.shape, generator=gen, dtype=dtype))
        layers.append(linear)
        fan_in = width
        if r < len(widths) - 2:
            layers.append(nn.ReLU())
            if pool > 1:
                layers.append(VectorMaxPool(pool))
                fan_in = width // pool
    return nn.Sequential(*layers)


def integer_points(n: int, dim: int, *, seed: int = 0, low: int = -2, high: int = 2,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` points of ``{low, ..., high}^dim``: with integer networks, these sit on kinks.

    Examples:
        >>> integer_points(2, 3, seed=0).shape
        torch.Size([2, 3])
    """
    if high < low:
        raise ValueError(f"integer_points: `high` ({high}) must be >= `low` ({low})")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, (n, dim), generator=gen).to(dtype)
