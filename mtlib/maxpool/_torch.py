"""PyTorch backend of the tie-aware max pool (any device), without a Python loop over taps.

``x`` is a contiguous ``(N, C, *S)`` tensor with two or three spatial axes (strided or
adaptive windows, :class:`mtlib.maxpool._geometry.PoolAxis`). PyTorch's own kernel computes
what it computes right, and vectorized tensor ops do the rest:

* forward: ``F.max_pool{2,3}d`` / ``F.adaptive_max_pool{2,3}d`` with ``return_indices`` give
  the window max ``m`` (bit for bit PyTorch's value) and the first maximal entry (the last
  NaN of a NaN window: PyTorch's ``v > max or isnan(v)`` scan). The tie count
  ``|T_w| = #{p in w : x_p = m_w}`` (NaN entries in a NaN window) is one comparison of the
  windows of ``x`` with ``m`` and a sum over the taps, on views (``unfold``) or one gather
  per axis (``index_select``) when the windows need padding or are adaptive. Only the windows
  with ``|T_w| >= 2``, usually few, are gathered tap by tap (:func:`_tie_members`).
* the integer companion ``aux`` (``int32``, per output): for ``"first"``/``"last"`` the
  selected row-major tap (-1 for a window lying entirely in the padding); for ``"uniform"``
  the tap of the maximal entry when ``|T_w| = 1``, ``-|T_w|`` when ``|T_w| >= 2``, and -1 for
  an empty window (:func:`tie_counts` decodes it);
* backward: a window with a single receiving entry is PyTorch's backward kernel
  (``max_pool{2,3}d_with_indices_backward`` / ``adaptive_max_pool{2,3}d_backward``) fed with
  the selected entries; ``"uniform"`` with ties lists every (entry, ``g_w / |T_w|``) pair in
  row-major window order and adds them with one ``index_add_``, a sequential loop in C, so
  each input position sums its windows in increasing order, in the dtype of ``x``, as
  PyTorch's CPU kernel does. Deterministic: no atomics on CPU.

The backward compares ``x`` with the *saved* max (an entry of ``x``, so the comparison is exact)
and divides by the *saved* count, so a recomputation cannot change which entries tie.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtlib.maxpool._geometry import PoolAxis, flat_indices, pool_output_size

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


def _taps_of(index: torch.Tensor, axes: Axes) -> torch.Tensor:
    """Row-major tap (``int64``) of the flat input ``index`` of each output in its window."""
    n, tap = len(axes), torch.zeros_like(index)
    inner = math.prod(ax.size for ax in axes)
    for d, ax in enumerate(axes):
        inner //= ax.size
        coord = index.div(inner, rounding_mode="floor") % ax.size
        start = _out_view(ax.starts().to(index.device), d, n)
        tap = tap * ax.kernel + (coord - start).div(ax.dilation, rounding_mode="floor")
    return tap


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


def _windows(x: torch.Tensor, axes: Axes):
    """Every window of ``x``: ``(N, C, *out, *kernel)`` and a mask of the taps that read the
    input (None: all do). Views (``unfold``) where the windows need no padding; else one
    ``index_select`` per axis, with the taps outside the input reading a valid entry."""
    n = len(axes)
    if all(not ax.adaptive and ax.padding == 0 and ax.dilation == 1
           and (ax.out - 1) * ax.stride + ax.kernel <= ax.size for ax in axes):
        for d, ax in enumerate(axes):
            x = x.narrow(2 + d, 0, (ax.out - 1) * ax.stride + ax.kernel).unfold(
                2 + d, ax.kernel, ax.stride)
        return x, None
    valid = []
    for d, ax in enumerate(axes):  # x: (N, C, o1, k1, .., od, kd, S_d+1, ..)
        idx = ax.window_indices()
        ok = idx >= 0
        valid.append(None if bool(ok.all()) else ok.to(x.device))
        shape, dim = x.shape, 2 + 2 * d
        flat = x.reshape(math.prod(shape[:dim]), shape[dim], -1)
        taken = flat.index_select(1, idx.clamp(0, ax.size - 1).flatten().to(x.device))
        x = taken.view(*shape[:dim], ax.out, ax.kernel, *shape[dim + 1:])
    x = x.permute(0, 1, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2))
    mask = None
    for d, ok in enumerate(valid):
        if ok is not None:
            shape = [1] * (2 * n)
            shape[d], shape[n + d] = ok.shape
            m = ok.view(shape)
            mask = m if mask is None else mask & m
    return x, mask


def _count(x: torch.Tensor, m: torch.Tensor, axes: Axes, has_nan: bool) -> torch.Tensor:
    """``int32`` number of entries of each window equal to its max (NaN entries of a NaN
    window): one comparison over all taps and one sum."""
    n = len(axes)
    win, valid = _windows(x, axes)
    mw = m[(..., *[None] * n)]
    tie = win == mw
    if has_nan:
        tie |= win.isnan() & mw.isnan()
    if valid is not None:
        tie &= valid
    return tie.sum(dim=tuple(range(-n, 0)), dtype=torch.int32)


def _has_nan(m: torch.Tensor) -> bool:
    """Whether ``m`` may hold a NaN (one reduction; ``inf - inf`` gives a harmless yes)."""
    return bool(m.sum().isnan())


def _tie_members(x: torch.Tensor, m: torch.Tensor, ids: torch.Tensor, axes: Axes):
    """For the windows ``ids`` (flat over ``(N, C, *out)``): the flat input index of each tap,
    ``(len(ids), K)``, and which taps are in the tie set (equal to the max, or NaN in a NaN
    window; padding never)."""
    out_total = math.prod(ax.out for ax in axes)
    in_total = math.prod(ax.size for ax in axes)
    o = ids % out_total
    index = torch.zeros_like(ids)[:, None]
    valid = torch.ones_like(index, dtype=torch.bool)
    inner = out_total
    for ax in axes:
        inner //= ax.out
        rows = ax.window_indices().to(x.device)[o.div(inner, rounding_mode="floor") % ax.out]
        index = (index[:, :, None] * ax.size + rows.clamp_min(0)[:, None, :]).flatten(1)
        valid = (valid[:, :, None] & (rows >= 0)[:, None, :]).flatten(1)
    index = index + (ids // out_total * in_total)[:, None]
    values = x.reshape(-1)[index]
    mw = m.reshape(-1)[ids][:, None]
    member = (values == mw) | (values.isnan() & mw.isnan())
    return index, member & valid


def tie_counts(aux: torch.Tensor) -> torch.Tensor:
    """``|T_w|`` from the ``"uniform"`` companion: 1 for a tap ``>= 0``, 0 for -1 (an empty
    window), ``-aux`` below."""
    return torch.where(aux >= 0, 1, torch.where(aux == -1, 0, -aux))


def forward(x: torch.Tensor, axes: Axes, ties: str):
    """Window max and its ``int32`` companion (see the module docstring), ``(N, C, *out)``."""
    m, index = _native_forward(x, axes)
    tap = _taps_of(index, axes)
    empty = _empty(axes, x.device)
    if empty is not None:
        tap = torch.where(empty, -1, tap)
    if ties == "first":
        return m, tap.to(torch.int32)
    count = _count(x, m, axes, _has_nan(m))
    tied = count >= 2
    if ties == "uniform":
        return m, torch.where(tied, -count, tap).to(torch.int32)
    ids = tied.flatten().nonzero().squeeze(1)
    if len(ids):  # "last": the last tie of a tied window (the first NaN of a NaN window)
        _, member = _tie_members(x, m, ids, axes)
        k = member.shape[1]
        code = torch.arange(k, device=x.device)
        last = (member * (code + 1)).amax(dim=1) - 1
        first = k - (member * (k - code)).amax(dim=1)
        tap.view(-1)[ids] = torch.where(m.reshape(-1)[ids].isnan(), first, last)
    return m, tap.to(torch.int32)


def _shares(grad: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``grad / count`` as PyTorch divides in ``grad``'s dtype (float32 arithmetic for 16-bit
    floats, rounded to the dtype); an empty window (count 0) keeps ``grad``, which no entry
    receives."""
    acc = torch.float32 if grad.element_size() < 4 else grad.dtype
    return (grad.to(acc) / count.clamp_min(1).to(acc)).to(grad.dtype)


def _single_index(aux: torch.Tensor, axes: Axes):
    """Flat input index of each output's selected tap, and ``aux < 0`` (no single tap)."""
    index = flat_indices(aux, axes)
    return index.clamp_min(0), index < 0


def _members_in_order(x, m, aux, axes):
    """Every (input index, window) pair of the ``"uniform"`` tie sets, windows in row-major
    order and taps in row-major order within a window: ``(index, window)``, flat over
    ``(N, C, *S)`` and ``(N, C, *out)``."""
    count = tie_counts(aux).flatten().long()
    offsets = count.cumsum(0) - count
    total = int(count.sum())
    index = torch.empty(total, dtype=torch.long, device=x.device)
    window = torch.empty_like(index)
    out_total = math.prod(ax.out for ax in axes)
    in_total = math.prod(ax.size for ax in axes)
    single = (count == 1).nonzero().squeeze(1)
    flat, _ = _single_index(aux, axes)
    slots = offsets[single]
    index[slots] = flat.flatten()[single] + single // out_total * in_total
    window[slots] = single
    tied = (count >= 2).nonzero().squeeze(1)
    taps, member = _tie_members(x, m, tied, axes)
    rows, cols = member.nonzero(as_tuple=True)
    rank = member.cumsum(dim=1)[rows, cols] - 1
    slots = offsets[tied[rows]] + rank
    index[slots] = taps[rows, cols]
    window[slots] = tied[rows]
    return index, window


def backward(grad: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
             axes: Axes, ties: str) -> torch.Tensor:
    """Gradient with respect to ``x`` given the upstream ``grad`` and the forward's ``m, aux``.

    ``"uniform"``: each output sends ``grad / count`` to every entry of its window equal to its
    max (eq 20 of the paper, window by window); ``"first"``/``"last"``: ``grad`` to the selected
    tap. Overlapping windows add up, in increasing window order (deterministic)."""
    if ties == "uniform" and bool((aux <= -2).any()):
        index, window = _members_in_order(x, m, aux, axes)
        value = _shares(grad, tie_counts(aux)).reshape(-1)[window]
        gx = torch.zeros(x.numel(), dtype=x.dtype, device=x.device)
        return gx.index_add_(0, index, value).view_as(x)
    index, none = _single_index(aux, axes)
    return _native_backward(torch.where(none, 0, grad), x, index, axes)


def tangent(v: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
            axes: Axes, ties: str) -> torch.Tensor:
    """The pool's associated Jacobian applied to ``v`` (shape of ``x``): per output, the mean of
    ``v`` over the window's tie set (``"uniform"``) or ``v`` at the selected tap. It is the JVP
    of the forward and the transpose of :func:`backward` (so also its derivative in ``grad``)."""
    if ties == "uniform" and bool((aux <= -2).any()):
        index, window = _members_in_order(x, m, aux, axes)
        acc = torch.zeros(m.numel(), dtype=v.dtype, device=v.device)
        acc.index_add_(0, window, v.reshape(-1)[index])
        return _shares(acc.view_as(m), tie_counts(aux))
    index, none = _single_index(aux, axes)
    picked = v.flatten(2).gather(2, index.flatten(2)).view(m.shape)
    return torch.where(none, 0, picked)
