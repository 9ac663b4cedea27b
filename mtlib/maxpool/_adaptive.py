"""PyTorch backend of the tie-aware *adaptive* max pool (any device), by gathers.

Adaptive windows (:func:`mtlib.maxpool._geometry.adaptive_axis`: output ``o`` of ``out`` reads
``[floor(o L / out), ceil((o + 1) L / out))``) do not lie on a stride grid, so the stride phases
of :mod:`mtlib.maxpool._torch` do not apply. Instead, per axis:

* forward, one tap at a time (row-major): the tap's input index for every output (a window
  shorter than the longest reads its own first entry there, harmless for the max) and a mask of
  the outputs whose window holds the tap; ``m = max`` over taps, then the tie count or the
  selected tap exactly as in the strided backend (first max / last NaN for ``"first"``);
* backward, one *reader* at a time: input ``p`` belongs to the windows
  ``floor(p out / L) <= o < ceil((p + 1) out / L)``; each input position gathers, in increasing
  output order (row-major), ``g / N`` where it equals the window's saved max (``"uniform"``,
  eq 20 per window) or ``g`` where it is the window's selected tap. A gather, not a scatter:
  deterministic, and each position sums its windows in the order PyTorch's CPU kernel adds them.

The tangent (JVP, and the transpose of the backward) gathers ``v`` by tap like the forward.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator

import torch

from mtlib.maxpool._geometry import PoolAxis
from mtlib.maxpool._torch import _exact_float, _has_nan, _shares

Axes = tuple[PoolAxis, ...]


def _view(t: torch.Tensor, d: int, n: int) -> torch.Tensor:
    """``t`` (1-d) shaped to broadcast along axis ``d`` of ``n`` spatial axes."""
    return t.view(*[-1 if e == d else 1 for e in range(n)])


def _and(masks):
    masks = [m for m in masks if m is not None]
    return functools.reduce(operator.and_, masks) if masks else None


def _tap_tables(ax: PoolAxis, device):
    """Per tap ``i``: the input index read for every output (``(kernel, out)``), and a mask of the
    outputs whose window holds it (``None`` where all do)."""
    w = ax.window_indices().T.to(device)
    valid = w >= 0
    index = torch.where(valid, w, w[:1])
    return index, [None if bool(v.all()) else v for v in valid]


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


def _taps(x: torch.Tensor, axes: Axes):
    """``(tap, values, mask)`` per tap in row-major order: the tap's input value for every output
    (``(N, C, *out)``) and the outputs whose window holds it (``None``: all)."""
    n = len(axes)
    tables = [_tap_tables(ax, x.device) for ax in axes]
    for tap, combo in enumerate(itertools.product(*(range(ax.kernel) for ax in axes))):
        index = tuple(_view(tables[d][0][i], d, n) for d, i in enumerate(combo))
        mask = _and([None if tables[d][1][i] is None else _view(tables[d][1][i], d, n)
                     for d, i in enumerate(combo)])
        yield tap, x[(slice(None), slice(None), *index)], mask


def _masked(mask, valid):
    return mask if valid is None else mask & valid


def forward(x: torch.Tensor, axes: Axes, ties: str):
    """Window max and ``int32`` tie count (``"uniform"``) or selected row-major tap
    (``"first"``/``"last"``) of contiguous ``x`` ``(N, C, D, H, W)`` over adaptive windows."""
    m = None
    for _, values, _ in _taps(x, axes):
        m = values if m is None else torch.maximum(m, values, out=m)
    has_nan = _has_nan(m)
    k = math.prod(ax.kernel for ax in axes)
    if ties == "uniform":
        count = torch.zeros_like(m, dtype=_exact_float(m.dtype, k))
        for _, values, valid in _taps(x, axes):
            tie = values == m
            if has_nan:
                tie |= values.isnan()
            count += _masked(tie, valid)
        return m, count.to(torch.int32)
    first = ties == "first"
    dtype = _exact_float(m.dtype, k + 1)
    best = torch.zeros_like(m, dtype=dtype)
    nan_best = torch.zeros_like(best) if has_nan else None
    for tap, values, valid in _taps(x, axes):
        code = k - tap if first else tap + 1
        torch.maximum(best, _masked(values == m, valid).to(dtype) * code, out=best)
        if has_nan:  # a NaN window: "first" takes the last NaN, "last" the first one
            nan_code = tap + 1 if first else k - tap
            torch.maximum(nan_best, _masked(values.isnan(), valid).to(dtype) * nan_code,
                          out=nan_best)
    sel = k - best if first else best - 1
    if has_nan:
        sel = torch.where(nan_best > 0, nan_best - 1 if first else k - nan_best, sel)
    return m, sel.to(torch.int32)


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
        index = (slice(None), slice(None),
                 *(_view(tables[d][0][r], d, n) for d, r in enumerate(combo)))
        valid = _and([None if tables[d][2][r] is None else _view(tables[d][2][r], d, n)
                      for d, r in enumerate(combo)])
        if uniform:
            hit = x == m[index]
            if x_nan is not None:
                hit |= x_nan
        else:
            code = 0
            for d, r in enumerate(combo):
                code = code * axes[d].kernel + _view(tables[d][1][r], d, n)
            hit = aux[index] == code
        gx += torch.where(_masked(hit, valid), value[index], 0.0)
    return gx


def tangent(v: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
            axes: Axes, ties: str) -> torch.Tensor:
    """The pool's associated Jacobian applied to ``v``: per output, the mean of ``v`` over the
    window's tie set (``"uniform"``) or ``v`` at the selected tap."""
    uniform = ties == "uniform"
    has_nan = uniform and _has_nan(m)
    acc = torch.zeros(m.shape, dtype=v.dtype, device=v.device)
    for (tap, values, valid), (_, v_values, _) in zip(_taps(x, axes), _taps(v, axes)):
        if uniform:
            hit = values == m
            if has_nan:
                hit |= values.isnan()
        else:
            hit = aux == tap
        acc += torch.where(_masked(hit, valid), v_values, 0.0)
    k = math.prod(ax.kernel for ax in axes)
    return _shares(acc, aux, k, False) if uniform else acc
