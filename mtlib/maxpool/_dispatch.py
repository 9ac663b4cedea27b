"""The one entry of every pool in :mod:`mtlib.maxpool`: checks, reshaping to 5-d, PyTorch's own
kernel where it already gives the asked gradient, else the tie-aware ops."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from mtlib.maxpool._args import (
    PoolArgs,
    check_input,
    choose_backend,
    output_sizes,
    triton_missing,
)
from mtlib.maxpool._geometry import flat_indices, pool_axes
from mtlib.maxpool._op import pool_ties

if (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1") and not triton_missing():
    # registers the Triton ops before any torch.compile trace needs them (see _op.ops)
    from mtlib.maxpool import _triton  # noqa: F401

_NATIVE = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_NATIVE_ADAPTIVE = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def pool(fn: str, n: int, x, args: PoolArgs, return_indices: bool, counts_only=False,
          adaptive=False):
    """Every pool of this package: ``n`` spatial axes, strided or adaptive windows."""
    check_input(fn, x, n)
    batch = x.shape[0] if x.dim() == n + 2 else 1
    x5 = x.reshape(batch, x.shape[-n - 1], *([1] * (3 - n)), *x.shape[-n:])
    if adaptive:
        output_size = [1] * (3 - n) + output_sizes(args, x.shape[-n:])
        geometry = ([1] * 3, [1] * 3, [0] * 3, [1] * 3, False, output_size)
    else:
        geometry = (*args.as_3d(), args.ceil_mode, [])
    axes = pool_axes(tuple(x5.shape[2:]), *geometry)
    if not adaptive and any(ax.out <= 0 for ax in axes):
        raise ValueError(
            f"{fn}: `input` of spatial size {tuple(x.shape[-n:])} is too small for "
            f"kernel_size={args.kernel}, stride={args.stride}, padding={args.padding}, "
            f"dilation={args.dilation}: the output size would be "
            f"{tuple(ax.out for ax in axes[3 - n:])}")
    native = (args.ties == "first" and args.backend == "auto" and not counts_only
              and not any(ax.has_empty_window() for ax in axes))
    if native and adaptive:
        return _NATIVE_ADAPTIVE[n](x, geometry[-1][3 - n:], return_indices)
    if native:
        return _NATIVE[n](x, args.kernel, args.stride, args.padding, args.dilation,
                          args.ceil_mode, return_indices)
    out, aux = pool_ties(x5, *geometry, args.ties, choose_backend(fn, args.backend, x))
    shape = (*x.shape[:-n], *(ax.out for ax in axes[3 - n:]))
    if counts_only:
        return aux.reshape(shape)
    if return_indices:
        return out.reshape(shape), flat_indices(aux, axes).reshape(shape)
    return out.reshape(shape)
