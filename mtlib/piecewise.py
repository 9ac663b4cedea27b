"""Piecewise C^1 functions, their associated gradients (Def 1) and the chain rule (Cor 2).

A Lipschitz, piecewise ``C^1`` function is written (eq 6)

.. math::

    f(x) = \\sum_\\alpha \\mathbf 1_{P^\\alpha}(x) f^\\alpha(x),

with disjoint pieces ``P^alpha`` covering the space and smooth ``f^alpha``. Its associated
gradient (Def 1, eq 7) differentiates the piece that holds ``x``:

.. math::

    \\tilde\\nabla f(x) = \\sum_\\alpha \\mathbf 1_{P^\\alpha}(x) \\nabla f^\\alpha(x).

It is defined everywhere, depends on the representation, and equals ``nabla f`` almost
everywhere (Cor 1). For the operations the book uses (ReLU, max, maxpool and smooth maps), whose
backward rules satisfy the tangent condition on every tie stratum, autograd computes such an
object layer by layer (Cor 2, eq 14); the census chapter lists PyTorch operations whose rules do
not (``scatter_reduce`` with ``include_self=False``, jointly in its two inputs).

Chapter: intro, notation, theorem, relu, tangent, boustany, maxpool, directional, lipschitz, related, results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.func import grad, jacrev

from mtlib._autodiff import autograd_gradient
from mtlib._validate import check_tensor


class Piecewise:
    """A piecewise ``C^1`` function given by its representation (6).

    Args:
        pieces: the smooth functions ``f^alpha`` (torch callables, differentiable everywhere).
        select: ``select(x) -> alpha``, the index of the piece ``P^alpha`` that holds ``x``
            (an ``int`` in ``range(len(pieces))``). Because the pieces are disjoint, every
            ``x`` has exactly one index.

    Calling the object evaluates ``f(x) = f^{select(x)}(x)``; :meth:`associated_gradient`
    and :meth:`associated_jacobian` evaluate eq 7.

    Examples:
        ReLU with the pieces of Sec 4.1 and ``z = 1`` on ``P^3 = {0}``:

        >>> relu = Piecewise(
        ...     [lambda x: 0 * x, lambda x: x, lambda x: x],
        ...     lambda x: 0 if x < 0 else (1 if x > 0 else 2),
        ... )
        >>> relu.associated_gradient(torch.tensor(0.0)).item()
        1.0
    """

    def __init__(self, pieces: Sequence[Callable], select: Callable[[torch.Tensor], int]):
        pieces = list(pieces)
        if not pieces:
            raise ValueError("Piecewise: `pieces` must hold at least one function")
        for i, piece in enumerate(pieces):
            if not callable(piece):
                raise TypeError(f"Piecewise: `pieces[{i}]` must be callable, got {type(piece).__name__}")
        if not callable(select):
            raise TypeError(f"Piecewise: `select` must be callable, got {type(select).__name__}")
        self.pieces = pieces
        self.select = select

    def piece_index(self, x: torch.Tensor) -> int:
        """The index ``alpha`` with ``x in P^alpha``, checked to be a valid piece index."""
        check_tensor("Piecewise", "x", x)
        alpha = self.select(x.detach())
        if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
            alpha = int(alpha.item())
        if isinstance(alpha, bool) or not isinstance(alpha, int) or not 0 <= alpha < len(self.pieces):
            raise ValueError(
                f"Piecewise: `select` must return a piece index in range({len(self.pieces)}), "
                f"got {alpha!r}"
            )
        return alpha

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x) = f^alpha(x)`` for the piece ``P^alpha`` holding ``x`` (eq 6)."""
        return self.pieces[self.piece_index(x)](x)

    def associated_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """Associated gradient of a scalar-valued ``f`` at ``x`` (Def 1, eq 7), shape of ``x``."""
        piece = self.pieces[self.piece_index(x)]
        out = piece(x)
        if out.numel() != 1:
            raise ValueError(
                "Piecewise.associated_gradient: the function must be scalar-valued, got output "
                f"shape {tuple(out.shape)}; use associated_jacobian"
            )
        return grad(lambda y: piece(y).reshape(()))(x)

    def associated_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Associated Jacobian at ``x`` (Def 1, eq 7), shape ``f(x).shape + x.shape``."""
        return jacrev(self.pieces[self.piece_index(x)])(x)


def associated_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The gradient that PyTorch's reverse-mode autograd returns for a scalar ``f`` at ``x``.

    When every nonsmooth operation inside ``f`` has a backward rule that is valid on its tie
    strata (ReLU, max and maxpool are), the Murat-Trombetti theorem (Thm 1) and Cor 2 make this
    an associated gradient of ``f`` (eq 7) for *some* representation (6), fixed by those tie
    rules; it equals ``nabla f(x)`` for almost every ``x`` (Cor 1). Where
    ``x`` does not influence the output, the result is 0.

    Args:
        f: function of one tensor returning a one-element tensor.
        x: floating-point point of evaluation (not modified).

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> associated_gradient(torch.relu, torch.tensor(0.0)).item()   # PyTorch: R'(0) = 0
        0.0
    """
    check_tensor("associated_gradient", "x", x)
    if not callable(f):
        raise TypeError(f"associated_gradient: `f` must be callable, got {type(f).__name__}")
    return autograd_gradient(f, x, fn="associated_gradient")


def _layer_jacobian(layer, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, Piecewise):
        return layer.associated_jacobian(x)
    return torch.autograd.functional.jacobian(layer, x)


def chain_jacobian(layers: Sequence[Callable], x: torch.Tensor) -> torch.Tensor:
    """Cor 2 (eq 14): the product of the associated Jacobians of ``layers`` along the forward pass.

    With ``x_0 = x`` and ``x_{r+1} = layer_r(x_r)``, returns

    .. math::

        \\tilde A_\\ell(x_\\ell) \\tilde B_\\ell(x_{\\ell}) \\cdots \\tilde A_0(x_0),

    each factor the associated Jacobian of one layer at its own input: from its
    representation when the layer is a :class:`Piecewise`, else the one autograd computes.
    Cor 2 says the product equals ``nabla f`` a.e.; it is defined for every ``x``, kinks
    included, and there it equals what autograd returns for the composition.

    Args:
        layers: callables mapping a tensor to a tensor, applied in order.
        x: the network input.

    Returns:
        The Jacobian, of shape ``f(x).shape + x.shape``.

    Examples:
        Ex 2.2: ``f_0(x) = (x, x)`` then ``max``: the product is ``grad S_0 . W_0 = 1`` (eq 16).

        >>> from mtlib import max_first
        >>> chain_jacobian([lambda t: t.repeat(2), max_first], torch.tensor([0.0])).tolist()
        [1.0]
    """
    check_tensor("chain_jacobian", "x", x)
    layers = list(layers)
    if not layers:
        raise ValueError("chain_jacobian: `layers` must hold at least one callable")
    jac = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    h = x.detach()
    for layer in layers:
        j = _layer_jacobian(layer, h)
        out = layer(h).detach()
        jac = j.reshape(out.numel(), h.numel()) @ jac
        h = out
    return jac.reshape(h.shape + x.shape)
