"""A gradcheck that works at kinks: one-sided differences instead of skipping the point.

``torch.autograd.gradcheck`` compares autograd with central differences, which is only
meaningful where the function is differentiable; at a kink it has nothing to compare with.
:func:`kinkcheck` compares the autograd gradient ``g`` with the two one-sided derivatives of
every coordinate section ``t -> f(x + t e_i)`` and with the derivative along the directions
that are tangent to the piece holding ``x`` (eq 15, Remark 1 of Despres 2024).

Chapter: census.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from mtlib._autodiff import forward_jacobian, left_right_slopes
from mtlib._validate import check_positive, check_tensor
from mtlib.piecewise import associated_gradient

one_sided = left_right_slopes
"""Old name of :func:`left_right_slopes`, kept for existing code."""


@dataclass(frozen=True)
class KinkReport:
    """Outcome of :func:`kinkcheck`; truthy when the gradient passed every check.

    Attributes:
        gradient: the autograd gradient ``g`` (shape of ``x``).
        sections: one row per coordinate ``i``: ``g_i``, the ``left`` and ``right`` one-sided
            derivatives of ``t -> f(x + t e_i)`` and ``in_section`` (``g_i`` between them).
        tangents: one row per tangent direction ``d``: ``f'(x; d)``, ``g . d`` and ``ok``.
        section_ok: every ``g_i`` lies between its one-sided derivatives.
        tangent_ok: ``g . d = f'(x; d)`` for every tangent direction (associated-gradient test).
        convex: whether ``section_ok`` is required for the report to be truthy.
        reason: the first failure, or a one-line summary of success.
    """

    gradient: torch.Tensor
    sections: pd.DataFrame
    tangents: pd.DataFrame
    section_ok: bool
    tangent_ok: bool
    convex: bool
    reason: str

    @property
    def ok(self) -> bool:
        """True iff the tangent test passed, and the section test too when ``convex``."""
        return self.tangent_ok and (self.section_ok or not self.convex)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"kinkcheck: {'PASS' if self.ok else 'FAIL'} ({self.reason})"
        return "\n".join([head, self.sections.to_string(), self.tangents.to_string()])


def _autograd(f: Callable, x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "reverse":
        return associated_gradient(f, x)
    return forward_jacobian(lambda y: f(y).reshape(()), x).reshape(x.shape)


def _default_tangents(kinks: torch.Tensor, n: int, like: torch.Tensor) -> list[torch.Tensor]:
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    dirs = [eye[i] for i in range(n) if not kinks[i]]
    if int(kinks.sum()) >= 2:
        dirs.append(kinks.to(like.dtype))
    return dirs


def _name(d: torch.Tensor) -> str:
    return "(" + ", ".join(f"{v:g}" for v in d.reshape(-1).tolist()) + ")"


_DERIV = "f'(x; d)"


def kinkcheck(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    eps: float = 2.0**-20,
    atol: float = 1e-5,
    mode: str = "reverse",
    tangents: Sequence[torch.Tensor] | None = None,
    convex: bool = True,
) -> KinkReport:
    """Check autograd's gradient of a scalar ``f`` at a (possibly nonsmooth) point ``x``.

    With ``g`` the gradient autograd returns (reverse mode, or forward mode column by column
    with ``torch.func.jvp``) and ``L_i, R_i`` the one-sided derivatives of the section
    ``t -> f(x + t e_i)`` (:func:`left_right_slopes`), two tests are run:

    * **section test** (Clarke-type, 1-d sections): ``min(L_i, R_i) <= g_i <= max(L_i, R_i)``
      for every ``i``. In one variable this is exactly membership in Clarke's generalized
      derivative ``[L, R]``; for ties of ``max`` with the tangent test it is ``g >= 0``.
    * **tangent test** (associated gradient, Def 1 and eq 15): ``g . d = f'(x; d)`` for every
      direction ``d`` tangent to the piece ``P^alpha`` holding ``x``. On that piece
      ``f = f^alpha`` with ``f^alpha`` of class ``C^1``, so an associated gradient must
      reproduce the derivative along it; normal to it, it is free (Remark 1). By default the
      directions are the coordinates along which ``f`` is differentiable and the diagonal
      ``1_K`` of the coordinates ``K`` where it is not, if ``f`` is differentiable along it
      (for ``max`` at a tie: ``sum_{i in T} g_i = 1``, ``g_i = 0`` off the tie set ``T``).

    In one variable at an isolated kink no direction is tangent (the piece is the point,
    Sec 4.1), so every real ``g`` passes the tangent test and only the section test bites.
    The default directions assume the piece holding ``x`` extends along every direction in
    which ``f`` happens to be differentiable; this fails e.g. for ``median`` at a triple tie
    (flat along each axis), where the right call is ``tangents=[torch.ones(3)]``,
    ``convex=False``. Use float64: the differences are taken with step ``eps``.

    Args:
        f: function of one tensor returning a one-element tensor.
        x: floating-point point of evaluation.
        eps: finite-difference step, > 0; the default ``2**-20`` makes ``x +- eps`` exact
            in float64 for moderate ``x``, so piecewise-affine functions give exact slopes.
        atol: absolute tolerance of both tests, > 0.
        mode: ``"reverse"`` (backward) or ``"forward"`` (``torch.func.jvp``).
        tangents: directions tangent to the piece holding ``x`` (shape of ``x``), replacing the
            default ones; ``f`` must be differentiable along each.
        convex: require the section test as well (default); ``False`` checks only that ``g``
            is an associated gradient.

    Returns:
        A :class:`KinkReport`, truthy when ``g`` passed.

    Raises:
        TypeError: ``f`` not callable, ``x`` not a floating-point tensor.
        ValueError: bad ``eps``/``atol``/``mode``, a tangent of the wrong shape or along which
            ``f`` is not differentiable.

    Examples:
        >>> zero = torch.zeros((), dtype=torch.float64)
        >>> bool(kinkcheck(torch.relu, zero)), bool(kinkcheck(torch.abs, zero))
        (True, True)
        >>> from mtlib.activations import relu_z
        >>> print(kinkcheck(lambda t: relu_z(t, 2.0), zero).reason)    # relu with R'(0) = 2
        g[0] = 2 is outside the one-sided derivatives [0, 1]
        >>> x = torch.zeros(2, dtype=torch.float64)
        >>> bool(kinkcheck(torch.amax, x))                  # g = (1/2, 1/2)
        True
        >>> bad_max = lambda y: torch.amax(y) + (y - y.detach()).sum() / 2   # g = (1, 1)
        >>> print(kinkcheck(bad_max, x).reason)
        g . d = 2 but f'(x; d) = 1 along d = (1, 1)

    References:
        Despres (2024), Def 1 (eq 7), Sec 4.1-4.2 (eq 15, Remark 1); Clarke (1990).
    """
    if not callable(f):
        raise TypeError(f"kinkcheck: `f` must be callable, got {type(f).__name__}")
    check_tensor("kinkcheck", "x", x)
    check_positive("kinkcheck", "eps", eps)
    check_positive("kinkcheck", "atol", atol)
    if mode not in ("reverse", "forward"):
        raise ValueError(f"kinkcheck: `mode` must be 'reverse' or 'forward', got {mode!r}")
    x = x.detach()
    n = x.numel()
    g = _autograd(f, x, mode)
    flat = g.reshape(-1).tolist()
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    sides = [left_right_slopes(f, x, eye[i].reshape(x.shape), eps) for i in range(n)]
    inside = [min(lr) - atol <= gi <= max(lr) + atol for gi, lr in zip(flat, sides)]
    sections = pd.DataFrame(
        {"g": flat, "left": [s[0] for s in sides], "right": [s[1] for s in sides], "in_section": inside}
    )
    sections.index.name = "coordinate"
    kinks = torch.tensor([abs(right - left) > atol for left, right in sides])
    given = tangents is not None
    dirs = [torch.as_tensor(d) for d in tangents] if given else _default_tangents(kinks, n, x)
    rows = []
    for j, d in enumerate(dirs):
        if given and d.shape != x.shape:
            raise ValueError(
                f"kinkcheck: `tangents[{j}]` must have the shape of `x` {tuple(x.shape)}, "
                f"got {tuple(d.shape)}"
            )
        d = d.to(x).reshape(x.shape)
        left, right = left_right_slopes(f, x, d, eps)
        if abs(right - left) > atol:
            if given:
                raise ValueError(
                    f"kinkcheck: f is not differentiable along `tangents[{j}]` (one-sided "
                    f"derivatives {left:g} and {right:g}), so it is not tangent to a piece"
                )
            continue
        gd = float((g * d).sum())
        deriv = (left + right) / 2
        rows.append({"direction": _name(d), _DERIV: deriv, "g . d": gd, "ok": abs(gd - deriv) <= atol})
    tangent_table = pd.DataFrame(rows, columns=["direction", _DERIV, "g . d", "ok"])
    section_ok, tangent_ok = all(inside), all(r["ok"] for r in rows)
    return KinkReport(g, sections, tangent_table, section_ok, tangent_ok, convex,
                      _reason(rows, inside, flat, sides))


def _reason(rows: list[dict], inside: list[bool], flat: list[float], sides: list) -> str:
    for r in rows:
        if not r["ok"]:
            return f"g . d = {r['g . d']:g} but {_DERIV} = {r[_DERIV]:g} along d = {r['direction']}"
    if not all(inside):
        i = inside.index(False)
        lo, hi = min(sides[i]), max(sides[i])
        return f"g[{i}] = {flat[i]:g} is outside the one-sided derivatives [{lo:g}, {hi:g}]"
    return f"{len(rows)} tangent direction(s) and {len(flat)} section(s) consistent"
