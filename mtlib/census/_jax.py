"""The census in JAX: the same kinks, JAX's derivatives, the same judge.

Each :class:`JaxCase` is a JAX function of a flat float64 array with the *same values* as a
torch :class:`~mtlib.census.cases.Case` (``reference``) at the same point. :func:`records`
measures the Jacobian JAX returns there in reverse mode (``jax.vjp``, pulled back along each
output) and in forward mode (``jax.jvp``, pushed forward along each input), compiled by
``jax.jit`` as a training step is, and hands it, as data, to the census's judge
(:func:`mtlib.census._judge.judge`), which reads only the values and one-sided derivatives of
the torch reference. So a PyTorch row and a JAX row that differ are judged on the same function
with the same rules.

``mirrors`` names the row of ``CASES`` a JAX case computes (same function, same point, same
variables); :data:`JAX_GAPS` lists every row of ``CASES`` without a JAX counterpart, with the
reason, so that no PyTorch row is dropped silently. One JAX row has no PyTorch row of the same
function (``x.at[i].max(v)`` in (self, v): JAX's scatter max always includes the destination)
and carries its own torch reference.

float64: everything JAX computes here runs inside :func:`x64`, JAX's own context manager local
to the thread (``jax.enable_x64(True)``; ``jax.experimental.enable_x64()`` before JAX 0.8, e.g.
Colab's 0.7.2): x64 is on while this module measures and the caller's JAX session is left as it
was (no global ``jax.config.update``).

Chapter: jax.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import jax.scipy.stats
import numpy as np
import pandas as pd
import torch
from jax import lax

from mtlib.census._format import format_jacobian
from mtlib.census._history import history
from mtlib.census.cases import CASES, Case

__all__ = ["JAX_CASES", "JAX_GAPS", "JaxCase", "jacobians", "jax_boustany_f", "jax_derivative_table",
           "jax_max1", "jax_maxpool_f", "jax_relu_formulations", "releases_side_by_side", "side_by_side",
           "x64"]


@dataclass(frozen=True)
class JaxCase:
    """One JAX op at one kink, for ``mtlib.census.run(framework="jax")``.

    Attributes:
        op: the call as written in JAX (a label).
        f: JAX function of a flat float64 array (flattened into outputs).
        mirrors: the row of ``mtlib.census.cases.CASES`` with the same function at the same
            point in the same variables (``None`` for a JAX op PyTorch's census lacks).
        reference: the torch case the judge reads (values, one-sided derivatives, stratum,
            kink, variables); ``None`` means ``mirrors``. Give one where JAX's rule is
            constant on another set than PyTorch's (``dataclasses.replace(mirror, ...)``) or
            where no row of ``CASES`` computes this function.
    """

    op: str
    f: Callable
    mirrors: Case | None = None
    reference: Case | None = None

    def __post_init__(self):
        if self.judged is None:
            raise ValueError(f"JaxCase {self.op!r}: give `mirrors` or `reference` (the torch case the "
                             "judge reads)")

    @property
    def judged(self) -> Case:
        """The torch case the judge reads: ``reference``, else ``mirrors``."""
        return self.reference if self.reference is not None else self.mirrors


_BY_KEY = {(c.op, c.kink): c for c in CASES}


def _row(op: str, kink: str) -> Case:
    """The row of ``CASES`` for (op, kink); a ``KeyError`` if the PyTorch census renamed it."""
    return _BY_KEY[op, kink]


def _pair(f: Callable) -> Callable:
    return lambda v: f(v[:1], v[1:])


def _max_window(shape: tuple[int, ...], window: tuple[int, ...], strides: tuple[int, ...]) -> Callable:
    """``lax.reduce_window`` max over a flat input reshaped to ``shape`` (no padding)."""
    return lambda v: lax.reduce_window(v.reshape(shape), -jnp.inf, lax.max, window, strides, "VALID")


_SEGMENTS = np.zeros(3, dtype=np.int32)
_SCATTER = "scatter_reduce('amax', include_self=False)"
_AT_MAX = "x.at[(0, 0, 0)].max(v)"


def _at_max(v):
    """``self.at[(0, 0, 0)].max(src)`` with ``v = (self, src_1, src_2, src_3)``: max of all four."""
    return v[:1].at[_SEGMENTS].max(v[1:])


def _torch_at_max(v: torch.Tensor) -> torch.Tensor:
    """The same values in torch: ``scatter_reduce('amax', include_self=True)``."""
    return v[:1].scatter_reduce(0, torch.zeros(3, dtype=torch.long), v[1:], "amax", include_self=True)


_ELEMENTWISE = (
    ("jax.nn.relu", jax.nn.relu, "torch.relu", (0.0,)),
    ("jnp.maximum(x, 0)", lambda x: jnp.maximum(x, 0.0), "torch.clamp_min(x, 0)", (0.0,)),
    ("jax.nn.relu6", jax.nn.relu6, "F.relu6", (0.0, 6.0)),
    ("jax.nn.hard_tanh", jax.nn.hard_tanh, "F.hardtanh", (-1.0, 1.0)),
    ("jnp.clip(x, 0, 6)", lambda x: jnp.clip(x, 0.0, 6.0), "torch.clamp(x, 0, 6)", (0.0, 6.0)),
    ("lax.clamp(0, x, 6)", lambda x: lax.clamp(0.0, x, 6.0), "torch.clamp(x, 0, 6)", (0.0, 6.0)),
    ("jnp.where(x > 0, x, 0)", lambda x: jnp.where(x > 0, x, 0.0), "F.threshold(x, 0, 0)", (0.0,)),
    ("jnp.abs", jnp.abs, "torch.abs", (0.0,)),
    ("jax.nn.leaky_relu(x, 0.1)", lambda x: jax.nn.leaky_relu(x, 0.1), "F.leaky_relu(x, 0.1)", (0.0,)),
    ("jax.nn.elu(x, 0.5)", lambda x: jax.nn.elu(x, 0.5), "F.elu(x, 0.5)", (0.0,)),
    ("jax.nn.selu", jax.nn.selu, "F.selu", (0.0,)),
    ("jax.nn.celu(x, 0.5)", lambda x: jax.nn.celu(x, 0.5), "F.celu(x, 0.5)", (0.0,)),
    ("jax.nn.hard_swish", jax.nn.hard_swish, "F.hardswish", (-3.0, 3.0)),
    ("jax.nn.hard_sigmoid", jax.nn.hard_sigmoid, "F.hardsigmoid", (-3.0, 3.0)),
)

_PAIRS = (
    ("jnp.maximum(x, y)", jnp.maximum, "torch.maximum(x, y)"),
    ("jnp.minimum(x, y)", jnp.minimum, "torch.minimum(x, y)"),
    ("jnp.fmax(x, y)", jnp.fmax, "torch.fmax(x, y)"),
    ("jnp.fmin(x, y)", jnp.fmin, "torch.fmin(x, y)"),
    ("jnp.clip(x, min=y)", lambda x, y: jnp.clip(x, min=y), "torch.clamp(x, min=y)"),
    ("jnp.clip(x, max=y)", lambda x, y: jnp.clip(x, max=y), "torch.clamp(x, max=y)"),
)

_FULL, _PARTIAL = "x = (0, 0, 0)", "x = (0, 0, -1)"
_REDUCTIONS = (  # (JAX op, f, torch op, kinks)
    ("jnp.max(x)", jnp.max, "torch.max(x)", (_FULL, _PARTIAL)),
    ("jnp.amax(x)", jnp.amax, "torch.amax(x)", (_FULL, _PARTIAL)),
    ("jnp.min(x)", jnp.min, "torch.min(x)", (_FULL,)),
    ("jnp.amin(x)", jnp.amin, "torch.amin(x)", (_FULL,)),
    ("jnp.max(x, axis=0)", lambda x: jnp.max(x, axis=0), "torch.amax(x, dim=0)", (_FULL,)),
    ("jnp.median(x)", jnp.median, "torch.median(x)", (_FULL, "x = (0, 0, 1)")),
    ("jnp.median(x, axis=0)", lambda x: jnp.median(x, axis=0), "torch.median(x, dim=0)",
     (_FULL, "x = (0, 1, 0)")),
    ("jnp.quantile(x, 0.25)", lambda x: jnp.quantile(x, 0.25), "torch.quantile(x, 0.25)", (_FULL,)),
    ("jnp.partition(x, 0)[0]", lambda x: jnp.partition(x, 0)[0], "torch.kthvalue(x, 1)", (_FULL,)),
    ("jnp.partition(x, 1)[1]", lambda x: jnp.partition(x, 1)[1], "torch.kthvalue(x, 2)", (_FULL, _PARTIAL)),
    ("jax.scipy.stats.mode(x)", lambda x: jax.scipy.stats.mode(x).mode, "torch.mode(x)", (_FULL,)),
    ("lax.top_k(x, 2)", lambda x: lax.top_k(x, 2)[0], "torch.topk(x, 2)", (_FULL, _PARTIAL)),
    ("jnp.sort(x)", jnp.sort, "torch.sort(x)", (_FULL, _PARTIAL)),
    ("lax.cummax(x, 0)", lambda x: lax.cummax(x, 0), "torch.cummax(x, 0)", (_FULL, "x = (0, -1, 0)")),
    ("lax.cummin(x, 0)", lambda x: lax.cummin(x, 0), "torch.cummin(x, 0)", (_FULL,)),
    ("jax.nn.logsumexp(x)", jax.nn.logsumexp, "torch.logsumexp(x, 0)", ("x = (-inf, -inf), outside R^n",)),
    ("jnp.linalg.vector_norm(x)", jnp.linalg.vector_norm, "torch.linalg.vector_norm(x)", ("x = 0",)),
    ("jnp.linalg.vector_norm(x, ord=1)", lambda x: jnp.linalg.vector_norm(x, ord=1),
     "torch.linalg.vector_norm(x, 1)", ("x = 0",)),
    ("jnp.linalg.vector_norm(x, ord=inf)", lambda x: jnp.linalg.vector_norm(x, ord=jnp.inf),
     "torch.linalg.vector_norm(x, inf)", ("x = 0", "x = (1, -1)")),
    ("jnp.linalg.matrix_norm(X, ord='nuc')", lambda x: jnp.linalg.matrix_norm(x.reshape(2, 2), ord="nuc"),
     "torch.linalg.matrix_norm(X, 'nuc')", ("x = 0",)),
    ("lax.reduce_window(max, (2,), (1,))", _max_window((3,), (2,), (1,)), "F.max_pool1d(x, 2, stride=1)",
     (_FULL,)),
    ("lax.reduce_window(max, (3,), (3,))", _max_window((3,), (3,), (3,)), "F.max_pool1d(x, 3)",
     ("x = (-1, 0, 0)",)),
    ("lax.reduce_window(max, (2, 2), (2, 2))", _max_window((2, 2), (2, 2), (2, 2)), "F.max_pool2d(x, 2)",
     ("all-zero window",)),
    ("lax.reduce_window(max, (2, 2, 2), (2, 2, 2))", _max_window((2, 2, 2), (2, 2, 2), (2, 2, 2)),
     "F.max_pool3d(x, 2)", ("all-zero window",)),
    ("jax.ops.segment_max(src, (0, 0, 0), 1)", lambda v: jax.ops.segment_max(v, _SEGMENTS, 1), _SCATTER,
     ("src = (0, -1, -2), self = 0 (differentiable)",)),
    (_AT_MAX + ", self = v_i = t", lambda t: _at_max(jnp.broadcast_to(t, (4,))), _SCATTER,
     tuple(f"self = src_i = t = {t:g}" for t in (0.0, 1.0, -2.5))),
)

_SEGMENT_TIE = _row(_SCATTER, "src = (0, 0, 0), self = 0")

JAX_CASES: tuple[JaxCase, ...] = (
    *(JaxCase(op, f, _row(t_op, f"x = {x:g}")) for op, f, t_op, xs in _ELEMENTWISE for x in xs),
    *(JaxCase(op, _pair(f), _row(t_op, "x = y = 0")) for op, f, t_op in _PAIRS),
    JaxCase("jnp.clip(x, y, z)", lambda v: jnp.clip(v[:1], v[1:2], v[2:]),
            _row("torch.clamp(x, min=y, max=z)", "x = y = 0, z = 1")),
    JaxCase("lax.clamp(y, x, z)", lambda v: lax.clamp(v[1:2], v[:1], v[2:]),
            _row("torch.clamp(x, min=y, max=z)", "x = y = 0, z = 1")),
    *(JaxCase(op, f, _row(t_op, kink)) for op, f, t_op, kinks in _REDUCTIONS for kink in kinks),
    # segment_max has no destination entry: its rule is read on the tie stratum of src, not on the
    # point that PyTorch's include_self=False rule is constant on.
    JaxCase("jax.ops.segment_max(src, (0, 0, 0), 1)", lambda v: jax.ops.segment_max(v, _SEGMENTS, 1),
            _SEGMENT_TIE, replace(_SEGMENT_TIE, stratum=None)),
    JaxCase(_AT_MAX, _at_max, None,
            Case("scatter_reduce('amax', include_self=True)", "self = v = (0, 0, 0)", _torch_at_max,
                 (0.0,) * 4, "ties", ((True,) * 4,), variables="(self, v)")),
)
"""The JAX counterparts of the census's rows, and one JAX row of its own (``x.at[i].max(v)``)."""

_MISSING = {
    "F.rrelu(x, training=False)": "jax.nn has no rrelu",
    "F.prelu(x, 0.25)": "jax.nn has no prelu (a learned slope is a layer of Flax, not of JAX)",
    "F.softshrink(x, 0.5)": "jax.nn has no softshrink",
    "F.l1_loss(x, 0)": "JAX has no loss functions (they live in Optax)",
    "F.margin_ranking_loss(x, 0, 1)": "JAX has no loss functions (they live in Optax)",
    "F.hinge_embedding_loss(x, -1, margin=0)": "JAX has no loss functions (they live in Optax)",
    "torch.clamp_min(x, y)": "JAX has no clamp_min: jnp.clip(x, min=y) is the row of torch.clamp(x, min=y)",
    "torch.clamp_max(x, y)": "JAX has no clamp_max: jnp.clip(x, max=y) is the row of torch.clamp(x, max=y)",
    "torch.max(x, dim=0)": "JAX has no max with indices (jnp.max(x, axis=0): the row of torch.amax)",
    "torch.min(x, dim=0)": "JAX has no min with indices",
    "F.lp_pool1d(x, 2, 2)": "JAX has no power-average pooling",
    "F.adaptive_max_pool1d(x, 1)": "JAX has no adaptive pooling",
    "F.adaptive_max_pool2d(x, 1)": "JAX has no adaptive pooling",
    "F.fractional_max_pool2d(x, 2, 1)": "JAX has no fractional pooling",
    "F.embedding_bag(mode='max')": "JAX has no embedding_bag",
    _SCATTER: "JAX's scatter max x.at[i].max(v) always includes the destination, a different function "
              "in (self, src): see the row x.at[(0, 0, 0)].max(v)",
}
_COVERED = {(c.mirrors.op, c.mirrors.kink) for c in JAX_CASES if c.mirrors is not None}

JAX_GAPS: tuple[tuple[Case, str], ...] = tuple((c, _MISSING[c.op]) for c in CASES
                                               if (c.op, c.kink) not in _COVERED)
"""Every row of ``CASES`` without a JAX counterpart, with the reason (a ``KeyError`` at import
if a new PyTorch row has neither a counterpart nor a reason)."""


def x64():
    """A context manager that turns on float64 in JAX for its block only (thread-local).

    Examples:
        >>> with x64():
        ...     jnp.zeros(1).dtype.name
        'float64'
    """
    if hasattr(jax, "enable_x64"):  # JAX >= 0.8
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # JAX 0.7 (Colab's, Aug 2026)

    return enable_x64()


def _both(f: Callable, v):
    """Reverse-mode rows (``jax.jacrev``: ``jax.vjp`` pulled back along each output) and
    forward-mode columns (``jax.jacfwd``: ``jax.jvp`` along each input)."""
    def flat(u):
        return jnp.ravel(f(u))

    return jax.jacrev(flat)(v), jax.jacfwd(flat)(v)


# XLA's LLVM optimisation off: the program runs once, and compiling it dominates (half the time).
# Code generation only, no fast-math: the numbers equal eager jax.vjp/jax.jvp (tested).
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jacobians(pairs: Sequence[tuple[Callable, tuple[float, ...]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The Jacobians JAX returns for each ``(f, x)``: ``(reverse, forward)`` in float64.

    Reverse: ``jax.jacrev``, the ``jax.vjp`` pull-back of each output's basis vector (rows).
    Forward: ``jax.jacfwd``, the ``jax.jvp`` push-forward of each input's (columns). All pairs
    are compiled as one ``jax.jit`` program (one compilation instead of one per op; each pair's
    arithmetic is untouched by the others), under :func:`x64`.

    Examples:
        >>> [(rev, fwd)] = jacobians([(jnp.abs, (0.0,))])
        >>> rev.tolist(), fwd.tolist()
        ([[1.0]], [[1.0]])
    """
    functions = [f for f, _ in pairs]
    with x64():
        points = [jnp.asarray(x, dtype=jnp.float64) for _, x in pairs]
        program = jax.jit(lambda xs: [_both(f, v) for f, v in zip(functions, xs)]).lower(points)
        out = program.compile(compiler_options=_FAST_COMPILE)(points)
        return [(np.asarray(rev), np.asarray(fwd)) for rev, fwd in out]


def records(cases: Sequence[JaxCase], record: Callable) -> list:
    """``record(reference, op, reverse, forward)`` for each case, the Jacobians as torch float64."""
    measured = jacobians([(case.f, case.judged.x) for case in cases])
    return [record(case.judged, case.op, torch.tensor(rev), torch.tensor(fwd))
            for case, (rev, fwd) in zip(cases, measured)]


def side_by_side(torch_records: list, jax_records: list) -> pd.DataFrame:
    """PyTorch and JAX on every row of ``CASES``: one line per JAX counterpart, one per gap.

    ``torch_records`` from ``run()``, ``jax_records`` from ``run(framework="jax")`` (matched by
    op and kink). Columns: the PyTorch op, kink, variables, the JAX op (``-`` for a gap), both
    reverse-mode Jacobians and rules, JAX's verdicts, ``same`` (the two reverse Jacobians agree
    to 1e-6; ``None`` for a gap) and, for a gap, the reason.
    """
    by_torch = {(r.op, r.kink): r for r in torch_records}
    by_jax = {(r.op, r.kink): r for r in jax_records}
    lines = []
    for case in JAX_CASES:
        if case.mirrors is None or (case.op, case.judged.kink) not in by_jax:
            continue
        t, j = by_torch[case.mirrors.op, case.mirrors.kink], by_jax[case.op, case.judged.kink]
        same = np.allclose(np.array(t.reverse), np.array(j.reverse), atol=1e-6, rtol=0, equal_nan=True)
        lines.append({"PyTorch": t.op, "kink": t.kink, "variables": t.variables, "JAX": j.op,
                      "PyTorch reverse": format_jacobian(t.reverse),
                      "JAX reverse": format_jacobian(j.reverse), "PyTorch rule": t.rule, "JAX rule": j.rule,
                      "JAX valid": j.valid, "JAX clarke": j.clarke, "same": bool(same), "gap": ""})
    for case, reason in JAX_GAPS:
        t = by_torch[case.op, case.kink]
        lines.append({"PyTorch": t.op, "kink": t.kink, "variables": t.variables, "JAX": "-",
                      "PyTorch reverse": format_jacobian(t.reverse), "JAX reverse": "",
                      "PyTorch rule": t.rule, "JAX rule": "", "JAX valid": None, "JAX clarke": None,
                      "same": None, "gap": reason})
    return pd.DataFrame(lines)


def releases_side_by_side(jax_records: list) -> pd.DataFrame:
    """JAX's reverse-mode answer beside PyTorch's on every shipped release (``history()``).

    One line per JAX row that mirrors a census row: ``PyTorch``, ``kink``, ``JAX``, ``JAX
    reverse`` and one column per shipped torch release with PyTorch's answer there (formatted
    by ``format_jacobian``); ``differs on`` lists the releases whose answer is not JAX's.
    """
    shipped = history().set_index(["op", "kink"])
    by_jax = {(r.op, r.kink): r for r in jax_records}
    lines = []
    for case in JAX_CASES:
        if case.mirrors is None or (case.op, case.judged.kink) not in by_jax:
            continue
        answer = format_jacobian(by_jax[case.op, case.judged.kink].reverse)
        torch_answers = shipped.loc[(case.mirrors.op, case.mirrors.kink)]
        lines.append({"PyTorch": case.mirrors.op, "kink": case.mirrors.kink, "JAX": case.op,
                      "JAX reverse": answer, **torch_answers.to_dict(),
                      "differs on": ", ".join(r for r, v in torch_answers.items() if v != answer)})
    return pd.DataFrame(lines)


def jax_relu_formulations() -> dict[str, Callable]:
    """Ways of writing ``relu(x) = max(x, 0)`` in JAX: the same function, derivatives at 0 differ.

    Examples:
        >>> list(jax_relu_formulations())[:3]
        ['jax.nn.relu(x)', 'jnp.maximum(x, 0)', 'jnp.clip(x, min=0)']
    """
    return {
        "jax.nn.relu(x)": jax.nn.relu,
        "jnp.maximum(x, 0)": lambda x: jnp.maximum(x, 0.0),
        "jnp.clip(x, min=0)": lambda x: jnp.clip(x, min=0.0),
        "lax.clamp(0, x, inf)": lambda x: lax.clamp(0.0, x, jnp.inf),
        "(x + |x|) / 2": lambda x: (x + jnp.abs(x)) / 2,
        "jnp.where(x > 0, x, 0)": lambda x: jnp.where(x > 0, x, 0.0),
    }


def jax_max1(x):
    """The paper's ``max1`` (Table 1) in JAX: a Python loop with a strict ``>``, run eagerly."""
    res = x[0]
    for i in range(1, x.shape[0]):
        if x[i] > res:
            res = x[i]
    return res


def jax_boustany_f(t, x=(1.0, 2.0, 3.0, 4.0)):
    """Boustany's ``f(t) = max1(t x) - jnp.max(t x)`` (Sec 4.3) in JAX, identically 0."""
    tx = t * jnp.asarray(x, dtype=jnp.asarray(t).dtype)
    return jax_max1(tx) - jnp.max(tx)


def jax_maxpool_f(t, a: float = 1.0, b: float = 4.0):
    """``f(t) = maxpool(a t, b t) - maxpool(b t, a t)`` (Sec 4.4) in JAX, identically 0; the pool
    is ``lax.reduce_window`` max with a window of 2 and stride 1 (``MaxPool1d(2, stride=1)``)."""
    def pool(v):
        return lax.reduce_window(v, -jnp.inf, lax.max, (2,), (1,), "VALID")[0]

    return pool(jnp.stack([a * t, b * t])) - pool(jnp.stack([b * t, a * t]))


def jax_derivative_table(f: Callable, ts: Iterable[float]) -> pd.DataFrame:
    """``jax.grad`` of a scalar JAX function at each ``t`` in float64 (Tables 2 and 3 in JAX).

    Eager (no ``jit``): a Python ``if`` on a value, as in :func:`jax_max1`, needs concrete values.

    Examples:
        >>> jax_derivative_table(jax_boustany_f, [0.0, 1.0])["f'(t)"].tolist()
        [-1.5, 0.0]
    """
    rows = []
    with x64():
        for t in ts:
            tt = jnp.asarray(float(t), dtype=jnp.float64)
            rows.append({"t": float(t), "f(t)": float(f(tt)), "f'(t)": float(jax.grad(f)(tt))})
    return pd.DataFrame(rows)
