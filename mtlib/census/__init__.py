"""A census of PyTorch's derivatives at kinks: is each one an associated gradient?

Despres (2024, Sec 5) concludes that the gradient PyTorch's autodiff returns is always an
associated gradient (Def 1, eq 7) of some piecewise representation of the function. Pointwise
that is vacuous (a point can be a piece of its own, so every vector is an associated gradient
at one point); what can be checked is a *rule on a set*. The census checks the claim op by op
on the installed torch: :func:`run` evaluates every op of ``mtlib.census.cases.CASES`` at one
of its nonsmooth points (full and partial ties), in the variables the case names, in reverse
mode (backward) and forward mode (``torch.func.jvp``), names the rule it follows and judges it
on the stratum through the point where that rule is constant. ``run(framework="jax")`` asks the
same of JAX: the JAX counterpart of each row, judged by the same judge against the same torch
function (:mod:`mtlib.census._jax`, the only module that imports jax).

Chapter: relu, census, jax.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from mtlib._autodiff import autograd_gradient, forward_jacobian, reverse_jacobian
from mtlib.census._format import format_jacobian
from mtlib.census._history import (
    changes,
    check_release,
    compare,
    history,
    nearest_release,
    release_table,
    shipped_releases,
    torch_release,
)
from mtlib.census._judge import ATOL as _ATOL
from mtlib.census._judge import judge
from mtlib.census.cases import CASES, KINDS, Case
from mtlib.policy import tie_policy
from mtlib.ties import TIE_RULES

__all__ = ["Case", "CensusRecord", "by_convention", "changes", "check_release", "compare", "format_jacobian",
           "history", "kink_derivatives", "nearest_release", "relu_formulations", "release_table", "run",
           "shipped_releases", "to_frame", "torch_release"]


@dataclass(frozen=True)
class CensusRecord:
    """What the census found for one op at one kink.

    Attributes:
        op: the call, as written in PyTorch.
        kink: the nonsmooth point where it was evaluated.
        variables: the variables differentiated in (every other argument is held fixed).
        reverse: the Jacobian from backward, as rows (one per output).
        forward: the Jacobian from ``torch.func.jvp``, or ``None`` without forward AD.
        rule: which associated gradient ``reverse`` is (and ``forward``, when they differ).
        valid: ``reverse`` is associated-valid on the stratum of the case: the tie stratum
            (tangent condition, eq 15), the point itself for a one-variable kink or a norm at
            0 (Sec 4.1: any finite value), an open interval at a point of differentiability
            (the derivative only), or the case's ``stratum`` (``g . d = f'(x; d)`` along it);
            ``None`` when the judge cannot decide (:mod:`mtlib.census._judge`).
        clarke: ``reverse`` also lies in Clarke's generalized Jacobian (a convex combination
            of the neighbouring pieces' Jacobians, one piece for all rows); ``None``: undecided.
        forward_valid: ``forward`` is an associated gradient (``None`` without forward AD).
        agree: forward and reverse modes return the same numbers (``None`` without forward AD).
    """

    op: str
    kink: str
    variables: str
    reverse: tuple[tuple[float, ...], ...]
    forward: tuple[tuple[float, ...], ...] | None
    rule: str
    valid: bool | None
    clarke: bool | None
    forward_valid: bool | None
    agree: bool | None


def _forward(f: Callable, x: torch.Tensor) -> torch.Tensor | None:
    """Forward-mode Jacobian, or ``None`` for an op without a forward-mode formula."""
    try:
        return forward_jacobian(f, x)
    except NotImplementedError:
        return None


def _rows(jac: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(row) for row in jac.tolist())


def _record(case: Case) -> CensusRecord:
    x = torch.tensor(case.x, dtype=torch.float64)
    return _judged(case, case.op, reverse_jacobian(case.f, x), _forward(case.f, x))


def _judged(case: Case, op: str, rev: torch.Tensor, fwd: torch.Tensor | None) -> CensusRecord:
    """The record of the Jacobians ``rev``/``fwd`` of ``op`` (any framework), judged as ``case``."""
    x = torch.tensor(case.x, dtype=torch.float64)
    valid, clarke, rule = judge(case, x, rev)
    forward_valid = agree = None
    if fwd is not None:
        forward_valid, _, forward_rule = judge(case, x, fwd)
        agree = bool(torch.allclose(rev, fwd, atol=_ATOL, rtol=0, equal_nan=True))
        if not agree:
            rule = f"reverse: {rule}; forward: {forward_rule}"
    return CensusRecord(op, case.kink, case.variables, _rows(rev), None if fwd is None else _rows(fwd),
                        rule, valid, clarke, forward_valid, agree)


def run(cases: Sequence[Case] | None = None, *, framework: str = "torch") -> list[CensusRecord]:
    """Run the census: one :class:`CensusRecord` per :class:`Case` (default: PyTorch's ops).

    For each op at its kink ``x``, differentiated in ``case.variables``: the Jacobian from
    backward and from ``torch.func.jvp`` (float64), the rule it follows and three verdicts, each
    on a stated set. One variable at a kink (Sec 4.1): the stratum is the point, where every
    finite value is an associated derivative (the point is a piece with ``f^3(x) = z x``); it is
    Clarke-valid iff it lies between the one-sided derivatives, the rule naming the piece it
    copies. One variable at a point of differentiability: valid iff it is the derivative.
    Ties of max/min/order statistics and their combinations (Sec 4.2-4.3), for a rule that
    depends only on the tie pattern: the pieces are those of the orderings of the tied inputs,
    read from values; associated-valid on the tie stratum iff each row vanishes off its tie
    set and has the derivative of its output along it (eq 15 for a max), Clarke-valid iff the
    Jacobian is a convex combination of the pieces' Jacobians (an LP); the rule is ``first``,
    ``last``, ``uniform`` (eq 20), ``index k`` or the weights. A case with its own ``stratum``
    (a rule constant on another set): valid iff ``g . d = f'(x; d)`` along it. Norms at 0:
    associated iff finite, Clarke-valid iff in the dual unit ball. NaN is never valid, nor an
    op outside the theory (``case.outside``). What cannot be decided is ``None``; the judge
    (:func:`mtlib.census._judge.judge`) says what it decides and what it leaves to
    :func:`mtlib.kinkcheck.kinkcheck`.

    Args:
        cases: the ops and kinks to visit; ``None`` for the built-in list
            ``mtlib.census.cases.CASES`` (82 kinks of PyTorch ops). Pass your own
            :class:`Case` objects to census your own functions. With ``framework="jax"``:
            ``JaxCase`` objects, ``None`` for ``JAX_CASES``, the JAX counterpart of every
            row that has one (``JAX_GAPS`` lists the rows without one, with the reason).
        framework: ``"torch"``, or ``"jax"`` (needs ``mtlib[jax]``; jax is imported only
            then): JAX's Jacobian in reverse mode (``jax.vjp``) and forward mode
            (``jax.jvp``), float64 under JAX's thread-local x64 context (undone on
            return), judged by the same judge against each case's torch reference (same
            values), so :func:`to_frame` and :func:`by_convention` apply unchanged.

    Returns:
        A list of :class:`CensusRecord`, in the order of the cases.

    Raises:
        TypeError: an entry of ``cases`` is not a :class:`Case` (``JaxCase`` for JAX).
        ValueError: a case has an unknown ``kind``, lacks its ``masks``/``norm``, has
            ``masks`` not of shape (outputs, coordinates) or ``signs`` not one per coordinate,
            or is ``"elementwise"`` with more than one coordinate; unknown ``framework``.

    Examples:
        >>> from mtlib.activations import relu_z
        >>> run([Case("relu_z(x, 0.25)", "x = 0", lambda x: relu_z(x, 0.25), (0.0,))])[0].rule
        '0.75 left + 0.25 right'
        >>> rec = {(r.op, r.kink): r for r in run()}
        >>> rec["torch.relu", "x = 0"].reverse, rec["torch.amax(x)", "x = (0, 0, 0)"].rule
        (((0.0,),), 'uniform')

    References:
        Despres (2024), Def 1, Sec 4.1-4.4, Sec 5; Clarke (1990).
    """
    if framework not in ("torch", "jax"):
        raise ValueError(f"run: `framework` must be 'torch' or 'jax', got {framework!r}")
    if framework == "jax":
        _jax = _jax_module()
        cases = _jax.JAX_CASES if cases is None else list(cases)
        for i, case in enumerate(cases):
            if not isinstance(case, _jax.JaxCase):
                raise TypeError(f"run: `cases[{i}]` must be a JaxCase, got {type(case).__name__}")
        _check([case.judged for case in cases])
        return _jax.records(cases, _judged)
    cases = CASES if cases is None else list(cases)
    for i, case in enumerate(cases):
        if not isinstance(case, Case):
            raise TypeError(f"run: `cases[{i}]` must be a Case, got {type(case).__name__}")
    _check(cases)
    return [_record(case) for case in cases]


def _check(cases: list[Case]) -> None:
    """The checks of :func:`run` on each case's fields (the torch reference, for JAX)."""
    for i, case in enumerate(cases):
        if case.kind not in KINDS:
            raise ValueError(f"run: `cases[{i}].kind` must be one of {KINDS}, got {case.kind!r}")
        if case.kind == "elementwise" and len(case.x) != 1:
            raise ValueError(f"run: `cases[{i}]` of kind 'elementwise' needs a point with one "
                             f"coordinate, got {len(case.x)}")
        if case.signs is not None and len(case.signs) != len(case.x):
            raise ValueError(f"run: `cases[{i}].signs` must hold one sign per coordinate of `x` "
                             f"({len(case.x)}), got {len(case.signs)}")
        if (case.kind, case.masks) == ("ties", None) or (case.kind, case.norm) == ("ball", None):
            raise ValueError(f"run: `cases[{i}]` of kind {case.kind!r} needs its "
                             f"`{'masks' if case.kind == 'ties' else 'norm'}`")


def to_frame(records: list[CensusRecord]) -> pd.DataFrame:
    """The census as a table: Jacobians formatted by :func:`format_jacobian`, one row per record."""
    data = [
        {"op": r.op, "kink": r.kink, "variables": r.variables, "reverse": format_jacobian(r.reverse),
         "forward": format_jacobian(r.forward), "rule": r.rule, "valid": r.valid,
         "clarke": r.clarke, "forward valid": r.forward_valid, "agree": r.agree}
        for r in records
    ]
    return pd.DataFrame(data)


def by_convention(frame: pd.DataFrame) -> pd.DataFrame:
    """The condensed census: one row per reverse-mode convention (the ``rule`` before any
    ``"; forward: ..."``; the ``"per output: ..."`` rules of sort/topk as one), with the number
    of cases, the ops (each once, in table order, separated by ``"; "``) and how many cases are
    valid and Clarke-valid.

    Examples:
        >>> view = by_convention(to_frame(run()))
        >>> view.loc["uniform", "operations"].split("; ")[:2]
        ['torch.maximum(x, y)', 'torch.minimum(x, y)']
    """
    convention = frame["rule"].str.replace("reverse: ", "", regex=False).str.split("; forward").str[0]
    convention = convention.mask(convention.str.startswith("per output"), "per output: one tied entry each")
    grouped = frame.assign(convention=convention).groupby("convention", sort=False)
    view = pd.DataFrame({
        "cases": grouped.size(),
        "operations": grouped["op"].agg(lambda ops: "; ".join(dict.fromkeys(ops))),
        "valid": grouped["valid"].sum(),
        "clarke": grouped["clarke"].sum(),
    })
    return view.sort_values("cases", ascending=False, kind="stable")


def relu_formulations() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Four ways of writing ``relu(x) = max(x, 0)``: the same function, different derivatives at 0.

    Examples:
        >>> sorted(relu_formulations())
        ['(x + |x|) / 2', 'torch.clamp(x, min=0)', 'torch.maximum(x, 0)', 'torch.relu(x)']
    """
    return {
        "torch.relu(x)": torch.relu,
        "torch.clamp(x, min=0)": lambda x: torch.clamp(x, min=0),
        "torch.maximum(x, 0)": lambda x: torch.maximum(x, torch.zeros_like(x)),
        "(x + |x|) / 2": lambda x: (x + torch.abs(x)) / 2,
    }


def kink_derivatives(functions: Mapping[str, Callable], x: float = 0.0) -> pd.DataFrame:
    """Reverse-mode derivative of each scalar function at ``x``: PyTorch's, then under each rule.

    Columns ``PyTorch``, ``first``, ``last``, ``uniform``; the last three computed inside
    :func:`mtlib.policy.tie_policy`.

    Examples:
        >>> kink_derivatives(relu_formulations()).loc["torch.relu(x)"].tolist()
        [0.0, 1.0, 0.0, 0.5]
    """
    def derivative(f: Callable, rule: str | None) -> float:
        t = torch.tensor([x], dtype=torch.float64)
        with tie_policy(rule) if rule else contextlib.nullcontext():
            return float(autograd_gradient(lambda v: f(v).sum(), t, fn="kink_derivatives"))

    rules = {"PyTorch": None, **{rule: rule for rule in TIE_RULES}}
    table = pd.DataFrame({col: [derivative(f, r) for f in functions.values()] for col, r in rules.items()},
                         index=list(functions))
    table.index.name = "formulation"
    return table


_JAX_NAMES = ("JAX_CASES", "JAX_GAPS", "JaxCase", "jax_boustany_f", "jax_derivative_table", "jax_max1",
              "jax_maxpool_f", "jax_relu_formulations", "releases_side_by_side", "side_by_side")


def _jax_module():
    """:mod:`mtlib.census._jax`, the only module that imports jax (the optional ``mtlib[jax]``)."""
    try:
        from mtlib.census import _jax
    except ImportError as err:
        hint = "pip install 'mtlib[jax]'"
        raise ImportError(f"mtlib.census: the JAX census needs jax ({err}): {hint}") from err
    return _jax


def __getattr__(name: str):
    """The JAX names, from :mod:`mtlib.census._jax` on first use (importing jax only then)."""
    if name in _JAX_NAMES:
        return getattr(_jax_module(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
