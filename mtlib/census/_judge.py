"""The census's judge: is a given Jacobian at a kink associated-valid, and Clarke-valid?

**Interface (framework-neutral).** :func:`judge` ``(case, x, jacobian)`` takes the answer to be
judged as *data*: a float64 torch tensor of shape (outputs, inputs), whatever produced it
(PyTorch's backward or ``torch.func.jvp``, JAX's ``jax.jacrev``/``jax.jacfwd`` converted with
``torch.tensor(numpy.asarray(J), dtype=torch.float64)``, a hand-written rule). Everything else
it takes from the :class:`~mtlib.census.cases.Case`: its ``kind``, ``masks``, ``signs``,
``norm``, ``stratum``, ``outside``, and ``case.f``, a *torch* reference function of a flat
float64 vector that the judge only *evaluates* (values, and exact one-sided derivatives by
:func:`mtlib.directional.jvp` where it has a rule); it never calls backward on it, so the
verdict does not depend on PyTorch's own kink rules. A JAX caller passes a Case whose ``f`` is
the torch counterpart of the JAX function (the same values). It returns
``(valid, clarke, rule)``: ``True``/``False`` when proven, ``None`` (undetermined) otherwise.

**What it decides, by kind.**

* ``"ties"``/``"windows"``: every output is a continuous function that is *linear on each cone
  of orderings* of the signed inputs ``s = signs * x`` (max, min, order statistics, their
  linear combinations such as ``quantile``, sorts, pools, cumulative maxima). Its pieces at
  ``x`` are then indexed by the orderings ``sigma`` of the tie groups of ``s`` (sets of equal
  values, found by exact comparison of values): the Jacobian ``J_sigma`` of the piece is read
  at ``y_sigma = x + h * signs * rank_sigma``, ``h`` a quarter of the smallest gap between
  distinct values over ``n``, by one-sided differences of step ``h/4`` on both sides (exact
  on a linear piece; they must agree, else ``y`` sits on a kink), and each piece is checked
  to extend to ``x`` (``f(y) - f(x) = J (y - x)``).
  Clarke's generalized Jacobian is ``conv{J_sigma}`` (eq C of :mod:`mtlib.kinkcheck`, applied
  to the whole Jacobian: one common piece for all rows, not row by row): Clarke-valid iff the
  given Jacobian is a convex combination of them (LP). All orderings are enumerated up to
  :data:`MAX_ORDERINGS`; beyond that a seeded sample (each entry first and last in its group,
  then random orders) is used, and a Jacobian outside the pieces found is *undetermined*.
  When all orderings are enumerated, each cone is also read at three random points of it: a
  different Jacobian there means ``f`` is not of the declared kind, and then only a
  certificate from the genuine pieces stands (everything else is undetermined).
  The tie set of output ``k`` is the set of inputs some piece of ``f_k`` depends on; the
  ``masks`` of a ``"ties"`` case must equal it. Associated-valid on the tie stratum iff, for
  every output ``k``, ``g_k . d = f_k'(x; d)`` along ``d = signs * 1_{T_k}`` and ``g_kj = 0``
  off ``T_k`` (eq 15 for a max; for a linear combination of order statistics the same test
  along its stratum). A case with its own ``stratum``: ``g_k . d = f_k'(x; d)`` along it, ``f_k'``
  read on the piece ``x + t d`` enters. No tie set comes from a bump of fixed size, which
  would count an entry ``1/2`` below the maximum as tied.
* ``"elementwise"`` (one variable): the one-sided derivatives ``L``, ``R`` from values,
  second-order one-sided differences at two steps ``2^-16`` and ``2^-24`` that must agree to
  :data:`ATOL` (a kink closer than the step makes them differ; :func:`mtlib.directional.jvp`
  then decides, exactly, or the verdict is undetermined), and that must agree with
  :func:`mtlib.directional.jvp` where it has a rule (undetermined otherwise); every finite value is
  associated-valid on the point ``{x}`` at a kink (Sec 4.1), only ``f'(x)`` where ``L = R``;
  Clarke-valid iff in ``[min(L, R), max(L, R)]``.
* ``"ball"``: a norm at 0, as the case declares it: the piece is the point, associated iff
  finite, Clarke-valid iff in the dual unit ball; a certificate is withdrawn when ``g . d`` exceeds
  ``f(x + d) - f(x)`` along a test direction (then ``f`` is not that norm).
* ``outside``: an op outside the theory at this point (not locally Lipschitz, e.g.
  ``torch.mode``): neither valid nor Clarke-valid, whatever the numbers.

What it leaves to :func:`mtlib.kinkcheck.kinkcheck`: every function that is not of these kinds
(a network, a composition with other kinks than the ties of its inputs). A Case declared with a
kind its function does not have is caught when a piece fails its checks or a cone's random
points disagree (then undetermined); a certificate from the pieces found stands either way.

Chapter: census.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import torch

from mtlib._autodiff import one_sided_difference
from mtlib.census.cases import Case
from mtlib.directional import jvp
from mtlib.kinkcheck._hull import convex_weights
from mtlib.ties import TIE_RULES, max_weights

__all__ = ["ATOL", "MAX_ORDERINGS", "judge"]

ATOL = 1e-6
"""Tolerance of every comparison of the judge."""
MAX_ORDERINGS = 5040
"""Orderings of the tie groups enumerated in full (7!); beyond, a seeded sample."""
_SAMPLES = 300
_CHECKS = 3
_STEPS = (2.0**-16, 2.0**-24)


def _slopes(f: Callable, x: torch.Tensor) -> tuple[float, float] | str:
    """``(L, R) = (-f'(x; -1), f'(x; 1))`` from values, or why they are undetermined.

    Second-order one-sided differences at the steps :data:`_STEPS` (exact on a linear piece)
    must agree to :data:`ATOL`, else a kink lies within the step and :func:`jvp` (exact) decides;
    where both are available they must agree (a ``.detach()`` fools :func:`jvp`, not values).
    """
    one = torch.ones_like(x)
    try:
        exact = tuple(s * float(jvp(f, x, s * one)[1].detach().reshape(())) for s in (-1.0, 1.0))
    except NotImplementedError:
        exact = None
    sides = []
    for d in (-one, one):
        a, b = (float(one_sided_difference(f, x, d, h, order=2).reshape(())) for h in _STEPS)
        sides.append(b if abs(a - b) <= ATOL else None)
    numeric = None if None in sides else (0.0 - sides[0], sides[1] + 0.0)
    if exact is None or not all(map(math.isfinite, exact)):
        return numeric or "undetermined: one-sided differences at two steps disagree"
    if numeric is None:
        return exact[0] + 0.0, exact[1] + 0.0
    if max(abs(a - b) for a, b in zip(exact, numeric)) > ATOL:
        return "undetermined: exact one-sided derivatives and difference quotients disagree"
    return numeric


def _judge_elementwise(case: Case, x: torch.Tensor, g: torch.Tensor) -> tuple[bool | None, bool | None, str]:
    """One variable, Sec 4.1: any finite value is associated; Clarke's set is [L, R]."""
    v = float(g[0, 0])
    slopes = _slopes(lambda t: case.f(t).reshape(()), x)
    if isinstance(slopes, str):
        return None, None, slopes
    left, right = slopes
    lo, hi = min(left, right), max(left, right)
    if hi - lo <= ATOL:  # differentiable: the stratum is an open interval, only f'(x) is valid
        exact = abs(v - left) <= ATOL
        return exact, exact, f"{'' if exact else 'not '}the derivative (smooth here)"
    lam = (v - right) / (left - right)
    names = {1.0: "left piece", 0.0: "right piece", 0.5: "mean of the two pieces"}
    rule = next((n for c, n in names.items() if abs(lam - c) <= ATOL), None)
    if rule is None:
        rule = f"{lam:.3g} left + {1 - lam:.3g} right" if 0 <= lam <= 1 else f"outside [{lo:g}, {hi:g}]"
    return True, lo - ATOL <= v <= hi + ATOL, rule


def _judge_ball(case: Case, x: torch.Tensor, g: torch.Tensor) -> tuple[bool, bool | None, str]:
    """A norm at 0: the piece is the point {0}; Clarke's set is the dual unit ball.

    The declaration is checked where it matters: a norm ``f`` has ``g . d <= f(x + d) - f(x)``
    for every ``g`` of its subdifferential, so a certificate is withdrawn (undetermined) when
    that fails along ``g``, ``+-e_i`` or 32 seeded directions (``f`` is not that norm)."""
    size = float(case.norm(g[0]))
    where = ("0, centre" if size <= ATOL else "boundary" if abs(size - 1) <= ATOL
             else "interior" if size < 1 else "outside")
    rule = f"{where} of the dual ball"
    if size > 1 + ATOL:
        return True, False, rule
    eye = torch.eye(x.numel(), dtype=x.dtype)
    gen = torch.Generator().manual_seed(0)
    dirs = torch.cat([g, eye, -eye, torch.randn(32, x.numel(), generator=gen, dtype=x.dtype)])
    with torch.no_grad():
        rise = torch.stack([case.f(x + d).reshape(()) - case.f(x).reshape(()) for d in dirs])
    if bool((dirs @ g[0] > rise + ATOL).any()):
        return True, None, f"{rule}; f is not the norm the case declares"
    return True, True, rule


class _OrderPieces:
    """The pieces of a function linear on the cones of orderings of ``s = signs * x``."""

    def __init__(self, f: Callable, x: torch.Tensor, signs: torch.Tensor):
        self.f, self.x, self.signs = f, x, signs
        self.n = n = x.numel()
        s = (signs * x).tolist()
        levels = sorted(set(s))
        self.groups = [[i for i in range(n) if s[i] == v] for v in levels]
        gap = min((b - a for a, b in zip(levels, levels[1:])), default=1.0)
        self.h = min(gap, 1.0) / (4 * n)
        with torch.no_grad():
            self.fx = f(x).reshape(-1)
        self.complete = math.prod(math.factorial(len(grp)) for grp in self.groups) <= MAX_ORDERINGS
        self.broken = 0  # pieces that failed their check: f is not of the declared kind
        self.linear = True  # f is linear on each ordering cone (checked at a second point)
        self.jacobians: dict[tuple, torch.Tensor] = {}
        jitter = random.Random(1)
        for combo in self._orderings():
            J = self.piece(self._ranks(combo))
            self._keep(J)
            for _ in range(_CHECKS if self.complete else 0):  # random points of the same cone
                other = self.piece(self._spread(combo, jitter), 16)
                self._keep(other)
                self.linear &= J is not None and other is not None and bool(
                    ((J - other).abs() <= ATOL).all())

    def _keep(self, J: torch.Tensor | None) -> None:
        if J is None:
            self.broken += 1
        else:
            self.jacobians.setdefault(tuple(round(v, 9) + 0.0 for v in J.reshape(-1).tolist()), J)

    def _orderings(self):
        """Orderings (one order per tie group): all of them, or a seeded sample."""
        if self.complete:
            perms = [itertools.permutations(grp) for grp in self.groups]
            yield from itertools.product(*perms)
            return
        rng = random.Random(0)
        for k in range(max(len(grp) for grp in self.groups)):
            for last in (False, True):  # entry k of each group first (rank 0), then last
                combo = []
                for grp in self.groups:
                    rest = [i for i in grp if i != grp[k % len(grp)]]
                    pick = [grp[k % len(grp)]]
                    combo.append(rest + pick if last else pick + rest)
                yield combo
        for _ in range(_SAMPLES):
            yield [rng.sample(grp, len(grp)) for grp in self.groups]

    def _spread(self, combo, rng: random.Random) -> torch.Tensor:
        """A random point of the ordering cone of ``combo`` (in units of ``h``): each group
        moved as a whole by up to ``n/4``, its entries spaced by ``1/8`` to ``1/2`` in order."""
        ranks = torch.zeros(self.n, dtype=self.x.dtype)
        for order in combo:
            value = rng.uniform(-self.n, self.n) / 4
            for i in order:
                ranks[i] = value
                value += rng.uniform(0.5, 2.0) / 4
        return ranks

    def _ranks(self, combo) -> torch.Tensor:
        ranks = torch.zeros(self.n, dtype=self.x.dtype)
        for order in combo:
            for r, i in enumerate(order):
                ranks[i] = r
        return ranks

    def piece(self, ranks: torch.Tensor, fraction: int = 4) -> torch.Tensor | None:
        """Jacobian of the piece on the ordering cone of ``ranks``, or None if its checks fail
        (differences of step ``h / fraction``, below the smallest spacing of the ranks)."""
        y = self.x + self.h * self.signs * ranks
        step = self.h / fraction
        eye = torch.eye(self.n, dtype=self.x.dtype)
        with torch.no_grad():
            fy = self.f(y).reshape(-1)
            right = torch.stack([self.f(y + step * e).reshape(-1) - fy for e in eye], dim=1) / step
            left = torch.stack([fy - self.f(y - step * e).reshape(-1) for e in eye], dim=1) / step
            J = (right + left) / 2
            extends = (fy - self.fx - J @ (y - self.x)).abs().max() <= ATOL * self.h
            smooth = (right - left).abs().max() <= ATOL  # y is inside a piece, not on a kink
        return J if bool(torch.isfinite(J).all()) and bool(extends) and bool(smooth) else None

    def derivative(self, d: torch.Tensor) -> torch.Tensor | None:
        """``f'(x; d)`` (all outputs): the piece that ``x + t d`` enters, applied to ``d``."""
        sd = (self.signs * d).tolist()
        combo = [sorted(grp, key=lambda i: (sd[i], i)) for grp in self.groups]
        ranks = self._ranks(combo)
        J = self.piece(ranks)
        return None if J is None else J @ d

    def supports(self) -> torch.Tensor:
        """Per output, the inputs some piece depends on: its tie set (values, not bumps)."""
        stack = torch.stack(list(self.jacobians.values()))
        return (stack.abs() > ATOL).any(dim=0)


def _tie_rule(mask: torch.Tensor, w: torch.Tensor) -> str:
    y = torch.where(mask, 0.0, -1.0).to(torch.float64)
    if int(mask.sum()) == 1 and torch.allclose(w, max_weights(y, "first"), atol=ATOL, rtol=0):
        return "unique"
    for name in TIE_RULES:
        if torch.allclose(w, max_weights(y, name), atol=ATOL, rtol=0):
            return name
    if bool(((w - 1).abs() <= ATOL).sum() == 1) and float(w.abs().sum()) <= 1 + ATOL:
        return f"index {int(w.argmax())}"
    return "weights (" + ", ".join(f"{v:.3g}" for v in w[mask].tolist()) + ")"


def _along(pieces: _OrderPieces, g: torch.Tensor, d: torch.Tensor, name: str,
           rows: slice = slice(None)) -> bool:
    """``g_k . d = f_k'(x; d)`` for the outputs ``k`` of ``g`` (rows ``rows`` of ``f``);
    ValueError unless they are differentiable along ``d``."""
    plus, minus = pieces.derivative(d), pieces.derivative(-d)
    if plus is not None and minus is not None:
        plus, minus = plus[rows], minus[rows]
    if plus is None or minus is None or not bool(((plus + minus).abs() <= ATOL).all()):
        raise ValueError(f"judge: case {name!r} is not differentiable along its stratum direction "
                         f"{d.tolist()}")
    return bool(((g @ d - plus).abs() <= ATOL).all())


def _judge_ties(case: Case, x: torch.Tensor, g: torch.Tensor) -> tuple[bool | None, bool | None, str]:
    signs = torch.tensor(case.signs or (1.0,) * x.numel(), dtype=x.dtype)
    pieces = _OrderPieces(case.f, x, signs)
    if not pieces.jacobians:
        return None, None, "undetermined: no piece passed its check (f is not of the case's kind)"
    masks = pieces.supports()
    if masks.shape != g.shape:
        raise ValueError(f"judge: case {case.op!r} has {masks.shape[0]} outputs and {masks.shape[1]} "
                         f"inputs, got a Jacobian of shape {tuple(g.shape)}")
    if case.masks is not None and not torch.equal(masks, torch.tensor(case.masks, dtype=torch.bool)):
        raise ValueError(f"judge: `masks` of case {case.op!r} must be the tie sets of its outputs, "
                         f"{masks.tolist()} (the inputs some piece depends on)")
    w = g * signs
    rules = [_tie_rule(masks[k], w[k]) for k in range(len(w))]
    named = set(rules) - {"unique"} or {"unique"}
    rule = named.pop() if len(named) == 1 else "per output: " + ", ".join(rules)
    if case.stratum is not None:
        directions = [torch.tensor(d, dtype=x.dtype) for d in case.stratum]
        valid = all(_along(pieces, g, d, case.op) for d in directions)
    else:
        try:
            valid = all(bool((g[k].masked_fill(masks[k], 0.0).abs() <= ATOL).all())
                        and _along(pieces, g[k:k + 1], signs * masks[k], case.op, slice(k, k + 1))
                        for k in range(len(g)))
        except ValueError:  # an output not differentiable along its own tie set: not of the kind
            valid = None
    points = torch.stack(list(pieces.jacobians.values())).reshape(len(pieces.jacobians), -1)
    inside = convex_weights(points.numpy(), g.reshape(-1).numpy(), ATOL) is not None
    if not pieces.linear:  # not of the case's kind: only what the genuine pieces prove stands
        return None, True if inside else None, f"{rule}; f is not linear on the orderings of its inputs"
    clarke = True if inside else (False if pieces.complete and not pieces.broken else None)
    return valid, clarke, rule


def judge(case: Case, x: torch.Tensor, g: torch.Tensor) -> tuple[bool | None, bool | None, str]:
    """``(valid, clarke, rule)`` for the Jacobian ``g`` (outputs x inputs) of ``case`` at ``x``.

    ``valid``: associated-valid on the stratum of the case; ``clarke``: in Clarke's generalized
    Jacobian; each ``True``/``False`` when proven, ``None`` when undetermined (the module
    docstring says on which grounds, per kind). A NaN or infinite entry is never valid.

    Raises:
        ValueError: ``masks`` that are not the tie sets of the outputs, a Jacobian of the wrong
            shape, or a ``stratum`` direction along which ``case.f`` is not differentiable.

    Examples:
        >>> x = torch.tensor([0.0, 0.0, -0.5], dtype=torch.float64)
        >>> judge(Case("max", "x", torch.amax, tuple(x.tolist()), "windows"), x,
        ...       torch.tensor([[0.5, 0.0, 0.5]], dtype=torch.float64))
        (False, False, 'weights (0.5, 0)')
    """
    g = g.detach().to(torch.float64)
    x = x.detach().to(torch.float64)
    if not bool(torch.isfinite(g).all()):
        verdict = (False, False, "nan")
    elif not bool(torch.isfinite(x).all()):
        verdict = (False, False, "x outside R^n")
    elif case.kind == "elementwise":
        verdict = _judge_elementwise(case, x, g)
    elif case.kind == "ball":
        verdict = _judge_ball(case, x, g)
    else:
        verdict = _judge_ties(case, x, g)
    if case.outside is not None:
        return False, False, f"{verdict[2]}; outside the theory: {case.outside}"
    return verdict
