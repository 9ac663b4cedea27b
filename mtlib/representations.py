"""Explicit piecewise representations (eq 6) of ReLU, max and small networks; kinks of a network.

An associated gradient (Def 1, eq 7) belongs to a *representation* of a function, not to the
function. This module writes down the representations of the paper as :class:`mtlib.Piecewise`
objects, so that their associated gradients can be compared with what autograd returns:

* :func:`relu_piecewise`: ReLU with the three pieces of Sec 4.1 and derivative ``z`` at 0;
* :func:`max_piecewise`: ``max`` on R^n with the pieces (17) (``ties="first"``), their mirror
  image (``"last"``) or the symmetrised pieces (19) (``"uniform"``);
* :func:`max_pair_piecewise`: ``max(y1, y2)`` with a free normal component on the diagonal
  (Sec 4.2, eq 15, Remark 1);
* :func:`relu_layer_piecewise`, :func:`max_pool_layer_piecewise`, :func:`network_layers`:
  the layers of a network (eq 1), whose associated Jacobians multiply to eq 14 (Cor 2);
  :func:`compose_piecewise` turns a list of layers into one representation of the network.

Pieces are enumerated, so the number of pieces of one representation is capped at 100000.

Chapter: theorem, relu, tangent, related, results.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from mtlib._validate import check_int, check_real
from mtlib.networks import walk_layers
from mtlib.piecewise import Piecewise
from mtlib.ties import check_ties, tie_set

_MAX_PIECES = 100_000


def _check_pieces(fn: str, name: str, count: int) -> None:
    if count > _MAX_PIECES:
        raise ValueError(
            f"{fn}: `{name}` gives {count} pieces, more than the {_MAX_PIECES} that are enumerated"
        )


def _check_shape(fn: str, x: torch.Tensor, shape: tuple) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{fn}: `x` must have shape {shape}, got {tuple(x.shape)}")


def _flat_index(digits: Sequence[int], radices: Sequence[int]) -> int:
    """Position of ``digits`` in ``itertools.product(*map(range, radices))``."""
    index = 0
    for digit, radix in zip(digits, radices):
        index = index * radix + digit
    return index


def _relu_piece(x: torch.Tensor) -> int:
    if x.numel() != 1:
        raise ValueError(f"relu_piecewise: `x` must hold one number, got shape {tuple(x.shape)}")
    v = x.item()
    return 0 if v < 0 else (1 if v > 0 else 2)


def relu_piecewise(z: float = 0.0) -> Piecewise:
    """ReLU ``R(x) = max(0, x)`` of one number with the three pieces of Sec 4.1.

    The pieces are ``P^1 = (-inf, 0)`` with ``f^1 = 0``, ``P^2 = (0, inf)`` with
    ``f^2(x) = x`` and ``P^3 = {0}`` with ``f^3(x) = z x``: the associated derivative is 0, 1 and
    ``z`` at 0, the one autograd returns through :func:`mtlib.relu_z` with the same ``z``.

    Args:
        z: the derivative at 0, any real number (``torch.relu`` uses 0).

    Returns:
        A :class:`mtlib.Piecewise` on one-element tensors, pieces in the order above.

    Raises:
        TypeError: ``z`` is not a real number.

    Examples:
        >>> relu = relu_piecewise(z=0.5)
        >>> [relu.associated_gradient(torch.tensor(t)).item() for t in (-1.0, 0.0, 2.0)]
        [0.0, 0.5, 1.0]
    """
    z = check_real("relu_piecewise", "z", z)
    return Piecewise([lambda x: 0 * x, lambda x: x, lambda x: z * x], _relu_piece)


def _entry(i: int, x: torch.Tensor) -> torch.Tensor:
    return x[..., i]


def _mean_of(indices: list[int], x: torch.Tensor) -> torch.Tensor:
    return x[..., indices].mean(dim=-1)


def max_piecewise(n: int, ties: str = "first") -> Piecewise:
    """``max(x_1, ..., x_n)`` with the pieces of eq 17 or eq 19 (Sec 4.3).

    * ``ties="first"``, eq 17: ``P^a = {x_a > x_j (j < a), x_a >= x_j (j > a)}``,
      ``f^a(x) = x_a``; the associated gradient (18) is one-hot on the first maximal entry,
      as autograd gives through the Python loop ``max1`` of Table 1 or :func:`mtlib.max_first`.
    * ``ties="last"``: the same with the order of the indices reversed (:func:`mtlib.max_last`).
    * ``ties="uniform"``, eq 19: one piece per non-empty set ``T`` of indices,
      ``P^T = {x_i = max x (i in T), x_j < max x (j not in T)}`` and ``f^T`` the mean of
      ``x_T``; the associated gradient (20) puts ``1/|T|`` on ``T``, as ``torch.max(x)`` does.
      Pieces are ordered by size of ``T``, then lexicographically, as in eq 19.

    Args:
        n: length of the vector (``n = 4`` in the paper).
        ties: ``"first"``, ``"last"`` or ``"uniform"``.

    Returns:
        A :class:`mtlib.Piecewise` on tensors of shape ``(n,)`` with ``n`` pieces
        (``2^n - 1`` for ``"uniform"``: 15 for ``n = 4``).

    Raises:
        TypeError: ``n`` is not an int.
        ValueError: ``n < 1``, unknown ``ties``, or too many pieces (``"uniform"`` with n > 16).

    Examples:
        >>> len(max_piecewise(4, "uniform").pieces)
        15
        >>> max_piecewise(4, "uniform").associated_gradient(torch.zeros(4)).tolist()   # eq 21
        [0.25, 0.25, 0.25, 0.25]
        >>> max_piecewise(4, "first").associated_gradient(torch.zeros(4)).tolist()     # eq 18
        [1.0, 0.0, 0.0, 0.0]

    References:
        Despres (2024), eqs 17-21; Boustany (2024).
    """
    n = check_int("max_piecewise", "n", n)
    check_ties("max_piecewise", ties)

    if ties == "uniform":
        _check_pieces("max_piecewise", "n", 2**n - 1)
        subsets = [s for k in range(1, n + 1) for s in itertools.combinations(range(n), k)]
        position = {s: alpha for alpha, s in enumerate(subsets)}
        pieces = [functools.partial(_mean_of, list(s)) for s in subsets]

        def select(x: torch.Tensor) -> int:
            _check_shape("max_piecewise", x, (n,))
            return position[tuple(tie_set(x).nonzero().flatten().tolist())]

    else:
        pieces = [functools.partial(_entry, i) for i in range(n)]
        end = 0 if ties == "first" else -1

        def select(x: torch.Tensor) -> int:
            _check_shape("max_piecewise", x, (n,))
            return int(tie_set(x).nonzero().flatten()[end])

    return Piecewise(pieces, select)


def _pair_piece(y: torch.Tensor) -> int:
    _check_shape("max_pair_piecewise", y, (2,))
    return 0 if y[0] < y[1] else (1 if y[0] > y[1] else 2)


def max_pair_piecewise(s: float) -> Piecewise:
    """``max(y1, y2)`` whose associated gradient on the diagonal is ``(1/2 + s, 1/2 - s)``.

    The three pieces of Sec 4.2: ``P^1 = {y1 < y2}`` with ``f^1 = y2``, ``P^2 = {y1 > y2}``
    with ``f^2 = y1`` and the diagonal ``P^3 = {y1 = y2}`` with

    .. math::

        f^3(y) = \\frac{y_1 + y_2}{2} + s\\,(y_1 - y_2),

    which equals ``max`` on ``P^3`` for every ``s``. Along the diagonal the gradient is forced,
    ``d1 + d2 = 1`` (eq 15); across it, the normal component ``d1 - d2 = 2 s`` is free
    (Remark 1). ``s = 1/2``, ``-1/2`` and ``0`` give the rules of :func:`mtlib.max_first`,
    :func:`mtlib.max_last` and :func:`mtlib.max_uniform`.

    Args:
        s: the normal component, any real number.

    Returns:
        A :class:`mtlib.Piecewise` on tensors of shape ``(2,)``.

    Raises:
        TypeError: ``s`` is not a real number.

    Examples:
        >>> max_pair_piecewise(1.0).associated_gradient(torch.zeros(2)).tolist()
        [1.5, -0.5]

    References:
        Despres (2024), Sec 4.2, eqs 15-16, Remark 1; Murat and Trombetti (2003).
    """
    s = check_real("max_pair_piecewise", "s", s)
    return Piecewise(
        [lambda y: y[..., 1], lambda y: y[..., 0],
         lambda y: (y[..., 0] + y[..., 1]) / 2 + s * (y[..., 0] - y[..., 1])],
        _pair_piece,
    )


def _apply_blocks(blocks: tuple, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([piece(x[block]).reshape(-1) for piece, block in blocks])


def _blockwise(fn: str, part: Piecewise, size: int, count: int) -> Piecewise:
    """``count`` copies of ``part``, each on its own block of ``size`` consecutive entries."""
    blocks = [slice(i * size, (i + 1) * size) for i in range(count)]
    radices = [len(part.pieces)] * count
    _check_pieces(fn, "n", math.prod(radices))
    pieces = [
        functools.partial(_apply_blocks, tuple((part.pieces[d], b) for d, b in zip(digits, blocks)))
        for digits in itertools.product(*map(range, radices))
    ]

    def select(x: torch.Tensor) -> int:
        _check_shape(fn, x, (size * count,))
        return _flat_index([part.piece_index(x[b]) for b in blocks], radices)

    return Piecewise(pieces, select)


def relu_layer_piecewise(n: int, z: float = 0.0) -> Piecewise:
    """The ReLU layer ``S(y) = (R(y_1), ..., R(y_n))`` as a representation (6) with ``3^n`` pieces.

    Each piece fixes, for every entry, one of the pieces of :func:`relu_piecewise`; its
    associated Jacobian is ``diag(R'_z(y_i))``, the matrix ``B_r`` of eq 14.

    Args:
        n: width of the layer (at most 10: ``3^n`` pieces are enumerated).
        z: derivative at 0 of every entry.

    Raises:
        TypeError: ``n`` is not an int or ``z`` is not real.
        ValueError: ``n < 1`` or ``n > 10``.

    Examples:
        >>> layer = relu_layer_piecewise(2, z=0.5)
        >>> layer.associated_jacobian(torch.tensor([0.0, -1.0])).tolist()
        [[0.5, 0.0], [0.0, 0.0]]

    References:
        Despres (2024), Sec 4.1 and Cor 2.
    """
    n = check_int("relu_layer_piecewise", "n", n)
    return _blockwise("relu_layer_piecewise", relu_piecewise(z), 1, n)


def max_pool_layer_piecewise(n: int, kernel: int, ties: str = "first") -> Piecewise:
    """Max over consecutive windows of ``kernel`` entries of ``(n,)`` (a maxpool, stride = kernel).

    Each window uses :func:`max_piecewise` with the given tie rule; a piece fixes the piece of
    every window. With ``ties="first"`` this is :class:`mtlib.networks.VectorMaxPool`, i.e.
    PyTorch's ``max_pool1d``.

    Args:
        n: input width, a multiple of ``kernel``.
        kernel: window size.
        ties: ``"first"``, ``"last"`` or ``"uniform"``.

    Raises:
        TypeError: ``n`` or ``kernel`` is not an int.
        ValueError: a size < 1, ``kernel`` not dividing ``n``, unknown ``ties``, too many pieces.

    Examples:
        >>> pool = max_pool_layer_piecewise(4, 2)
        >>> pool(torch.tensor([1.0, 1.0, 0.0, 2.0])).tolist()
        [1.0, 2.0]
        >>> pool.associated_jacobian(torch.tensor([1.0, 1.0, 0.0, 2.0])).tolist()
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]

    References:
        Despres (2024), Sec 4.3 (pieces 17 and 19) and Cor 2.
    """
    n = check_int("max_pool_layer_piecewise", "n", n)
    kernel = check_int("max_pool_layer_piecewise", "kernel", kernel)
    if n % kernel:
        raise ValueError(f"max_pool_layer_piecewise: `kernel` ({kernel}) must divide `n` ({n})")
    window = max_piecewise(kernel, ties)
    return _blockwise("max_pool_layer_piecewise", window, kernel, n // kernel)


def _apply_chain(pieces: tuple, x: torch.Tensor) -> torch.Tensor:
    for piece in pieces:
        x = piece(x)
    return x


def compose_piecewise(layers: Sequence[Piecewise]) -> Piecewise:
    """One representation (6) of ``layers[-1] o ... o layers[0]`` from representations of each.

    Its pieces are the tuples ``(alpha_0, ..., alpha_l)``: ``x`` lies in it when ``x`` lies in
    ``P^{alpha_0}`` of the first layer, its image in ``P^{alpha_1}`` of the second, and so on,
    and the piece function is ``f^{alpha_l} o ... o f^{alpha_0}``. Its associated gradient is
    therefore the product of the associated Jacobians along the forward pass, the right-hand
    side of eq 14 (Cor 2), i.e. what :func:`mtlib.chain_jacobian` multiplies.

    Args:
        layers: :class:`mtlib.Piecewise` layers, applied in order.

    Returns:
        A :class:`mtlib.Piecewise` with the product of the numbers of pieces.

    Raises:
        TypeError: an entry is not a Piecewise.
        ValueError: ``layers`` is empty or the product exceeds 100000 pieces.

    Examples:
        Ex 2.2: ``f_0(x) = (x, x)`` then ``max`` (first rule) is the identity, derivative 1:

        >>> f0 = Piecewise([lambda x: x.repeat(2)], lambda x: 0)
        >>> f = compose_piecewise([f0, max_piecewise(2)])
        >>> f.associated_gradient(torch.tensor([3.0])).tolist()
        [1.0]

    References:
        Despres (2024), Thm 1 and Cor 2 (eq 14).
    """
    layers = list(layers)
    if not layers:
        raise ValueError("compose_piecewise: `layers` must hold at least one Piecewise")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Piecewise):
            raise TypeError(
                f"compose_piecewise: `layers[{i}]` must be a Piecewise, got {type(layer).__name__}"
            )
    radices = [len(layer.pieces) for layer in layers]
    _check_pieces("compose_piecewise", "layers", math.prod(radices))
    pieces = [
        functools.partial(_apply_chain, tuple(layer.pieces[d] for layer, d in zip(layers, digits)))
        for digits in itertools.product(*map(range, radices))
    ]

    def select(x: torch.Tensor) -> int:
        digits = []
        for layer in layers:
            alpha = layer.piece_index(x)
            digits.append(alpha)
            x = layer.pieces[alpha](x)
        return _flat_index(digits, radices)

    return Piecewise(pieces, select)


def _only_piece(x: torch.Tensor) -> int:
    return 0


def network_layers(net: nn.Sequential, z: float = 0.0, ties: str = "first") -> list[Piecewise]:
    """Representations of the layers of a network of :func:`mtlib.networks.random_network`.

    ``nn.Linear`` becomes a one-piece representation (it is smooth), ``nn.ReLU`` a
    :func:`relu_layer_piecewise` with derivative ``z`` at 0 and ``VectorMaxPool`` a
    :func:`max_pool_layer_piecewise` with the tie rule ``ties``. With the defaults
    (``z = 0``, ``"first"``: PyTorch's choices), :func:`mtlib.chain_jacobian` of the result
    equals ``torch.func.jacrev(net)`` at every point, kinks included (Cor 2, eq 14).

    Args:
        net: a sequence of ``nn.Linear``, ``nn.ReLU`` and ``VectorMaxPool`` on unbatched
            vectors, starting with ``nn.Linear``.
        z: derivative of every ReLU at 0.
        ties: tie rule of every pool.

    Returns:
        A list of :class:`mtlib.Piecewise`, one per layer.

    Raises:
        TypeError: an unsupported layer, or ``z`` not a real number.
        ValueError: ``net`` does not start with ``nn.Linear``, a layer is too wide
            (ReLU width > 10), or unknown ``ties``.

    Examples:
        >>> from mtlib.networks import random_network
        >>> [len(p.pieces) for p in network_layers(random_network([2, 4, 1], pool=2))]
        [1, 81, 4, 1]

    References:
        Despres (2024), eq 1 and Cor 2.
    """
    z = check_real("network_layers", "z", z)
    check_ties("network_layers", ties)
    layers = []
    for layer, width in walk_layers("network_layers", net):
        if isinstance(layer, nn.Linear):
            layers.append(Piecewise([layer], _only_piece))
        elif width is None:
            raise ValueError(
                f"network_layers: `net` must start with nn.Linear, got {type(layer).__name__}"
            )
        elif isinstance(layer, nn.ReLU):
            layers.append(relu_layer_piecewise(width, z))
        elif layer.stride != layer.kernel:
            raise ValueError(
                f"network_layers: a VectorMaxPool must have stride = kernel (disjoint windows), "
                f"got kernel={layer.kernel}, stride={layer.stride}"
            )
        else:
            layers.append(max_pool_layer_piecewise(width, layer.kernel, ties))
    return layers
