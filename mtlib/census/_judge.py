"""The census's judge: is a given Jacobian at a kink associated-valid, and Clarke-valid?

Framework-neutral interface. :func:`judge` takes the answer to be judged as *data*: a
float64 torch tensor of shape (outputs, inputs), whatever framework produced it (PyTorch's
backward or ``torch.func.jvp``, JAX's ``jax.jacrev``/``jax.jacfwd`` converted with
``torch.tensor(numpy.asarray(J), dtype=torch.float64)``, or a hand-written rule). What the
judge needs besides that data it takes from the :class:`~mtlib.census.cases.Case`: its
``kind``/``masks``/``signs``/``norm``/``stratum``, and ``case.f``, a *torch* reference function
of a flat float64 vector, used only for values and one-sided derivatives at ``case.x``. A JAX
caller passes a Case whose ``f`` is the torch counterpart of the JAX function (same math), or
any torch function computing the same values; the judge never differentiates ``case.f`` by
backward, so the verdict does not depend on PyTorch's own rule.

Chapter: census.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mtlib._autodiff import left_right_slopes
from mtlib.census.cases import Case
from mtlib.ties import TIE_RULES, check_tangent, max_weights

__all__ = ["ATOL", "judge"]

ATOL = 1e-6
_ATOL = ATOL
_EPS = 2.0**-27  # one-sided difference step: error ~1e-8 on the smooth pieces (elu, hardswish)


def _judge_elementwise(case: Case, x: torch.Tensor, g: torch.Tensor) -> tuple[bool, bool, str]:
    """One variable, Sec 4.1: any finite value is associated; Clarke's set is [L, R]."""
    v = float(g[0, 0])
    if v != v:
        return False, False, "nan"
    left, right = left_right_slopes(lambda t: case.f(t).reshape(()), x, torch.ones_like(x), _EPS)
    lo, hi = min(left, right), max(left, right)
    if hi - lo <= _ATOL:  # differentiable: the stratum is an open interval, only f'(x) is valid
        exact = abs(v - left) <= _ATOL
        return exact, exact, f"{'' if exact else 'not '}the derivative (smooth here)"
    lam = (v - right) / (left - right)
    names = {1.0: "left piece", 0.0: "right piece", 0.5: "mean of the two pieces"}
    rule = next((n for c, n in names.items() if abs(lam - c) <= _ATOL), None)
    if rule is None:
        rule = f"{lam:.3g} left + {1 - lam:.3g} right" if 0 <= lam <= 1 else f"outside [{lo:g}, {hi:g}]"
    return True, lo - _ATOL <= v <= hi + _ATOL, rule


def _tie_rule(mask: torch.Tensor, w: torch.Tensor) -> str:
    y = torch.where(mask, 0.0, -1.0).to(torch.float64)
    if int(mask.sum()) == 1 and torch.allclose(w, max_weights(y, "first"), atol=_ATOL, rtol=0):
        return "unique"
    for name in TIE_RULES:
        if torch.allclose(w, max_weights(y, name), atol=_ATOL, rtol=0):
            return name
    if bool(((w - 1).abs() <= _ATOL).sum() == 1) and float(w.abs().sum()) <= 1 + _ATOL:
        return f"index {int(w.argmax())}"
    return "weights (" + ", ".join(f"{v:.3g}" for v in w[mask].tolist()) + ")"


def _judge_ties(masks: torch.Tensor, signs: torch.Tensor, g: torch.Tensor) -> tuple[bool, bool, str]:
    """Order statistics, eq 15: weights ``w = signs * g`` vanish off the tie set, sum to 1."""
    if not bool(torch.isfinite(g).all()):
        return False, False, "nan"
    w = g * signs
    y = torch.where(masks, 0.0, -1.0).to(torch.float64)
    valid = all(bool(check_tangent(y[k], w[k], atol=_ATOL)) for k in range(len(w)))
    clarke = all(bool(check_tangent(y[k], w[k], atol=_ATOL, convex=True)) for k in range(len(w)))
    rules = [_tie_rule(masks[k], w[k]) for k in range(len(w))]
    named = set(rules) - {"unique"} or {"unique"}
    rule = named.pop() if len(named) == 1 else "per output: " + ", ".join(rules)
    return valid, clarke, rule


def _judge_ball(case: Case, g: torch.Tensor) -> tuple[bool, bool, str]:
    """A norm at 0: the piece is the point {0}; Clarke's set is the dual unit ball."""
    if not bool(torch.isfinite(g).all()):
        return False, False, "nan"
    size = float(case.norm(g[0]))
    if size <= _ATOL:
        return True, True, "0, centre of the dual ball"
    where = "boundary" if abs(size - 1) <= _ATOL else ("interior" if size < 1 else "outside")
    return True, size <= 1 + _ATOL, f"{where} of the dual ball"


def _windows(f: Callable, x: torch.Tensor) -> torch.Tensor:
    """Tie sets of a pooling-like op at ``x``: output k depends on input j if bumping it moves k."""
    y = f(x).reshape(-1)
    bumps = torch.eye(x.numel(), dtype=x.dtype)
    return torch.stack([(f(x + e).reshape(-1) != y) | (f(x - e).reshape(-1) != y) for e in bumps], dim=1)


def _along_stratum(case: Case, x: torch.Tensor, g: torch.Tensor) -> bool:
    """``g_k . d = f_k'(x; d)`` for every output ``k`` and every direction ``d`` of ``case.stratum``."""
    for d in case.stratum:
        d = torch.tensor(d, dtype=x.dtype)
        for k in range(g.shape[0]):
            left, right = left_right_slopes(lambda t, k=k: case.f(t).reshape(-1)[k], x, d, _EPS)
            if abs(right - left) > _ATOL:
                raise ValueError(f"run: case {case.op!r} is not differentiable along its `stratum` "
                                 f"{d.tolist()}")
            if abs(float(g[k] @ d) - right) > _ATOL:
                return False
    return True


def judge(case: Case, x: torch.Tensor, g: torch.Tensor) -> tuple[bool, bool, str]:
    """``(valid, clarke, rule)`` for the Jacobian ``g`` (outputs x inputs) of ``case`` at ``x``."""
    if case.kind == "elementwise":
        return _judge_elementwise(case, x, g)
    if case.kind == "ball":
        return _judge_ball(case, g)
    with torch.no_grad():
        masks = _windows(case.f, x) if case.kind == "windows" else torch.tensor(case.masks, dtype=torch.bool)
    if masks.shape != g.shape:
        raise ValueError(f"run: `masks` of case {case.op!r} must hold one row of {g.shape[1]} flags per "
                         f"output ({g.shape[0]}), got shape {tuple(masks.shape)}")
    signs = torch.tensor(case.signs or (1.0,) * x.numel(), dtype=g.dtype)
    valid, clarke, rule = _judge_ties(masks, signs, g)
    if case.stratum is not None and bool(torch.isfinite(g).all()):
        valid = _along_stratum(case, x, g)
    return valid, clarke, rule
