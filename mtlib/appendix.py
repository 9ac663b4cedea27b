"""The appendix of the paper: a numerical check of the Stampacchia property (eqs 22-24).

For a Lipschitz ``w`` on the line and a test function ``phi`` with compact support, the
appendix differentiates two regularizations of ``|w|``,

.. math::

    |u|_\\varepsilon = \\sqrt{u^2 + \\varepsilon}, \\qquad
    |u|^\\varepsilon = \\sqrt{(u + \\sqrt\\varepsilon)^2 + \\varepsilon},

and lets ``eps -> 0+``. The first gives eq 23; the second keeps an extra term on the zero set,
because the derivative of ``|u|^eps`` at ``u = 0`` is ``1/sqrt(2)`` for every ``eps`` (eq 24):

.. math::

    \\int (|w|')\\varphi = \\int_{w>0} w'\\varphi - \\int_{w<0} w'\\varphi
    + \\frac{1}{\\sqrt 2}\\int_{w=0} w'\\varphi .

Both limits equal ``int |w|' phi = -int |w| phi'``, so the last integral vanishes for every
``phi``: ``w' = 0`` almost everywhere on ``{w = 0}`` (eq 22). This module computes every term
by composite Gauss-Legendre quadrature, with ``w'`` the derivative autograd returns (an
associated gradient, Def 1), on panels graded geometrically towards the points where ``w`` or
``phi`` is not smooth and where ``w`` changes sign. It is the library side of the
``stampacchia`` chapter.

Chapter: stampacchia.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from mtlib._autodiff import autograd_gradient
from mtlib._validate import check_int, check_positive
from mtlib.activations import abs_eps, abs_shift_eps

_MAX_LEVELS = 60


def elementwise_derivative(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn'(x_i)`` for each entry of ``x``, as autograd computes it, for an elementwise ``fn``.

    For a function of one real variable applied entrywise, the gradient of ``sum_i fn(x_i)``
    is the vector of derivatives; at a kink it is the associated derivative (Def 1, eq 7) that
    the operations inside ``fn`` choose (``torch.relu`` takes ``0`` at ``0``, Sec 4.1).

    Args:
        fn: elementwise torch function (output shape = input shape).
        x: floating-point tensor of evaluation points.

    Returns:
        A tensor of ``x``'s shape; zeros where ``fn`` does not depend on ``x``.

    Examples:
        >>> elementwise_derivative(torch.relu, torch.tensor([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 1.0]
    """
    return autograd_gradient(fn, x, fn="elementwise_derivative", elementwise=True)


def graded_gauss_legendre(
    interval: tuple[float, float], breakpoints: Sequence[float] = (), *, finest: float = 1e-3, nodes: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of a composite Gauss-Legendre rule graded towards ``breakpoints``.

    ``interval`` is cut at the breakpoints; each piece ``[p, q]`` is split into panels whose
    sizes halve towards both ends, down to ``finest``, and each panel gets ``nodes``
    Gauss-Legendre points. A function that is smooth on each piece, even one with a layer of
    width ``~ finest`` at the ends (like ``w / sqrt(w^2 + eps)`` where ``w`` vanishes, with
    ``finest ~ sqrt(eps)``), is then integrated to near machine precision.

    Args:
        interval: ``(a, b)`` with ``a < b``, finite.
        breakpoints: points of ``(a, b)`` where the integrand may be non-smooth.
        finest: size of the smallest panels, ``> 0``.
        nodes: Gauss-Legendre points per panel, ``>= 1``.

    Returns:
        ``(x, weights)``, float64 tensors; ``sum(weights * f(x))`` approximates ``int_a^b f``.

    Raises:
        TypeError: ``nodes`` is not an int.
        ValueError: bad ``interval``, a breakpoint outside it, non-positive ``finest`` or
            ``nodes``.

    Examples:
        >>> x, wt = graded_gauss_legendre((0.0, 2.0), [1.0], nodes=3)
        >>> round(float((wt * x**5).sum()), 12)   # int_0^2 x^5 dx = 64/6
        10.666666666667
    """
    a, b = _check_interval("graded_gauss_legendre", interval)
    check_positive("graded_gauss_legendre", "finest", finest)
    check_int("graded_gauss_legendre", "nodes", nodes)
    cuts = sorted({float(p) for p in breakpoints})
    for p in cuts:
        if not a < p < b:
            raise ValueError(
                f"graded_gauss_legendre: `breakpoints` must lie strictly inside {(a, b)}, got {p}"
            )
    ends = [a, *cuts, b]
    edges = []
    for p, q in zip(ends[:-1], ends[1:]):
        half = (q - p) / 2
        levels = min(_MAX_LEVELS, max(0, math.ceil(math.log2(half / finest))))
        steps = [half * 0.5**k for k in range(levels, 0, -1)]
        edges += [p, *(p + s for s in steps), p + half, *(q - s for s in reversed(steps))]
    edges = torch.tensor([*edges, b], dtype=torch.float64)
    xi, omega = np.polynomial.legendre.leggauss(nodes)
    xi, omega = torch.from_numpy(xi), torch.from_numpy(omega)
    mid = (edges[1:] + edges[:-1]) / 2
    rad = (edges[1:] - edges[:-1]) / 2
    return (mid[:, None] + rad[:, None] * xi).reshape(-1), (rad[:, None] * omega).reshape(-1)


@dataclass(frozen=True)
class AppendixTerms:
    """The integrals of the appendix for one ``eps`` (all against the test function ``phi``).

    Attributes:
        eps: the regularization parameter.
        first: ``int d|w|_eps/dx phi = int w / sqrt(w^2 + eps) w' phi``.
        first_ibp: ``-int |w|_eps phi'``, equal to ``first`` by integration by parts.
        second: ``int d|w|^eps/dx phi``, the second regularization.
        second_ibp: ``-int |w|^eps phi'``.
        positive, negative, zero: ``int w' phi`` over ``{w > 0}``, ``{w < 0}``, ``{w = 0}``.
        weak: ``-int |w| phi' = int |w|' phi``, the limit of all four regularized integrals.
    """

    eps: float
    first: float
    first_ibp: float
    second: float
    second_ibp: float
    positive: float
    negative: float
    zero: float
    weak: float

    @property
    def rhs23(self) -> float:
        """Right side of eq 23: ``int_{w>0} w' phi - int_{w<0} w' phi``."""
        return self.positive - self.negative

    @property
    def rhs24(self) -> float:
        """Right side of eq 24: eq 23 plus ``(1/sqrt 2) int_{w=0} w' phi``."""
        return self.rhs23 + self.zero / math.sqrt(2.0)


def regularized_integrals(
    w: Callable[[torch.Tensor], torch.Tensor],
    phi: Callable[[torch.Tensor], torch.Tensor],
    eps: float,
    interval: tuple[float, float],
    breakpoints: Sequence[float] = (),
    *,
    dw: Callable[[torch.Tensor], torch.Tensor] | None = None,
    nodes: int = 20,
) -> AppendixTerms:
    """The terms of eqs 23-24 (Appendix) for one ``eps``, by graded Gauss-Legendre quadrature.

    With ``w'`` the derivative autograd returns for ``w`` (or ``dw`` when given) and the
    regularizations :func:`mtlib.abs_eps` and :func:`mtlib.abs_shift_eps` differentiated by
    autograd too, computes

    .. math::

        \\int \\frac{w\\, w'\\varphi}{\\sqrt{w^2+\\varepsilon}}, \\quad
        \\int \\frac{(w+\\sqrt\\varepsilon)\\, w'\\varphi}{\\sqrt{(w+\\sqrt\\varepsilon)^2
        +\\varepsilon}}, \\quad \\int_{w \\gtrless 0} w'\\varphi, \\quad
        \\int_{w=0} w'\\varphi, \\quad -\\int |w|\\varphi' ,

    and the integrated-by-parts forms ``-int |w|_eps phi'``, ``-int |w|^eps phi'``. The sets
    ``{w > 0}``, ``{w < 0}``, ``{w = 0}`` are read off the sign of ``w`` at the nodes.

    Args:
        w: Lipschitz function, elementwise on float64 tensors.
        phi: ``C^1`` test function, elementwise, vanishing at both ends of ``interval``.
        eps: regularization parameter, ``> 0``.
        interval: ``(a, b)`` holding the support of ``phi``.
        breakpoints: the kinks of ``w`` and ``phi`` and the points where ``w`` changes sign;
            the quadrature is graded towards them down to panels of ``0.1 sqrt(eps)``.
        dw: replaces autograd's ``w'`` (to see what a wrong derivative does to eq 24).
        nodes: Gauss-Legendre points per panel.

    Returns:
        An :class:`AppendixTerms`; ``.rhs23`` and ``.rhs24`` are the right sides of eqs 23-24.

    Raises:
        TypeError: ``w``, ``phi`` or ``dw`` not callable, ``eps`` not a real number.
        ValueError: ``eps <= 0``, bad ``interval`` or ``breakpoints``, or ``w``, ``dw`` or
            ``phi`` not elementwise (output shape differs from input shape).

    Examples:
        ``w(x) = relu(x)``, ``phi(x) = (1 - x^2)^2``: every limit is ``int_0^1 phi = 8/15``.

        >>> t = regularized_integrals(torch.relu, lambda x: (1 - x**2) ** 2, 1e-12, (-1.0, 1.0), [0.0])
        >>> round(t.weak, 12), round(t.rhs23, 12), round(t.rhs24, 12), t.zero
        (0.533333333333, 0.533333333333, 0.533333333333, 0.0)
        >>> round(t.first, 5), round(t.second, 5)
        (0.53333, 0.53333)

    References:
        Despres (2024), Appendix A; Stampacchia (1963); Kinderlehrer & Stampacchia (2000).
    """
    for name, fn in (("w", w), ("phi", phi)):
        if not callable(fn):
            raise TypeError(f"regularized_integrals: `{name}` must be callable, got {type(fn).__name__}")
    if dw is not None and not callable(dw):
        raise TypeError(f"regularized_integrals: `dw` must be callable or None, got {type(dw).__name__}")
    check_positive("regularized_integrals", "eps", eps)
    _check_interval("regularized_integrals", interval)
    eps = float(eps)
    x, wt = graded_gauss_legendre(interval, breakpoints, finest=0.1 * math.sqrt(eps), nodes=nodes)
    with torch.no_grad():
        wx, px = w(x), phi(x)
    dwx = elementwise_derivative(w, x) if dw is None else dw(x)
    for name, values in (("w", wx), ("dw", dwx)):
        if not isinstance(values, torch.Tensor) or values.shape != x.shape:
            got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
            raise ValueError(f"regularized_integrals: `{name}` must map the nodes, shape "
                             f"{tuple(x.shape)}, to a tensor of the same shape, got {got}")
    dpx = elementwise_derivative(phi, x)
    flux = dwx * px

    def integral(values: torch.Tensor) -> float:
        return float((wt * values).sum())

    with torch.no_grad():
        return AppendixTerms(
            eps=eps,
            first=integral(elementwise_derivative(lambda u: abs_eps(u, eps), wx) * flux),
            first_ibp=-integral(abs_eps(wx, eps) * dpx),
            second=integral(elementwise_derivative(lambda u: abs_shift_eps(u, eps), wx) * flux),
            second_ibp=-integral(abs_shift_eps(wx, eps) * dpx),
            positive=integral(torch.where(wx > 0, flux, 0.0)),
            negative=integral(torch.where(wx < 0, flux, 0.0)),
            zero=integral(torch.where(wx == 0, flux, 0.0)),
            weak=-integral(wx.abs() * dpx),
        )


def convergence_table(
    w: Callable[[torch.Tensor], torch.Tensor],
    phi: Callable[[torch.Tensor], torch.Tensor],
    eps_values: Sequence[float],
    interval: tuple[float, float],
    breakpoints: Sequence[float] = (),
    *,
    dw: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> pd.DataFrame:
    """:func:`regularized_integrals` for each ``eps``, with the errors to eqs 23 and 24.

    Returns:
        A DataFrame, one row per ``eps``: the fields of :class:`AppendixTerms`, ``rhs23``,
        ``rhs24``, ``err23 = |first - rhs23|`` and ``err24 = |second - rhs24|``.

    Examples:
        >>> df = convergence_table(torch.relu, lambda x: (1 - x**2) ** 2, [1e-4, 1e-8], (-1.0, 1.0), [0.0])
        >>> bool(df["err23"].is_monotonic_decreasing)
        True
    """
    eps_values = list(eps_values)
    if not eps_values:
        raise ValueError("convergence_table: `eps_values` must hold at least one value")
    rows = []
    for eps in eps_values:
        terms = regularized_integrals(w, phi, eps, interval, breakpoints, dw=dw)
        rows.append({**asdict(terms), "rhs23": terms.rhs23, "rhs24": terms.rhs24})
    df = pd.DataFrame(rows)
    df["err23"] = (df["first"] - df["rhs23"]).abs()
    df["err24"] = (df["second"] - df["rhs24"]).abs()
    return df


def bump(x: torch.Tensor, radius: float = 3.0) -> torch.Tensor:
    """The test function of the chapter: ``phi(x) = (1 - (x/R)^2)_+^4 exp(x/2)``.

    ``C^3`` with support ``[-R, R]``, and not symmetric, so that no integral of the appendix
    vanishes for a symmetry reason.

    Examples:
        >>> bump(torch.tensor([-3.0, 0.0, 5.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    return (1 - (x / radius) ** 2).clamp_min(0) ** 4 * torch.exp(x / 2)


@dataclass(frozen=True)
class AppendixExample:
    """A Lipschitz ``w`` with its kinks and sign changes, to use with :func:`bump` on ``interval``."""

    name: str
    w: Callable[[torch.Tensor], torch.Tensor]
    breakpoints: tuple[float, ...]
    zero_set: str
    interval: tuple[float, float] = (-3.0, 3.0)


_EXAMPLES = {
    "flat": AppendixExample(
        "flat",
        lambda x: torch.relu(x - 1) - torch.relu(-1 - x),
        (-1.0, 1.0),
        "[-1, 1]",
    ),
    "flat_crossing": AppendixExample(
        "flat_crossing",
        lambda x: torch.relu(x - 1) - 2 * torch.relu(x - 1.5) - torch.relu(-1 - x),
        (-1.0, 1.0, 1.5, 2.0),
        "[-1, 1] and {2}",
    ),
    "relu": AppendixExample("relu", torch.relu, (0.0,), "[-3, 0]"),
}


def appendix_example(name: str) -> AppendixExample:
    """The named example ``w`` of the ``stampacchia`` chapter (all with a flat zero set).

    * ``"flat"``: ``w(x) = relu(x - 1) - relu(-1 - x)``, zero on ``[-1, 1]``, slope 1 outside;
    * ``"flat_crossing"``: ``relu(x - 1) - 2 relu(x - 1.5) - relu(-1 - x)``, zero on
      ``[-1, 1]`` and crossing zero with slope ``-1`` at ``x = 2``;
    * ``"relu"``: ``w(x) = relu(x)``, zero on ``(-inf, 0]``.

    Raises:
        ValueError: unknown ``name``.

    Examples:
        >>> ex = appendix_example("flat_crossing")
        >>> ex.w(torch.tensor([-2.0, 0.0, 1.5, 2.0, 3.0])).tolist()
        [-1.0, 0.0, 0.5, 0.0, -1.0]
    """
    if name not in _EXAMPLES:
        raise ValueError(f"appendix_example: `name` must be one of {tuple(_EXAMPLES)}, got {name!r}")
    return _EXAMPLES[name]


def _check_interval(fn: str, interval) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: `interval` must be a pair (a, b) of numbers, got {interval!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and a < b):
        raise ValueError(f"{fn}: `interval` must satisfy a < b, both finite, got {(a, b)}")
    return a, b
