"""Max over the last dimension with an explicit tie rule, and the tangent check of Sec 4.2.

On the tie set of ``max`` (two or more entries equal to the maximum) the function is not
differentiable, and an autodiff system has to *choose* a derivative there. The paper
(Despres 2024, Sec 4.2-4.3) shows that every sensible choice is an *associated gradient*
(Def 1, eq 7) of one piecewise representation of ``max``:

* ``max_first``: weight 1 on the first maximal entry, the representation (17)-(18) of the
  paper's ``max1`` script (Table 1);
* ``max_last``: weight 1 on the last maximal entry, the mirror image;
* ``max_uniform``: weight ``1/N`` on each of the ``N`` maximal entries, the symmetrised
  representation (19)-(20) that ``torch.max(x)`` uses, giving eq 21 at ``x = 0``.

All three agree with the true gradient off the tie set (a set of measure zero), as Cor 1
predicts, and all three satisfy the tangent condition (eq 15) on it.

This module is also the one home of the tie rules as data: :data:`TIE_RULES`, their per-rule
constants (:data:`RELU_SLOPE`, :data:`TRITON_CODES`, :data:`MAX_BY_RULE`) and
:func:`check_ties`, the check every function with a ``ties``/``rule`` argument calls.

Adding a tie rule (say ``"middle"``) touches these files (paths under ``mtlib/``), in this
order; ``tests/mtlib/test_checklists.py`` finds every comparison with a tie rule in ``mtlib``
and fails if its file is missing here:

1. ``ties.py``: its name in :data:`TIE_RULES`, its weights in :func:`max_weights` (the
   associated gradient of ``max``), a ``max_<rule>`` built by ``_make_max`` and its entry in
   :data:`MAX_BY_RULE`, its ReLU slope at 0 in :data:`RELU_SLOPE`, its code in
   :data:`TRITON_CODES`;
2. ``representations.py``: :func:`~mtlib.representations.max_piecewise`, the pieces of the
   representation (eq 6) whose associated gradient those weights are;
3. ``maxpool/_torch.py``: ``forward``/``backward``/``tangent`` store the index of a selected
   entry per window, or (``"uniform"``) minus the tie count where a window ties; a rule that
   is neither needs new
   code there, in both kernels of ``maxpool/_triton.py``, in the C kernels of
   ``maxpool/_cpu.c`` and in the compiled CPU forward of ``maxpool/_compiled.py``
   (``"last"``/``"uniform"``); ``maxpool/_args.py`` refuses
   ``return_indices`` for a rule without one selected entry; ``maxpool/_dispatch.py`` sends
   only ``"first"`` to PyTorch's native kernels;
4. ``policy/_ops.py``: ``reduce_with_indices`` (which index ``torch.max(x, dim)`` returns
   under the rule);
5. ``examples.py``: :func:`~mtlib.examples.maxpool_f` (PyTorch's own pool for ``"first"``);
6. nothing to write in :mod:`mtlib.census`: ``_judge._tie_rule`` names a rule by comparing
   with :func:`max_weights` over :data:`TIE_RULES`, and ``kink_derivatives`` adds one column
   per rule;
7. tests: every test that takes the ``tie_rule`` fixture (``tests/conftest.py``) runs the new
   rule at once; those with a table of expected values per rule fail until its values are
   written: ``tests/mtlib/test_ties.py``, ``tests/mtlib/policy/test_policy.py``,
   ``tests/mtlib/census/test_census.py``, and the brute-force ``pool_oracle`` of
   ``tests/helpers.py``.

Chapter: notation, theorem, tangent, boustany, maxpool, census, lipschitz, related, results.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtlib._validate import check_nonempty_last_dim, check_tensor

TIE_RULES = ("first", "last", "uniform")
"""The tie rules: all gradient to the first maximal entry, to the last one, or split equally."""

RELU_SLOPE = {"first": 1.0, "last": 0.0, "uniform": 0.5}
"""``relu(x) = max(x, 0)`` at ``x = 0``: weight of the first candidate ``x`` under each rule."""

TRITON_CODES = {"first": 0, "last": 1, "uniform": 2}
"""The ``RULE`` constant of the Triton kernels of :mod:`mtlib.maxpool` for each rule."""


def check_ties(fn: str, ties) -> str:
    """Return ``ties`` if it names a rule of :data:`TIE_RULES`, else raise ``ValueError``.

    Examples:
        >>> check_ties("f", "uniform")
        'uniform'
    """
    if ties not in TIE_RULES:
        raise ValueError(f"{fn}: `ties` must be one of {TIE_RULES}, got {ties!r}")
    return ties


def tie_set(x: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the entries of ``x`` equal to the max of its last dimension.

    ``tie_set(x)[..., i]`` is true iff ``x[..., i] = max_j x[..., j]``: the set of indices that
    the pieces (19) of the paper are built on. A NaN row is its own tie set (NaN entries).

    Examples:
        >>> tie_set(torch.tensor([1.0, 3.0, 3.0])).tolist()
        [False, True, True]
    """
    check_tensor("tie_set", "x", x)
    check_nonempty_last_dim("tie_set", "x", x)
    m = x.amax(dim=-1, keepdim=True)
    return (x == m) | (x.isnan() & m.isnan())


def max_weights(x: torch.Tensor, ties: str) -> torch.Tensor:
    """Weights of the associated gradient of ``max`` at ``x`` under a tie rule.

    Returns a tensor ``w`` of ``x``'s shape with ``w[..., i] = d max / d x_i``: a one-hot vector
    on the first (``"first"``) or last (``"last"``) maximal index, or ``1/N`` on each of the
    ``N`` maximal indices (``"uniform"``, eq 20).

    Examples:
        >>> max_weights(torch.zeros(4), "uniform").tolist()
        [0.25, 0.25, 0.25, 0.25]
        >>> max_weights(torch.zeros(4), "first").tolist()
        [1.0, 0.0, 0.0, 0.0]
    """
    check_ties("max_weights", ties)
    mask = tie_set(x)
    if ties == "uniform":
        w = mask.to(x.dtype)
        return w / mask.sum(dim=-1, keepdim=True).to(x.dtype)
    if ties == "last":
        mask = mask.flip(-1)
    first = mask & (mask.cumsum(dim=-1) == 1)
    w = first.to(x.dtype)
    return w.flip(-1) if ties == "last" else w


def _make_max(ties: str, doc: str):
    class _Max(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            return x.amax(dim=-1)

        @staticmethod
        def setup_context(ctx, inputs, output):
            (x,) = inputs
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)

        @staticmethod
        def backward(ctx, grad_out):
            (x,) = ctx.saved_tensors
            return grad_out.unsqueeze(-1) * max_weights(x, ties)

        @staticmethod
        def jvp(ctx, x_t):
            (x,) = ctx.saved_tensors
            return (max_weights(x, ties) * x_t).sum(dim=-1)

    def fn(x: torch.Tensor) -> torch.Tensor:
        check_tensor(f"max_{ties}", "x", x)
        check_nonempty_last_dim(f"max_{ties}", "x", x)
        return _Max.apply(x)

    fn.__name__ = fn.__qualname__ = f"max_{ties}"
    fn.__doc__ = doc
    return fn


max_first = _make_max(
    "first",
    """Max over the last dimension; on ties the gradient goes to the first maximal entry.

    This is the associated gradient (18) of the representation (17) of the paper's ``max1``
    (Table 1): pieces ``P^alpha = {x_alpha >= x_j for j > alpha, x_alpha > x_j for j < alpha}``
    with ``f^alpha(x) = x_alpha``. Works with ``torch.func`` (grad, jacrev, jvp, vmap).

    Examples:
        >>> x = torch.zeros(4, requires_grad=True)
        >>> max_first(x).backward()
        >>> x.grad.tolist()
        [1.0, 0.0, 0.0, 0.0]
    """,
)

max_last = _make_max(
    "last",
    """Max over the last dimension; on ties the gradient goes to the last maximal entry.

    The mirror image of :func:`max_first`: the representation (17) with the order of the
    indices reversed. It is a valid associated gradient (Def 1) as much as the first rule.

    Examples:
        >>> x = torch.zeros(4, requires_grad=True)
        >>> max_last(x).backward()
        >>> x.grad.tolist()
        [0.0, 0.0, 0.0, 1.0]
    """,
)

max_uniform = _make_max(
    "uniform",
    """Max over the last dimension; on ties the gradient is split equally (eq 20).

    The symmetrised representation (19) gives the associated gradient
    ``d max / d x_i = y_i / N`` where ``y_i = 1`` if ``x_i`` is maximal and ``N`` counts the
    maximal entries (eq 20). At ``x = 0`` in R^4 this is ``(1, 1, 1, 1)/4`` (eq 21), what
    ``torch.max(x)`` returns.

    Examples:
        >>> x = torch.tensor([2.0, 5.0, 5.0], requires_grad=True)
        >>> max_uniform(x).backward()
        >>> x.grad.tolist()
        [0.0, 0.5, 0.5]
    """,
)


MAX_BY_RULE = {"first": max_first, "last": max_last, "uniform": max_uniform}
"""The max over the last dimension whose gradient follows each rule."""


@dataclass(frozen=True)
class TangentReport:
    """Outcome of :func:`check_tangent`: truthy when valid, ``reason`` says why not."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def check_tangent(
    x: torch.Tensor, g: torch.Tensor, *, atol: float = 1e-12, convex: bool = False
) -> TangentReport:
    """Is ``g``, used on the whole tie stratum of ``x``, an associated gradient of ``max`` (eq 15)?

    Pointwise the question is empty: a piece of a representation (6) may be the single point
    ``{x}`` with ``f^x(y) = max(x) + g.(y - x)``, so *every* ``g`` is an associated gradient at
    one point. What this function judges is a *rule*. Let ``T`` be the tie set of ``x`` (its
    maximal entries) and ``S_T`` the stratum of points with the same tie set. Then

    .. math::

        g_i = 0 \\ (i \\notin T), \\qquad \\sum_{i \\in T} g_i = 1

    holds if and only if ``y -> g.y`` equals ``max`` on all of ``S_T``, i.e. iff some
    representation of ``max`` has ``S_T`` as a piece with gradient ``g``. Equivalently, a rule
    that depends only on the tie pattern (as every rule of this module does) is an associated
    gradient of ``max`` on ``S_T`` iff it passes here: any finite cover of ``S_T`` by pieces has
    a piece with relative interior in ``S_T``, whose gradient must then satisfy both conditions.
    The second condition is the tangent condition (15) along the diagonal ``{x_i, i in T}``; the
    normal component is free (Remark 1), so ``(1.5, -0.5)`` passes at a tie of two. With
    ``convex=True`` also require ``g_i >= 0`` on ``T``: ``g`` is then a convex combination of
    the one-hot gradients, i.e. lies in Clarke's generalized gradient of ``max`` at ``x``. A
    NaN in ``g`` fails the check. Chapter: tangent.

    Args:
        x: point, shape ``(..., n)``; every row is checked.
        g: candidate gradient, same shape.
        atol: absolute tolerance on both conditions.
        convex: also require non-negative weights.

    Returns:
        A :class:`TangentReport`, truthy when valid; its ``reason`` names the first failure.

    Examples:
        >>> bool(check_tangent(torch.zeros(2), torch.tensor([1.5, -0.5])))
        True
        >>> check_tangent(torch.zeros(2), torch.tensor([1.5, -0.5]), convex=True).reason
        'negative weight -0.5 on the tie set at row 0 (convex=True)'
    """
    check_tensor("check_tangent", "x", x)
    check_tensor("check_tangent", "g", g)
    if g.shape != x.shape:
        raise ValueError(
            f"check_tangent: `g` must have the shape of `x` {tuple(x.shape)}, got {tuple(g.shape)}"
        )
    mask = tie_set(x).reshape(-1, x.shape[-1])
    g2 = g.reshape(-1, x.shape[-1]).to(torch.float64)
    off = g2.masked_fill(mask, 0.0).abs().amax(dim=-1)
    mass = g2.masked_fill(~mask, 0.0).sum(dim=-1)
    low = g2.masked_fill(~mask, float("inf")).amin(dim=-1)
    failures = [
        (~(off <= atol), lambda r: f"weight {off[r].item():g} off the tie set at row {r}"),
        (~((mass - 1.0).abs() <= atol),
         lambda r: f"tie-set weights sum to {mass[r].item():g}, not 1, at row {r}"),
    ]
    if convex:
        failures.append(
            (~(low >= -atol),
             lambda r: f"negative weight {low[r].item():g} on the tie set at row {r} (convex=True)")
        )
    for bad, why in failures:
        rows = bad.nonzero()
        if len(rows):
            return TangentReport(False, why(rows[0, 0].item()))
    return TangentReport(True, "valid associated gradient of max")
