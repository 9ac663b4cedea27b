"""Rules for the max pools on duals: a lexicographic max per window (chapters directional,
lexicographic).

Every max pool is a max over windows of its input, so its tangents are those of the
lexicographically largest entry of each window (:func:`mtlib.directional._order.lex_max_along`;
for ``k = 1`` the one-sided rule ``max_{i in T_w} d_i`` over the window's tie set ``T_w``,
Sec 4.3, eq 19). One window rule serves torch's ``max_pool1d/2d/3d`` and
``adaptive_max_pool1d/2d/3d`` and mtlib's tie-aware pools (the ``mtlib::max_pool_ties``
operator behind :mod:`mtlib.maxpool`), whose values are torch's: the tie rule of a pool
changes its gradient, never its one-sided or lexicographic derivative.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import mtlib.maxpool  # noqa: F401  (defines the torch.ops.mtlib pool operators registered below)
from mtlib.directional._dual import Dual, funcs_named, op_name, primals, register_rule, split
from mtlib.directional._kinks import finish, single
from mtlib.directional._order import NEG_INF, first_index, lex_max_along, winners


def _ntuple(value, nd: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd


def _window(kernel_size, stride, padding, dilation, nd: int) -> tuple[tuple, ...]:
    """``(kernel, stride, padding, dilation)`` as ``nd``-tuples (stride defaults to the kernel)."""
    k = _ntuple(kernel_size, nd)
    s = _ntuple(stride, nd) if stride not in (None, (), []) else k
    return k, s, _ntuple(padding, nd), _ntuple(dilation, nd)


def _window_max(wv, valid, wt, out) -> torch.Tensor:
    """Tangents of the lexicographic max of windows ``wv`` (last dim), ``wt`` stacked."""
    tie = (wv == out.unsqueeze(-1)) & valid
    tangent, _ = lex_max_along(wv, wt, wv.dim() - 1, keepdim=False, mask=tie)
    return torch.where(tie.any(dim=-1), tangent, 0.0)  # a window of padding only: constant -inf


def _tiled_tangent(v, t, out, kernel, nd: int) -> torch.Tensor:
    """One tangent ``t`` (``k = 1``, of ``v``'s shape, not stacked) and windows that tile the
    input (stride = kernel, no padding, no dilation): the winner of a window is its entry with
    the largest tangent among the window's maxima. One torch max pool of the tangents masked by
    the tie sets finds it, without copying windows; the tangent is then gathered at that index
    (the reverse pass scatters into the winners only). Torch's first maximum among equal
    tangents is the first lexicographic winner, as
    :func:`~mtlib.directional._order.lex_max_along` takes."""
    lead, sizes = v.shape[:v.dim() - nd], v.shape[v.dim() - nd:]
    outs = out.shape[out.dim() - nd:]
    cropped = tuple(o * k for o, k in zip(outs, kernel))  # cells after the last window are in none
    crop = (Ellipsis, *(slice(0, n) for n in cropped))
    v, out = v.detach(), out.detach()  # the choice of the winners: no graph
    tc = t.detach()[crop].reshape(1, -1, *cropped)
    # torch's channels-last max pool is several times faster on CPU than the contiguous one
    layout = torch.channels_last if nd == 2 else torch.contiguous_format
    masked = torch.empty(tc.shape, dtype=tc.dtype, device=tc.device, memory_format=layout)
    windows = [n for o, k in zip(outs, kernel) for n in (o, k)]
    cells = v[crop].reshape(-1, *windows)  # (windows of a grid cell, cells of a window) per axis
    grid = out.reshape(-1, *[n for o in outs for n in (o, 1)])
    gap = torch.sub(cells, grid, out=masked[0].view(-1, *windows))  # <= 0, 0 on the tie sets
    if torch.isfinite(gap.sum()):  # t on the tie set, -inf off it: sign(gap) * big * big overflows
        big = torch.finfo(gap.dtype).max  # (arithmetic, in place: torch.where is slow on CPU)
        gap.sign_().mul_(big)
        torch.add(tc, masked, alpha=big, out=masked)
    else:  # infinite or NaN values
        masked.copy_(torch.where(cells == grid, tc.reshape(cells.shape), NEG_INF).reshape(tc.shape))
    index = _MAX_POOLS[nd](masked, kernel, return_indices=True)[1].reshape(math.prod(lead), -1)
    if cropped != tuple(sizes):  # the index into the cropped window grid, into the whole input
        flat, stride = torch.zeros_like(index), 1
        for n, c in zip(reversed(sizes), reversed(cropped)):
            flat += (index % c) * stride
            index, stride = index // c, stride * n
        index = flat
    return t.reshape(math.prod(lead), -1).gather(1, index).reshape(out.shape)


def _tiling(v, out, kernel_size, stride, padding, dilation, nd: int):
    """The kernel as a tuple if the windows tile the input (stride = kernel, no padding, no
    dilation, every window inside the input), else ``None``."""
    k, s, p, d = _window(kernel_size, stride, padding, dilation, nd)
    sizes, outs = v.shape[v.dim() - nd:], out.shape[out.dim() - nd:]
    if s == k and not any(p) and set(d) == {1} and all(o * n <= m for m, o, n in zip(sizes, outs, k)):
        return k
    return None


def _adaptive_tiling(v, out, nd: int):
    """The kernel of an adaptive pool whose windows are equal and tile the input, else ``None``."""
    sizes, outs = v.shape[v.dim() - nd:], out.shape[out.dim() - nd:]
    if all(n % o == 0 for n, o in zip(sizes, outs)):
        return tuple(n // o for n, o in zip(sizes, outs))
    return None


def _pool_finish(x, out, tiled, general) -> Dual:
    """The dual of a pool's value ``out``: the one-tangent tiled path where it applies (``tiled``:
    a kernel or ``None``; one direction, stacked or not), else ``general(v, stacked tangents)``."""
    t = single(x)
    if t is not None and tiled is not None:
        return finish(out, _tiled_tangent(x.primal, t, out, tiled, len(tiled)), stacked=False)
    v, t = split(x)
    if t.shape[0] == 1 and tiled is not None:
        return finish(out, _tiled_tangent(v, t[0], out, tiled, len(tiled)).unsqueeze(0))
    return finish(out, general(v, t))


def pool_tangent(v, t, out, kernel_size, stride, padding, dilation, nd: int) -> torch.Tensor:
    """Tangents of the lexicographic max of each maxpool window (windows as in torch).

    ``t`` holds the stacked tangents ``(k, *v.shape)``; ``out`` is torch's pooled value.
    Windows are cut with ``unfold`` after padding by ``-inf`` (padding and the extra right
    cells that ``ceil_mode`` adds never enter a tie set; a window that dilation places on
    padding only is the constant ``-inf``, with tangent 0). One direction over windows that
    tile the input takes :func:`_tiled_tangent` instead (:func:`_pool_finish`).
    """
    k, s, p, d = _window(kernel_size, stride, padding, dilation, nd)
    sizes, out_sizes = v.shape[v.dim() - nd:], out.shape[out.dim() - nd:]
    pads = []
    for i in reversed(range(nd)):
        need = (out_sizes[i] - 1) * s[i] + d[i] * (k[i] - 1) + 1
        pads += [p[i], max(p[i], need - sizes[i] - p[i])]
    t = t.expand(t.shape[0], *v.shape)
    padded = [F.pad(v, pads, value=NEG_INF), F.pad(torch.ones_like(v), pads), F.pad(t, pads)]
    spatial = padded[0].shape[v.dim() - nd:]
    position = torch.arange(math.prod(spatial), device=v.device).reshape(spatial)
    dilate = (Ellipsis,) + tuple(slice(None, None, di) for di in d)

    def cut(w, flat=True):  # the windows of w: (..., *out_sizes, window size); a view unless flat
        base = w.dim() - nd
        for i in range(nd):
            span = d[i] * (k[i] - 1) + 1
            w = w.unfold(base + i, span, s[i]).narrow(base + i, 0, out_sizes[i])
        return w[dilate].flatten(-nd) if flat else w[dilate]

    wv, valid, where = cut(padded[0]), cut(padded[1]) > 0, cut(position)
    tie = (wv == out.unsqueeze(-1)) & valid
    several = tie.sum(dim=-1) > 1
    if bool(several.any()):  # ties in value: the tangents decide, on the tied windows only
        tie = tie.clone()
        tangents = cut(padded[2], flat=False)[:, several].flatten(-nd)  # copies the tied windows only
        tie[several] = winners(wv[several], tangents, 1, mask=tie[several])
    # the winner's position in the padded input, then its tangents: O(k * outputs), no k windows
    flat = where.expand(wv.shape).gather(-1, first_index(tie, -1)).flatten(v.dim() - nd)
    lead = padded[2].flatten(-nd)
    tangent = lead.gather(-1, flat.unsqueeze(0).expand(lead.shape[0], *flat.shape))
    tangent = tangent.reshape(lead.shape[0], *out.shape)
    return torch.where(tie.any(dim=-1), tangent, 0.0)  # a window of padding only: constant -inf


def adaptive_tangent(v, t, out, nd: int) -> torch.Tensor:
    """Tangents of the lexicographic max of each adaptive-pool window: along an axis of length
    ``L`` with ``n`` outputs, window ``o`` is ``[floor(o L / n), ceil((o + 1) L / n))`` (torch's
    windows). Windows are gathered to the longest one's length, the extra cells masked. One
    direction over equal windows takes :func:`_tiled_tangent` instead (:func:`_pool_finish`)."""
    t = t.expand(t.shape[0], *v.shape)
    valid = torch.ones_like(v, dtype=torch.bool)
    parts = [v, valid, t]
    for i in range(nd):
        size, n = v.shape[v.dim() - nd + i], out.shape[out.dim() - nd + i]
        starts = [(o * size) // n for o in range(n)]
        ends = [math.ceil((o + 1) * size / n) for o in range(n)]
        width = max(e - b for b, e in zip(starts, ends))
        offsets = torch.arange(width, device=v.device)
        index = torch.tensor(starts, device=v.device).unsqueeze(1) + offsets
        inside = index < torch.tensor(ends, device=v.device).unsqueeze(1)
        index = index.clamp(max=size - 1)
        # axis i sits at w.dim() - nd + i: the i axes before it have each become two dims
        parts = [w.index_select(w.dim() - nd + i, index.reshape(-1))
                 .unflatten(w.dim() - nd + i, (n, width)) for w in parts]
        shape = [1] * parts[1].dim()
        axis = parts[1].dim() - 1 - nd + i
        shape[axis], shape[axis + 1] = n, width
        parts[1] = parts[1] & inside.reshape(shape)
    # each axis became (n_i, width_i): move the widths to the end and flatten them
    results = []
    for w in parts:
        lead = w.dim() - 2 * nd
        order = list(range(lead)) + [lead + 2 * i for i in range(nd)] + [lead + 2 * i + 1 for i in range(nd)]
        results.append(w.permute(order).flatten(-nd))
    wv, valid, wt = results
    return _window_max(wv, valid, wt, out)


_MAX_POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


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
        return _pool_finish(x, out, _tiling(x.primal, out, kernel_size, stride, padding, dilation, nd),
                            lambda v, t: pool_tangent(v, t, out, kernel_size, stride, padding, dilation, nd))

    return rule


def _adaptive_rule(nd: int):
    def rule(func, args, kwargs):
        def bind(input, output_size, return_indices=False):
            return input, return_indices

        x, return_indices = bind(*args, **kwargs)
        if return_indices:
            _indices_rule(func, args, kwargs)
        out = func(*primals(args), **primals(kwargs))
        return _pool_finish(x, out, _adaptive_tiling(x.primal, out, nd),
                            lambda v, t: adaptive_tangent(v, t, out, nd))

    return rule


def _mtlib_pool_rule(func, args, kwargs):
    """``mtlib::max_pool_ties(x, kernel, stride, padding, dilation, ceil_mode, output_size,
    ties) -> (out, aux)``: the window rule over the last ``len(kernel)`` (or, adaptive,
    ``len(output_size)``) dims; ``aux`` (tie counts or taps) is passed on unchanged."""
    names = [a.name for a in _schema(func).arguments]
    bound = dict(zip(names, args), **kwargs)
    out, aux = func(*primals(args), **primals(kwargs))
    x = bound["x"]
    if bound.get("output_size"):
        nd = len(bound["output_size"])
        return _pool_finish(x, out, _adaptive_tiling(x.primal, out, nd),
                            lambda v, t: adaptive_tangent(v, t, out, nd)), aux
    kernel, stride, padding, dilation = (bound[k] for k in ("kernel", "stride", "padding", "dilation"))
    nd = len(kernel)
    return _pool_finish(x, out, _tiling(x.primal, out, kernel, stride, padding, dilation, nd),
                        lambda v, t: pool_tangent(v, t, out, kernel, stride, padding, dilation, nd)), aux


def _schema(func):
    return func._schema if hasattr(func, "_schema") else func.default._schema


register_rule(funcs_named("max_pool1d"), _pool_rule(1))
register_rule(funcs_named("max_pool2d"), _pool_rule(2))
register_rule(funcs_named("max_pool3d"), _pool_rule(3))
for _n in (1, 2, 3):
    register_rule([getattr(F, f"adaptive_max_pool{_n}d")], _adaptive_rule(_n))
register_rule(funcs_named(*(f"max_pool{n}d_with_indices" for n in (1, 2, 3)),
                          *(f"adaptive_max_pool{n}d_with_indices" for n in (1, 2, 3))), _indices_rule)
register_rule([torch.ops.mtlib.max_pool_ties, torch.ops.mtlib.max_pool_ties.default], _mtlib_pool_rule)
