"""A gradient check at kinks whose rejections are proofs: Clarke's generalized gradient by an LP.

``torch.autograd.gradcheck`` compares autograd with central differences, which is only
meaningful where the function is differentiable. :func:`kinkcheck` instead decides whether
the gradient ``g`` autograd returns at ``x`` lies in Clarke's generalized gradient

.. math::

    \\partial_C f(x) = \\operatorname{conv}\\{\\nabla f^j(x) : \\text{piece } j \\text{ active
    on an open set whose closure contains } x\\}                    \\qquad (\\text{C})

of a piecewise-linear (or piecewise-C^1) ``f``: it collects gradients of such pieces, one per
direction that enters one (exact lexicographic gradients), solves a small linear programme
for ``g`` as a convex combination of them and, while that fails, asks the LP's dual for the
direction of the missing piece (column generation). The verdicts, with the set on which each
holds, are in :data:`VERDICTS`; a verdict resting on finite differences says "(numerical)"
and never "Clarke-valid". The chapter ``census`` shows them on PyTorch's ops.

References:
    Scholtes (2012), Introduction to Piecewise Differentiable Equations, Springer: for
    piecewise-C^1 ``f``, (C) holds with the *essentially active* selection functions, the
    theorem the LP tests. Kakade & Lee (2018), Provably correct automatic sub-differentiation
    for qualified programs, NeurIPS 31; Bolte, Boustany, Pauwels & Pesquet-Popescu (2023), On
    the complexity of nonsmooth automatic differentiation, ICLR (finding two Clarke
    subgradients of a small ReLU network is NP-hard): why "undetermined" cannot be avoided
    in general.

Chapter: census, directional, training_valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from mtlib._autodiff import forward_jacobian, one_sided_difference
from mtlib._validate import check_int, check_positive, check_tensor
from mtlib.directional import jvp
from mtlib.directional import lexicographic_gradient as _lexicographic_gradient
from mtlib.kinkcheck._hull import convex_weights, generate_columns
from mtlib.kinkcheck._report import (
    ASSOCIATED,
    CLARKE,
    CLARKE_NUMERICAL,
    NOT_DERIVATIVE,
    UNDETERMINED,
    VERDICTS,
    KinkReport,
    verdict,
)
from mtlib.kinkcheck._report import fmt as _fmt
from mtlib.piecewise import associated_gradient

__all__ = ["ASSOCIATED", "CLARKE", "CLARKE_NUMERICAL", "NOT_DERIVATIVE", "UNDETERMINED", "VERDICTS",
           "KinkReport", "kinkcheck"]


def _autograd(f: Callable, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "reverse":
        return associated_gradient(f, x)
    return forward_jacobian(lambda y: f(y).reshape(()), x).reshape(x.shape)


def _slopes(f: Callable, x: torch.Tensor, d: torch.Tensor, eps: float,
            atol: float) -> tuple[float, float, bool]:
    """``(-f'(x; -d), f'(x; d), exact)``: exact by :func:`jvp`; else second-order one-sided
    differences at the steps ``eps`` and ``eps / 16``, a side set to NaN where the two differ by
    more than ``atol`` (a kink within the step: the quotient is a slope of no piece)."""
    try:
        right = float(jvp(f, x, d)[1].detach().reshape(()))
        left = -float(jvp(f, x, -d)[1].detach().reshape(()))
        if math.isfinite(left) and math.isfinite(right):
            return left + 0.0, right + 0.0, True
    except NotImplementedError:
        pass
    sides = []
    for v in (-d, d):
        a, b = (float(one_sided_difference(f, x, v, h, order=2).reshape(())) for h in (eps, eps / 16))
        sides.append(b if abs(a - b) <= atol else math.nan)
    return 0.0 - sides[0], sides[1] + 0.0, False


def _perturbed_gradient(f: Callable, x: torch.Tensor, v: torch.Tensor, eps: float, atol: float):
    """Gradient at ``x + s v`` for ``s = 2^-12, 2^-18`` (scaled by ``|x|``), if differentiable
    along every axis there and equal at both ``s``: the piece that ``v`` enters (eq C)."""
    scale = 1.0 + float(x.abs().max()) if x.numel() else 1.0
    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)
    found, exact = [], True
    for s in (2.0**-12, 2.0**-18):
        y = x + s * scale * v
        grad = []
        for i in range(x.numel()):
            left, right, ok = _slopes(f, y, eye[i].reshape(x.shape), eps * s, atol)
            exact &= ok
            if not abs(right - left) <= atol:
                return None, exact
            grad.append((left + right) / 2)
        found.append(torch.tensor(grad, dtype=x.dtype))
    if not (found[0] - found[1]).abs().max() <= atol:
        return None, exact
    return found[1], False  # adjacent to x only if no kink lies within s: not a proof


def _piece_gradient(f: Callable, x: torch.Tensor, v: torch.Tensor, gen: torch.Generator,
                    eps: float, atol: float):
    """``(gradient or None, exact)`` of a piece active around ``x`` that direction ``v`` enters
    (``None`` also for a NaN or infinite gradient).

    With :func:`mtlib.directional.lexicographic_gradient` and ``M = [v, random columns]``
    the result is a lexicographic derivative, in ``partial_C f(x)`` (Nesterov 2005, Thm 5;
    Khan and Barton 2015, Thm 2.2); otherwise :func:`_perturbed_gradient`.
    """
    n = x.numel()
    if _lexicographic_gradient is not None:
        M = torch.randn(n, n, generator=gen, dtype=x.dtype).to(x.device)
        M[:, 0] = v.reshape(-1)
        try:
            piece = _lexicographic_gradient(f, x, M).detach().reshape(-1)
            return (piece, True) if bool(torch.isfinite(piece).all()) else (None, True)
        except (NotImplementedError, ValueError):
            pass
    return _perturbed_gradient(f, x, v, eps, atol)


def kinkcheck(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    gradient: torch.Tensor | None = None,
    stratum: Sequence[torch.Tensor] | None = None,
    convex: bool = True,
    samples: int = 64,
    columns: int = 256,
    seed: int = 0,
    eps: float = 2.0**-20,
    atol: float = 1e-6,
    mode: str = "reverse",
) -> KinkReport:
    """Decide whether the gradient of a scalar ``f`` at a (possibly nonsmooth) ``x`` is valid.

    ``g`` is autograd's gradient (``mode="reverse"``: backward; ``"forward"``: ``torch.func.jvp``
    column by column) unless ``gradient`` is given. The verdict (:data:`VERDICTS`) is:

    * ``"Clarke-valid"``: ``g`` is a convex combination (LP, to ``atol``) of gradients of
      pieces active around ``x``, so ``g`` is in Clarke's generalized gradient (eq C,
      Clarke 1990, Thm 2.5.1; for piecewise-``C^1`` ``f`` it is the hull of the essentially
      active selections' gradients, Scholtes 2012). Each piece gradient is the lexicographic
      gradient ``f'(x; M) M^{-1}`` of :func:`mtlib.directional.lexicographic_gradient` with
      ``M = [v, ...]`` for the directions ``v``: ``+-e_i`` and ``samples`` Gaussian ones
      (seeded by ``seed``), then *column generation*: while the LP fails, its dual
      (:func:`separating_direction`) gives a direction ``d`` along which ``g`` sticks out of
      the hull, and the piece entered along ``d`` is added, up to ``columns`` times, until
      ``g`` is inside or the new piece does not reach beyond the hull along ``d`` (for a
      convex ``f`` that piece maximises ``p . d`` over Clarke's set, so the generation is
      exact there; in general a heuristic).
    * ``"Clarke-valid (numerical)"``: the same, but some one-sided derivative came from finite
      differences (an op without a rule) or some piece gradient from perturbed points (the
      gradient at ``x + s v`` for ``s = 2^-12`` and ``2^-18`` times ``1 + |x|_inf``, kept when
      ``f`` is differentiable along every axis there and both agree): likely, not proven.
      Finite differences are taken at two steps, ``eps`` and ``eps / 16``; a side where they
      differ (a kink within the step, whose quotient is the slope of no piece) is dropped.
    * ``"associated-valid on a stratum"``: not shown Clarke-valid, but ``g`` is the derivative
      of ``f`` along the stratum ``S = x + span(stratum)`` at ``x``: ``g . d = f'(x; d)``, ``f``
      differentiable along each ``d`` (Def 1 with the piece ``S``; for max, eq 15). This
      certifies a *rule* that gives ``g`` on all of ``S`` if ``f`` is ``C^1`` on ``S`` near
      ``x``, which the caller asserts by passing ``stratum``. In one variable, at a kink
      (``f'(x; 1) != -f'(x; -1)``), the stratum is the point ``{x}`` and every ``g`` is
      associated-valid on it (Sec 4.1). Pointwise every ``g`` is an associated gradient, so a
      verdict on a point says nothing more.
    * ``"not the derivative"``: a proof that ``g`` is wrong: ``g`` has a NaN or infinite entry
      (Clarke's set of a locally Lipschitz ``f`` is bounded), or the pieces are complete
      (one variable: the two half-lines, ``partial_C f(x) = [min(L, R), max(L, R)]`` with
      ``L = -f'(x; -1)``, ``R = f'(x; 1)``) and ``g`` is outside, and either ``f`` is
      differentiable at ``x`` (``L = R``: "not in Clarke's generalized gradient {L} (not the
      derivative of f)") or ``g`` fails the ``stratum`` test; or ``g`` fails the test on the
      ``stratum`` the caller gave: ``g`` is not the derivative of ``f`` along ``S``. Only with
      exact one-sided derivatives; from finite differences the same finding is undetermined.
    * ``"undetermined"``: ``g`` is not a convex combination of the pieces found, and in
      several variables the enumeration is not proven complete (a piece entered only by a
      thin cone of directions can be missed by every sample, and deciding Clarke membership
      is hard in general: Kakade and Lee 2018; Bolte et al. 2023), so nothing is rejected.
      Directions whose piece gradient is NaN or infinite are dropped, with a note.

    What it cannot decide: in two or more variables without ``stratum``, a ``g`` outside the
    pieces found (e.g. ``(1, 1)`` for ``max`` at a tie, a wrong gradient at a smooth point);
    membership when a piece is missed by all directions; functions that are not
    piecewise-``C^1``. The one-sided derivatives are exact when ``f`` computes its value with
    the ops of :mod:`mtlib.directional` (a custom ``autograd.Function`` whose forward uses them
    is fine; a value routed through ``.detach()`` is not: it counts as a constant); otherwise
    one-sided differences with step ``eps`` are used and ``report.exact`` is ``False``.
    Cost: ``2 n + samples`` lexicographic passes plus one per column generated
    (:attr:`KinkReport.queries`), each carrying ``n`` tangents (``n`` the size of ``x``), and one
    small LP per column; without them, ``4 n`` one-sided derivatives per direction. PyTorch's
    gradient of ``F.max_pool1d(x, k, stride=1).sum()`` at 0, a vertex of Clarke's set that
    random directions almost never enter, is certified this way up to ``n = 64``, ``k <= 5``.

    Args:
        f: function of one tensor returning a one-element tensor.
        x: floating-point point of evaluation (use float64).
        gradient: the vector to check instead of autograd's (shape of ``x``).
        stratum: directions spanning the tangent space of the stratum through ``x``
            (shape of ``x``); ``[]`` for the stratum ``{x}``; ``None``: none given.
        convex: ``True`` (default): only ``"Clarke-valid"`` passes; ``False``: an
            ``"associated-valid on a stratum"`` verdict passes too.
        samples: number of Gaussian directions, >= 0.
        columns: most columns generated from the LP's dual, >= 0.
        seed: seed of their generator.
        eps: finite-difference step (only without exact one-sided derivatives), > 0.
        atol: tolerance of the LP and of the stratum test, > 0.
        mode: ``"reverse"`` or ``"forward"``.

    Returns:
        A :class:`KinkReport`, truthy iff :attr:`KinkReport.ok`.

    Raises:
        TypeError: ``f`` not callable, ``x`` or ``gradient`` not floating-point tensors.
        ValueError: bad ``eps``/``atol``/``mode``/``samples``/``columns``, a ``gradient`` or stratum
            direction of the wrong shape, or a stratum direction along which ``f`` is not
            differentiable.

    Examples:
        >>> zero = torch.zeros(1, dtype=torch.float64)
        >>> kinkcheck(torch.relu, zero).verdict
        'Clarke-valid'
        >>> from mtlib.examples import boustany_f
        >>> print(kinkcheck(boustany_f, torch.zeros((), dtype=torch.float64)).reason)
        g = -1.5 is not in Clarke's generalized gradient {0} (not the derivative of f)
        >>> y = torch.zeros(2, dtype=torch.float64)
        >>> f = lambda v: torch.relu(v[0]) - torch.relu(-v[1])
        >>> kinkcheck(f, y).verdict, kinkcheck(f, y).gradient.tolist()   # PyTorch's (0, 0)
        ('Clarke-valid', [0.0, 0.0])

    References:
        Clarke (1990), Thm 2.5.1; Nesterov (2005), Thm 5; Khan and Barton (2015), Thm 2.2;
        Scholtes (2012), Ch 4; Kakade and Lee (2018); Bolte, Boustany, Pauwels and
        Pesquet-Popescu (2023); Despres (2024), Def 1 (eq 7), Sec 4.1-4.2 (eq 15, Remark 1).
    """
    if not callable(f):
        raise TypeError(f"kinkcheck: `f` must be callable, got {type(f).__name__}")
    check_tensor("kinkcheck", "x", x)
    check_positive("kinkcheck", "eps", eps)
    check_positive("kinkcheck", "atol", atol)
    check_int("kinkcheck", "samples", samples, min=0)
    check_int("kinkcheck", "columns", columns, min=0)
    if mode not in ("reverse", "forward"):
        raise ValueError(f"kinkcheck: `mode` must be 'reverse' or 'forward', got {mode!r}")
    x = x.detach()
    n = x.numel()
    if gradient is None:
        g = _autograd(f, x, mode).detach()
    else:
        check_tensor("kinkcheck", "gradient", gradient)
        if gradient.shape != x.shape:
            raise ValueError(f"kinkcheck: `gradient` must have the shape of `x` {tuple(x.shape)}, "
                             f"got {tuple(gradient.shape)}")
        g = gradient.detach().to(x)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    sides = [_slopes(f, x, eye[i].reshape(x.shape), eps, atol) for i in range(n)]
    exact = all(s[2] for s in sides)
    sections = pd.DataFrame({"g": g.reshape(-1).tolist(), "left": [s[0] for s in sides],
                             "right": [s[1] for s in sides]}) + 0.0  # + 0.0: no -0.0
    sections.index.name = "coordinate"
    found: dict[tuple, tuple[torch.Tensor, str]] = {}
    dropped = queries = 0
    gen = torch.Generator().manual_seed(seed)

    def add(piece: torch.Tensor | None, label: str) -> None:
        nonlocal dropped
        if piece is None or not bool(torch.isfinite(piece).all()):
            dropped += 1
            return
        found.setdefault(tuple(round(t, 9) + 0.0 for t in piece.tolist()), (piece, label))

    if n == 1:
        (left, right, _), = sides
        for value, name in ((left, "-1"), (right, "+1")):
            add(torch.tensor([value], dtype=x.dtype), name)
    else:
        dirs = [s * eye[i] for i in range(n) for s in (1.0, -1.0)]
        dirs += list(torch.randn(samples, n, generator=gen, dtype=x.dtype).to(x.device))
        for v in dirs:
            piece, ok = _piece_gradient(f, x, v.reshape(x.shape), gen, eps, atol)
            exact &= ok
            queries += 1
            add(None if piece is None else piece.reshape(-1), _fmt(v))
    g_flat = g.reshape(-1).cpu().double().numpy()
    finite_g = bool(np.isfinite(g_flat).all())

    def solve():
        if not found or not finite_g:
            return None
        points = torch.stack([p for p, _ in found.values()]).cpu().double().numpy()
        return convex_weights(points, g_flat, atol)

    def query(v: np.ndarray) -> bool:
        nonlocal exact, queries
        before, direction = len(found), torch.as_tensor(v, dtype=x.dtype, device=x.device).reshape(x.shape)
        piece, ok = _piece_gradient(f, x, direction, gen, eps, atol)
        exact &= ok
        queries += 1
        add(None if piece is None else piece.reshape(-1), _fmt(direction))
        return len(found) > before

    weights, stalled = solve(), False
    if weights is None and n > 1 and finite_g and found and _lexicographic_gradient is not None:
        hull = lambda: torch.stack([p for p, _ in found.values()]).cpu().double().numpy()  # noqa: E731
        inside, stalled = generate_columns(hull, g_flat, query, columns, atol, max(3, n // 8))
        weights = solve() if inside else None
    grads = [p for p, _ in found.values()]
    pieces = pd.DataFrame({"gradient": [_fmt(p) for p in grads], "direction": [d for _, d in found.values()],
                           "weight": [0.0] * len(grads) if weights is None else np.round(weights, 9) + 0.0})
    complete = n == 1 and not dropped  # one variable: the two half-lines are all the pieces
    rows = []
    if stratum is None and complete and len(grads) == 2:
        stratum = []  # a one-variable kink: the stratum is the point {x}
    for j, d in enumerate(stratum or []):
        d = torch.as_tensor(d)
        if d.shape != x.shape:
            raise ValueError(f"kinkcheck: `stratum[{j}]` must have the shape of `x` {tuple(x.shape)}, "
                             f"got {tuple(d.shape)}")
        d = d.to(x)
        left, right, ok = _slopes(f, x, d, eps, atol)
        exact &= ok
        if not abs(right - left) <= atol:
            raise ValueError(f"kinkcheck: f is not differentiable along `stratum[{j}]` (one-sided "
                             f"derivatives {left:g} and {right:g}), so it is not tangent to a stratum")
        gd = float((g * d).sum())
        rows.append({"direction": _fmt(d), "f'(x; d)": right, "g . d": gd, "ok": abs(gd - right) <= atol})
    stratum_table = pd.DataFrame(rows, columns=["direction", "f'(x; d)", "g . d", "ok"])
    if not finite_g:
        verdict_, reason = NOT_DERIVATIVE, (f"g = {_fmt(g)} is not finite, and Clarke's generalized "
                                           "gradient of a locally Lipschitz f holds finite vectors only")
    else:
        verdict_, reason = verdict(g, grads, weights, complete, stratum, rows, len(found), exact)
    notes = []
    if dropped:
        notes.append(f"{dropped} direction(s) gave no piece gradient (NaN, inf, or not resolved)")
    if stalled and verdict_ == UNDETERMINED:
        notes.append("column generation stalled: the directions from the LP's dual found no new piece")
    if notes:
        reason += "; " + "; ".join(notes)
    return KinkReport(g, verdict_, reason, pieces, sections, stratum_table, complete, exact, convex, queries)
