"""PyTorch backend of the tie-aware *adaptive* max pool (any device), by gathers.

Adaptive windows (:func:`mtlib.maxpool._geometry.adaptive_axis`: output ``o`` of ``out`` reads
``[floor(o L / out), ceil((o + 1) L / out))``) do not lie on a stride grid, so the stride phases
of :mod:`mtlib.maxpool._torch` do not apply. Instead:

* forward: one ``index_select`` per axis gathers every window into a tensor
  ``(N, C, oD, kD, oH, kH, oW, kW)`` (a window shorter than the longest repeats its first entry
  in the missing taps, harmless for the max and masked out of the ties); ``m`` is its ``amax``
  over the taps, the tie count is the number of valid taps equal to ``m`` (NaN taps in a NaN
  window), and the selected tap the first (``"first"``) or last (``"last"``) of them in
  row-major order (a NaN window: the last, resp. first, NaN, as PyTorch's scan);
* backward, one *reader* at a time: input ``p`` belongs to the windows
  ``floor(p out / L) <= o < ceil((p + 1) out / L)``; each input position gathers (by
  ``index_select``), in increasing row-major output order, ``g / N`` where it equals the
  window's saved max (``"uniform"``, eq 20 per window) or ``g`` where it is the window's
  selected tap. A gather, not a scatter: deterministic, and each position sums its windows in
  the order PyTorch's CPU kernel adds them.

The tangent (JVP, and the transpose of the backward) reduces the gathered windows of ``v``.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator

import torch

from mtlib.maxpool._geometry import PoolAxis
from mtlib.maxpool._torch import _has_nan, _shares

Axes = tuple[PoolAxis, ...]
_TAP_DIMS = (3, 5, 7)


def _view(t: torch.Tensor, d: int, n: int, spread: int = 1) -> torch.Tensor:
    """``t`` shaped to broadcast along axis ``d`` of ``n`` axes (``spread`` dims per axis)."""
    shape = [1] * (n * spread)
    shape[d * spread:(d + 1) * spread] = t.shape
    return t.view(shape)


def _and(masks):
    masks = [m for m in masks if m is not None]
    return functools.reduce(operator.and_, masks) if masks else None


def _select(t: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``t.index_select(dim, index)`` through a 2-d or 3-d view (PyTorch's CPU kernel is an
    order of magnitude faster there than on a 5-d tensor)."""
    shape = t.shape
    prefix, suffix = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    view = t.reshape(prefix, shape[dim]) if suffix == 1 else t.reshape(prefix, shape[dim], suffix)
    return view.index_select(1, index).view(*shape[:dim], len(index), *shape[dim + 1:])


def _windows(x: torch.Tensor, axes: Axes) -> torch.Tensor:
    """Every window of ``x`` ``(N, C, D, H, W)`` as ``(N, C, oD, kD, oH, kH, oW, kW)``."""
    for d, ax in enumerate(axes):
        if ax.out == ax.size and ax.kernel == 1:
            continue
        idx = ax.window_indices()
        idx = torch.where(idx >= 0, idx, idx[:, :1]).flatten().to(x.device)
        x = _select(x, 2 + d, idx)
    return x.view(*x.shape[:2], *(s for ax in axes for s in (ax.out, ax.kernel)))


def _valid(axes: Axes, device):
    """Mask ``(oD, kD, oH, kH, oW, kW)`` of the taps inside their window (None: all are)."""
    masks = []
    for d, ax in enumerate(axes):
        v = ax.window_indices() >= 0
        masks.append(None if bool(v.all()) else _view(v.to(device), d, 3, spread=2))
    return _and(masks)


def _expand(m: torch.Tensor) -> torch.Tensor:
    """Per-output ``(N, C, oD, oH, oW)`` values broadcast against the windows tensor."""
    return m[:, :, :, None, :, None, :, None]


def _ties(win, m, valid, has_nan):
    tie = win == _expand(m)
    if has_nan:
        tie |= win.isnan()
    return tie if valid is None else tie & valid


def forward(x: torch.Tensor, axes: Axes, ties: str):
    """Window max and ``int32`` tie count (``"uniform"``) or selected row-major tap
    (``"first"``/``"last"``) of contiguous ``x`` ``(N, C, D, H, W)`` over adaptive windows."""
    win = _windows(x, axes)
    m = win.amax(dim=_TAP_DIMS)
    has_nan = _has_nan(m)
    valid = _valid(axes, x.device)
    if ties == "uniform":
        return m, _ties(win, m, valid, has_nan).sum(dim=_TAP_DIMS, dtype=torch.int32)
    first = ties == "first"
    k = math.prod(ax.kernel for ax in axes)
    tap = torch.arange(k, device=x.device, dtype=torch.int32).view(
        1, 1, 1, axes[0].kernel, 1, axes[1].kernel, 1, axes[2].kernel)
    # each tied tap gets a code, largest for the one to select; the max of the codes decodes it
    best = (_ties(win, m, valid, False) * (k - tap if first else tap + 1)).amax(dim=_TAP_DIMS)
    sel = k - best if first else best - 1
    if has_nan:  # a NaN window: "first" takes the last NaN, "last" the first one
        nan = win.isnan() if valid is None else win.isnan() & valid
        nan_best = (nan * (tap + 1 if first else k - tap)).amax(dim=_TAP_DIMS)
        sel = torch.where(nan_best > 0, nan_best - 1 if first else k - nan_best, sel)
    return m, sel.to(torch.int32)


def _reader_tables(ax: PoolAxis, device):
    """Per reader ``r``: for every input position ``p`` the output ``floor(p out / L) + r``, its
    tap index ``p - start(o)``, and a mask of the positions that have an ``r``-th window."""
    p = torch.arange(ax.size)
    first = p * ax.out // ax.size
    stop = -(-(p + 1) * ax.out // ax.size)
    o = first + torch.arange(ax.readers)[:, None]
    valid = o < stop
    o = torch.where(valid, o, first)
    tap = p - o * ax.size // ax.out
    return o.to(device), tap.to(device), [None if bool(v.all()) else v.to(device) for v in valid]


def _gather(t: torch.Tensor, index) -> torch.Tensor:
    """``t`` ``(N, C, oD, oH, oW)`` read at output ``index[d]`` for every input position."""
    for d, idx in enumerate(index):
        if idx is not None:
            t = _select(t, 2 + d, idx)
    return t


def backward(grad: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
             axes: Axes, ties: str) -> torch.Tensor:
    """Input gradient: each input position gathers from the windows that hold it, in increasing
    row-major output order (``g / count`` where it equals the saved max, or ``g`` where it is
    the saved selected tap)."""
    n, k = len(axes), math.prod(ax.kernel for ax in axes)
    uniform = ties == "uniform"
    value = _shares(grad, aux, k, False) if uniform else grad
    tables = [_reader_tables(ax, x.device) for ax in axes]
    x_nan = x.isnan() if uniform and _has_nan(m) else None
    gx = torch.zeros_like(x)
    for combo in itertools.product(*(range(ax.readers) for ax in axes)):
        index = [None if ax.out == ax.size and ax.kernel == 1 else tables[d][0][r]
                 for d, (ax, r) in enumerate(zip(axes, combo))]
        valid = _and([None if tables[d][2][r] is None else _view(tables[d][2][r], d, n)
                      for d, r in enumerate(combo)])
        if uniform:
            hit = x == _gather(m, index)
            if x_nan is not None:
                hit |= x_nan
        else:
            code = 0
            for d, r in enumerate(combo):
                code = code * axes[d].kernel + _view(tables[d][1][r], d, n)
            hit = _gather(aux, index) == code
        gx += torch.where(hit if valid is None else hit & valid, _gather(value, index), 0.0)
    return gx


def tangent(v: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
            axes: Axes, ties: str) -> torch.Tensor:
    """The pool's associated Jacobian applied to ``v``: per output, the mean of ``v`` over the
    window's tie set (``"uniform"``) or ``v`` at the selected tap."""
    k = math.prod(ax.kernel for ax in axes)
    valid = _valid(axes, x.device)
    if ties == "uniform":
        hit = _ties(_windows(x, axes), m, valid, _has_nan(m))
    else:
        code = torch.arange(k, device=x.device).view(*(ax.kernel for ax in axes))
        hit = _expand(aux) == code[None, :, None, :, None, :]
    acc = torch.where(hit, _windows(v, axes), 0.0).sum(dim=_TAP_DIMS, dtype=v.dtype)
    return _shares(acc, aux, k, False) if ties == "uniform" else acc
