"""One-sided rules at the kinks of max, relu, abs, clamp and maxpool (chapter ``directional``).

For ``h -> 0+`` the perturbed entries ``v_i + h t_i`` are ordered like the pairs ``(v_i, t_i)``
in lexicographic order, so

.. math::

    \\max_i (v_i + h t_i) = \\max_i v_i + h \\max_{i \\in T} t_i + o(h), \\qquad
    T = \\{i : v_i = \\max_j v_j\\}

(the tie set of Sec 4.3, eq 19). ``relu = max(., 0)``, ``abs(v) = max(v, -v)``, ``clamp`` and the
maxpools (a max per window) follow: ``relu'(0; t) = max(t, 0)``, ``abs'(0; t) = |t|``.
Values always come from torch itself (exact parity, torch's own argument checks); only the
tangents are computed here. A NaN value gets a NaN tangent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlib.directional._dual import Dual, funcs_named, op_name, primals, register_rule, split, wrap

NEG_INF = float("-inf")


def _finish(out: torch.Tensor, tangent: torch.Tensor) -> Dual:
    return wrap(out, torch.where(out.isnan(), out, tangent.to(out.dtype)))


def lexmax(va, ta, vb, tb):
    """``(value, tangent)`` of ``max(a + h ta, b + h tb)`` as ``h -> 0+`` (broadcasting)."""
    tangent = torch.where(va > vb, ta, torch.where(va < vb, tb, torch.maximum(ta, tb)))
    return torch.maximum(va, vb), tangent


def lexmin(va, ta, vb, tb):
    """``(value, tangent)`` of ``min(a + h ta, b + h tb)`` as ``h -> 0+``."""
    value, tangent = lexmax(-va, -ta, -vb, -tb)
    return -value, -tangent


def _pair(a, b):
    va, ta = split(a, like=b)
    vb, tb = split(b, like=a)
    return va, ta, vb, tb


def _reduce_tangent(v, t, dim, keepdim):
    """Max of the tangent over the tie set of ``v`` along ``dim`` (``()``: all dims)."""
    tie = v == v.amax(dim=dim, keepdim=True)
    return t.masked_fill(~tie, NEG_INF).amax(dim=dim, keepdim=keepdim)


def _lex_argmax(v, t, dim, keepdim):
    """First index of the lexicographic max of ``(v, t)`` along ``dim``."""
    best = _reduce_tangent(v, t, dim, True)
    winners = (v == v.amax(dim=dim, keepdim=True)) & (t == best)
    return winners.to(torch.int32).argmax(dim=dim, keepdim=keepdim)


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
        v, t = split(x)
        v, t = sign * v, sign * t
        if not rest and "dim" not in kwargs:
            return _finish(out, sign * _reduce_tangent(v, t, (), False))
        dim = kwargs.get("dim", rest[0] if rest else None)
        keepdim = kwargs.get("keepdim", rest[1] if len(rest) > 1 else False)
        values, indices = out
        index = _lex_argmax(v, t, dim, keepdim).to(indices.dtype)
        index = torch.where(values.isnan(), indices, index)
        return type(out)((_finish(values, sign * _reduce_tangent(v, t, dim, keepdim)), index))

    return rule


def _amax_rule(sign: int):
    def rule(func, args, kwargs):
        def bind(input, dim=(), keepdim=False):
            return input, dim, keepdim

        x, dim, keepdim = bind(*args, **kwargs)
        v, t = split(x)
        out = func(*primals(args), **primals(kwargs))
        return _finish(out, sign * _reduce_tangent(sign * v, sign * t, dim, keepdim))

    return rule


def _argmax_rule(sign: int):
    def rule(func, args, kwargs):
        def bind(input, dim=None, keepdim=False):
            return input, dim, keepdim

        x, dim, keepdim = bind(*args, **kwargs)
        v, t = split(x)
        out = func(*primals(args), **primals(kwargs))
        if dim is None:
            v, t, dim = v.reshape(-1), t.reshape(-1), 0
        index = _lex_argmax(sign * v, sign * t, dim, keepdim).reshape(out.shape).to(out.dtype)
        return torch.where(v.isnan().any(dim=dim, keepdim=keepdim).reshape(out.shape), out, index)

    return rule


def _pairwise(sign, a, b, out):
    va, ta, vb, tb = _pair(a, b)
    _, tangent = (lexmax if sign > 0 else lexmin)(va, ta, vb, tb)
    return _finish(out, tangent)


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
    v, t = split(x)
    zero = torch.zeros_like(v)
    return _finish(func(*primals(args), **primals(kwargs)), lexmax(v, t, zero, zero)[1])


def _leaky_relu_rule(func, args, kwargs):
    def bind(input, negative_slope=0.01, inplace=False):
        return input, negative_slope, inplace

    x, slope, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    v, t = split(x)
    side = torch.where(v == 0, t, v)  # the sign of v + h t for small h > 0 (0 only if t = 0)
    return _finish(func(*primals(args), **primals(kwargs)), torch.where(side > 0, t, slope * t))


def _abs_rule(func, args, kwargs):
    def bind(input):
        return input

    v, t = split(bind(*args, **kwargs))
    return _finish(func(*primals(args), **primals(kwargs)), lexmax(v, t, -v, -t)[1])


def _clamp_parts(x, low, high):
    v, t = split(x)
    if low is not None:
        v, t = lexmax(v, t, *split(low, like=v))
    if high is not None:
        v, t = lexmin(v, t, *split(high, like=v))
    return t


def _clamp_rule(func, args, kwargs):
    def bind(input, min=None, max=None):
        return input, min, max

    x, low, high = bind(*args, **kwargs)
    return _finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, low, high))


def _clamp_min_rule(func, args, kwargs):
    def bind(input, min):
        return input, min

    x, low = bind(*args, **kwargs)
    return _finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, low, None))


def _clamp_max_rule(func, args, kwargs):
    def bind(input, max):
        return input, max

    x, high = bind(*args, **kwargs)
    return _finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, None, high))


def _hardtanh_rule(func, args, kwargs):
    def bind(input, min_val=-1.0, max_val=1.0, inplace=False):
        return input, min_val, max_val, inplace

    x, low, high, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    return _finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, low, high))


def _relu6_rule(func, args, kwargs):
    def bind(input, inplace=False):
        return input, inplace

    x, inplace = bind(*args, **kwargs)
    _no_inplace(func, inplace)
    return _finish(func(*primals(args), **primals(kwargs)), _clamp_parts(x, 0.0, 6.0))


def _ntuple(value, nd: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def pool_tangent(v, t, out, kernel_size, stride, padding, dilation, nd: int) -> torch.Tensor:
    """Max of the tangent over the tie set of each maxpool window (windows as in torch).

    ``out`` is torch's pooled value; windows are cut with ``unfold`` after padding by ``-inf``
    (padding and the extra right cells that ``ceil_mode`` adds never enter a tie set; a window
    that dilation places on padding only is the constant ``-inf``, with tangent 0).
    """
    k, p, d = _ntuple(kernel_size, nd), _ntuple(padding, nd), _ntuple(dilation, nd)
    s = _ntuple(stride, nd) if stride not in (None, (), []) else k
    sizes, out_sizes = v.shape[v.dim() - nd:], out.shape[out.dim() - nd:]
    pads = []
    for i in reversed(range(nd)):
        need = (out_sizes[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1
        pads += [p[i], max(p[i], need - sizes[i] - p[i])]
    windows = [F.pad(v, pads, value=NEG_INF), F.pad(t, pads), F.pad(torch.ones_like(v), pads)]
    base = v.dim() - nd
    for i in range(nd):
        span = d[i] * (k[i] - 1) + 1
        windows = [w.unfold(base + i, span, s[i]).narrow(base + i, 0, out_sizes[i]) for w in windows]
    dilate = (Ellipsis,) + tuple(slice(None, None, di) for di in d)
    wv, wt, valid = (w[dilate].flatten(-nd) for w in windows)
    tie = (wv == out.unsqueeze(-1)) & (valid > 0)
    tangent = wt.masked_fill(~tie, NEG_INF).amax(dim=-1)
    return torch.where(tie.any(dim=-1), tangent, 0.0)  # a window of padding only: constant -inf


def _indices_rule(func, args, kwargs):
    raise NotImplementedError(
        f"mtlib.directional: `{op_name(func)}` with return_indices=True is not supported (the "
        f"index of a tie depends on the direction); call it with return_indices=False"
    )


def _pool_rule(nd: int):
    def rule(func, args, kwargs):
        def bind(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False):
            return input, kernel_size, stride, padding, dilation, return_indices

        x, kernel_size, stride, padding, dilation, return_indices = bind(*args, **kwargs)
        if return_indices:
            _indices_rule(func, args, kwargs)
        out = func(*primals(args), **primals(kwargs))
        v, t = split(x)
        return _finish(out, pool_tangent(v, t, out, kernel_size, stride, padding, dilation, nd))

    return rule


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
register_rule(funcs_named("max_pool1d"), _pool_rule(1))
register_rule(funcs_named("max_pool2d"), _pool_rule(2))
register_rule(funcs_named("max_pool1d_with_indices", "max_pool2d_with_indices"), _indices_rule)
