"""What autograd returns, and finite differences: the numerical helpers of the whole library.

Every "gradient (or Jacobian) that autograd returns" in mtlib goes through this module, so one
place decides what an input that does not influence the output gets (zeros, as
:func:`mtlib.associated_gradient` promises), and every finite difference lives here, apart from
the exact derivatives of :mod:`mtlib.directional`:

* :func:`autograd_gradient`: reverse mode, a scalar ``f`` or an elementwise one;
* :func:`reverse_jacobian`, :func:`forward_jacobian`: row by row (backward passes) or column by
  column (``torch.func.jvp``), the two AD modes that may pick different associated gradients;
* :func:`one_sided_difference`, :func:`central_difference`, :func:`left_right_slopes`:
  difference quotients along ``d``.

Chapter: notation, theorem, stampacchia, census, directional, lipschitz (through the public
functions that call these).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from mtlib._validate import check_direction, check_positive


def _load_forward_ad_decompositions() -> None:
    """Load torch's forward-mode decompositions now, without torch 2.14's FutureWarning.

    The first forward-mode call (``torch.func.jvp``, ``forward_ad.make_dual``) imports
    ``torch._decomp.decompositions_for_jvp``, which registers them with the deprecated
    ``torch.jit.script``: a warning about torch's own call (hidden by default as a
    DeprecationWarning in 2.13, shown in a chapter's output as a FutureWarning from 2.14) that
    no caller can act on. mtlib uses forward mode throughout, so it loads them once, at import,
    with exactly that warning silenced. Remove when torch stops scripting them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
        torch.autograd.forward_ad._maybe_load_decompositions()


_load_forward_ad_decompositions()


def autograd_gradient(f: Callable, x: torch.Tensor, *, fn: str = "autograd_gradient",
                      elementwise: bool = False) -> torch.Tensor:
    """The gradient reverse-mode autograd returns for ``f`` at ``x`` (zeros where unused).

    With ``elementwise=False`` ``f`` must return one number; with ``elementwise=True`` it must
    map ``x`` to a tensor of the same shape, and the result is the gradient of the sum (for an
    entrywise ``f``, the derivative at each entry). ``x`` is not modified.

    Raises:
        ValueError: ``f``'s output has the wrong shape (the message names ``fn``).

    Examples:
        >>> autograd_gradient(lambda x: x.abs().sum(), torch.tensor([-2.0, 0.0, 3.0])).tolist()
        [-1.0, 0.0, 1.0]
        >>> autograd_gradient(lambda x: torch.tensor(1.0), torch.zeros(2)).tolist()
        [0.0, 0.0]
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = f(x)
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        if elementwise and (not isinstance(y, torch.Tensor) or y.shape != x.shape):
            raise ValueError(
                f"{fn}: `fn` must map a tensor of shape {tuple(x.shape)} to one of the same shape, "
                f"got {shape}"
            )
        if not elementwise and (not isinstance(y, torch.Tensor) or y.numel() != 1):
            raise ValueError(f"{fn}: `f` must return a one-element tensor, got {shape}")
        if not y.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(y.sum() if elementwise else y.reshape(()), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def reverse_jacobian(f: Callable, x: torch.Tensor, *, batched: bool = False) -> torch.Tensor:
    """The Jacobian autograd's backward passes return, one row per output (zeros where unused).

    Unbatched: ``f(x)`` is flattened to ``m`` outputs and the result is ``(m, x.numel())`` rows
    of gradients with respect to the flattened ``x``. Batched: ``x`` is ``(B, d)``, ``f`` acts
    row by row with ``m`` outputs per row, and the result is ``(B, m, d)`` (one backward pass
    per output column, summed over the batch).

    Examples:
        >>> reverse_jacobian(lambda x: torch.stack([x[0] * x[1], x[1]]), torch.tensor([2.0, 3.0])).tolist()
        [[3.0, 2.0], [0.0, 1.0]]
        >>> reverse_jacobian(torch.relu, torch.tensor([[0.0], [1.0]]), batched=True).tolist()
        [[[0.0]], [[1.0]]]
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = f(x)
        y = y.reshape(x.shape[0], -1) if batched else y.reshape(1, -1)
        rows = []
        for k in range(y.shape[1]):
            (g,) = torch.autograd.grad(y[:, k].sum(), x, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    if batched:
        return torch.stack(rows, dim=1)
    return torch.stack(rows).reshape(len(rows), -1)


def forward_jacobian(f: Callable, x: torch.Tensor) -> torch.Tensor:
    """The Jacobian forward mode (``torch.func.jvp``) returns, one column per entry of ``x``.

    Returns ``(m, x.numel())`` with ``m`` the number of outputs of ``f``. An op without a
    forward-mode formula raises what ``torch.func.jvp`` raises (``NotImplementedError`` or
    ``RuntimeError``).

    Examples:
        >>> forward_jacobian(lambda x: x[:1] * x[1:], torch.tensor([2.0, 3.0])).tolist()
        [[3.0, 2.0]]
    """
    x = x.detach()
    basis = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    cols = [torch.func.jvp(lambda v: f(v).reshape(-1), (x,), (e.reshape(x.shape),))[1] for e in basis]
    return torch.stack(cols, dim=1)


def one_sided_difference(f: Callable, x: torch.Tensor, d: torch.Tensor, h: float = 1e-7,
                         order: int = 1) -> torch.Tensor:
    """One-sided finite difference for ``f'(x; d)``: first or second order in ``h``.

    .. math::

        D_1 = \\frac{f(x + h d) - f(x)}{h}, \\qquad
        D_2 = \\frac{-3 f(x) + 4 f(x + h d) - f(x + 2 h d)}{2 h}.

    Both use only ``h > 0``; for a function that is smooth on ``[x, x + 2 h d]`` (a piecewise
    linear network with no kink in between) they equal ``f'(x; d)`` up to rounding.

    Raises:
        TypeError / ValueError: bad ``f``, ``x``, ``d`` or ``h``; ``order`` not 1 or 2.

    Examples:
        >>> x, d = torch.tensor(0.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
        >>> one_sided_difference(torch.abs, x, d, h=0.5).item()
        1.0
    """
    d = check_direction("one_sided_difference", f, x, d)
    check_positive("one_sided_difference", "h", h)
    if order not in (1, 2):
        raise ValueError(f"one_sided_difference: `order` must be 1 or 2, got {order!r}")
    with torch.no_grad():
        f0, f1 = f(x), f(x + h * d)
        if order == 1:
            return (f1 - f0) / h
        return (-3 * f0 + 4 * f1 - f(x + 2 * h * d)) / (2 * h)


def central_difference(f: Callable, x: torch.Tensor, d: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central finite difference ``(f(x + h d) - f(x - h d)) / (2 h)`` along ``d``.

    Second order in ``h`` where ``f`` is smooth on ``[x - h d, x + h d]``; at a kink it is the
    mean of the two one-sided derivatives (what ``torch.autograd.gradcheck`` compares with).

    Raises:
        TypeError / ValueError: bad ``f``, ``x``, ``d`` or ``h``.

    Examples:
        >>> x, d = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
        >>> central_difference(torch.abs, x, d, h=0.5).item()
        0.0
    """
    d = check_direction("central_difference", f, x, d)
    check_positive("central_difference", "h", h)
    with torch.no_grad():
        return (f(x + h * d) - f(x - h * d)) / (2 * h)


def left_right_slopes(f: Callable, x: torch.Tensor, d: torch.Tensor,
                      eps: float = 2.0**-20) -> tuple[float, float]:
    """One-sided difference quotients of a scalar ``f`` at ``x`` along ``d``.

    .. math::

        \\text{left} = \\frac{f(x) - f(x - \\varepsilon d)}{\\varepsilon}, \\qquad
        \\text{right} = \\frac{f(x + \\varepsilon d) - f(x)}{\\varepsilon},

    approximations of ``-f'(x; -d)`` and ``f'(x; d)`` (:func:`one_sided_difference`
    of order 1 along ``-d`` and ``d``), exact for functions that are affine on
    both sides of ``x`` (relu, abs, max). They agree iff ``f`` is differentiable along ``d``.

    Examples:
        >>> left_right_slopes(torch.relu, torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0))
        (0.0, 1.0)
    """
    right = float(one_sided_difference(f, x, d, eps))
    return 0.0 - float(one_sided_difference(f, x, -d, eps)), right  # 0.0 - : no -0.0
