"""The kinks visited by :func:`mtlib.census.run`: one ``Case`` per (op, nonsmooth point).

Each case is a function of a flat float64 vector ``x`` (the variables it is differentiated
in, named by ``variables``: inputs and tensor arguments stacked; everything else is a constant)
evaluated at a point where it is not differentiable, or where a rule is suspect, with what the
census needs to judge the derivative there: ``kind="elementwise"`` (one variable, judged by
one-sided derivatives), ``"ties"`` (each output is linear on the cones of orderings of the
inputs: a max, min, order statistic or a combination of them, tied over the inputs flagged in
``masks``; ``signs`` flips inputs that enter as ``-x_i``), ``"windows"`` (the same, with the
tie sets found by the judge from the values and pieces of ``f``) or ``"ball"`` (a norm at 0,
judged by the dual ``norm`` of the gradient). A case whose rule is constant on another set than
the tie stratum names that set by ``stratum``; an op outside the theory says why in
``outside``. :mod:`mtlib.census._judge` says how each kind is judged.

Chapter: none. The census chapter reads these cases through :mod:`mtlib.census`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

INF = float("inf")


KINDS = ("elementwise", "ties", "windows", "ball")


@dataclass(frozen=True)
class Case:
    """One op at one kink, for :func:`mtlib.census.run`.

    Attributes:
        op: the call as written in PyTorch (a label).
        kink: the nonsmooth point, in words (a label).
        f: function of a flat float64 vector, returning a tensor (flattened into outputs).
        x: the point, as a tuple of floats.
        kind: ``"elementwise"`` (one input), ``"ties"`` (give ``masks``: per output, the inputs
            tied for it, in the order that names the rule), ``"windows"`` (tie sets found by
            the judge from values) or ``"ball"`` (a norm at 0; give the dual ``norm``).
        masks: for ``"ties"``, one tuple of booleans per output.
        signs: for ``"ties"``, ``-1`` where an input enters the tie as ``-x_i`` (default all 1).
        norm: for ``"ball"``, the dual norm applied to the gradient.
        variables: the variables ``x`` stands for (a label): the census differentiates in these
            and holds every other argument fixed.
        stratum: for ``"ties"``/``"windows"``, directions spanning the set through ``x`` on
            which PyTorch's rule gives the same answer, when it is not the tie stratum
            (``()``: the point alone); associated-valid then means ``g . d = f'(x; d)`` along
            each of them, in place of the tangent condition.
        outside: why the op is outside the theory at ``x`` (not locally Lipschitz there, as
            ``torch.mode``); ``None`` when it is not. Such a case is neither valid nor
            Clarke-valid, whatever its numbers.
    """

    op: str
    kink: str
    f: Callable[[torch.Tensor], torch.Tensor]
    x: tuple[float, ...]
    kind: str = "elementwise"
    masks: tuple[tuple[bool, ...], ...] | None = None
    signs: tuple[float, ...] | None = None
    norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    variables: str = "x"
    stratum: tuple[tuple[float, ...], ...] | None = None
    outside: str | None = None


def _tie_patterns(rows: int, n: int) -> tuple[tuple[bool, ...], ...]:
    return ((True,) * n,) * rows


def _point_case(op: str, f: Callable, x: float) -> Case:
    return Case(op, f"x = {x:g}", f, (x,))


def _pair_case(op: str, f: Callable) -> Case:
    return Case(op, "x = y = 0", lambda v: f(v[:1], v[1:]), (0.0, 0.0), "ties", _tie_patterns(1, 2),
                variables="(x, y)")


def _tied3_case(op: str, f: Callable, rows: int = 1) -> Case:
    return Case(op, "x = (0, 0, 0)", f, (0.0,) * 3, "ties", _tie_patterns(rows, 3))


def _partial_case(op: str, f: Callable, x: tuple[float, ...]) -> Case:
    """A partial tie: two of three entries tied, tie sets found by the judge."""
    return Case(op, "x = (" + ", ".join(f"{v:g}" for v in x) + ")", f, x, "windows")


def _pool_case(op: str, f: Callable, shape: tuple[int, ...], kink: str = "all-zero window") -> Case:
    n = 1
    for s in shape:
        n *= s
    return Case(op, kink, lambda v: f(v.reshape(1, 1, *shape)).reshape(-1), (0.0,) * n, "windows")


def _norm_case(op: str, f: Callable, norm: Callable, n: int = 2) -> Case:
    return Case(op, "x = 0", f, (0.0,) * n, "ball", norm=norm)


def _pnorm(p: float) -> Callable:
    return lambda g: torch.linalg.vector_norm(g, p)


_SAMPLES2 = torch.full((1, 1, 2), 0.5, dtype=torch.float64)
_BAG = torch.tensor([[0, 1, 2]])
_INDEX = torch.zeros(3, dtype=torch.long)
_SCATTER = "scatter_reduce('amax', include_self=False)"


def _scatter_src(x: torch.Tensor) -> torch.Tensor:
    """``src -> self.scatter_reduce(0, 0, src, "amax", include_self=False)`` with ``self = 0`` fixed."""
    return torch.zeros(1, dtype=x.dtype).scatter_reduce(0, _INDEX, x, "amax", include_self=False)


def _scatter_joint(v: torch.Tensor) -> torch.Tensor:
    """The same as a function of ``(self, src)``: ``v = (self, src_1, src_2, src_3)``."""
    return v[:1].scatter_reduce(0, _INDEX, v[1:], "amax", include_self=False)


def _scatter_line(t: torch.Tensor) -> torch.Tensor:
    """``t -> scatter_reduce(self=t, src=(t, t, t))``, the identity ``t``: differentiable everywhere, so a
    derivative other than 1 is wrong where the function is differentiable."""
    return _scatter_joint(t.expand(4))


_SCATTER_CASES = (
    Case(_SCATTER, "src = (0, 0, 0), self = 0", _scatter_src, (0.0,) * 3, "windows",
         variables="src (self = 0 fixed)", stratum=()),
    Case(_SCATTER, "src = (0, -1, -2), self = 0 (differentiable)", _scatter_src, (0.0, -1.0, -2.0),
         "windows", variables="src (self = 0 fixed)", stratum=((0.0, 1.0, 0.0), (0.0, 0.0, 1.0))),
    Case(_SCATTER, "self = src = (0, 0, 0)", _scatter_joint, (0.0,) * 4, "ties",
         ((False, True, True, True),), variables="(self, src)", stratum=((1.0, 1.0, 1.0, 1.0),)),
    *(Case(_SCATTER, f"self = src_i = t = {t:g}", _scatter_line, (t,), variables="t (self = src_i = t)")
      for t in (0.0, 1.0, -2.5)),
)

CASES: tuple[Case, ...] = (
    _point_case("torch.relu", torch.relu, 0.0),
    _point_case("F.relu6", F.relu6, 0.0),
    _point_case("F.relu6", F.relu6, 6.0),
    _point_case("F.hardtanh", F.hardtanh, -1.0),
    _point_case("F.hardtanh", F.hardtanh, 1.0),
    _point_case("torch.clamp(x, 0, 6)", lambda x: torch.clamp(x, 0, 6), 0.0),
    _point_case("torch.clamp(x, 0, 6)", lambda x: torch.clamp(x, 0, 6), 6.0),
    _point_case("torch.clamp_min(x, 0)", lambda x: torch.clamp_min(x, 0), 0.0),
    _point_case("F.threshold(x, 0, 0)", lambda x: F.threshold(x, 0.0, 0.0), 0.0),
    _point_case("torch.abs", torch.abs, 0.0),
    _point_case("F.leaky_relu(x, 0.1)", lambda x: F.leaky_relu(x, 0.1), 0.0),
    _point_case("F.rrelu(x, training=False)", lambda x: F.rrelu(x, training=False), 0.0),
    _point_case("F.prelu(x, 0.25)", lambda x: F.prelu(x, torch.tensor([0.25], dtype=x.dtype)), 0.0),
    _point_case("F.elu(x, 0.5)", lambda x: F.elu(x, 0.5), 0.0),
    _point_case("F.selu", F.selu, 0.0),
    _point_case("F.celu(x, 0.5)", lambda x: F.celu(x, 0.5), 0.0),
    _point_case("F.hardswish", F.hardswish, -3.0),
    _point_case("F.hardswish", F.hardswish, 3.0),
    _point_case("F.hardsigmoid", F.hardsigmoid, -3.0),
    _point_case("F.hardsigmoid", F.hardsigmoid, 3.0),
    _point_case("F.softshrink(x, 0.5)", lambda x: F.softshrink(x, 0.5), 0.5),
    _point_case("F.l1_loss(x, 0)", lambda x: F.l1_loss(x, torch.zeros_like(x)), 0.0),
    _point_case("F.margin_ranking_loss(x, 0, 1)",
        lambda x: F.margin_ranking_loss(x, torch.zeros_like(x), torch.ones_like(x)), 0.0),
    _point_case("F.hinge_embedding_loss(x, -1, margin=0)",
        lambda x: F.hinge_embedding_loss(x, -torch.ones_like(x), margin=0.0), 0.0),
    _pair_case("torch.maximum(x, y)", torch.maximum),
    _pair_case("torch.minimum(x, y)", torch.minimum),
    _pair_case("torch.fmax(x, y)", torch.fmax),
    _pair_case("torch.fmin(x, y)", torch.fmin),
    _pair_case("torch.clamp(x, min=y)", lambda x, y: torch.clamp(x, min=y)),
    _pair_case("torch.clamp(x, max=y)", lambda x, y: torch.clamp(x, max=y)),
    _pair_case("torch.clamp_min(x, y)", torch.clamp_min),
    _pair_case("torch.clamp_max(x, y)", torch.clamp_max),
    Case("torch.clamp(x, min=y, max=z)", "x = y = 0, z = 1",
         lambda v: torch.clamp(v[:1], min=v[1:2], max=v[2:]), (0.0, 0.0, 1.0), "ties",
         ((True, True, False),), variables="(x, y, z)"),
    _tied3_case("torch.max(x)", torch.max),
    _tied3_case("torch.amax(x)", torch.amax),
    _tied3_case("torch.min(x)", torch.min),
    _tied3_case("torch.amin(x)", torch.amin),
    _tied3_case("torch.max(x, dim=0)", lambda x: torch.max(x, dim=0).values),
    _tied3_case("torch.min(x, dim=0)", lambda x: torch.min(x, dim=0).values),
    _tied3_case("torch.amax(x, dim=0)", lambda x: torch.amax(x, dim=0)),
    _tied3_case("torch.median(x)", torch.median),
    _tied3_case("torch.median(x, dim=0)", lambda x: torch.median(x, dim=0).values),
    _tied3_case("torch.quantile(x, 0.25)", lambda x: torch.quantile(x, 0.25)),
    _tied3_case("torch.kthvalue(x, 1)", lambda x: torch.kthvalue(x, 1).values),
    _tied3_case("torch.kthvalue(x, 2)", lambda x: torch.kthvalue(x, 2).values),
    Case("torch.mode(x)", "x = (0, 0, 0)", lambda x: torch.mode(x).values, (0.0,) * 3, "ties",
         _tie_patterns(1, 3), outside="not locally Lipschitz"),  # mode(0, 0, -a) = 0, mode(0, b, -a) = -a
    _tied3_case("torch.topk(x, 2)", lambda x: torch.topk(x, 2).values, rows=2),
    _tied3_case("torch.sort(x)", lambda x: torch.sort(x).values, rows=3),
    _partial_case("torch.max(x)", torch.max, (0.0, 0.0, -1.0)),
    _partial_case("torch.amax(x)", torch.amax, (0.0, 0.0, -1.0)),
    _partial_case("torch.max(x, dim=0)", lambda x: torch.max(x, dim=0).values, (0.0, 0.0, -1.0)),
    _partial_case("torch.max(x, dim=0)", lambda x: torch.max(x, dim=0).values, (-1.0, 0.0, 0.0)),
    _partial_case("torch.min(x, dim=0)", lambda x: torch.min(x, dim=0).values, (0.0, 0.0, 1.0)),
    _partial_case("torch.median(x)", torch.median, (0.0, 0.0, 1.0)),
    _partial_case("torch.median(x, dim=0)", lambda x: torch.median(x, dim=0).values, (0.0, 1.0, 0.0)),
    _partial_case("torch.kthvalue(x, 2)", lambda x: torch.kthvalue(x, 2).values, (0.0, 0.0, -1.0)),
    _partial_case("torch.topk(x, 2)", lambda x: torch.topk(x, 2).values, (0.0, 0.0, -1.0)),
    _partial_case("torch.sort(x)", lambda x: torch.sort(x).values, (0.0, 0.0, -1.0)),
    _partial_case("torch.cummax(x, 0)", lambda x: torch.cummax(x, 0).values, (0.0, -1.0, 0.0)),
    Case("torch.cummax(x, 0)", "x = (0, 0, 0)", lambda x: torch.cummax(x, 0).values, (0.0,) * 3, "windows"),
    Case("torch.cummin(x, 0)", "x = (0, 0, 0)", lambda x: torch.cummin(x, 0).values, (0.0,) * 3, "windows"),
    Case("torch.logsumexp(x, 0)", "x = (-inf, -inf), outside R^n", lambda x: torch.logsumexp(x, 0),
         (-INF, -INF), "ties", _tie_patterns(1, 2)),
    _norm_case("torch.linalg.vector_norm(x)", torch.linalg.vector_norm, _pnorm(2)),
    _norm_case("torch.linalg.vector_norm(x, 1)", lambda x: torch.linalg.vector_norm(x, 1), _pnorm(INF)),
    _norm_case("torch.linalg.vector_norm(x, inf)", lambda x: torch.linalg.vector_norm(x, INF), _pnorm(1)),
    Case("torch.linalg.vector_norm(x, inf)", "x = (1, -1)", lambda x: torch.linalg.vector_norm(x, INF),
         (1.0, -1.0), "ties", _tie_patterns(1, 2), signs=(1.0, -1.0)),
    Case("torch.linalg.matrix_norm(X, 'nuc')", "x = 0",
         lambda x: torch.linalg.matrix_norm(x.reshape(2, 2), "nuc"), (0.0,) * 4, "ball",
         norm=lambda g: torch.linalg.matrix_norm(g.reshape(2, 2), 2), variables="X (2 x 2)"),
    _norm_case("F.lp_pool1d(x, 2, 2)", lambda x: F.lp_pool1d(x.reshape(1, 1, 2), 2.0, 2).reshape(()),
               _pnorm(2)),
    _pool_case("F.max_pool1d(x, 2, stride=1)", lambda x: F.max_pool1d(x, 2, stride=1), (3,), "x = (0, 0, 0)"),
    Case("F.max_pool1d(x, 3)", "x = (-1, 0, 0)", lambda v: F.max_pool1d(v.reshape(1, 1, 3), 3).reshape(-1),
         (-1.0, 0.0, 0.0), "windows"),
    _pool_case("F.max_pool2d(x, 2)", lambda x: F.max_pool2d(x, 2), (2, 2)),
    _pool_case("F.max_pool3d(x, 2)", lambda x: F.max_pool3d(x, 2), (2, 2, 2)),
    _pool_case("F.adaptive_max_pool1d(x, 1)", lambda x: F.adaptive_max_pool1d(x, 1), (3,)),
    _pool_case("F.adaptive_max_pool2d(x, 1)", lambda x: F.adaptive_max_pool2d(x, 1), (2, 2)),
    _pool_case("F.fractional_max_pool2d(x, 2, 1)",
          lambda x: F.fractional_max_pool2d(x, 2, output_size=1, _random_samples=_SAMPLES2), (3, 3)),
    Case("F.embedding_bag(mode='max')", "all-zero bag",
         lambda x: F.embedding_bag(_BAG, x.reshape(3, 1), mode="max").reshape(-1), (0.0,) * 3, "windows",
         variables="weight (3 x 1)"),
    *_SCATTER_CASES,
)
