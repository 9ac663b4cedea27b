"""PyTorch backend of the tie-aware max pool (any device), without a Python loop over taps.

``x`` is a contiguous ``(N, C, *S)`` tensor with two or three spatial axes (strided or
adaptive windows, :class:`mtlib.maxpool._geometry.PoolAxis`). PyTorch's own kernel computes
what it computes right, and vectorized tensor ops do the rest:

* forward: on CPU, ``"last"`` and ``"uniform"`` run a C kernel (:mod:`mtlib.maxpool._cpu`)
  or, for strided windows of few taps on a large input, a loop compiled by Inductor
  (:mod:`mtlib.maxpool._compiled`). Otherwise (other devices, no compiler, or
  ``MTLIB_POOL_COMPILE=0``) ``F.max_pool{2,3}d`` /
  ``F.adaptive_max_pool{2,3}d`` with ``return_indices`` give the window max ``m`` (bit for bit
  PyTorch's value) and the first maximal entry (the last NaN of a NaN window: PyTorch's
  ``v > max or isnan(v)`` scan), and the tie count ``|T_w| = #{p in w : x_p = m_w}`` (NaN
  entries in a NaN window) is one comparison of the windows of ``x`` with ``m`` and a sum over
  the taps, on views (``unfold``) or one gather per axis (``index_select``) for adaptive ones,
  laid out tap-major so that the sum adds output-sized rows. Only the windows with
  ``|T_w| >= 2``, usually few, are gathered tap by tap (:func:`_tie_members`).
* the companion ``aux`` (``int64``, per output) is an index as PyTorch's ``return_indices``
  gives (flat over the spatial axes): for ``"first"``/``"last"`` the selected entry (-1 for a
  window lying entirely in the padding); for ``"uniform"`` the maximal entry when
  ``|T_w| = 1``, ``-|T_w|`` when ``|T_w| >= 2``, and -1 for an empty window (:func:`tie_counts`
  decodes it);
* backward: on CPU (``"last"``/``"uniform"``) the C kernel; otherwise PyTorch's backward kernel
  (``max_pool{2,3}d_with_indices_backward`` / ``adaptive_max_pool{2,3}d_backward``) sends each
  window's gradient to its one selected entry; under ``"uniform"`` the windows with ties send
  nothing there, and then their (entry, ``g_w / |T_w|``) pairs, in row-major window order, are
  added with one ``index_add_`` (a sequential loop in C on CPU). So each input position sums,
  in the dtype of ``x``, first the windows that select it (in increasing window order, as
  PyTorch's CPU kernel does) and then the tied windows that share into it (in increasing
  window order); the C kernel adds in this order too. Deterministic: no atomics on CPU.

The backward compares ``x`` with the *saved* max (an entry of ``x``, so the comparison is exact)
and divides by the *saved* count, so a recomputation cannot change which entries tie.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtlib.maxpool import _compiled, _cpu
from mtlib.maxpool._geometry import PoolAxis, pool_output_size, window_view

Axes = tuple[PoolAxis, ...]
_NATIVE = {2: F.max_pool2d, 3: F.max_pool3d}
_NATIVE_ADAPTIVE = {2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _native_params(axes: Axes):
    ceil = any(ax.out != pool_output_size(ax.size, ax.kernel, ax.stride, ax.padding,
                                          ax.dilation, False) for ax in axes)
    return ([ax.kernel for ax in axes], [ax.stride for ax in axes],
            [ax.padding for ax in axes], [ax.dilation for ax in axes], ceil)


def _native_forward(x: torch.Tensor, axes: Axes):
    """PyTorch's window max and flat index of its first maximal entry (last NaN)."""
    n = len(axes)
    if axes[0].adaptive:
        return _NATIVE_ADAPTIVE[n](x, [ax.out for ax in axes], return_indices=True)
    return _NATIVE[n](x, *_native_params(axes), return_indices=True)


def _native_backward(grad, x, index, axes: Axes) -> torch.Tensor:
    """PyTorch's backward kernel: ``grad`` of each output added at its ``index`` (flat)."""
    n = len(axes)
    if axes[0].adaptive:
        op = getattr(torch.ops.aten, f"adaptive_max_pool{n}d_backward")
        return op(grad, x, index)
    op = getattr(torch.ops.aten, f"max_pool{n}d_with_indices_backward")
    return op(grad, x, *_native_params(axes), index)


def _out_view(t: torch.Tensor, d: int, n: int) -> torch.Tensor:
    """A per-axis ``(out,)`` tensor shaped to broadcast along output axis ``d`` of ``n``."""
    return t.view(-1, *[1] * (n - 1 - d))


def _empty(axes: Axes, device) -> torch.Tensor | None:
    """Mask over the output grid of the windows lying entirely in the padding (None: none)."""
    masks = [(d, ax.empty_windows()) for d, ax in enumerate(axes)]
    masks = [_out_view(m.to(device), d, len(axes)) for d, m in masks if m is not None]
    if not masks:
        return None
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out


def _tap_major_windows(x: torch.Tensor, axes: Axes):
    """Every window of ``x`` ``(N, C, *S)`` as ``(*kernel, N, C, *out)`` (taps in front, so that
    a sum over them adds output-sized rows), and a mask ``(*kernel, 1, 1, *out)`` of the taps
    that read the input (None: all do). Strided windows are a view (of ``x`` padded when a
    window reaches past an edge); adaptive ones one ``index_select`` per axis."""
    n = len(axes)
    tables = [ax.window_indices() for ax in axes]
    valid = None
    for d, idx in enumerate(tables):
        if not bool((idx >= 0).all()):
            shape = [1] * (2 * n + 2)
            shape[d], shape[n + 2 + d] = idx.shape[1], idx.shape[0]
            ok = (idx >= 0).T.reshape(shape).to(x.device)
            valid = ok if valid is None else valid & ok
    if axes[0].adaptive:
        for d, (ax, idx) in enumerate(zip(axes, tables)):  # x: (k1, .., kd, N, C, o1, .., S_d+1)
            shape, dim = x.shape, d + 2 + d
            flat = x.reshape(math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:]))
            taken = flat.index_select(1, idx.clamp(0, ax.size - 1).T.flatten().to(x.device))
            x = taken.view(*shape[:dim], ax.kernel, ax.out, *shape[dim + 1:]).movedim(dim, d)
        return x, valid
    taps_first = [*range(2 + n, 2 + 2 * n), 0, 1, *range(2, 2 + n)]
    return window_view(x, axes, 0).permute(taps_first), valid


def _count(x: torch.Tensor, m: torch.Tensor, axes: Axes) -> torch.Tensor:
    """Number of entries of each window equal to its max, NaN not counted (a NaN window
    counts 0), ``uint8`` (``int32`` from 256 taps on): one comparison over all taps into a
    tap-major 0/1 byte mask ``(K, M)`` and a sum over its ``K`` rows. With fewer than 256 taps
    the rows are added as ``int64`` words, eight windows per word: each byte lane sums at most
    255 ones, so no carry crosses into the next window (a SIMD-within-a-register sum, eight
    times fewer additions)."""
    if all(ax.out == 1 and ax.kernel == ax.size and ax.padding == 0 for ax in axes):
        # a global pool: each window is a contiguous plane, reduced along it
        return (x.flatten(2) == m.flatten(2)).sum(dim=2, dtype=torch.int32).view(m.shape)
    win, valid = _tap_major_windows(x, axes)
    k, total = math.prod(ax.kernel for ax in axes), m.numel()
    words = k < 256 and total > 0
    width = -(-total // 8) * 8 if words else total
    tie = torch.zeros(k, width, dtype=torch.bool, device=x.device)
    view = tie[:, :total].view(win.shape)
    torch.eq(win, m, out=view)
    if valid is not None:
        view &= valid
    if not words:
        return tie.sum(dim=0, dtype=torch.int32)
    return tie.view(torch.int64).sum(dim=0).view(torch.uint8)[:total].view(m.shape)


def _tie_members(x: torch.Tensor, m: torch.Tensor, ids: torch.Tensor, axes: Axes):
    """For the windows ``ids`` (flat over ``(N, C, *out)``): the flat spatial index of each
    tap, ``(len(ids), K)``, the offset of the window's ``(n, c)`` plane in ``x.reshape(-1)``,
    and which taps are in the tie set (equal to the max, or NaN in a NaN window; padding
    never)."""
    out_total = math.prod(ax.out for ax in axes)
    o = ids % out_total
    index = torch.zeros_like(ids)[:, None]
    valid = torch.ones_like(index, dtype=torch.bool)
    inner = out_total
    for ax in axes:
        inner //= ax.out
        rows = ax.window_indices().to(x.device)[o.div(inner, rounding_mode="floor") % ax.out]
        index = (index[:, :, None] * ax.size + rows.clamp_min(0)[:, None, :]).flatten(1)
        valid = (valid[:, :, None] & (rows >= 0)[:, None, :]).flatten(1)
    plane = ids // out_total * math.prod(ax.size for ax in axes)
    values = x.reshape(-1)[index + plane[:, None]]
    mw = m.reshape(-1)[ids][:, None]
    member = (values == mw) | (values.isnan() & mw.isnan())
    return index, plane, member & valid


def tie_counts(aux: torch.Tensor) -> torch.Tensor:
    """``|T_w|`` from the ``"uniform"`` companion: 1 for an index ``>= 0``, 0 for -1 (an
    empty window), ``-aux`` below."""
    return torch.where(aux >= 0, 1, torch.where(aux == -1, 0, -aux))


def forward(x: torch.Tensor, axes: Axes, ties: str):
    """Window max and its ``int64`` companion (see the module docstring), ``(N, C, *out)``."""
    fast = None if ties == "first" else _compiled.forward(x, axes, ties)
    if fast is not None:
        m, index = fast
        if ties == "uniform":
            return m, index
        ids = m.isnan().flatten().nonzero().squeeze(1)  # they hold their last NaN, not first
    else:
        fast = None if ties == "first" else _cpu.forward(x, axes, ties)
        if fast is not None:
            return fast
        m, index = _native_forward(x, axes)
        empty = _empty(axes, x.device)
        if empty is not None:
            index = torch.where(empty, -1, index)
        if ties == "first":
            return m, index
        # windows with a tie, a NaN max (it counts 0) or no entry: settled below
        ids = (_count(x, m, axes) != 1).flatten().nonzero().squeeze(1)
    if not len(ids):
        return m, index
    taps, _, member = _tie_members(x, m, ids, axes)  # tap by tap
    count = member.sum(dim=1)
    k = member.shape[1]
    code = torch.arange(k, device=x.device)
    first = k - (member * (k - code)).amax(dim=1)
    if ties == "uniform":
        single = taps.gather(1, first.clamp_max(k - 1)[:, None]).squeeze(1)
        index.view(-1)[ids] = torch.where(count >= 2, -count, torch.where(count == 0, -1, single))
        return m, index
    last = (member * (code + 1)).amax(dim=1) - 1  # "last": the last tie (first NaN of a NaN window)
    pick = torch.where(m.reshape(-1)[ids].isnan(), first, last).clamp(0, k - 1)
    index.view(-1)[ids] = torch.where(count == 0, -1, taps.gather(1, pick[:, None]).squeeze(1))
    return m, index


def _shares(grad: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``grad / count`` as PyTorch divides in ``grad``'s dtype (float32 arithmetic for 16-bit
    floats, rounded to the dtype); an empty window (count 0) keeps ``grad``, which no entry
    receives."""
    acc = torch.float32 if grad.element_size() < 4 else grad.dtype
    return (grad.to(acc) / count.clamp_min(1).to(acc)).to(grad.dtype)


def _tied(x, m, aux, axes):
    """The ``"uniform"`` windows with ``|T_w| >= 2`` (flat over ``(N, C, *out)``) and their
    tie sets: per (window, member) pair, in row-major window order and row-major tap order
    within a window, the member's flat index in ``x.reshape(-1)`` and the pair's row in
    ``ids``."""
    ids = (aux <= -2).flatten().nonzero().squeeze(1)
    taps, plane, member = _tie_members(x, m, ids, axes)
    rows, cols = member.nonzero(as_tuple=True)
    return ids, taps[rows, cols] + plane[rows], rows


def backward(grad: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
             axes: Axes, ties: str) -> torch.Tensor:
    """Gradient with respect to ``x`` given the upstream ``grad`` and the forward's ``m, aux``.

    ``"uniform"``: each output sends ``grad / count`` to every entry of its window equal to its
    max (eq 20 of the paper, window by window); ``"first"``/``"last"``: ``grad`` to the selected
    entry. Deterministic order of the sums, in ``x``'s dtype: PyTorch's backward kernel adds the
    windows that send to one entry, in increasing window order; then the windows with ties add
    their shares, in increasing window order (an entry that several overlapping windows reach
    may so get its sum in another order than a window-by-window loop: the last bit of a 16-bit
    float can differ; disjoint windows are unaffected)."""
    fast = None if ties == "first" else _cpu.backward(grad, x, m, aux, axes)
    if fast is not None:
        return fast
    lowest = int(aux.min()) if aux.numel() else 0  # -1: an empty window; below: a tie
    single = grad if lowest >= 0 else torch.where(aux < 0, 0, grad)  # empty or tied: none
    gx = _native_backward(single, x, aux.clamp_min(0), axes)
    if ties != "uniform" or lowest > -2:
        return gx
    ids, index, rows = _tied(x, m, aux, axes)
    share = _shares(grad.reshape(-1)[ids], -aux.reshape(-1)[ids])[rows]
    gx = gx.contiguous()
    gx.view(-1).index_add_(0, index, share)  # a sequential loop in C on CPU
    return gx


def tangent(v: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
            axes: Axes, ties: str) -> torch.Tensor:
    """The pool's associated Jacobian applied to ``v`` (shape of ``x``): per output, the mean of
    ``v`` over the window's tie set (``"uniform"``) or ``v`` at the selected entry. It is the
    JVP of the forward and the transpose of :func:`backward` (so also its derivative in
    ``grad``)."""
    picked = v.flatten(2).gather(2, aux.clamp_min(0).flatten(2)).view(m.shape)
    out = torch.where(aux < 0, 0, picked)
    if ties == "uniform" and bool((aux <= -2).any()):
        ids, index, rows = _tied(x, m, aux, axes)
        acc = torch.zeros(len(ids), dtype=v.dtype, device=v.device)
        acc.index_add_(0, rows, v.reshape(-1)[index])  # in tap order within each window
        out.view(-1)[ids] = _shares(acc, -aux.reshape(-1)[ids])
    return out
