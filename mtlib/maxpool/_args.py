"""Argument checks of the tie-aware max pool (:mod:`mtlib.maxpool`): one place that turns the
``torch.nn.functional``-style arguments into validated per-axis tuples and picks the backend.
"""

from __future__ import annotations

import functools
import importlib.util
import numbers
import os
import warnings
from dataclasses import dataclass

import torch

from mtlib.ties import check_ties


class PoolArgumentError(ValueError, RuntimeError):
    """A pooling argument or input that PyTorch's pools also reject. It is a ``ValueError``
    (mtlib's class for a wrong value) and a ``RuntimeError`` (what PyTorch raises, except for
    the adaptive pools' rank check, a ``ValueError`` there too), so code written against
    either keeps working."""


class PoolTypeError(TypeError, RuntimeError):
    """A pooling argument of the wrong type, or an input dtype PyTorch's pools reject (with a
    ``RuntimeError`` there): a ``TypeError`` and a ``RuntimeError``."""


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
BACKENDS = ("auto", "torch", "triton")


def _triton_missing() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "the `triton` package"
    if not all(hasattr(torch.library, name) for name in ("triton_op", "wrap_triton")):
        return f"torch.library.triton_op and wrap_triton (PyTorch >= 2.6, found {torch.__version__})"
    return None


# Why the Triton backend cannot run here (None when it can): the `triton` package, or
# torch.library.triton_op/wrap_triton (PyTorch >= 2.6). A constant, so that Dynamo reads it.
TRITON_MISSING = _triton_missing()


def triton_missing() -> str | None:
    return TRITON_MISSING


@functools.cache
def _warn_once(reason: str) -> None:
    warnings.warn(f"mtlib.maxpool: CUDA input but no Triton backend ({reason} missing); using the "
                  "PyTorch path", RuntimeWarning, stacklevel=4)


def int_tuple(fn: str, name: str, value, n: int) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if len(items) == 1:
        items = items * n
    if len(items) != n or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                              for v in items):
        raise PoolTypeError(f"{fn}: `{name}` must be an int or a tuple of {n} ints, got {value!r}")
    return tuple(int(v) for v in items)


@dataclass(frozen=True)
class PoolArgs:
    """Validated pooling arguments, one entry per spatial dimension."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool
    ties: str
    backend: str

    def as_3d(self) -> list[list[int]]:
        """Kernel, stride, padding, dilation as triples (a 1-d or 2-d pool is a 3-d one with
        size-1 axes in front)."""
        pad = (1, 1, 0, 1)
        return [[p] * (3 - len(v)) + list(v)
                for v, p in zip((self.kernel, self.stride, self.padding, self.dilation), pad)]


def pool_args(fn, n, kernel_size, stride, padding, dilation, ceil_mode, return_indices, ties,
               backend) -> PoolArgs:
    kernel = int_tuple(fn, "kernel_size", kernel_size, n)
    default_stride = stride is None or (isinstance(stride, (tuple, list)) and not stride)
    stride = kernel if default_stride else int_tuple(fn, "stride", stride, n)
    padding = int_tuple(fn, "padding", padding, n)
    dilation = int_tuple(fn, "dilation", dilation, n)
    for name, values in (("kernel_size", kernel), ("stride", stride), ("dilation", dilation)):
        _check_positive(fn, name, values)
    if any(p < 0 for p in padding):
        raise PoolArgumentError(f"{fn}: `padding` must be >= 0, got {padding}")
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise PoolArgumentError(
            f"{fn}: `padding` must be at most half of `kernel_size`, got padding={padding} "
            f"for kernel_size={kernel}")
    check_ties(fn, ties)
    _check_indices_backend(fn, return_indices, ties, backend)
    return PoolArgs(kernel, stride, padding, dilation, bool(ceil_mode), ties, backend)


def adaptive_args(fn, n, output_size, return_indices, ties, backend) -> PoolArgs:
    """Validated arguments of an adaptive pool: ``kernel`` holds the output size, where
    ``None`` (as in PyTorch) stands for the input size and is resolved by :func:`output_sizes`."""
    items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,)
    if len(items) == 1:
        items = items * n
    if len(items) != n or any(v is not None and (isinstance(v, bool) or not isinstance(
            v, numbers.Integral)) for v in items):
        raise PoolTypeError(f"{fn}: `output_size` must be an int or a tuple of {n} ints (or "
                            f"None), got {output_size!r}")
    _check_positive(fn, "output_size", [v for v in items if v is not None])
    check_ties(fn, ties)
    _check_indices_backend(fn, return_indices, ties, backend)
    kernel = tuple(-1 if v is None else int(v) for v in items)
    return PoolArgs(kernel, (), (), (), False, ties, backend)


def _check_positive(fn: str, name: str, values) -> None:
    bad = [v for v in values if v <= 0]
    if bad:
        raise PoolArgumentError(f"{fn}: `{name}` must be > 0, got {bad[0]}")


def output_sizes(args: PoolArgs, spatial) -> list[int]:
    """The adaptive output size with ``None`` (stored as -1) replaced by the input size."""
    return [L if o == -1 else o for o, L in zip(args.kernel, spatial)]


def _check_indices_backend(fn, return_indices, ties, backend) -> None:
    if return_indices and ties == "uniform":
        raise PoolArgumentError(
            f"{fn}: `return_indices` needs one selected entry per window, so it is not "
            "available with ties='uniform'; use ties='first' or 'last'")
    if backend not in BACKENDS:
        raise PoolArgumentError(f"{fn}: `backend` must be one of {BACKENDS}, got {backend!r}")


_DIMS = {1: "(C, L) or (N, C, L)", 2: "(C, H, W) or (N, C, H, W)",
         3: "(C, D, H, W) or (N, C, D, H, W)"}


def check_input(fn: str, x, n: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: `input` must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise PoolTypeError(f"{fn}: `input` must have a floating-point dtype (float16, bfloat16, "
                            f"float32, float64), got {x.dtype}")
    dims = _DIMS[n]
    if x.dim() not in (n + 1, n + 2):
        raise PoolArgumentError(f"{fn}: `input` must be {n + 1}-d or {n + 2}-d {dims}, "
                         f"got shape {tuple(x.shape)}")
    if 0 in x.shape[-n - 1:]:
        raise PoolArgumentError(f"{fn}: `input` needs non-empty channel and spatial dimensions, "
                         f"got shape {tuple(x.shape)}")


def choose_backend(fn: str, backend: str, x: torch.Tensor) -> str:
    """``"auto"``: Triton on CUDA when it can run (else the PyTorch path, with a one-time
    warning naming what is missing), the PyTorch path elsewhere."""
    if backend == "torch" or (backend == "auto" and not x.is_cuda):
        return "torch"
    missing = TRITON_MISSING
    if backend == "auto":
        if missing:
            _warn_once(missing)
        return "torch" if missing else "triton"
    if missing:
        raise ImportError(f"{fn}: backend='triton' needs {missing}")
    if backend == "triton" and not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"{fn}: backend='triton' runs on CUDA tensors (or on CPU with "
                         f"TRITON_INTERPRET=1 set before triton is imported), got a "
                         f"{x.device.type} tensor")
    return backend
