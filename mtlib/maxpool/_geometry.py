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

import math
from dataclasses import dataclass

import torch


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
        return min(self.size, self.start(o) + (self.kernel - 1) * self.dilation + 1)

    def shift(self, i: int) -> int:
        """Input index read by tap ``i`` of window 0 (negative inside the left padding)."""
        return i * self.dilation - self.padding

    def outputs_reading(self, i: int) -> tuple[int, int]:
        """Range ``[lo, hi)`` of outputs whose tap ``i`` lies inside the input (strided axes)."""
        c, s = self.shift(i), self.stride
        lo = max(0, -(c // s))
        hi = min(self.out, -((c - self.size) // s))
        return lo, max(lo, hi)

    def has_empty_window(self) -> bool:
        """Whether some output's taps all lie in the padding (possible with dilation > 1)."""
        if self.adaptive:
            return False
        covered = 0
        for lo, hi in sorted(self.outputs_reading(i) for i in range(self.kernel)):
            if hi == lo:
                continue
            if lo > covered:
                return True
            covered = max(covered, hi)
        return covered < self.out

    def window_indices(self) -> torch.Tensor:
        """``(out, kernel)`` index tensor: the input index read by tap ``i`` of output ``o``;
        a tap that reads nothing (padding, or past an adaptive window's end) holds -1."""
        o = torch.arange(self.out)[:, None]
        if self.adaptive:
            starts = o * self.size // self.out
            ends = -(-(o + 1) * self.size // self.out)
            idx = starts + torch.arange(self.kernel)
            return torch.where(idx < ends, idx, -1)
        idx = o * self.stride + torch.arange(self.kernel) * self.dilation - self.padding
        return torch.where((idx >= 0) & (idx < self.size), idx, -1)

    def first_reader(self, p: int) -> int:
        """Adaptive axis: the first output whose window holds input ``p``, ``floor(p out / L)``;
        the windows holding ``p`` are ``first_reader(p) <= o < first_reader(p + 1)`` rounded
        up, i.e. ``o < ceil((p + 1) out / L)``."""
        return p * self.out // self.size

    @property
    def readers(self) -> int:
        """Most windows that one input position belongs to (the loop length of a gather
        backward): ``kernel`` for a strided axis (one per tap), exact for an adaptive one."""
        if not self.adaptive:
            return self.kernel
        return max(-(-(p + 1) * self.out // self.size) - self.first_reader(p)
                   for p in range(self.size))


def adaptive_axis(size: int, out: int) -> PoolAxis:
    """The adaptive axis of PyTorch's ``adaptive_max_pool``: ``out`` windows over ``size``.

    Examples:
        >>> ax = adaptive_axis(5, 3)
        >>> [(ax.start(o), ax.end(o)) for o in range(3)], ax.kernel, ax.readers
        ([(0, 2), (1, 4), (3, 5)], 3, 2)
    """
    kernel = max(-(-(o + 1) * size // out) - o * size // out for o in range(out))
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


def flat_indices(aux: torch.Tensor, axes: tuple[PoolAxis, ...]) -> torch.Tensor:
    """PyTorch-style ``return_indices``: flat row-major index over the spatial axes of each
    output's selected tap (``aux`` from a ``"first"``/``"last"`` forward, shape
    ``(..., *out)``), ``int64``; -1 for an all-padding window."""
    tap = aux.long()
    flat = torch.zeros_like(tap)
    rest = tap
    volume = math.prod(ax.kernel for ax in axes)
    for d, ax in enumerate(axes):
        volume //= ax.kernel
        i = rest.div(volume, rounding_mode="floor")
        rest = rest - i * volume
        o = torch.arange(ax.out, device=aux.device).view(-1, *[1] * (len(axes) - 1 - d))
        if ax.adaptive:
            start = o * ax.size // ax.out
            index = start + i
        else:
            index = o * ax.stride - ax.padding + i * ax.dilation
        flat = flat * ax.size + index
    return torch.where(tap >= 0, flat, -1)
