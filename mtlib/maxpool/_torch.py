"""Vectorized pure-PyTorch backend of the tie-aware max pool (any device; the reference).

The input ``x`` of shape ``(N, C, D, H, W)`` (a 1-d or 2-d pool has size-1 axes in front) is
split into its *stride phases* ``P[a, b, c] = x[:, :, a::sD, b::sH, c::sW]`` (copies only when
a stride is > 1), so that tap ``ij`` (a multi-index) of every window is one unit-stride slice
``S_ij`` of one phase, aligned with the output grid. Every step is then a loop over the
``kD * kH * kW`` taps of elementwise ops on output-sized slices,
restricted to the outputs whose tap lies inside the input (padding is never read), with 0/1
masks held in a float dtype (PyTorch's fast comparison path):

* forward: window max ``m = max_ij S_ij`` and per output an integer: the tie count
  ``N = #{ij : S_ij = m}`` (``"uniform"``) or the selected tap (``"first"``/``"last"``), both
  accumulated in a float dtype chosen to hold them exactly, then stored as ``int32``;
* backward, one phase at a time: ``grad P[a, b, c] += [S_ij = m] * g / N`` (or
  ``[tap selected] * g``) over the taps of that phase in decreasing order, so that each input
  position sums its windows in increasing row-major order, in the dtype of ``x``, as PyTorch's
  CPU kernel does.

The backward compares ``x`` with the *saved* max (an entry of ``x``, so the comparison is exact)
and divides by the *saved* integer count. A NaN makes its window's max NaN; its tie set is the
window's NaN entries (``"first"``: the last NaN, as PyTorch's ``val > max || isnan`` scan;
``"last"``: the first NaN; ``"uniform"``: all of them share). Adaptive pools, whose windows
are not a stride grid, take the gather path of :mod:`mtlib.maxpool._adaptive`.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch

from mtlib.maxpool._geometry import PoolAxis

Axes = tuple[PoolAxis, ...]


class _Tap(NamedTuple):
    tap: int            # row-major tap index (i * kH + j) * kW + k
    plane: tuple        # (a, b, c): the stride phase it reads
    src: tuple          # slicer of the phase planes: the tap's input value for each output
    within: tuple       # the same entries as a slicer of its (N, C, ., .) phase plane
    out: tuple          # slicer of the outputs whose tap lies inside the input
    all_outputs: bool   # the tap lies inside the input for every output
    whole_plane: bool   # the tap reads every input position of its phase plane


def _axis_tap(ax: PoolAxis, i: int):
    """Along one axis, tap ``i``: (phase, plane range, output range, all outputs, whole plane)."""
    lo, hi = ax.outputs_reading(i)
    c, s = ax.shift(i), ax.stride
    phase, q0 = c % s, c // s
    return (phase, slice(lo + q0, hi + q0), slice(lo, hi), (lo, hi) == (0, ax.out),
            lo + q0 == 0 and hi + q0 == -((phase - ax.size) // s))


def _taps(axes: Axes) -> list[_Tap]:
    """The taps that read the input for at least one output, in row-major order."""
    taps = []
    per_axis = [[_axis_tap(ax, i) for i in range(ax.kernel)] for ax in axes]
    for tap, combo in enumerate(itertools.product(*per_axis)):
        phase, q, o, all_out, whole = zip(*combo)
        if all(s.stop > s.start for s in o):
            taps.append(_Tap(tap, phase, (*phase, slice(None), slice(None), *q), (..., *q),
                             (..., *o), all(all_out), all(whole)))
    return taps


def _phase_shape(shape, axes: Axes) -> tuple[int, ...]:
    return (*(ax.stride for ax in axes), *shape[:2],
            *(-(-L // ax.stride) for L, ax in zip(shape[2:], axes)))


def _all_phases(axes: Axes) -> set[tuple[int, ...]]:
    return set(itertools.product(*(range(ax.stride) for ax in axes)))


def _phase_slices(shape, axes: Axes, phases):
    """For each phase ``(a, b, c)``: the strided slicer of an ``(N, C, D, H, W)`` tensor and the
    matching slicer of the phase planes."""
    for phase in sorted(phases):
        lengths = [-((a - L) // ax.stride) for a, L, ax in zip(phase, shape[2:], axes)]
        yield ((..., *(slice(a, None, ax.stride) for a, ax in zip(phase, axes))),
               (*phase, slice(None), slice(None), *(slice(0, n) for n in lengths)))


def _phases(x: torch.Tensor, axes: Axes, taps) -> torch.Tensor:
    """Stride phases of ``x``, ``P[a, b, c] = x[:, :, a::sD, b::sH, c::sW]``, each one
    contiguous (the tail of a shorter phase is never read); ``x`` itself when all strides are 1."""
    if all(ax.stride == 1 for ax in axes):
        return x[(None,) * len(axes)]
    planes = x.new_empty(_phase_shape(x.shape, axes))
    for xs, ps in _phase_slices(x.shape, axes, {t.plane for t in taps}):
        planes[ps] = x[xs]
    return planes


def _exact_float(dtype: torch.dtype, n: int) -> torch.dtype:
    """A float dtype that holds the integers ``0..n`` exactly: ``dtype`` itself when it can
    (same-dtype masks are PyTorch's fast path), else float32 or float64."""
    for candidate in (dtype, torch.float32):
        if n <= 2 / torch.finfo(candidate).eps:  # 2 ** (mantissa bits + 1)
            return candidate
    return torch.float64


def _has_nan(m: torch.Tensor) -> bool:
    """Whether ``m`` may hold a NaN (one reduction; ``inf - inf`` gives a harmless yes)."""
    return bool(m.sum().isnan())


def _window_max(planes: torch.Tensor, taps: list[_Tap], out_shape) -> torch.Tensor:
    full = [t for t in taps if t.all_outputs]
    if len(full) >= 2:
        m = torch.maximum(planes[full[0].src], planes[full[1].src])
    elif full:
        m = planes[full[0].src].clone(memory_format=torch.contiguous_format)
    else:
        m = planes.new_full(out_shape, float("-inf"))
    done = {t.tap for t in full[:2]}
    for t in taps:
        if t.tap not in done:
            mv = m[t.out]
            torch.maximum(mv, planes[t.src], out=mv)
    return m


def _tie_mask(values, m, out, has_nan) -> torch.Tensor:
    """``out <- [values == m]`` (or ``isnan(values)``: a NaN entry forces a NaN max)."""
    mask = torch.eq(values, m, out=out)
    if has_nan:
        torch.logical_or(mask, values.isnan(), out=mask)
    return mask


def _tie_counts(planes, taps, m, has_nan) -> torch.Tensor:
    """``int32`` number of window entries equal to ``m`` (NaN entries in a NaN window)."""
    count = torch.zeros_like(m, dtype=_exact_float(m.dtype, len(taps)))
    buf = torch.empty_like(count)
    for t in taps:
        count[t.out].add_(_tie_mask(planes[t.src], m[t.out], buf[t.out], has_nan))
    return count.to(torch.int32)


def _selected_taps(planes, taps, m, has_nan, ties, kernel_volume, empty) -> torch.Tensor:
    """``int32`` row-major tap that receives the gradient (``"first"`` or ``"last"``).

    Each tied tap gets a code, largest for the one to select (``K - tap`` for the first,
    ``tap + 1`` for the last), and the max of the codes is decoded. In a NaN window the order is
    reversed (``"first"`` takes the last NaN, as PyTorch's ``val > max || isnan`` scan does)."""
    k = kernel_volume
    dtype = _exact_float(m.dtype, k + 1)
    first = ties == "first"
    best = torch.zeros_like(m, dtype=dtype)
    buf = torch.empty_like(best)
    for t in taps:
        mask = _tie_mask(planes[t.src], m[t.out], buf[t.out], False)
        mask.mul_(k - t.tap if first else t.tap + 1)
        torch.maximum(best[t.out], mask, out=best[t.out])
    sel = k - best if first else best - 1
    if empty:  # a window with no tap inside the input selects nothing
        sel.masked_fill_(best == 0, -1)
    if has_nan:
        best.zero_()
        for t in taps:
            mask = planes[t.src].isnan().to(dtype).mul_(t.tap + 1 if first else k - t.tap)
            torch.maximum(best[t.out], mask, out=best[t.out])
        sel = torch.where(best > 0, best - 1 if first else k - best, sel)
    return sel.to(torch.int32)


def _volume(axes: Axes) -> int:
    return math.prod(ax.kernel for ax in axes)


def _empty(axes: Axes) -> bool:
    return any(ax.has_empty_window() for ax in axes)


def forward(x: torch.Tensor, axes: Axes, ties: str):
    """Window max and its integer companion (tie count or selected tap), both ``(N, C, *out)``.

    ``x`` is contiguous ``(N, C, D, H, W)``. The companion is ``int32``: for ``"uniform"`` the
    number of window entries equal to the max (0 for a window that lies entirely in the
    padding), for ``"first"``/``"last"`` the row-major tap ``(i * kH + j) * kW + k`` that
    receives the gradient (-1 for a window entirely in the padding). Strided axes only.
    """
    taps = _taps(axes)
    planes = _phases(x, axes, taps)
    m = _window_max(planes, taps, (*x.shape[:2], *(ax.out for ax in axes)))
    has_nan = _has_nan(m)
    if ties == "uniform":
        return m, _tie_counts(planes, taps, m, has_nan)
    return m, _selected_taps(planes, taps, m, has_nan, ties, _volume(axes), _empty(axes))


def _shares(grad: torch.Tensor, count: torch.Tensor, kernel_volume: int,
            empty: bool) -> torch.Tensor:
    """``grad / count`` as PyTorch divides in ``grad``'s dtype (float32 arithmetic for 16-bit
    floats, rounded to the dtype). With ``empty`` windows (count 0) they keep ``grad``, which no
    entry receives."""
    share = count.to(_exact_float(grad.dtype, kernel_volume))
    if empty:
        share.clamp_min_(1)
    torch.div(grad.to(share.dtype), share, out=share)
    return share.to(grad.dtype)


def _accumulate(dst: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, *, overwrite: bool,
                float_mask: bool) -> None:
    """``dst += mask * value`` in place (``dst = ...`` with ``overwrite``, the first tap of a plane
    that covers it). A float 0/1 ``mask`` multiplies (the fast path, for finite values); a
    boolean one selects with ``where``, so that an inf or NaN reaches only the masked entries."""
    if float_mask and overwrite:
        torch.mul(value, mask, out=dst)
    elif float_mask:
        dst.addcmul_(value, mask)
    elif overwrite:
        dst.copy_(torch.where(mask, value, 0.0))
    else:
        dst.add_(torch.where(mask, value, 0.0))


def backward(grad: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
             axes: Axes, ties: str) -> torch.Tensor:
    """Gradient with respect to ``x`` given the upstream ``grad`` and the forward's ``m, aux``.

    ``"uniform"``: each output sends ``grad / count`` to every entry of its window equal to its
    max (eq 20 of the paper, window by window); ``"first"``/``"last"``: ``grad`` to the selected
    tap. Overlapping windows add up; deterministic (no atomics, fixed order). One stride phase
    at a time, in reused phase-sized buffers: the only input-sized allocation is the result.
    """
    taps, k = _taps(axes), _volume(axes)
    uniform = ties == "uniform"
    if uniform:
        has_nan, value = _has_nan(m), _shares(grad, aux, k, _empty(axes))
    else:
        selected, value = aux.to(_exact_float(grad.dtype, k)), grad
    # With finite values a 0/1 float mask times the value is the masked value (fast path);
    # otherwise select with `where`, so that an inf or NaN reaches only the selected entries.
    float_mask = bool(value.sum().isfinite())
    buf = torch.empty_like(m, dtype=grad.dtype if float_mask else torch.bool)
    gx = torch.empty_like(x)
    strided = any(ax.stride > 1 for ax in axes)
    n = len(axes)
    if strided:
        plane_shape = _phase_shape(x.shape, axes)[n:]
        gbuf, xbuf = x.new_empty(plane_shape), x.new_empty(plane_shape) if uniform else None
    for xs, ps in _phase_slices(x.shape, axes, _all_phases(axes)):
        plane_taps = [t for t in taps[::-1] if t.plane == ps[:n]]
        if not plane_taps:
            gx[xs].zero_()
            continue
        x_plane, g_plane = x, gx
        if strided:
            g_plane = gbuf[ps[n:]]
        if strided and uniform:
            x_plane = xbuf[ps[n:]]
            x_plane.copy_(x[xs])
        if not plane_taps[0].whole_plane:
            g_plane.zero_()
        for rank, t in enumerate(plane_taps):
            if uniform:
                mask = _tie_mask(x_plane[t.within], m[t.out], buf[t.out], has_nan)
            else:
                mask = torch.eq(selected[t.out], t.tap, out=buf[t.out])
            _accumulate(g_plane[t.within], value[t.out], mask, overwrite=rank == 0 and t.whole_plane,
                        float_mask=float_mask)
        if strided:
            gx[xs] = g_plane
    return gx


def tangent(v: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
            axes: Axes, ties: str) -> torch.Tensor:
    """The pool's associated Jacobian applied to ``v`` (shape of ``x``): per output, the mean of
    ``v`` over the window's tie set (``"uniform"``) or ``v`` at the selected tap. It is the JVP
    of the forward and the transpose of :func:`backward` (so also its derivative in ``grad``)."""
    taps = _taps(axes)
    planes, vplanes = _phases(x, axes, taps), _phases(v, axes, taps)
    uniform = ties == "uniform"
    has_nan = uniform and _has_nan(m)
    acc = torch.zeros(m.shape, dtype=v.dtype, device=v.device)
    for t in taps:
        if uniform:
            mask = planes[t.src] == m[t.out]
            if has_nan:
                mask |= planes[t.src].isnan()
        else:
            mask = aux[t.out] == t.tap
        acc[t.out].add_(torch.where(mask, vplanes[t.src], 0.0))
    if not uniform:
        return acc
    return _shares(acc, aux, _volume(axes), _empty(axes))

