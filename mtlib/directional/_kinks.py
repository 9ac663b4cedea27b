"""Rules at the kinks of max, relu, abs, clamp and maxpool (chapters directional, lexicographic).

For ``e -> 0+`` the perturbed entries ``v_i + e t_i1 + ... + e^k t_ik`` are ordered like the
rows ``(v_i, t_i1, ..., t_ik)`` in lexicographic order (:mod:`mtlib.directional._order`), so

.. math::

    \\max_i (v_i + e t_{i1} + \\dots) = \\max_i v_i + e\\, t_{i^*1} + \\dots + e^k t_{i^*k}
    + o(e^k), \\qquad i^* = \\operatorname{lexmax}_{i \\in T} (t_{i1}, \\dots, t_{ik}),

with ``T = {i : v_i = max_j v_j}`` the tie set of Sec 4.3, eq 19 (Nesterov 2005; Khan &
Barton 2015): the first direction that breaks the tie decides, then the next. For
``k = 1`` this is the one-sided rule ``max'(x; d) = max_{i in T} d_i``. ``relu = max(., 0)``,
``abs(v) = fsign(v, t) (v, t)``, ``clamp`` and the maxpools (a max per window) follow.
Values always come from torch itself (exact parity, torch's own argument checks); only the
tangents are computed here. A NaN value gets a NaN tangent.
"""

from __future__ import annotations

import torch

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
from mtlib.directional._order import flatten_dims, lex_max_along, lexmax, lexmin, lexsign, lexsign_one


def finish(out: torch.Tensor, tangents: torch.Tensor, stacked: bool = True,
           nan_free: bool = False) -> Dual:
    """The dual ``(out, tangents)``, NaN tangents where ``out`` is NaN; ``stacked=False`` for
    the one tangent of a ``k = 1`` rule (shape of ``out``); ``nan_free`` when the rule knows
    ``out`` holds no NaN (then it is not screened)."""
    tangents = tangents.to(out.dtype)
    if not nan_free and torch.isnan(out.sum()):  # a cheap screen: NaN if an entry is (or inf - inf)
        tangents = torch.where(out.isnan(), out, tangents)
    return wrap(out, tangents) if stacked else wrap_one(out, tangents)


def single(x) -> torch.Tensor | None:
    """The tangent of ``x`` if it is a one-direction dual (see :func:`~mtlib.directional._dual.one`)."""
    return one(x) if isinstance(x, Dual) else None


def _pair(a, b):
    return (*split(a, like=b), *split(b, like=a))


def _reduce(sign: int, x, dims, keepdim: bool):
    """``(tangents, index)`` of the lexicographic max (``sign = -1``: min) of ``x`` over
    ``dims`` (int, tuple, or ``()`` for all); ``index`` is into the flattened ``dims``."""
    v, t = split(x)
    v, t, keep = flatten_dims(sign * v, t, dims)
    tangent, index = lex_max_along(v, sign * t, v.dim() - 1, keepdim=False)
    sign_t = sign * tangent
    if keepdim:
        sign_t, index = sign_t.reshape(t.shape[0], *keep), index.reshape(keep)
    return sign_t, index


def _extreme_rule(sign: int):
    """torch.max / torch.min / Tensor.max / Tensor.min, in all three call forms."""

    def rule(func, args, kwargs):
        if not args:  # torch.max(input=x, ...)
            kwargs = dict(kwargs)
            args = (kwargs.pop("input"),)
        out = func(*primals(args), **primals(kwargs))
        x, rest = args[0], args[1:]
        other = kwargs.get("other", rest[0] if rest and isinstance(rest[0], torch.Tensor) else None)
        if other is not None:
            return _pairwise(sign, x, other, out)
        if not rest and "dim" not in kwargs:
            return finish(out, _reduce(sign, x, (), False)[0])
        dim = kwargs.get("dim", rest[0] if rest else None)
        keepdim = kwargs.get("keepdim", rest[1] if len(rest) > 1 else False)
        values, indices = out
        tangent, index = _reduce(sign, x, dim, keepdim)
        index = torch.where(values.isnan(), indices, index.to(indices.dtype))
        return type(out)((finish(values, tangent), index))

    return rule


def _amax_rule(sign: int):
    def rule(func, args, kwargs):
        def bind(input, dim=(), keepdim=False):
            return input, dim, keepdim

        x, dim, keepdim = bind(*args, **kwargs)
        out = func(*primals(args), **primals(kwargs))
        return finish(out, _reduce(sign, x, dim, keepdim)[0])

    return rule


def _argmax_rule(sign: int):
    def rule(func, args, kwargs):
        def bind(input, dim=None, keepdim=False):
            return input, dim, keepdim

        x, dim, keepdim = bind(*args, **kwargs)
        out = func(*primals(args), **primals(kwargs))
        if dim is None:
            x, dim = x.reshape(-1), 0
        index = _reduce(sign, x, dim, keepdim)[1].reshape(out.shape).to(out.dtype)
        nan = split(x)[0].isnan().any(dim=dim, keepdim=keepdim)
        return torch.where(nan.reshape(out.shape), out, index)

    return rule


def _pairwise(sign, a, b, out):
    return finish(out, (lexmax if sign > 0 else lexmin)(*_pair(a, b)))


def _maximum_rule(sign: int):
    def rule(func, args, kwargs):
        def bind(input, other):
            return input, other

        a, b = bind(*args, **kwargs)
        return _pairwise(sign, a, b, func(*primals(args), **primals(kwargs)))

    return rule


def _no_inplace(func, inplace):
    if inplace:
        raise NotImplementedError(
            f"mtlib.directional: `{op_name(func)}(..., inplace=True)` is in-place; duals are "
            f"immutable, use inplace=False"
        )


def _relu_rule(func, args, kwargs):
    def bind(input, inplace=False):
        return input, inplace

    x, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    out, t = func(*primals(args), **primals(kwargs)), single(x)
    if t is not None:
        side, plain = lexsign_one(x.primal, t)  # plain: no zero or NaN in x, none in out
        return finish(out, t * side.clamp_(min=0), stacked=False, nan_free=plain)
    v, t = split(x)
    return finish(out, t * lexsign(v, t).clamp(min=0))


def _leaky_relu_rule(func, args, kwargs):
    def bind(input, negative_slope=0.01, inplace=False):
        return input, negative_slope, inplace

    x, slope, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    out, t = func(*primals(args), **primals(kwargs)), single(x)
    if t is not None:
        positive = lexsign_one(x.primal, t)[0].clamp_(min=0)
        return finish(out, t * (positive + slope * (1 - positive)), stacked=False)
    v, t = split(x)  # the side of the perturbed point is fsign(v, t_1, ..., t_k)
    positive = lexsign(v, t).clamp(min=0)  # 1 on the positive side, else 0 (arithmetic: fast)
    return finish(out, t * (positive + slope * (1 - positive)))


def _abs_rule(func, args, kwargs):
    def bind(input):
        return input

    x = bind(*args, **kwargs)
    out, t = func(*primals(args), **primals(kwargs)), single(x)
    if t is not None:
        side, plain = lexsign_one(x.primal, t)  # plain: no zero or NaN in x, none in out
        return finish(out, side * t, stacked=False, nan_free=plain)
    v, t = split(x)
    return finish(out, lexsign(v, t) * t)


def _clamp_parts(x, low, high):
    v, t = split(x)
    if low is not None:
        vb, tb = split(low, like=v)
        t, v = lexmax(v, t, vb, tb), torch.maximum(v, vb)
    if high is not None:
        t = lexmin(v, t, *split(high, like=v))
    return t


def _clamp_rule(func, args, kwargs):
    def bind(input, min=None, max=None):
        return input, min, max

    x, low, high = bind(*args, **kwargs)
    return finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, low, high))


def _clamp_min_rule(func, args, kwargs):
    def bind(input, min):
        return input, min

    x, low = bind(*args, **kwargs)
    return finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, low, None))


def _clamp_max_rule(func, args, kwargs):
    def bind(input, max):
        return input, max

    x, high = bind(*args, **kwargs)
    return finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, None, high))


def _hardtanh_rule(func, args, kwargs):
    def bind(input, min_val=-1.0, max_val=1.0, inplace=False):
        return input, min_val, max_val, inplace

    x, low, high, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    return finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, low, high))


def _relu6_rule(func, args, kwargs):
    def bind(input, inplace=False):
        return input, inplace

    x, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    return finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, 0.0, 6.0))


for _sign, _suffix in ((1, "max"), (-1, "min")):
    register_rule(funcs_named(_suffix), _extreme_rule(_sign))
    register_rule(funcs_named("a" + _suffix), _amax_rule(_sign))
    register_rule(funcs_named("arg" + _suffix), _argmax_rule(_sign))
    register_rule(funcs_named(_suffix + "imum"), _maximum_rule(_sign))
register_rule(funcs_named("relu"), _relu_rule)
register_rule(funcs_named("leaky_relu"), _leaky_relu_rule)
register_rule(funcs_named("abs", "absolute", "__abs__"), _abs_rule)
register_rule(funcs_named("clamp", "clip"), _clamp_rule)
register_rule(funcs_named("clamp_min"), _clamp_min_rule)
register_rule(funcs_named("clamp_max"), _clamp_max_rule)
register_rule(funcs_named("hardtanh"), _hardtanh_rule)
register_rule(funcs_named("relu6"), _relu6_rule)
