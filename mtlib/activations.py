"""ReLU with a chosen derivative at the kink (Sec 4.1) and the appendix regularizations of |x|.

Chapter: notation, relu, census, stampacchia.
"""

from __future__ import annotations

import torch

from mtlib._validate import check_positive, check_real, check_tensor


class _ReLUz(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, z):
        return x.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, z = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.z = z

    @staticmethod
    def _slope(ctx):
        (x,) = ctx.saved_tensors
        kink = torch.full_like(x, ctx.z)
        # `x <= 0` is False at NaN, so a NaN input passes the gradient through, as in torch.relu
        return torch.where(x <= 0, torch.where(x == 0, kink, torch.zeros_like(x)), torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * _ReLUz._slope(ctx), None

    @staticmethod
    def jvp(ctx, x_t, z_t):
        return _ReLUz._slope(ctx) * x_t


def relu_z(x: torch.Tensor, z: float = 0.0) -> torch.Tensor:
    """ReLU ``R(x) = max(0, x)`` whose associated derivative at ``x = 0`` is ``z`` (Sec 4.1).

    The three pieces ``P^1 = (-inf, 0)``, ``P^2 = (0, inf)``, ``P^3 = {0}`` with
    ``f^1 = 0``, ``f^2(x) = x`` and any ``C^1`` function ``f^3`` vanishing at 0 give the
    associated derivative

    .. math::

        \\tilde R'_z(x) = 0 \\ (x < 0), \\qquad 1 \\ (x > 0), \\qquad z \\ (x = 0),

    valid for every real ``z`` (``f^3(x) = z x``). PyTorch's ``torch.relu`` uses ``z = 0``; like
    it, a NaN input gets derivative 1 (the gradient passes through).
    Works with ``torch.func`` (grad, jacrev, jvp, vmap).

    Args:
        x: floating-point tensor.
        z: the derivative at exactly 0, any real number.

    Examples:
        >>> x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
        >>> relu_z(x, z=0.5).sum().backward()
        >>> x.grad.tolist()
        [0.0, 0.5, 1.0]
    """
    check_tensor("relu_z", "x", x)
    return _ReLUz.apply(x, check_real("relu_z", "z", z))


def abs_eps(x: torch.Tensor, eps: float) -> torch.Tensor:
    """First regularization of the appendix: ``|x|_eps = sqrt(x^2 + eps)``.

    Its derivative ``x / sqrt(x^2 + eps)`` tends to ``sign(x)`` for ``x != 0`` and is exactly
    0 at ``x = 0``, which gives eq 23 of the appendix in the limit ``eps -> 0+``.

    Examples:
        >>> abs_eps(torch.tensor([0.0, 3.0]), 16.0).tolist()
        [4.0, 5.0]
    """
    check_tensor("abs_eps", "x", x)
    check_positive("abs_eps", "eps", eps)
    return torch.sqrt(x * x + eps)


def abs_shift_eps(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Second regularization of the appendix: ``|x|^eps = sqrt((x + sqrt(eps))^2 + eps)``.

    Its derivative ``(x + sqrt(eps)) / sqrt((x + sqrt(eps))^2 + eps)`` also tends to
    ``sign(x)`` for ``x != 0``, but equals ``1/sqrt(2)`` at ``x = 0`` for every ``eps``: the
    origin of the ``1/sqrt(2)`` term of eq 24.

    Examples:
        Rounded: a vectorised ``sqrt`` (MKL on AVX-512) may differ from the correctly rounded one
        in the last unit, so the last digits depend on the CPU.

        >>> round(abs_shift_eps(torch.tensor([0.0], dtype=torch.float64), 4.0).item(), 12)  # sqrt(8)
        2.828427124746
    """
    check_tensor("abs_shift_eps", "x", x)
    check_positive("abs_shift_eps", "eps", eps)
    s = eps**0.5
    return torch.sqrt((x + s) ** 2 + eps)
