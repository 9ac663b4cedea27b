"""The verdicts of :func:`mtlib.kinkcheck.kinkcheck`, its report, and how a verdict is worded.

A verdict is proven (``Clarke-valid``, ``not the derivative``), rests on finite differences or
perturbed points (``Clarke-valid (numerical)``), holds on a stratum only, or is undetermined;
:func:`verdict` picks it from the pieces found, the LP's weights and the stratum test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

__all__ = ["ASSOCIATED", "CLARKE", "CLARKE_NUMERICAL", "NOT_DERIVATIVE", "UNDETERMINED", "VERDICTS",
           "KinkReport", "fmt", "verdict"]

CLARKE = "Clarke-valid"
CLARKE_NUMERICAL = "Clarke-valid (numerical)"
ASSOCIATED = "associated-valid on a stratum"
NOT_DERIVATIVE = "not the derivative"
UNDETERMINED = "undetermined"
VERDICTS = (CLARKE, CLARKE_NUMERICAL, ASSOCIATED, NOT_DERIVATIVE, UNDETERMINED)
"""The five verdicts of :func:`kinkcheck`, from the strongest to the weakest."""


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
        exact: the one-sided derivatives came from :func:`mtlib.directional.jvp` and the
            piece gradients from :func:`mtlib.directional.lexicographic_gradient` (exact);
            ``False`` when ``f`` uses an op without a rule and finite differences were used.
        convex: whether only ``Clarke-valid`` counts as a pass (see :attr:`ok`).
        queries: the number of piece-gradient queries (lexicographic gradients, or perturbed
            points without them), column generation included.
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
    queries: int

    @property
    def ok(self) -> bool:
        """``Clarke-valid``, or also ``associated-valid on a stratum`` when ``convex=False``;
        never a numerical verdict."""
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


def fmt(v: torch.Tensor | Sequence[float]) -> str:
    """A vector as ``"(1, 0.5)"``, a number as ``"1"``, 6 digits, no ``-0``."""
    vals = v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else list(v)
    inner = ", ".join(f"{round(t, 6) + 0.0:g}" for t in vals)
    return inner if len(vals) == 1 else f"({inner})"


def verdict(g, grads, weights, complete, stratum, rows, count, exact) -> tuple[str, str]:
    """The verdict of :func:`mtlib.kinkcheck.kinkcheck` and its one-sentence reason."""
    gs = fmt(g)
    hull = "{" + ", ".join(fmt(p) for p in grads) + "}"
    numerical = "" if exact else " (finite differences or perturbed points: not a proof)"
    if weights is not None:
        return (CLARKE if exact else CLARKE_NUMERICAL), (
            f"g = {gs} is a convex combination of the {count} piece gradient(s) {hull}{numerical}")
    if complete and len(grads) == 2:
        lo, hi = sorted(float(p) for p in grads)
        clarke_set = f"[{fmt([lo])}, {fmt([hi])}]"
    else:
        clarke_set = hull
    if complete and len(grads) == 1:
        why = f"g = {gs} is not in Clarke's generalized gradient {hull} (not the derivative of f)"
        return (NOT_DERIVATIVE, why) if exact else (UNDETERMINED, why + numerical)
    span = ", ".join(r["direction"] for r in rows)
    where = "{x} (a point)" if stratum == [] else "x + span{" + span + "}"
    bad = next((r for r in rows if not r["ok"]), None)
    if stratum is not None and bad is None:
        clarke = (f"not in Clarke's generalized gradient {clarke_set}" if complete and exact
                  else "Clarke membership undetermined")
        return ASSOCIATED, f"g = {gs} is associated-valid on the stratum {where}; {clarke}{numerical}"
    if bad is not None:
        deriv = bad["f'(x; d)"]
        why = (f"g . d = {bad['g . d']:g} but f'(x; d) = {deriv:g} along d = {bad['direction']}: not the "
               f"derivative of f along the stratum {where}")
        return (NOT_DERIVATIVE, why) if exact else (UNDETERMINED, why + numerical)
    alone = "" if count != 1 else (
        f"; every direction entered a piece with gradient {hull[1:-1]}: f looks differentiable at x, "
        "but a piece entered only by a thin cone of directions can be missed")
    return UNDETERMINED, (f"g = {gs} is not a convex combination of the {count} piece gradient(s) "
                          f"found {hull}, which are not proven complete{alone}{numerical}")
