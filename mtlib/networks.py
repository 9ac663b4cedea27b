"""Small ReLU/maxpool networks (eq 1): their layers, the one walk over them, random networks, kinks.

``f = f_l o S_l o ... o S_1 o f_0`` with affine ``f_r(x) = W_r x + b_r`` and ``S_r`` a ReLU,
optionally followed by a max over windows of size ``pool`` (a 1-d maxpool of the hidden vector).
With ``integer=True`` the weights, biases and test points are small integers, stored exactly in
floating point, so pre-activations hit 0 and pooled entries tie *exactly*: the kinks where the
choice of associated gradient matters. :func:`count_kinks` counts the kinks a forward pass meets.

The layer vocabulary is ``nn.Linear``, ``nn.ReLU`` and :class:`VectorMaxPool` (a vector max pool
with an optional stride; :class:`StridedMaxPool` is its Lipschitz-chapter name), and
:func:`walk_layers` is the one function that interprets it, for :func:`count_kinks`,
:func:`mtlib.representations.network_layers` and :mod:`mtlib.lipschitz`.

Chapter: notation, theorem, tangent, directional, lexicographic, lipschitz, related, results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mtlib._validate import check_int, check_tensor
from mtlib.maxpool._geometry import vector_windows
from mtlib.ties import tie_set


class VectorMaxPool(nn.Module):
    """Max over windows of ``kernel`` consecutive entries of a vector, every ``stride`` entries.

    A 1-d maxpool on hidden vectors of shape ``(..., n)``:
    ``(..., n) -> (..., (n - kernel) // stride + 1)``, with PyTorch's tie rule (first maximal
    entry of each window). ``stride`` defaults to ``kernel`` (disjoint windows, ``n // kernel``
    outputs); with ``stride < kernel`` the windows overlap and the layer is *not* 1-Lipschitz
    in l2 (:func:`mtlib.lipschitz.pool_multiplicity`).

    Args:
        kernel: window length.
        stride: distance between the starts of consecutive windows (default ``kernel``).

    Raises:
        TypeError: ``kernel`` or ``stride`` is not an int.
        ValueError: ``kernel`` or ``stride`` is < 1.

    Examples:
        >>> VectorMaxPool(2)(torch.tensor([0.0, 1.0, 3.0, 2.0])).tolist()
        [1.0, 3.0]
        >>> VectorMaxPool(3, 1)(torch.tensor([0.0, 1.0, 0.0, 0.0])).tolist()
        [1.0, 1.0]
    """

    def __init__(self, kernel: int, stride: int | None = None):
        super().__init__()
        name = type(self).__name__
        self.kernel = check_int(name, "kernel", kernel)
        self.stride = self.kernel if stride is None else check_int(name, "stride", stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool1d(x.unsqueeze(-2), self.kernel, self.stride).squeeze(-2)

    def output_size(self, n: int) -> int:
        """Number of windows on an input of length ``n``."""
        return (n - self.kernel) // self.stride + 1

    def windows(self, n: int) -> torch.Tensor:
        """Index tensor ``(windows, kernel)``: row ``w`` lists the entries of window ``w``."""
        return vector_windows(n, self.kernel, self.stride)


class StridedMaxPool(VectorMaxPool):
    """:class:`VectorMaxPool` with an explicit ``stride`` (the Lipschitz chapter's name for it).

    Examples:
        >>> StridedMaxPool(3, 1)(torch.tensor([0.0, 1.0, 0.0, 0.0])).tolist()
        [1.0, 1.0]
    """

    def __init__(self, kernel: int, stride: int):
        super().__init__(kernel, stride)


NETWORK_LAYERS = (nn.Linear, nn.ReLU, VectorMaxPool)
"""The layer vocabulary of the networks of eq 1: affine maps, ReLU and vector max pools."""


def walk_layers(fn: str, net) -> list[tuple[nn.Module, int | None]]:
    """Every layer of ``net`` with the width of its input (``None`` before the first ``Linear``).

    The one place that interprets the layer vocabulary :data:`NETWORK_LAYERS`:
    :func:`count_kinks`, :func:`mtlib.representations.network_layers` and the bounds of
    :mod:`mtlib.lipschitz` all walk a network through it.

    Raises:
        TypeError: a layer other than ``nn.Linear``, ``nn.ReLU`` or :class:`VectorMaxPool`
            (naming ``fn`` and the layer's index).

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), VectorMaxPool(3, 1))
        >>> [(type(layer).__name__, width) for layer, width in walk_layers("f", net)]
        [('Linear', None), ('ReLU', 6), ('VectorMaxPool', 6)]
    """
    walk, width = [], None
    for i, layer in enumerate(net):
        if not isinstance(layer, NETWORK_LAYERS):
            raise TypeError(
                f"{fn}: `net[{i}]` must be nn.Linear, nn.ReLU or VectorMaxPool, got {type(layer).__name__}"
            )
        walk.append((layer, width))
        if isinstance(layer, nn.Linear):
            width = layer.out_features
        elif isinstance(layer, VectorMaxPool) and width is not None:
            width = layer.output_size(width)
    return walk


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

    Raises:
        TypeError: a width or ``pool`` that is not an int.
        ValueError: fewer than 2 widths, a width < 1, ``pool < 0``, or ``pool`` not dividing a
            hidden width.

    Examples:
        >>> net = random_network([3, 4, 1], pool=2, seed=0)
        >>> [type(layer).__name__ for layer in net]
        ['Linear', 'ReLU', 'VectorMaxPool', 'Linear']
        >>> net(torch.zeros(3, dtype=torch.float64)).shape
        torch.Size([1])
    """
    widths = [check_int("random_network", "widths", w) for w in widths]
    if len(widths) < 2:
        raise ValueError(f"random_network: `widths` must hold >= 2 entries, got {widths}")
    check_int("random_network", "pool", pool, min=0)
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
                weight = torch.randn(linear.weight.shape, generator=gen, dtype=dtype)
                linear.weight.copy_(weight / fan_in**0.5)
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


@dataclass(frozen=True)
class KinkCount:
    """Kinks met by a forward pass (:func:`count_kinks`).

    Attributes:
        relu: ReLU inputs exactly equal to 0.
        pool: pool windows whose maximum is attained at two or more entries (live ties).
        dead: pool windows right after a ReLU whose tied maximum is 0: every tied entry was
            cut by the ReLU. The pool sits on its tie set, but its gradient is multiplied by
            ReLU derivatives of entries with input <= 0, so (unless ``relu`` counts one of
            them) the tie rule cannot change the result. Such windows fill a set of inputs of
            positive measure, the situation of Ex 2.2 that Thm 1 covers.
    """

    relu: int
    pool: int
    dead: int

    @property
    def total(self) -> int:
        """Kinks where the representation can matter: ``relu + pool`` (dead windows excluded)."""
        return self.relu + self.pool


def count_kinks(net: nn.Sequential, x: torch.Tensor) -> KinkCount:
    """Count the kinks that the forward pass of ``net`` at ``x`` lands on.

    A kink is a ReLU input exactly 0 or a pool window with a tie: points where a layer is not
    differentiable and its associated gradient (Def 1) depends on the representation. Ties
    at 0 of windows fed by a ReLU are counted apart (``dead``, see :class:`KinkCount`).
    With ``x`` of shape ``(..., a_0)`` the counts are summed over the leading dimensions.
    Off the kinks every representation gives the true gradient (Cor 1).

    Args:
        net: a sequence of ``nn.Linear``, ``nn.ReLU`` and ``VectorMaxPool``
            (e.g. from :func:`mtlib.networks.random_network`).
        x: the input.

    Returns:
        A :class:`KinkCount`.

    Raises:
        TypeError: ``x`` is not a floating-point tensor, or an unsupported layer.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), VectorMaxPool(2))
        >>> _ = nn.init.eye_(net[0].weight), nn.init.zeros_(net[0].bias)
        >>> count_kinks(net, torch.tensor([1.0, 1.0]))    # pre-activations (1, 1, 0, 0)
        KinkCount(relu=2, pool=1, dead=1)
        >>> count_kinks(net, torch.tensor([2.0, -1.0]))   # (2, -1, 0, 0)
        KinkCount(relu=2, pool=0, dead=1)

    References:
        Despres (2024), Sec 2 (eq 1), Ex 2.2, Cor 1.
    """
    check_tensor("count_kinks", "x", x)
    relu = pool = dead = 0
    after_relu = False
    h = x.detach()
    with torch.no_grad():
        for layer, _ in walk_layers("count_kinks", net):
            if isinstance(layer, nn.ReLU):
                relu += int((h == 0).sum())
            elif isinstance(layer, VectorMaxPool):
                windows = h[..., layer.windows(h.shape[-1])]
                tied = tie_set(windows).sum(dim=-1) > 1
                cut = tied & (windows.amax(dim=-1) == 0) if after_relu else torch.zeros_like(tied)
                dead += int(cut.sum())
                pool += int((tied & ~cut).sum())
            after_relu = isinstance(layer, nn.ReLU)
            h = layer(h)
    return KinkCount(relu, pool, dead)
