"""Rules for the ops of :class:`~mtlib.directional._dual.Dual` that have no kink.

* smooth ops (arithmetic, matmul, linear, reductions, reshapes, indexing, ...): the tangents
  are pushed forward with ``torch.func.jvp``, the ordinary chain rule, all ``k`` at once
  (``torch.func.vmap`` over the stacked tangents: one batched pass, not ``k`` passes); the
  plain cross-entropy of a classifier has its gradient written out;
* comparisons: the lexicographic order of ``(value, t_1, ..., t_k)``, which is the order of
  the perturbed points for small ``e > 0``, so a Python ``if`` takes the branch of the
  perturbed point;
* metadata (``shape``, ``dim()``, ``dtype`` ...) and constants (``zeros_like``, ``detach``):
  evaluated on the primal, without tangent;
* conversions that would drop the tangent (``item``, ``tolist``, ...) raise.

Importing this module registers the rules in :data:`mtlib.directional._dual.RULES`.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

from mtlib.directional._dual import (
    Dual,
    funcs_named,
    one,
    op_name,
    primals,
    register_rule,
    split,
    wrap,
    wrap_one,
)
from mtlib.directional._linear import FAST
from mtlib.directional._order import lexcmp, lexsign


def smooth_rule(func, args, kwargs):
    """Push the tangents forward with ``torch.func.jvp`` (the chain rule of smooth maps).

    The hot ops that are linear in their dual argument (reshapes, linear, conv, matmul, sums,
    ``+ - * /``) take the direct rules of :mod:`mtlib.directional._linear`. Otherwise, with
    ``k > 1`` stacked tangents, the JVP runs under ``torch.func.vmap`` over them: one batched
    call, whose primal computation is not repeated per tangent.
    """
    fast = FAST.get(func)
    if fast is not None:
        result = fast(func, args, kwargs)
        if result is not None:
            return result
    leaves, spec = tree_flatten((args, kwargs))
    slots = [i for i, a in enumerate(leaves) if isinstance(a, Dual)]
    base = [a.primal if isinstance(a, Dual) else a for a in leaves]

    def call(*xs):
        filled = list(base)
        for i, x in zip(slots, xs):
            filled[i] = x
        a, k = tree_unflatten(filled, spec)
        return func(*a, **k)

    xs = tuple(leaves[i].primal for i in slots)
    singles = [one(leaves[i]) for i in slots]
    if all(t is not None for t in singles):  # k = 1
        out, tan = torch.func.jvp(call, xs, tuple(singles))
        return tree_map(lambda o, t: _wrap_output(func, o, t, stacked=False), out, tan)
    ts = [leaves[i].tangents for i in slots]
    k = max(t.shape[0] for t in ts)
    ts = tuple(t.expand(k, *t.shape[1:]) for t in ts)
    out, tan = torch.func.vmap(lambda *t: torch.func.jvp(call, xs, t), out_dims=(None, 0))(*ts)
    return tree_map(lambda o, t: _wrap_output(func, o, t), out, tan)


def _wrap_output(func, out, tan, stacked=True):
    if not isinstance(out, torch.Tensor):
        return out
    if not out.is_floating_point():
        raise NotImplementedError(
            f"mtlib.directional: `{op_name(func)}` returns a {out.dtype} tensor, which is piecewise "
            f"constant in its input: it has no directional derivative to propagate"
        )
    return wrap(out, tan) if stacked else wrap_one(out, tan)


def cross_entropy_rule(func, args, kwargs):
    """``cross_entropy(z, y)`` with class indices, no weights, no label smoothing, ``"mean"`` or
    ``"sum"``: the tangent is ``sum_i (softmax(z_i) - onehot(y_i)) . t_i`` (divided by the number
    of targets not ignored for ``"mean"``), without a ``torch.func`` transform; any other form
    takes :func:`smooth_rule`."""
    def bind(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean", label_smoothing=0.0):
        return input, target, (weight, size_average, reduce, label_smoothing), ignore_index, reduction

    z, target, extras, ignore, reduction = bind(*args, **kwargs)
    plain = (isinstance(z, Dual) and z.primal.dim() == 2 and isinstance(target, torch.Tensor)
             and not isinstance(target, Dual) and target.dtype == torch.long and target.dim() == 1
             and extras == (None, None, None, 0.0) and reduction in ("mean", "sum"))
    if not plain:
        return smooth_rule(func, args, kwargs)
    out = func(*primals(args), **primals(kwargs))
    zv = z.primal
    if bool((target == ignore).any()):
        keep = (target != ignore).to(zv.dtype).unsqueeze(1)
        slope = torch.softmax(zv, dim=1).scatter_add(1, target.clamp(min=0).unsqueeze(1), -keep) * keep
        count = keep.sum()
    else:  # the same numbers, fewer ops: every row kept
        slope = torch.softmax(zv, dim=1).scatter_add_(
            1, target.unsqueeze(1), torch.full((len(target), 1), -1.0, dtype=zv.dtype, device=zv.device))
        count = torch.tensor(float(len(target)), dtype=zv.dtype, device=zv.device)  # as keep.sum() rounds
    if reduction == "mean":
        slope = slope.div_(count)
    t = one(z)
    if t is not None:
        return wrap_one(out, (t * slope).sum())
    return wrap(out, (z.tangents * slope).sum(dim=(1, 2)))


def primal_rule(func, args, kwargs):
    """Evaluate on the primals, no tangent: metadata (``shape``, ``dtype`` ...) and ops whose
    result does not depend on the values (``zeros_like``; ``detach``, a constant by definition)."""
    return func(*primals(args), **primals(kwargs))


def lex_compare(op: str):
    """Comparison rule in the order of the perturbed points: lexicographic on
    ``(value, t_1, ..., t_k)`` (for ``k = 1``, the order of ``x + h d``, ``h -> 0+``)."""
    test = {"gt": lambda c: c > 0, "ge": lambda c: c >= 0, "lt": lambda c: c < 0,
            "le": lambda c: c <= 0, "eq": lambda c: c == 0, "ne": lambda c: c != 0}[op]

    def rule(func, args, kwargs):
        a, b = (args + tuple(kwargs.values()))[:2]
        return test(lexcmp(*split(a, like=b), *split(b, like=a)))

    return rule


def _bool_rule(func, args, kwargs):
    (x,) = args
    return bool(lexsign(*split(x)) != 0)


def _repr_rule(func, args, kwargs):
    x = args[0]
    if x.tangents.shape[0] == 1:
        return f"Dual(primal={x.primal!r}, tangent={x.tangents[0]!r})"
    return f"Dual(primal={x.primal!r}, tangents={x.tangents!r})"


def _format_rule(func, args, kwargs):
    x, spec = args
    if spec:
        _drop_rule(func, args, kwargs)
    return _repr_rule(func, args, kwargs)


def _drop_rule(func, args, kwargs):
    raise NotImplementedError(
        f"mtlib.directional: `{op_name(func)}` would drop the tangent of a dual; read "
        f"`x.primal` and `x.tangent` instead (or return the tensor from `f`)"
    )


_SMOOTH = """
add sub subtract mul multiply div divide true_divide neg negative pow square sqrt rsqrt exp exp2
expm1 log log2 log10 log1p sin cos tan tanh sinh cosh asin acos atan sigmoid logsigmoid softplus
silu gelu mish erf reciprocal softmax log_softmax logsumexp matmul mm bmm mv dot outer einsum
linear bilinear conv1d conv2d conv3d sum mean prod cumsum var reshape view view_as flatten
unflatten squeeze unsqueeze permute transpose swapaxes t movedim expand expand_as broadcast_to
repeat tile flip roll narrow select index_select gather take_along_dim diagonal diag tril triu
stack cat concat concatenate hstack vstack unbind split chunk clone contiguous to type_as double
float pad unfold where masked_fill lerp mse_loss cross_entropy nll_loss
binary_cross_entropy_with_logits batch_norm layer_norm group_norm avg_pool1d avg_pool2d avg_pool3d
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
__getitem__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__
__truediv__ __rtruediv__ __neg__ positive __pos__ __pow__ __rpow__ __matmul__ __rmatmul__ T mT
""".split()
_PRIMAL_ONLY = """
shape dtype device ndim layout requires_grad is_cuda is_leaf dim ndimension size numel nelement
is_floating_point is_complex is_contiguous stride element_size storage_offset __len__ __hash__
zeros_like ones_like full_like empty_like new_zeros new_ones new_full detach
""".split()
_COMPARE = {"gt": "gt greater __gt__", "ge": "ge greater_equal __ge__", "lt": "lt less __lt__",
            "le": "le less_equal __le__", "eq": "eq __eq__", "ne": "ne not_equal __ne__"}

register_rule(funcs_named(*_SMOOTH), smooth_rule)
register_rule(funcs_named("cross_entropy"), cross_entropy_rule)
register_rule(funcs_named(*_PRIMAL_ONLY), primal_rule)
for _op, _names in _COMPARE.items():
    register_rule(funcs_named(*_names.split()), lex_compare(_op))
register_rule(funcs_named("__bool__"), _bool_rule)
register_rule(funcs_named("__repr__"), _repr_rule)
register_rule(funcs_named("__format__"), _format_rule)
register_rule(funcs_named("item", "tolist", "numpy", "__float__", "__int__", "__index__"), _drop_rule)
