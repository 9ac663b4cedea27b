"""Direct tangent rules for the hot smooth ops: no ``torch.func`` transform per call.

For an op that is linear (or affine) in each dual argument, the tangents are the linear part
applied to the stacked tangents ``(k, *x.shape)``, with ``k`` as a leading batch dimension:

* order-preserving reshapes (``reshape``, ``view``, ``flatten``, ``unflatten``, ``squeeze``,
  ``unsqueeze``, ``view_as``, ``contiguous``, ``clone``): ``T.reshape(k, *out.shape)``;
* ``linear(x, W, b)``: ``linear(T_x, W) + x T_W^T + T_b``; ``conv{1,2,3}d(x, W, b, ...)``: the
  convolution of ``T_x`` with ``k`` folded into the batch, plus that of ``x`` with ``T_W`` (``k``
  folded into the output channels), plus ``T_b``; ``x @ W`` and ``W @ x``;
* sums and means over dims (shifted by one), negation;
* for one direction, selections and reorderings of their first argument (``split``, ``chunk``,
  ``unbind``, indexing, ``narrow``, ``select``, ``gather``, ``permute``, ``transpose``, ``flip``,
  ``roll``, ``expand``, ``repeat`` ...): the same op on the tangent;
* ``a + b``, ``a - b`` and ``a * b`` with one or both dual (product rule), ``a / c`` for a
  constant ``c``.

For one direction (``k = 1``, :func:`~mtlib.directional._dual.one`) the same products take the
tangent without its stacking dim, and the parts of a sum are added in place: no view and no
fresh temporary per op. These are the chain rule written out (the smooth ops' Jacobians are
constant or bilinear), so the result equals ``torch.func.jvp``'s up to the order of
floating-point operations. Every other case, and any unusual argument, returns ``None`` and the
caller falls back to ``torch.func.jvp`` under ``vmap``
(:func:`mtlib.directional._smooth.smooth_rule`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlib.directional._dual import Dual, funcs_named, one, primals, split, wrap, wrap_one
from mtlib.directional._order import align


def _duals(args, kwargs) -> list:
    return [a for a in (*args, *kwargs.values()) if isinstance(a, Dual)]


def _single(*duals) -> bool:
    """Whether every dual among ``duals`` (``None`` and constants skipped) carries one tangent:
    then the rules below take the tangents as they are, of the primals' shapes (``one``)."""
    return all(one(a) is not None for a in duals if isinstance(a, Dual))


def _reshape(func, args, kwargs):
    if any(isinstance(a, torch.dtype) for a in (*args, *kwargs.values())) or len(_duals(args, kwargs)) != 1:
        return None
    if not isinstance(args[0], Dual):
        return None
    out = func(*primals(args), **primals(kwargs))
    if _single(args[0]):
        return wrap_one(out, one(args[0]).reshape(out.shape))
    t = args[0].tangents
    return wrap(out, t.reshape(t.shape[0], *out.shape))


def _pick(func, args, kwargs):
    """Selections and reorderings of one dual, the first argument (``split``, ``x[i]``,
    ``permute``, ``flip`` ...), for one direction: the tangent is the same op on the tangent."""
    x = args[0] if args else None
    if not isinstance(x, Dual) or one(x) is None or _holds_dual((args[1:], kwargs)):
        return None
    out, tangent = func(x.primal, *args[1:], **kwargs), func(one(x), *args[1:], **kwargs)
    if isinstance(out, torch.Tensor):
        return wrap_one(out, tangent)
    return type(out)(wrap_one(o, t) for o, t in zip(out, tangent))  # split, chunk, unbind


def _holds_dual(tree) -> bool:
    if isinstance(tree, (list, tuple)):
        return any(_holds_dual(a) for a in tree)
    if isinstance(tree, dict):
        return any(_holds_dual(a) for a in tree.values())
    return isinstance(tree, Dual)


def _total(parts: list) -> torch.Tensor:
    """``parts[0] + parts[1] + ...``, added in place into ``parts[0]`` (a fresh product whose
    backward does not read it) when there are several: fewer fresh pages, the same sums."""
    total = parts[0]
    for part in parts[1:]:
        total = total.add_(part)
    return total


def _linear(func, args, kwargs):
    def bind(input, weight, bias=None):
        return input, weight, bias

    x, weight, bias = bind(*args, **kwargs)
    out = func(*primals(args), **primals(kwargs))
    parts = []
    if _single(x, weight, bias):  # the same sum, without the stacking dim
        if isinstance(x, Dual):
            parts.append(F.linear(one(x), primals(weight)))
        if isinstance(weight, Dual):
            parts.append(F.linear(primals(x), one(weight)))
        if isinstance(bias, Dual):
            parts.append(one(bias))
        return wrap_one(out, _total(parts))
    if isinstance(x, Dual):
        parts.append(F.linear(x.tangents, primals(weight)))
    if isinstance(weight, Dual):  # x W_t^T for each tangent W_t (k > 1: one batched matmul)
        xv, t = primals(x), weight.tangents
        if len(t) == 1:
            parts.append(F.linear(xv, t.squeeze(0)).unsqueeze(0))  # squeeze: no zero-filled backward
        else:
            parts.append((xv.reshape(1, -1, xv.shape[-1]) @ t.mT).reshape(len(t), *out.shape))
    if isinstance(bias, Dual):
        parts.append(align(bias.tangents, out.dim()))
    return wrap(out, sum(parts[1:], parts[0]))


def _conv(nd: int):
    def rule(func, args, kwargs):
        def bind(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            return input, weight, bias, (stride, padding, dilation, groups)

        x, weight, bias, rest = bind(*args, **kwargs)
        xv, wv = primals(x), primals(weight)
        channel = xv.dim() - nd - 1  # 1 batched, 0 unbatched
        if isinstance(weight, Dual) and len(weight.tangents) > 1 and rest[3] != 1:
            return None  # k > 1 tangents fold into the output channels only without groups
        out = func(*primals(args), **primals(kwargs))
        parts = []
        if _single(x, weight, bias):  # the same sum, without the stacking dim
            if isinstance(x, Dual):
                parts.append(func(one(x), wv, None, *rest))
            if isinstance(weight, Dual):
                parts.append(func(xv, one(weight), None, *rest))
            if isinstance(bias, Dual):
                parts.append(one(bias).reshape(-1, *([1] * nd)))
            return wrap_one(out, _total(parts))
        if isinstance(x, Dual):
            t = x.tangents
            if channel:  # batched: fold k into the batch
                parts.append(func(t.reshape(-1, *xv.shape[1:]), wv, None, *rest).reshape(len(t), *out.shape))
            else:  # unbatched: k is the batch
                parts.append(func(t, wv, None, *rest))
        if isinstance(weight, Dual):  # conv(x, W_t) for each tangent W_t: k folded into the channels
            t = weight.tangents
            folded = func(xv, t.reshape(-1, *wv.shape[1:]), None, *rest)
            parts.append(folded.unflatten(channel, (len(t), wv.shape[0])).movedim(channel, 0))
        if isinstance(bias, Dual):
            parts.append(bias.tangents.reshape(len(bias.tangents), *([1] * channel), -1, *([1] * nd)))
        return wrap(out, sum(parts[1:], parts[0]))

    return rule


def _matmul(func, args, kwargs):
    if kwargs or len(args) != 2 or len(_duals(args, kwargs)) != 1:
        return None
    a, b = args
    if func in _RIGHT:  # __rmatmul__(self, other) = other @ self
        a, b = b, a
    out = func(*primals(args))
    if isinstance(a, Dual) and torch.is_tensor(b) and b.dim() <= 2:
        return wrap(out, a.tangents @ b)
    if isinstance(b, Dual) and torch.is_tensor(a) and a.dim() <= 2:
        if b.dim() == 1:
            return wrap(out, b.tangents @ (a.mT if a.dim() == 2 else a))
        return wrap(out, a @ b.tangents)
    return None


def _dims(x: Dual, dim):
    if dim is None:
        return tuple(range(1, x.dim() + 1))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % max(x.dim(), 1) + 1 for d in dims) if x.dim() else ()


def _reduce(func, args, kwargs):
    def bind(input, dim=None, keepdim=False, **extra):
        return input, dim, keepdim, extra

    x, dim, keepdim, extra = bind(*args, **kwargs)
    if extra or not isinstance(x, Dual) or not isinstance(dim, (type(None), int, tuple, list)):
        return None
    if isinstance(dim, (tuple, list)) and not dim:  # dim=() has changed meaning across versions
        return None
    out = func(*primals(args), **primals(kwargs))
    dims = _dims(x, dim)
    reduce = torch.sum if "sum" in func.__name__ else torch.mean
    if _single(x):
        t = one(x)
        if not dims:
            return wrap_one(out, t)
        reduced = reduce(t, dim=tuple(d - 1 for d in dims), keepdim=bool(keepdim))
        return wrap_one(out, reduced.reshape(out.shape))
    t = x.tangents
    if not dims:
        return wrap(out, t)
    return wrap(out, reduce(t, dim=dims, keepdim=bool(keepdim)).reshape(t.shape[0], *out.shape))


def _neg(func, args, kwargs):
    (x,) = args
    if _single(x):
        return wrap_one(func(x.primal), -one(x))
    return wrap(func(x.primal), -x.tangents)


def _arith(op: str):
    def rule(func, args, kwargs):
        if kwargs or len(args) != 2:
            return None
        a, b = args
        if func in _RIGHT:
            a, b = b, a
        if op == "div" and isinstance(b, Dual):
            return None
        out = func(*primals(args))
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return None
        if _single(a, b):  # the same arithmetic on the tangents of one direction
            return wrap_one(out, _arith_one(op, a, b, out))
        (va, ta), (vb, tb) = split(a, like=out), split(b, like=out)
        nd = out.dim()
        ta, tb = align(ta, nd), align(tb, nd)
        da, db = isinstance(a, Dual), isinstance(b, Dual)
        if op == "mul":
            left, right = (ta * vb if da else None), (va * tb if db else None)
        elif op == "div":
            left, right = ta / vb, None
        else:
            left, right = ta, (tb if op == "add" else -tb)
        t = left + right if da and db else (left if da else right)
        return wrap(out, t)

    return rule


def _arith_one(op: str, a, b, out) -> torch.Tensor:
    """The tangent of ``a op b`` for one direction; a number is a tensor of ``out``'s dtype, as
    in :func:`~mtlib.directional._dual.split` (a float16 ``x * 0.1`` multiplies by half(0.1))."""
    da, db = isinstance(a, Dual), isinstance(b, Dual)
    va, vb = (a.primal if da else _tensor(a, out)), (b.primal if db else _tensor(b, out))
    ta, tb = (one(a) if da else None), (one(b) if db else None)
    if op == "mul":
        left, right = (ta * vb if da else None), (va * tb if db else None)
    elif op == "div":
        left, right = ta / vb, None
    else:
        left, right = ta, (tb if op == "add" else -tb) if db else None
    return left + right if da and db else (left if da else right)


def _tensor(a, like: torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=like.dtype, device=like.device)


_RIGHT = set(funcs_named("__rmatmul__", "__radd__", "__rsub__", "__rmul__"))

FAST: dict = {}
for _f in funcs_named("reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as",
                      "contiguous", "clone"):
    FAST[_f] = _reshape
for _f in funcs_named("split", "chunk", "unbind", "narrow", "select", "__getitem__", "index_select",
                      "gather", "take_along_dim", "permute", "transpose", "swapaxes", "t", "T", "mT",
                      "movedim", "expand", "broadcast_to", "flip", "roll", "diagonal", "tril", "triu",
                      "repeat", "tile"):
    FAST[_f] = _pick
for _f in funcs_named("linear"):
    FAST[_f] = _linear
for _n in (1, 2, 3):
    for _f in funcs_named(f"conv{_n}d"):
        FAST[_f] = _conv(_n)
for _f in funcs_named("matmul", "__matmul__", "__rmatmul__", "mm", "mv"):
    FAST[_f] = _matmul
for _f in funcs_named("sum", "mean"):
    FAST[_f] = _reduce
for _f in funcs_named("neg", "negative", "__neg__"):
    FAST[_f] = _neg
_ARITH = {"add": ("add", "__add__", "__radd__"), "sub": ("sub", "subtract", "__sub__", "__rsub__"),
          "mul": ("mul", "multiply", "__mul__", "__rmul__"),
          "div": ("div", "divide", "true_divide", "__truediv__")}
for _op, _names in _ARITH.items():
    for _f in funcs_named(*_names):
        FAST[_f] = _arith(_op)
