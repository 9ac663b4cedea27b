"""The one entry of every pool in :mod:`mtlib.maxpool`: checks, reshaping to 5-d, PyTorch's own
kernel where it already gives the asked gradient, else the tie-aware ops.

Everything here also runs on symbolic sizes (``torch.compile(dynamic=True, fullgraph=True)``):
the output sizes and the two decisions below are closed forms of the sizes, never a scan of
the windows.
"""

from __future__ import annotations

import importlib
import os

import torch
import torch.nn.functional as F

from mtlib.maxpool._args import (
    PoolArgs,
    PoolArgumentError,
    check_input,
    choose_backend,
    output_sizes,
    triton_missing,
)
from mtlib.maxpool._geometry import may_have_empty_window, pool_output_size
from mtlib.maxpool._op import pool_ties
from mtlib.maxpool._torch import tie_counts

if (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1") and not triton_missing():
    # registers the Triton ops before any torch.compile trace needs them (Dynamo cannot trace
    # an import; eager code imports it on first use below)
    importlib.import_module("mtlib.maxpool._triton")

_NATIVE = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_NATIVE_ADAPTIVE = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}


def _strided_geometry(n: int, args: PoolArgs, spatial, adaptive: bool):
    """``(kernel, stride, padding, dilation, ceil_mode, output_size)`` of the 5-d pool. An
    adaptive pool whose windows all have one length (every size a multiple of its output size)
    is the strided pool of kernel = stride = size / out, PyTorch's windows exactly, and runs as
    one."""
    if not adaptive:
        return (*args.as_3d(), args.ceil_mode, [])
    out = output_sizes(args, spatial)
    if all(L % o == 0 for L, o in zip(spatial, out)):
        kernel = [1] * (3 - n) + [L // o for L, o in zip(spatial, out)]
        return (kernel, kernel, [0] * 3, [1] * 3, False, [])
    return ([1] * 3, [1] * 3, [0] * 3, [1] * 3, False, [1] * (3 - n) + out)


def pool(fn: str, n: int, x, args: PoolArgs, return_indices: bool, counts_only=False,
         adaptive=False):
    """Every pool of this package: ``n`` spatial axes, strided or adaptive windows."""
    check_input(fn, x, n)
    spatial = tuple(x.shape[-n:])
    if not adaptive:
        out = [pool_output_size(L, k, s, p, d, args.ceil_mode) for L, k, s, p, d in
               zip(spatial, args.kernel, args.stride, args.padding, args.dilation)]
        if any(o <= 0 for o in out):
            raise PoolArgumentError(
                f"{fn}: `input` of spatial size {spatial} is too small for "
                f"kernel_size={args.kernel}, stride={args.stride}, padding={args.padding}, "
                f"dilation={args.dilation}: the output size would be {tuple(out)}")
    native = (args.ties == "first" and args.backend == "auto" and not counts_only and (
        adaptive or not any(may_have_empty_window(L, p, d) for L, p, d in
                            zip(spatial, args.padding, args.dilation))))
    if native and adaptive:
        return _NATIVE_ADAPTIVE[n](x, output_sizes(args, spatial), return_indices)
    if native:
        return _NATIVE[n](x, args.kernel, args.stride, args.padding, args.dilation,
                          args.ceil_mode, return_indices)
    backend = choose_backend(fn, args.backend, x)
    if backend == "triton" and not torch.compiler.is_compiling():
        importlib.import_module("mtlib.maxpool._triton")
    x5 = (x if x.dim() == n + 2 else x.unsqueeze(0))[(slice(None), slice(None),
                                                      *[None] * (3 - n))]
    if adaptive and n == 3:  # PyTorch's adaptive 3-d pool drops channels_last_3d: so do we
        x5 = x5.contiguous()
    geometry = _strided_geometry(n, args, spatial, adaptive)
    out, aux = pool_ties(x5, *geometry, args.ties, backend)
    shape = (*x.shape[:-n], *out.shape[5 - n:])
    if counts_only:
        return tie_counts(aux).to(torch.int32).reshape(shape)
    if return_indices:
        return out.reshape(shape), aux.reshape(shape)
    return out.reshape(shape)
