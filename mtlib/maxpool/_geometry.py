"""Window geometry of a max pool, shared by the PyTorch and Triton backends.

A pool over an ``(N, C, D, H, W)`` tensor is described by one :class:`PoolAxis` per spatial axis
(a 1-d or 2-d pool has axes of size 1 in front). Two kinds of axis share the class:

* a *strided* axis (``max_pool*d``): output ``o`` reads the *taps*
  ``o * stride + i * dilation - padding`` for ``i = 0 .. kernel - 1``; a tap outside
  ``[0, size)`` lies in the padding and is never read, so padding holds no value and never
  receives gradient;
* an *adaptive* axis (``adaptive_max_pool*d``): output ``o`` of ``out`` reads the input range
  ``[floor(o * size / out), ceil((o + 1) * size / out))``, PyTorch's windows; ``kernel`` is the
  longest window, and tap ``i`` of a shorter window lies outside it (never read).

A window's taps are scanned in row-major order (``tap = (i * kernel_h + j) * kernel_w + k``),
the order PyTorch's kernels use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool) -> int:
    """Number of windows along one axis, with PyTorch's rule (``pooling_output_shape``).

    In ceil mode a last, partial window is kept only if it starts inside the input or the left
    padding.

    Examples:
        >>> pool_output_size(5, 2, 2, 0, 1, False), pool_output_size(5, 2, 2, 0, 1, True)
        (2, 3)
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


@dataclass(frozen=True)
class PoolAxis:
    """One spatial axis of a pool: input size, window parameters and output size.

    For an adaptive axis (``adaptive=True``) ``kernel`` is the longest window, ``stride`` and
    ``padding`` are 0 and ``dilation`` is 1 (see :func:`adaptive_axis`)."""

    size: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    out: int
    adaptive: bool = False

    def start(self, o: int) -> int:
        """Input index read by tap 0 of output ``o`` (negative inside the left padding)."""
        if self.adaptive:
            return o * self.size // self.out
        return o * self.stride - self.padding

    def end(self, o: int) -> int:
        """One past the last input index of window ``o`` (adaptive: ``ceil((o+1) L / out)``)."""
        if self.adaptive:
            return -(-(o + 1) * self.size // self.out)
        return min(self.size, self.start(o) + self.extent)

    @property
    def extent(self) -> int:
        """Input positions a strided window spans from its first tap to its last."""
        return (self.kernel - 1) * self.dilation + 1

    @property
    def overhang(self) -> int:
        """Positions past the input's end that the last strided window reaches (its right
        padding: ``padding`` or, in ceil mode, up to a stride more)."""
        return max(0, (self.out - 1) * self.stride + self.extent - self.padding - self.size)

    def starts(self) -> torch.Tensor:
        """Input index read by tap 0 of every output, ``(out,)`` ``int64``."""
        o = torch.arange(self.out)
        if self.adaptive:
            return o * self.size // self.out
        return o * self.stride - self.padding

    def spans(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first, count)``, ``(out,)`` ``int64`` each: the taps of output ``o`` that read the
        input are consecutive, ``first[o] + t * dilation`` for ``t < count[o]`` (a window lying
        in the padding reads none: count 0, first 0). Closed forms, ``O(out)``: adaptive
        ``[floor(o L / out), ceil((o + 1) L / out))``; strided, the taps ``t`` of
        ``start + t * dilation`` in ``[0, size)``, ``ceil(-start / dilation) <= t <=
        floor((size - 1 - start) / dilation)``."""
        start = self.starts()
        if self.adaptive:
            return start, -(-(torch.arange(self.out) + 1) * self.size // self.out) - start
        d = self.dilation
        low = (-start).clamp_min(0).add(d - 1).div(d, rounding_mode="floor")
        high = (self.size - 1 - start).div(d, rounding_mode="floor").clamp_max(self.kernel - 1)
        count = (high - low + 1).clamp_min(0)
        return torch.where(count > 0, start + low * d, 0), count

    def window_indices(self) -> torch.Tensor:
        """``(out, kernel)`` index tensor: the input index read by tap ``i`` of output ``o``;
        a tap that reads nothing (padding, or past an adaptive window's end) holds -1."""
        idx = self.starts()[:, None] + torch.arange(self.kernel) * self.dilation
        if self.adaptive:
            return torch.where(torch.arange(self.kernel) < self.spans()[1][:, None], idx, -1)
        return torch.where((idx >= 0) & (idx < self.size), idx, -1)

    def empty_windows(self) -> torch.Tensor | None:
        """``(out,)`` mask of the windows whose taps all lie in the padding (None: there are
        none, the usual case; see :func:`may_have_empty_window`)."""
        if self.adaptive or not may_have_empty_window(self.size, self.padding, self.dilation):
            return None
        return self.spans()[1] == 0

    @property
    def readers(self) -> int:
        """Most windows that one input position belongs to (the loop length of the Triton
        backward's gather): ``kernel`` for a strided axis (one per tap); for an adaptive one
        ``ceil((L - g + out) / L)`` with ``g = gcd(L, out)`` (the windows holding ``p`` are
        ``floor(p out / L) <= o < ceil((p + 1) out / L)``, at most that many)."""
        if not self.adaptive:
            return self.kernel
        return -(-(self.size - _gcd(self.size, self.out) + self.out) // self.size)


def may_have_empty_window(size, padding: int, dilation: int) -> bool:
    """Whether some window of a strided axis can lie entirely in the padding.

    Tap ``i`` of output ``o`` reads ``a + i * dilation`` with ``a = o * stride - padding``.
    PyTorch keeps ``padding <= ((kernel - 1) * dilation + 1) / 2`` and its output-size rule
    makes every window with ``a >= 0`` start inside the input; a window with ``a < 0`` first
    enters ``[0, size)`` at ``a mod dilation < dilation`` (a tap that exists), so it is empty
    only if ``size <= a mod dilation``. Hence no window is empty when ``padding == 0``,
    ``dilation == 1`` or ``size >= dilation``: a closed form, also on symbolic sizes.

    Examples:
        >>> may_have_empty_window(2, 1, 3), may_have_empty_window(3, 1, 3)
        (True, False)
    """
    return padding > 0 and dilation > 1 and size < dilation


def _gcd(a, b):
    """Euclid's algorithm (``math.gcd`` refuses the symbolic sizes of ``torch.compile``);
    O(log) steps."""
    while b:
        a, b = b, a % b
    return a


def adaptive_axis(size: int, out: int) -> PoolAxis:
    """The adaptive axis of PyTorch's ``adaptive_max_pool``: ``out`` windows over ``size``.

    Window ``o`` has length ``ceil((r_o + size) / out)`` with ``r_o = o size mod out``, which
    takes every multiple of ``g = gcd(size, out)`` below ``out``: the longest window has
    ``ceil((out - g + size) / out)`` entries (a closed form, no scan of the windows).

    Examples:
        >>> ax = adaptive_axis(5, 3)
        >>> [(ax.start(o), ax.end(o)) for o in range(3)], ax.kernel, ax.readers
        ([(0, 2), (1, 4), (3, 5)], 3, 2)
    """
    kernel = -(-(out - _gcd(size, out) + size) // out)
    return PoolAxis(size, kernel, 0, 0, 1, out, adaptive=True)


def vector_windows(n: int, kernel: int, stride: int) -> torch.Tensor:
    """Index tensor ``(windows, kernel)`` of a max pool over a vector of length ``n`` (no padding,
    no dilation, floor mode): the windows of :class:`mtlib.networks.VectorMaxPool`.

    Examples:
        >>> vector_windows(5, 3, 2).tolist()
        [[0, 1, 2], [2, 3, 4]]
    """
    out = pool_output_size(n, kernel, stride, 0, 1, False)
    return PoolAxis(n, kernel, stride, 0, 1, out).window_indices()


def pool_axes(spatial: tuple[int, ...], kernel, stride, padding, dilation, ceil_mode: bool,
              output_size=()) -> tuple[PoolAxis, ...]:
    """The :class:`PoolAxis` of each spatial axis (arguments one per axis, already validated);
    adaptive axes when ``output_size`` is given (then the other arguments are ignored)."""
    if output_size:
        return tuple(adaptive_axis(L, o) for L, o in zip(spatial, output_size))
    return tuple(
        PoolAxis(L, k, s, p, d, pool_output_size(L, k, s, p, d, ceil_mode))
        for L, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)
    )


def output_shape(shape, kernel, stride, padding, dilation, ceil_mode, output_size=()):
    """``(N, C, *out)`` of a pool over ``shape`` (works on symbolic sizes: no window scan)."""
    if output_size:
        return (*shape[:2], *output_size)
    return (*shape[:2], *(pool_output_size(L, k, s, p, d, ceil_mode) for L, k, s, p, d
                          in zip(shape[2:], kernel, stride, padding, dilation)))


def window_view(x: torch.Tensor, axes: tuple[PoolAxis, ...], fill) -> torch.Tensor:
    """The windows of strided ``axes`` over the trailing axes of ``x`` ``(N, C, *S)`` as a view
    ``(N, C, *out, *kernel)``: of ``x`` itself, or of ``x`` padded with ``fill`` where a window
    reaches past an edge."""
    pads = [p for ax in axes[::-1] for p in (ax.padding, ax.overhang)]
    x = F.pad(x, pads, value=fill) if any(pads) else x
    st = x.stride()
    return x.as_strided(
        (*x.shape[:2], *[ax.out for ax in axes], *[ax.kernel for ax in axes]),
        (*st[:2], *[ax.stride * s for ax, s in zip(axes, st[2:])],
         *[ax.dilation * s for ax, s in zip(axes, st[2:])]))
