"""Window geometry of a 2-d max pool, shared by the PyTorch and Triton backends.

A pool over an ``(N, C, H, W)`` tensor is described by one :class:`PoolAxis` per spatial axis.
Output ``o`` of an axis reads the *taps* ``o * stride + i * dilation - padding`` for
``i = 0 .. kernel - 1``; a tap outside ``[0, size)`` lies in the padding and is never read, so
padding holds no value and never receives gradient. A window's taps are scanned in row-major
order (``tap = i * kernel_w + j``), the order PyTorch's kernels use.
"""

from __future__ import annotations

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
    """One spatial axis of a pool: input size, window parameters and output size."""

    size: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    out: int

    def shift(self, i: int) -> int:
        """Input index read by tap ``i`` of window 0 (negative inside the left padding)."""
        return i * self.dilation - self.padding

    def outputs_reading(self, i: int) -> tuple[int, int]:
        """Range ``[lo, hi)`` of outputs whose tap ``i`` lies inside the input (may be empty)."""
        c, s = self.shift(i), self.stride
        lo = max(0, -(c // s))
        hi = min(self.out, -((c - self.size) // s))
        return lo, max(lo, hi)

    def has_empty_window(self) -> bool:
        """Whether some output's taps all lie in the padding (possible with dilation > 1)."""
        covered = 0
        for lo, hi in sorted(self.outputs_reading(i) for i in range(self.kernel)):
            if hi == lo:
                continue
            if lo > covered:
                return True
            covered = max(covered, hi)
        return covered < self.out

    def window_indices(self) -> torch.Tensor:
        """``(out, kernel)`` index tensor: the input index read by tap ``i`` of output ``o``
        (negative or ``>= size`` inside the padding)."""
        taps = torch.arange(self.kernel) * self.dilation - self.padding
        return torch.arange(self.out)[:, None] * self.stride + taps


def vector_windows(n: int, kernel: int, stride: int) -> torch.Tensor:
    """Index tensor ``(windows, kernel)`` of a max pool over a vector of length ``n`` (no padding,
    no dilation, floor mode): the windows of :class:`mtlib.networks.VectorMaxPool`.

    Examples:
        >>> vector_windows(5, 3, 2).tolist()
        [[0, 1, 2], [2, 3, 4]]
    """
    out = pool_output_size(n, kernel, stride, 0, 1, False)
    return PoolAxis(n, kernel, stride, 0, 1, out).window_indices()


def pool_axes(spatial: tuple[int, int], kernel, stride, padding, dilation,
              ceil_mode: bool) -> tuple[PoolAxis, PoolAxis]:
    """The two :class:`PoolAxis` of a 2-d pool (arguments are pairs, already validated)."""
    return tuple(
        PoolAxis(L, k, s, p, d, pool_output_size(L, k, s, p, d, ceil_mode))
        for L, k, s, p, d in zip(spatial, kernel, stride, padding, dilation)
    )


def flat_indices(aux: torch.Tensor, ah: PoolAxis, aw: PoolAxis) -> torch.Tensor:
    """PyTorch-style ``return_indices``: flat index ``ih * W + iw`` of each output's selected tap
    (``aux`` from a ``"first"``/``"last"`` forward), ``int64``; -1 for an all-padding window."""
    tap = aux.long()
    i, j = tap.div(aw.kernel, rounding_mode="floor"), tap.remainder(aw.kernel)
    oh = torch.arange(ah.out, device=aux.device).view(-1, 1)
    ow = torch.arange(aw.out, device=aux.device)
    ih = oh * ah.stride - ah.padding + i * ah.dilation
    iw = ow * aw.stride - aw.padding + j * aw.dilation
    return torch.where(tap >= 0, ih * aw.size + iw, -1)
