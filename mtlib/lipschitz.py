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
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from torch.func import grad, jacrev, vmap

from mtlib._pieces1d import maxpool_pieces, relu_pieces, windows
from mtlib._validate import check_count, check_positive, check_tensor
from mtlib.networks import VectorMaxPool, random_network


class StridedMaxPool(nn.Module):
    """Max over windows of ``kernel`` consecutive entries every ``stride`` entries of a vector.

    ``(..., n) -> (..., (n - kernel) // stride + 1)``, PyTorch's tie rule (first maximal entry).
    With ``stride < kernel`` the windows overlap and the layer is *not* 1-Lipschitz in l2: see
    :func:`pool_multiplicity`.

    Args:
        kernel: window length.
        stride: distance between the starts of consecutive windows.

    Raises:
        ValueError: ``kernel`` or ``stride`` is not an int >= 1.

    Examples:
        >>> StridedMaxPool(3, 1)(torch.tensor([0.0, 1.0, 0.0, 0.0])).tolist()
        [1.0, 1.0]
    """

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        check_count("StridedMaxPool", "kernel", kernel)
        check_count("StridedMaxPool", "stride", stride)
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool1d(x.unsqueeze(-2), self.kernel, self.stride).squeeze(-2)


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
    return int(torch.bincount(windows(n, kernel, stride).reshape(-1)).max())


def _layers(fn: str, net) -> list[nn.Module]:
    if not isinstance(net, nn.Sequential) or not len(net) or not isinstance(net[0], nn.Linear):
        raise TypeError(f"{fn}: `net` must be an nn.Sequential starting with nn.Linear, got {type(net).__name__}")
    for i, layer in enumerate(net):
        if not isinstance(layer, (nn.Linear, nn.ReLU, VectorMaxPool, StridedMaxPool)):
            raise TypeError(
                f"{fn}: `net[{i}]` must be Linear, ReLU, VectorMaxPool or StridedMaxPool, "
                f"got {type(layer).__name__}"
            )
    return list(net)


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
        >>> net = nn.Sequential(nn.Linear(2, 3), StridedMaxPool(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(3, 2))
        >>> layer_lipschitz_constants(net)
        [1.0, 1.4142135623730951]
    """
    return _layer_constants("layer_lipschitz_constants", net)


def _layer_constants(fn: str, net) -> list[float]:
    layers = _layers(fn, net)
    constants, width = [], layers[0].in_features
    for layer in layers:
        if isinstance(layer, nn.Linear):
            constants.append(torch.linalg.matrix_norm(layer.weight.detach(), ord=2).item())
            width = layer.out_features
        elif isinstance(layer, nn.ReLU):
            constants.append(1.0)
        else:
            stride = layer.kernel if isinstance(layer, VectorMaxPool) else layer.stride
            constants.append(math.sqrt(pool_multiplicity(width, layer.kernel, stride)))
            width = (width - layer.kernel) // stride + 1
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


def jacobian_norms(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Operator norm ``||J(x_b)||_2`` of autograd's Jacobian at each row ``x_b`` of ``x``.

    ``J`` is the associated Jacobian of Cor 2 (eq 14), one row per output, computed by
    reverse mode; the spectral norm reduces to the Euclidean norm of the gradient for a
    scalar output. By Cor 1 it equals ``||nabla f(x_b)||_2`` for almost every ``x_b``.

    Args:
        net: a module acting row-wise on a batch ``(B, d) -> (B, n)``.
        x: points, shape ``(B, d)``.

    Returns:
        The ``B`` norms.

    Raises:
        TypeError: non-float ``x``.
        ValueError: ``x`` is not 2-d.

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> jacobian_norms(net, torch.zeros(2, 2)).tolist()
        [5.0, 5.0]
    """
    check_tensor("jacobian_norms", "x", x)
    if x.dim() != 2:
        raise ValueError(f"jacobian_norms: `x` must have shape (batch, dim), got {tuple(x.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = net(x).reshape(x.shape[0], -1)
        rows = [torch.autograd.grad(y[:, i].sum(), x, retain_graph=True)[0] for i in range(y.shape[1])]
    return torch.linalg.matrix_norm(torch.stack(rows, dim=1), ord=2)


class _SoftMaxPool(nn.Module):
    def __init__(self, kernel: int, stride: int, beta: float):
        super().__init__()
        self.kernel, self.stride, self.beta = kernel, stride, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.beta * x[..., windows(x.shape[-1], self.kernel, self.stride)], dim=-1) / self.beta


class _SoftReLU(nn.Module):
    def __init__(self, beta: float):
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) + torch.log1p(torch.exp(-self.beta * x.abs())) / self.beta


def smoothed_network(net: nn.Sequential, beta: float) -> nn.Sequential:
    """A smooth surrogate of ``net``: ReLU -> softplus, max pool -> log-sum-exp, sharpness ``beta``.

    ``R_beta(x) = log(1 + exp(beta x)) / beta`` and ``max_beta(w) = log sum_i exp(beta w_i) / beta``
    converge uniformly to ReLU and max as ``beta -> oo``; the Jacobian of the surrogate is
    smooth in ``x``, so its norm can be ascended. Linear layers are shared, not copied.

    Args:
        net: ``nn.Sequential`` of Linear, ReLU and vector max pools.
        beta: sharpness (> 0).

    Returns:
        The smooth ``nn.Sequential``.

    Raises:
        TypeError: unsupported layer in ``net``.
        ValueError: ``beta <= 0``.

    Examples:
        >>> smoothed_network(nn.Sequential(nn.Linear(1, 2), nn.ReLU()), 10.0)(torch.zeros(1, 1)).shape
        torch.Size([1, 2])
    """
    check_positive("smoothed_network", "beta", beta)
    out: list[nn.Module] = []
    for layer in _layers("smoothed_network", net):
        if isinstance(layer, nn.Linear):
            out.append(layer)
        elif isinstance(layer, nn.ReLU):
            out.append(_SoftReLU(beta))
        else:
            stride = layer.kernel if isinstance(layer, VectorMaxPool) else layer.stride
            out.append(_SoftMaxPool(layer.kernel, stride, beta))
    return nn.Sequential(*out)


@dataclass(frozen=True)
class LowerBound:
    """Result of :func:`lower_bound`.

    Attributes:
        value: the largest autograd Jacobian norm met (valid a.e., Cor 1).
        point: where it was met.
        certified: ``||f(x + h v) - f(x)|| / h`` at ``point`` along the top right singular
            vector ``v``: a lower bound on ``Lip(f)`` at any point, kinks included.
        history: best ``value`` after each ascent step (entry 0: the starting points).
    """

    value: float
    point: torch.Tensor
    certified: float
    history: list[float]


def lower_bound(net: nn.Sequential, x0s: torch.Tensor, *, steps: int = 50, lr: float = 0.3,
                beta: tuple[float, float] = (1.0, 100.0), h: float = 1e-6) -> LowerBound:
    """Lower bound on ``Lip(f)``: the largest associated-Jacobian norm over ascended points.

    The norm ``||J(x)||_2`` of a ReLU/maxpool network is piecewise constant, so its gradient in
    ``x`` vanishes and plain ascent cannot move. Each start instead climbs the smooth
    surrogate ``x -> ||J_beta(x)||_2`` of :func:`smoothed_network` by normalised steps
    ``x <- x + lr g / ||g||``, with ``beta`` growing geometrically from ``beta[0]`` to
    ``beta[1]`` so the surrogate tends to the network; after every step the *true* norm is
    evaluated and the best value kept. Every value is ``||nabla f(x)||`` for almost every
    ``x`` (Cor 1), hence ``<= Lip(f)``.

    Args:
        net: ``nn.Sequential`` of Linear, ReLU and vector max pools, acting on ``(B, d)``.
        x0s: starting points, shape ``(B, d)``.
        steps: ascent steps (0: sampling only).
        lr: step length in input space.
        beta: initial and final sharpness of the surrogate.
        h: secant step of the certificate.

    Returns:
        A :class:`LowerBound`.

    Raises:
        TypeError: unsupported layer in ``net`` or non-float ``x0s``.
        ValueError: bad ``x0s`` shape, ``steps < 0``, or non-positive ``lr``, ``beta``, ``h``.

    Examples:
        >>> net = nn.Sequential(nn.Linear(1, 1), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = net[0].weight.fill_(2.0), net[0].bias.fill_(0.0)
        >>> lower_bound(net, torch.tensor([[-1.0], [1.0]]), steps=0).value
        2.0

    References:
        Virmaux & Scaman (2018), Sec 5 of Despres (2024).
    """
    layers = _layers("lower_bound", net)
    check_tensor("lower_bound", "x0s", x0s)
    if x0s.dim() != 2 or x0s.shape[1] != layers[0].in_features or not len(x0s):
        raise ValueError(
            f"lower_bound: `x0s` must have shape (batch >= 1, {layers[0].in_features}), got {tuple(x0s.shape)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"lower_bound: `steps` must be an int >= 0, got {steps!r}")
    check_positive("lower_bound", "lr", lr)
    check_positive("lower_bound", "h", h)
    if len(beta) != 2:
        raise ValueError(f"lower_bound: `beta` must be a pair (start, end), got {beta!r}")
    for b in beta:
        check_positive("lower_bound", "beta", b)
    x = x0s.detach().to(layers[0].weight.dtype)
    best_x, best = x.clone(), jacobian_norms(net, x)
    history = [best.max().item()]
    for step in range(steps):
        sharp = beta[0] * (beta[1] / beta[0]) ** (step / max(steps - 1, 1))
        surrogate = smoothed_network(net, sharp)
        g = vmap(grad(lambda z: torch.linalg.matrix_norm(jacrev(surrogate)(z).reshape(-1, z.numel()), ord=2)))(x)
        x = (x + lr * g / g.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)).detach()
        norms = jacobian_norms(net, x)
        better = norms > best
        best_x[better], best[better] = x[better], norms[better]
        history.append(best.max().item())
    i = int(best.argmax())
    point = best_x[i]
    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(lambda z: net(z.unsqueeze(0)).reshape(-1), point)
    direction = torch.linalg.svd(jac.reshape(-1, point.numel()))[2][0]
    with torch.no_grad():
        secant = (net((point + h * direction).unsqueeze(0)) - net(point.unsqueeze(0))).norm() / h
    return LowerBound(best[i].item(), point, secant.item(), history)


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
    if layers[0].in_features != 1:
        raise ValueError(f"{fn}: `net` must have one input, got {layers[0].in_features}")
    dtype = torch.float64
    knots, values, slopes = torch.zeros(1, dtype=dtype), torch.zeros(1, 1, dtype=dtype), torch.ones(1, 2, dtype=dtype)
    for layer in layers:
        if isinstance(layer, nn.Linear):
            weight, bias = layer.weight.detach().to(dtype), layer.bias
            values, slopes = weight @ values, weight @ slopes
            if bias is not None:
                values = values + bias.detach().to(dtype)[:, None]
        elif isinstance(layer, nn.ReLU):
            knots, values, slopes = relu_pieces(knots, values, slopes)
        else:
            stride = layer.kernel if isinstance(layer, VectorMaxPool) else layer.stride
            pools = windows(values.shape[0], layer.kernel, stride)
            knots, values, slopes = maxpool_pieces(knots, values, slopes, pools)
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
