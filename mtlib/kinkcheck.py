"""A gradient check at kinks whose rejections are proofs: Clarke's generalized gradient by an LP.

``torch.autograd.gradcheck`` compares autograd with central differences, which is only
meaningful where the function is differentiable. :func:`kinkcheck` instead decides whether
the gradient ``g`` autograd returns at ``x`` lies in Clarke's generalized gradient

.. math::

    \\partial_C f(x) = \\operatorname{conv}\\{\\nabla f^j(x) : \\text{piece } j \\text{ active
    on an open set whose closure contains } x\\}                    \\qquad (\\text{C})

of a piecewise-linear (or piecewise-C^1) ``f``: it collects gradients of such pieces, one per
direction that enters one, and solves a small linear programme for ``g`` as a convex
combination of them. The verdicts, with the set on which each holds, are in
:data:`VERDICTS`; the chapter ``census`` shows them on PyTorch's ops.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.optimize import linprog

from mtlib._autodiff import forward_jacobian, left_right_slopes
from mtlib._validate import check_int, check_positive, check_tensor
from mtlib.directional import jvp
from mtlib.piecewise import associated_gradient

try:  # the lexicographic gradient (issue 12) may be absent; the fallback is documented below
    from mtlib.directional import lexicographic_gradient as _lexicographic_gradient
except ImportError:  # pragma: no cover - depends on the installed mtlib.directional
    _lexicographic_gradient = None

one_sided = left_right_slopes
"""Old name of :func:`left_right_slopes`, kept for existing code."""

CLARKE = "Clarke-valid"
ASSOCIATED = "associated-valid on a stratum"
NOT_DERIVATIVE = "not the derivative"
UNDETERMINED = "undetermined"
VERDICTS = (CLARKE, ASSOCIATED, NOT_DERIVATIVE, UNDETERMINED)
"""The four verdicts of :func:`kinkcheck`, from the strongest to the weakest."""


@dataclass(frozen=True)
class KinkReport:
    """Outcome of :func:`kinkcheck`.

    Attributes:
        gradient: the gradient ``g`` that was checked (shape of ``x``).
        verdict: one of :data:`VERDICTS`.
        reason: one sentence: what was proven, and on which set.
        pieces: one row per distinct piece gradient found: ``gradient``, the ``direction``
            that entered the piece, and ``weight``, its coefficient in ``g`` when ``g`` is a
            convex combination of them (0 otherwise).
        sections: one row per coordinate ``i``: ``g_i`` and the one-sided derivatives
            ``left = -f'(x; -e_i)``, ``right = f'(x; e_i)`` (a diagnostic, not a verdict).
        stratum: one row per stratum direction ``d``: ``f'(x; d)``, ``g . d`` and ``ok``.
        complete: the pieces found are provably all the pieces active around ``x``.
        exact: the one-sided derivatives came from :func:`mtlib.directional.jvp` (exact);
            ``False`` when ``f`` uses an op without a rule and finite differences were used.
        convex: whether only ``Clarke-valid`` counts as a pass (see :attr:`ok`).
    """

    gradient: torch.Tensor
    verdict: str
    reason: str
    pieces: pd.DataFrame
    sections: pd.DataFrame
    stratum: pd.DataFrame
    complete: bool
    exact: bool
    convex: bool

    @property
    def ok(self) -> bool:
        """``Clarke-valid``, or also ``associated-valid on a stratum`` when ``convex=False``."""
        return self.verdict == CLARKE or (self.verdict == ASSOCIATED and not self.convex)

    @property
    def rejected(self) -> bool:
        """True only for ``not the derivative``: a proof that ``g`` is wrong."""
        return self.verdict == NOT_DERIVATIVE

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        parts = [f"kinkcheck: {self.verdict} ({self.reason})", self.pieces.to_string(),
                 self.sections.to_string()]
        return "\n".join(parts + ([self.stratum.to_string()] if len(self.stratum) else []))


def _autograd(f: Callable, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "reverse":
        return associated_gradient(f, x)
    return forward_jacobian(lambda y: f(y).reshape(()), x).reshape(x.shape)


def _slopes(f: Callable, x: torch.Tensor, d: torch.Tensor, eps: float) -> tuple[float, float, bool]:
    """``(-f'(x; -d), f'(x; d), exact)``: exact by :func:`jvp`, else one-sided differences."""
    try:
        right = float(jvp(f, x, d)[1].detach().reshape(()))
        left = -float(jvp(f, x, -d)[1].detach().reshape(()))
        return left, right, True
    except NotImplementedError:
        left, right = left_right_slopes(f, x, d, eps)
        return left, right, False


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
            left, right, ok = _slopes(f, y, eye[i].reshape(x.shape), eps * s)
            exact &= ok
            if abs(right - left) > atol:
                return None, exact
            grad.append((left + right) / 2)
        found.append(torch.tensor(grad, dtype=x.dtype))
    if (found[0] - found[1]).abs().max() > atol:
        return None, exact
    return found[1], exact


def _piece_gradient(f: Callable, x: torch.Tensor, v: torch.Tensor, gen: torch.Generator,
                    eps: float, atol: float):
    """``(gradient or None, exact)`` of a piece active around ``x`` that direction ``v`` enters.

    With :func:`mtlib.directional.lexicographic_gradient` and ``M = [v, random columns]``
    the result is a lexicographic derivative, in ``partial_C f(x)`` (Nesterov 2005, Thm 5;
    Khan and Barton 2015, Thm 2.2); otherwise :func:`_perturbed_gradient`.
    """
    n = x.numel()
    if _lexicographic_gradient is not None:
        M = torch.randn(n, n, generator=gen, dtype=x.dtype).to(x.device)
        M[:, 0] = v.reshape(-1)
        try:
            return _lexicographic_gradient(f, x, M).detach().reshape(-1), True
        except (NotImplementedError, ValueError):
            pass
    return _perturbed_gradient(f, x, v, eps, atol)


def convex_weights(points: np.ndarray, g: np.ndarray, atol: float) -> np.ndarray | None:
    """Weights ``lambda >= 0``, ``sum = 1``, with ``|points^T lambda - g|_inf <= atol``, or None.

    The LP: minimise ``t`` over ``(lambda, t)`` with ``-t <= (points^T lambda - g)_i <= t``
    (``points``: one candidate per row). Also used by the census's judge on flattened Jacobians.

    Examples:
        >>> convex_weights(np.eye(2), np.array([0.25, 0.75]), 1e-9).round(6).tolist()
        [0.25, 0.75]
    """
    m, n = points.shape
    cost = np.r_[np.zeros(m), 1.0]
    upper = np.block([[points.T, -np.ones((n, 1))], [-points.T, -np.ones((n, 1))]])
    res = linprog(cost, A_ub=upper, b_ub=np.r_[g, -g], A_eq=np.r_[np.ones(m), 0.0][None, :],
                  b_eq=[1.0], bounds=[(0, None)] * (m + 1), method="highs")
    if res.status != 0 or res.x[-1] > atol:
        return None
    return res.x[:m]


def _fmt(v: torch.Tensor | Sequence[float]) -> str:
    vals = v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else list(v)
    inner = ", ".join(f"{round(t, 6) + 0.0:g}" for t in vals)
    return inner if len(vals) == 1 else f"({inner})"


def kinkcheck(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    gradient: torch.Tensor | None = None,
    stratum: Sequence[torch.Tensor] | None = None,
    convex: bool = True,
    samples: int = 64,
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
      Clarke 1990, Thm 2.5.1). Each piece gradient is the lexicographic gradient
      ``f'(x; M) M^{-1}`` of :func:`mtlib.directional.lexicographic_gradient` with
      ``M = [v, ...]`` for the directions ``v``: ``+-e_i`` and ``samples`` Gaussian ones
      (seeded by ``seed``). Without that function, or for an op it lacks, it is the gradient
      at ``x + s v`` for ``s = 2^-12`` and ``2^-18`` (times ``1 + |x|_inf``), kept when ``f`` is
      differentiable along every axis there and both agree: this assumes no kink closer to
      ``x`` than that, which holds for the integer data of the book.
    * ``"associated-valid on a stratum"``: not shown Clarke-valid, but ``g`` is the derivative
      of ``f`` along the stratum ``S = x + span(stratum)`` at ``x``: ``g . d = f'(x; d)``, ``f``
      differentiable along each ``d`` (Def 1 with the piece ``S``; for max, eq 15). This
      certifies a *rule* that gives ``g`` on all of ``S`` if ``f`` is ``C^1`` on ``S`` near
      ``x``, which the caller asserts by passing ``stratum``. In one variable, at a kink
      (``f'(x; 1) != -f'(x; -1)``), the stratum is the point ``{x}`` and every ``g`` is
      associated-valid on it (Sec 4.1). Pointwise every ``g`` is an associated gradient, so a
      verdict on a point says nothing more.
    * ``"not the derivative"``: a proof that ``g`` is wrong. Either the pieces are complete
      (one variable: the two half-lines, ``partial_C f(x) = [min(L, R), max(L, R)]`` with
      ``L = -f'(x; -1)``, ``R = f'(x; 1)``) and ``g`` is outside, and either ``f`` is
      differentiable at ``x`` (``L = R``: "not in Clarke's generalized gradient {L} (not the
      derivative of f)") or ``g`` fails the ``stratum`` test; or ``g`` fails the test on the
      ``stratum`` the caller gave: ``g`` is not the derivative of ``f`` along ``S``.
    * ``"undetermined"``: ``g`` is not a convex combination of the pieces found, and in
      several variables the enumeration is not proven complete (a piece entered only by a
      thin cone of directions can be missed by every sample), so nothing is rejected.

    What it cannot decide: in two or more variables without ``stratum``, a ``g`` outside the
    pieces found (e.g. ``(1, 1)`` for ``max`` at a tie, a wrong gradient at a smooth point);
    membership when a piece is missed by all directions; functions that are not
    piecewise-``C^1``. The one-sided derivatives are exact when ``f`` computes its value with
    the ops of :mod:`mtlib.directional` (a custom ``autograd.Function`` whose forward uses them
    is fine; a value routed through ``.detach()`` is not: it counts as a constant); otherwise
    one-sided differences with step ``eps`` are used and ``report.exact`` is ``False``.
    Cost: ``2 n + samples`` lexicographic passes, each carrying ``n`` tangents (``n`` the size of
    ``x``); without them, ``4 n`` one-sided derivatives per direction: a tool for small ``n``.

    Args:
        f: function of one tensor returning a one-element tensor.
        x: floating-point point of evaluation (use float64).
        gradient: the vector to check instead of autograd's (shape of ``x``).
        stratum: directions spanning the tangent space of the stratum through ``x``
            (shape of ``x``); ``[]`` for the stratum ``{x}``; ``None``: none given.
        convex: ``True`` (default): only ``"Clarke-valid"`` passes; ``False``: an
            ``"associated-valid on a stratum"`` verdict passes too.
        samples: number of Gaussian directions, >= 0.
        seed: seed of their generator.
        eps: finite-difference step (only without exact one-sided derivatives), > 0.
        atol: tolerance of the LP and of the stratum test, > 0.
        mode: ``"reverse"`` or ``"forward"``.

    Returns:
        A :class:`KinkReport`, truthy iff :attr:`KinkReport.ok`.

    Raises:
        TypeError: ``f`` not callable, ``x`` or ``gradient`` not floating-point tensors.
        ValueError: bad ``eps``/``atol``/``mode``/``samples``, a ``gradient`` or stratum
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
        Despres (2024), Def 1 (eq 7), Sec 4.1-4.2 (eq 15, Remark 1).
    """
    if not callable(f):
        raise TypeError(f"kinkcheck: `f` must be callable, got {type(f).__name__}")
    check_tensor("kinkcheck", "x", x)
    check_positive("kinkcheck", "eps", eps)
    check_positive("kinkcheck", "atol", atol)
    check_int("kinkcheck", "samples", samples, min=0)
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
    sides = [_slopes(f, x, eye[i].reshape(x.shape), eps) for i in range(n)]
    exact = all(s[2] for s in sides)
    sections = pd.DataFrame({"g": g.reshape(-1).tolist(), "left": [s[0] for s in sides],
                             "right": [s[1] for s in sides]}) + 0.0  # + 0.0: no -0.0
    sections.index.name = "coordinate"
    found: dict[tuple, tuple[torch.Tensor, str]] = {}
    if n == 1:
        (left, right, _), = sides
        for value, name in ((left, "-1"), (right, "+1")):
            found.setdefault((round(value, 9),), (torch.tensor([value], dtype=x.dtype), name))
    else:
        gen = torch.Generator().manual_seed(seed)
        dirs = [s * eye[i] for i in range(n) for s in (1.0, -1.0)]
        dirs += list(torch.randn(samples, n, generator=gen, dtype=x.dtype).to(x.device))
        for v in dirs:
            piece, ok = _piece_gradient(f, x, v.reshape(x.shape), gen, eps, atol)
            exact &= ok
            if piece is not None:
                key = tuple(round(t, 9) for t in piece.tolist())
                found.setdefault(key, (piece, _fmt(v)))
    grads = [p for p, _ in found.values()]
    weights = None
    if grads:
        points = torch.stack(grads).cpu().double().numpy()
        weights = convex_weights(points, g.reshape(-1).cpu().double().numpy(), atol)
    pieces = pd.DataFrame({"gradient": [_fmt(p) for p in grads], "direction": [d for _, d in found.values()],
                           "weight": [0.0] * len(grads) if weights is None else np.round(weights, 9) + 0.0})
    complete = n == 1
    rows = []
    if stratum is None and complete and len(grads) == 2:
        stratum = []  # a one-variable kink: the stratum is the point {x}
    for j, d in enumerate(stratum or []):
        d = torch.as_tensor(d)
        if d.shape != x.shape:
            raise ValueError(f"kinkcheck: `stratum[{j}]` must have the shape of `x` {tuple(x.shape)}, "
                             f"got {tuple(d.shape)}")
        d = d.to(x)
        left, right, ok = _slopes(f, x, d, eps)
        exact &= ok
        if abs(right - left) > atol:
            raise ValueError(f"kinkcheck: f is not differentiable along `stratum[{j}]` (one-sided "
                             f"derivatives {left:g} and {right:g}), so it is not tangent to a stratum")
        gd = float((g * d).sum())
        rows.append({"direction": _fmt(d), "f'(x; d)": right, "g . d": gd, "ok": abs(gd - right) <= atol})
    stratum_table = pd.DataFrame(rows, columns=["direction", "f'(x; d)", "g . d", "ok"])
    verdict, reason = _verdict(g, grads, weights, complete, stratum, rows, len(found))
    return KinkReport(g, verdict, reason, pieces, sections, stratum_table, complete, exact, convex)


def _verdict(g, grads, weights, complete, stratum, rows, count) -> tuple[str, str]:
    gs = _fmt(g)
    hull = "{" + ", ".join(_fmt(p) for p in grads) + "}"
    if weights is not None:
        return CLARKE, f"g = {gs} is a convex combination of the {count} piece gradient(s) {hull}"
    if complete and len(grads) == 2:
        lo, hi = sorted(float(p) for p in grads)
        clarke_set = f"[{_fmt([lo])}, {_fmt([hi])}]"
    else:
        clarke_set = hull
    if complete and len(grads) == 1:
        return NOT_DERIVATIVE, (f"g = {gs} is not in Clarke's generalized gradient {hull} "
                                "(not the derivative of f)")
    span = ", ".join(r["direction"] for r in rows)
    where = "{x} (a point)" if stratum == [] else "x + span{" + span + "}"
    bad = next((r for r in rows if not r["ok"]), None)
    if stratum is not None and bad is None:
        clarke = (f"not in Clarke's generalized gradient {clarke_set}" if complete
                  else "Clarke membership undetermined")
        return ASSOCIATED, f"g = {gs} is associated-valid on the stratum {where}; {clarke}"
    if bad is not None:
        deriv = bad["f'(x; d)"]
        return NOT_DERIVATIVE, (f"g . d = {bad['g . d']:g} but f'(x; d) = {deriv:g} along "
                                f"d = {bad['direction']}: not the derivative of f along the stratum "
                                f"{where}")
    alone = "" if count != 1 else (
        f"; every direction entered a piece with gradient {hull[1:-1]}: f looks differentiable at x, "
        "but a piece entered only by a thin cone of directions can be missed")
    return UNDETERMINED, (f"g = {gs} is not a convex combination of the {count} piece gradient(s) "
                          f"found {hull}, which are not proven complete{alone}")
