"""Lower bound on the Lipschitz constant from associated gradients: autograd's Jacobian norms at
points climbed on a smooth surrogate of the network (Sec 5, Cor 1).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad, jacrev, vmap

from mtlib._autodiff import reverse_jacobian
from mtlib._validate import check_int, check_positive, check_tensor
from mtlib.lipschitz._upper import _layers
from mtlib.networks import VectorMaxPool


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
    return torch.linalg.matrix_norm(reverse_jacobian(net, x, batched=True), ord=2)


def _jacobian_norm(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``||J(z)||_2`` of a smooth ``net`` at one point ``z`` (differentiable in ``z``)."""
    return torch.linalg.matrix_norm(jacrev(net)(z).reshape(-1, z.numel()), ord=2)


class _SoftMaxPool(nn.Module):
    def __init__(self, pool: VectorMaxPool, beta: float):
        super().__init__()
        self.pool, self.beta = pool, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.beta * x[..., self.pool.windows(x.shape[-1])], dim=-1) / self.beta


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
    for layer, _ in _layers("smoothed_network", net):
        if isinstance(layer, nn.Linear):
            out.append(layer)
        elif isinstance(layer, nn.ReLU):
            out.append(_SoftReLU(beta))
        else:
            out.append(_SoftMaxPool(layer, beta))
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
        TypeError: unsupported layer in ``net``, non-float ``x0s`` or non-int ``steps``.
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
    first = _layers("lower_bound", net)[0][0]
    check_tensor("lower_bound", "x0s", x0s)
    if x0s.dim() != 2 or x0s.shape[1] != first.in_features or not len(x0s):
        raise ValueError(
            f"lower_bound: `x0s` must have shape (batch >= 1, {first.in_features}), got {tuple(x0s.shape)}"
        )
    check_int("lower_bound", "steps", steps, min=0)
    check_positive("lower_bound", "lr", lr)
    check_positive("lower_bound", "h", h)
    if len(beta) != 2:
        raise ValueError(f"lower_bound: `beta` must be a pair (start, end), got {beta!r}")
    for b in beta:
        check_positive("lower_bound", "beta", b)
    x = x0s.detach().to(first.weight.dtype)
    best_x, best = x.clone(), jacobian_norms(net, x)
    history = [best.max().item()]
    for step in range(steps):
        sharp = beta[0] * (beta[1] / beta[0]) ** (step / max(steps - 1, 1))
        surrogate = smoothed_network(net, sharp)
        g = vmap(grad(functools.partial(_jacobian_norm, surrogate)))(x)
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


