"""The fat Cantor (Smith-Volterra-Cantor) set: a zero set of positive measure with no interior.

Chapter: stampacchia.

The Stampacchia property (eq 22) says that a Lipschitz ``w`` has ``nabla w = 0`` almost
everywhere on ``{w = 0}``. Where the zero set has an interior this is plain. In one variable
it is plain everywhere: at a zero ``z`` that is a limit of other zeros ``z_k``,
``w'(z) = lim (w(z_k) - w(z)) / (z_k - z) = 0`` wherever ``w`` is differentiable, and isolated
zeros are countable. On the line the fat Cantor set ``C`` (positive measure, no interval
inside) therefore illustrates Rademacher's a.e. differentiability of ``w`` on ``C``, not the
Stampacchia property. The property has content in the plane, for zero sets such as ``C x C``
(measure ``1/4``, no interior), where the proof runs through Lebesgue density points:
:func:`fat_cantor_cdf` gives the measure of ``C_n`` in an interval, hence the density of
``C_n x C_n`` in a square, a product of two one-dimensional densities
(:func:`fat_cantor_density`).

Construction. ``C_0 = [0, 1]``. At step ``k = 1, 2, ...`` remove from the middle of each of
the ``2^(k-1)`` closed intervals of ``C_(k-1)`` an open *gap* of length ``4^(-k)``. Then
``C = intersection of the C_n``. Each of the ``2^n`` intervals of ``C_n`` has length

.. math::

    l_n = 2^{-n-1} + 2^{-2n-1}, \\qquad |C_n| = 2^n l_n = \\tfrac12 + 2^{-n-1}
    \\;\\longrightarrow\\; |C| = \\tfrac12 ,

since the gaps add up to ``sum_k 2^(k-1) 4^(-k) = 1/2``; and ``C`` contains no interval
because ``l_n -> 0``.

The function ``w = dist(., C)`` is 1-Lipschitz and vanishes exactly on ``C``.
:func:`distance_to_fat_cantor` computes ``w_n = dist(., C_n)``. The endpoints of the intervals
of ``C_n`` belong to ``C``, so ``w_n = w`` off ``C_n``; on ``C_n`` a point is at most half a
gap of level ``> n`` away from ``C``, so

.. math::

    0 \\le w - w_n \\le \\tfrac12\\, 4^{-(n+1)} = 2^{-2n-3} .

Every endpoint is a dyadic rational with denominator ``2^(2n+1)``, exact in float64 for
``n <= MAX_LEVEL``; at dyadic points ``w_n`` is then computed without rounding.
"""

from __future__ import annotations

from fractions import Fraction

import torch

from mtlib._validate import check_float_dtype, check_int, check_positive, check_tensor

MAX_LEVEL = 25
"""Deepest level: endpoints have denominator ``2^51`` there, still exact in float64."""


def _level(fn: str, n) -> int:
    n = check_int(fn, "n", n, min=0)
    if n > MAX_LEVEL:
        raise ValueError(f"{fn}: `n` must be <= {MAX_LEVEL} (float64 exactness), got {n}")
    return n


def interval_length(n: int) -> Fraction:
    """``l_n = 2^(-n-1) + 2^(-2n-1)``, the length of each of the ``2^n`` intervals of ``C_n``.

    Examples:
        >>> interval_length(0), interval_length(1), interval_length(2)
        (Fraction(1, 1), Fraction(3, 8), Fraction(5, 32))
    """
    n = check_int("interval_length", "n", n, min=0)
    return Fraction(1, 2 ** (n + 1)) + Fraction(1, 2 ** (2 * n + 1))


def fat_cantor_intervals(n: int) -> list[tuple[Fraction, Fraction]]:
    """The ``2^n`` closed intervals of ``C_n``, left to right, as exact fractions.

    Built by the construction itself (remove a gap of length ``4^(-k)`` from the middle of
    each interval), not from the closed form of :func:`interval_length`.

    Examples:
        >>> [(str(a), str(b)) for a, b in fat_cantor_intervals(1)]
        [('0', '3/8'), ('5/8', '1')]
    """
    n = _level("fat_cantor_intervals", n)
    intervals = [(Fraction(0), Fraction(1))]
    for k in range(1, n + 1):
        half_gap = Fraction(1, 2 * 4**k)
        intervals = [piece for a, b in intervals
                     for piece in ((a, (a + b) / 2 - half_gap), ((a + b) / 2 + half_gap, b))]
    return intervals


def fat_cantor_measure(n: int) -> Fraction:
    """``|C_n|``, the exact sum of the lengths of :func:`fat_cantor_intervals` (``1/2 + 2^(-n-1)``).

    Examples:
        >>> [str(fat_cantor_measure(n)) for n in range(4)]
        ['1', '3/4', '5/8', '9/16']
    """
    return sum((b - a for a, b in fat_cantor_intervals(n)), Fraction(0))


def fat_cantor_breakpoints(n: int) -> list[float]:
    """The kinks of ``w_n``: the endpoints and midpoints of every gap of levels ``1..n``, sorted.

    Used as breakpoints of the quadrature of :func:`mtlib.appendix.regularized_integrals`.

    Examples:
        >>> fat_cantor_breakpoints(1)
        [0.375, 0.5, 0.625]
    """
    n = _level("fat_cantor_breakpoints", n)
    points = set()
    for k in range(n):
        for a, b in fat_cantor_intervals(k):
            mid, half_gap = (a + b) / 2, Fraction(1, 2 * 4 ** (k + 1))
            points |= {mid - half_gap, mid, mid + half_gap}
    return [float(p) for p in sorted(points)]


def distance_to_fat_cantor(x: torch.Tensor, n: int) -> torch.Tensor:
    """``w_n(x) = dist(x, C_n)``, elementwise; within ``2^(-2n-3)`` of ``dist(x, C)`` (module doc).

    Walks down the construction: at level ``k`` the point is either in the gap of its current
    interval (then ``w_n`` is the distance to the nearer gap end) or moves to the left or
    right sub-interval. Written with ``torch.where`` and ``abs``, so autograd returns the
    derivative of ``w_n``: ``-1``/``+1`` on the left/right half of each gap and outside
    ``[0, 1]``, ``0`` on ``C_n`` (where ``w_n`` is constant) and at gap midpoints
    (``|.|'(0) = 0``).

    Args:
        x: floating-point tensor of points.
        n: number of construction levels, ``0 <= n <= MAX_LEVEL``.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Examples:
        >>> distance_to_fat_cantor(torch.tensor([-0.25, 0.2, 0.5, 0.4375, 1.5]), 1).tolist()
        [0.25, 0.0, 0.125, 0.0625, 0.5]
    """
    x = check_tensor("distance_to_fat_cantor", "x", x)
    check_float_dtype("distance_to_fat_cantor", "x", x)
    n = _level("distance_to_fat_cantor", n)
    out = torch.where(x < 0, -x, torch.where(x > 1, x - 1, torch.zeros_like(x)))
    active = (x >= 0) & (x <= 1)            # in C_k so far
    left = torch.zeros_like(x)              # left end of the current interval of C_k
    for k in range(n):
        length, half_gap = float(interval_length(k)), 2.0 ** (-2 * k - 3)
        offset = x - (left + length / 2)
        in_gap = active & (offset.abs() < half_gap)
        out = torch.where(in_gap, half_gap - offset.abs(), out)
        active = active & ~in_gap
        left = torch.where(offset > 0, left + length - float(interval_length(k + 1)), left)
    return out


def sample_fat_cantor(count: int, n: int, *, seed: int = 0, bits: int = 20) -> torch.Tensor:
    """``count`` points of ``C_n`` drawn uniformly (Lebesgue measure on ``C_n``), as dyadics.

    An interval of ``C_n`` is drawn uniformly (they all have length ``l_n``), then a point of
    it on the grid of step ``l_n 2^(-bits)``. The points are exact float64 dyadics when
    ``2n + 1 + bits <= 52``.

    Args:
        count: number of points, ``>= 1``.
        n: level, ``0 <= n <= MAX_LEVEL``.
        seed: seed of the CPU generator (the draw is the same on every machine).
        bits: resolution inside an interval.

    Returns:
        A float64 tensor of shape ``(count,)`` with ``distance_to_fat_cantor(x, n) == 0``.

    Examples:
        >>> x = sample_fat_cantor(5, 3)
        >>> bool((distance_to_fat_cantor(x, 3) == 0).all())
        True
    """
    count = check_int("sample_fat_cantor", "count", count)
    n = _level("sample_fat_cantor", n)
    bits = check_int("sample_fat_cantor", "bits", bits, min=0)
    if 2 * n + 1 + bits > 52:
        raise ValueError(f"sample_fat_cantor: 2 n + 1 + bits must be <= 52, got {2 * n + 1 + bits}")
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, 2**n, (count,), generator=gen)
    left = torch.zeros(count, dtype=torch.float64)
    for k in range(1, n + 1):                          # bit k of the index: right child at level k
        right = ((index >> (n - k)) & 1).to(torch.float64)
        left = left + right * float(interval_length(k - 1) - interval_length(k))
    position = torch.randint(0, 2**bits, (count,), generator=gen).to(torch.float64) / 2**bits
    return left + position * float(interval_length(n))


def secant_slope(x: torch.Tensor, h: float, n: int) -> torch.Tensor:
    """``max(|w_n(x + h) - w_n(x)|, |w_n(x - h) - w_n(x)|) / h``, elementwise.

    At a point ``x`` of ``C``, ``w`` is differentiable with ``w'(x) = 0`` exactly when this
    tends to ``0`` with ``h`` (for ``w`` itself; ``w_n`` adds at most ``2^(-2n-2) / h``).

    Examples:
        >>> secant_slope(torch.tensor([0.375]), 0.125, 1).tolist()   # a gap end: slope 1
        [1.0]
    """
    check_positive("secant_slope", "h", h)
    w0 = distance_to_fat_cantor(x, n)
    return torch.maximum((distance_to_fat_cantor(x + h, n) - w0).abs(),
                         (distance_to_fat_cantor(x - h, n) - w0).abs()) / h


def fat_cantor_cdf(x: torch.Tensor, n: int) -> torch.Tensor:
    """``|C_n intersected with [0, x]|``, elementwise: the distribution function of ``C_n``.

    Walks down the construction like :func:`distance_to_fat_cantor`: passing to the right
    sub-interval at level ``k`` adds the measure ``2^(n-k-1) l_n`` of ``C_n`` in the left one;
    a point in a gap adds it and stops; at level ``n`` the part ``x - left`` of the interval
    is added. At dyadic points the arithmetic is exact (module doc). ``|C intersected with
    I|`` differs from ``|C_n intersected with I|`` by at most ``2^(-2n-1)`` per interval of
    ``C_n`` that meets ``I``.

    Args:
        x: floating-point tensor of points.
        n: number of construction levels, ``0 <= n <= MAX_LEVEL``.

    Returns:
        A tensor of ``x``'s shape and dtype, ``0`` left of ``0`` and ``|C_n|`` right of ``1``.

    Examples:
        >>> fat_cantor_cdf(torch.tensor([-1.0, 0.25, 0.375, 0.5, 0.75, 2.0]), 1).tolist()
        [0.0, 0.25, 0.375, 0.375, 0.5, 0.75]
    """
    x = check_tensor("fat_cantor_cdf", "x", x)
    check_float_dtype("fat_cantor_cdf", "x", x)
    n = _level("fat_cantor_cdf", n)
    l_n = float(interval_length(n))
    out = torch.where(x > 1, torch.full_like(x, 2**n * l_n), torch.zeros_like(x))   # |C_n| = 2^n l_n
    active = (x >= 0) & (x <= 1)            # in C_k so far
    left = torch.zeros_like(x)              # left end of the current interval of C_k
    below = torch.zeros_like(x)             # measure of C_n left of the current interval
    for k in range(n):
        length, half_gap = float(interval_length(k)), 2.0 ** (-2 * k - 3)
        offset = x - (left + length / 2)
        passed = offset > -half_gap                   # in the gap or in the right half
        below = torch.where(active & passed, below + 2.0 ** (n - k - 1) * l_n, below)
        in_gap = active & (offset.abs() < half_gap)
        out = torch.where(in_gap, below, out)
        active = active & ~in_gap
        left = torch.where(offset > 0, left + length - float(interval_length(k + 1)), left)
    return torch.where(active, below + (x - left).clamp(0.0, l_n), out)


def fat_cantor_density(x: torch.Tensor, h: float, n: int) -> torch.Tensor:
    """``|C_n intersected with [x - h, x + h]| / (2 h)``, elementwise, from :func:`fat_cantor_cdf`.

    The density of ``C_n x C_n`` in the square ``[x - h, x + h] x [y - h, y + h]`` is the
    product ``fat_cantor_density(x, h, n) * fat_cantor_density(y, h, n)``. By Lebesgue's density
    theorem the density of ``C`` (and of ``C x C``) tends to ``1`` at almost every one of
    its points as ``h -> 0``.

    Examples:
        >>> fat_cantor_density(torch.tensor([0.25, 0.375, 0.5]), 0.125, 1).tolist()
        [1.0, 0.5, 0.0]
    """
    check_positive("fat_cantor_density", "h", h)
    return (fat_cantor_cdf(x + h, n) - fat_cantor_cdf(x - h, n)) / (2 * h)
