"""CPU kernels of the tie-aware pools, in C (``_cpu.c``), compiled once per machine.

:func:`forward` is the ``"last"``/``"uniform"`` forward of every CPU pool (strided or
adaptive, 1-d to 3-d, float16 to float64) that the Inductor loop of
:mod:`mtlib.maxpool._compiled` does not take (small inputs, windows of more than 27 taps,
adaptive windows of two lengths). One pass over each window's taps, as PyTorch's own scalar
kernel makes, gives the window max ``m_w`` (PyTorch's value, bit for bit), the size of the
tie set ``T_w = {p in w : x_p = m_w}`` (the NaN entries of a NaN window; padding never) and
its least and greatest flat index, hence the companion index of either rule; a window whose
taps form rows of at least 32 contiguous entries (global and adaptive pools) takes two
vectorized passes instead, the max and then the entries equal to it. :func:`backward` is the
``"last"``/``"uniform"`` gradient in the order :mod:`mtlib.maxpool._torch` documents (every
window with one selected entry adds ``g_w`` there, in window order, as PyTorch's backward
kernel does; then every tied window adds ``g_w / |T_w|`` to its ties), each addition rounded
to the dtype. Both give the eager path's values bit for bit (the tests compare them with a
brute-force oracle); the planes ``(n, c)`` run in parallel on ``torch.get_num_threads()``
threads (OpenMP; fewer on small inputs), on which no sum depends.

The C file is compiled by the machine's C compiler (``$CC``, else ``cc`` or ``gcc``) with
``-O3 -fopenmp -ffp-contract=off`` (without ``-fopenmp`` if the compiler refuses it: one
thread) on the first call (about a second) into ``$MTLIB_CACHE_DIR`` (default
``~/.cache/mtlib``) under a name hashing the source, the compiler, the flags, the OS and the
processor architecture, and loaded with :mod:`ctypes`; later processes load it at once. Only
comparisons, conversions and single additions and divisions: no compiler flag can change a
result (none like ``-ffast-math`` is used: NaN must compare unordered). With no compiler, or
``MTLIB_POOL_COMPILE=0`` in the environment, the eager path runs (same values, slower); if
compiling fails, a warning says so once and the eager path is used from then on.

Chapter: pools_practice (the speed table).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings

import torch

from mtlib.maxpool._geometry import PoolAxis

SOURCE = pathlib.Path(__file__).with_name("_cpu.c")
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=off", "-std=c11")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.bfloat16: "bf16",
           torch.float16: "f16"}
_RULE = {"last": 0, "uniform": 1}
GRAIN = 32768  # entries per thread at least (at::internal::GRAIN_SIZE)
_state: dict = {"lib": None, "failed": None}
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


def _cache_dir() -> pathlib.Path:
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(os.environ.get("MTLIB_CACHE_DIR") or os.path.join(home, "mtlib"))


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build() -> ctypes.CDLL:
    """Compile ``_cpu.c`` (unless a build of the same source, compiler and flags is cached)
    and load it; the build is written under a temporary name and renamed, so processes
    compiling at once never load a partial file."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found ($CC, cc or gcc)")
    source = SOURCE.read_bytes()
    machine = f"{cc} {' '.join(FLAGS)} {sys.platform} {platform.machine()}".encode()
    key = hashlib.sha256(source + machine).hexdigest()[:16]
    target = _cache_dir() / f"maxpool_cpu-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = pathlib.Path(tmp) / target.name
            # without -fopenmp if refused (Apple's clang): the kernels then run on one thread
            for flags in (FLAGS, tuple(f for f in FLAGS if f != "-fopenmp")):
                run = subprocess.run([cc, *flags, str(SOURCE), "-o", str(built)],
                                     capture_output=True, text=True)
                if not run.returncode:
                    break
            else:
                raise RuntimeError(f"{cc} failed: {run.stderr.strip()[:500]}")
            os.replace(built, target)
    lib = ctypes.CDLL(str(target))
    for suffix in _SUFFIX.values():
        getattr(lib, f"pool_stats_{suffix}").argtypes = [_P, _P, _P, _I64, _P, _INT, _P, _INT]
        getattr(lib, f"pool_backward_{suffix}").argtypes = [_P] * 5 + [_I64, _P, _P, _INT]
    return lib


def _library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (switched off, or the build failed: a warning, once)."""
    if _state["lib"] is not None or _state["failed"] is not None:
        return _state["lib"]
    try:
        _state["lib"] = _build()
    except (OSError, RuntimeError) as error:
        _state["failed"] = f"{type(error).__name__}: {error}"
        warnings.warn("mtlib.maxpool: compiling the CPU pool kernel failed, so the eager path "
                      f"runs from now on (same values, slower): {_state['failed'][:300]}",
                      RuntimeWarning, stacklevel=5)
    return _state["lib"]


def enabled(x: torch.Tensor) -> bool:
    """Whether the C kernels run for ``x`` (a contiguous CPU tensor of a float dtype, the
    switch on, the build available)."""
    return (x.device.type == "cpu" and x.dtype in _SUFFIX and x.is_contiguous()
            and os.environ.get("MTLIB_POOL_COMPILE", "1") != "0" and _library() is not None)


_TRIVIAL = PoolAxis(1, 1, 1, 0, 1, 1)


@functools.lru_cache(maxsize=512)
def _geometry(axes: tuple[PoolAxis, ...]) -> torch.Tensor:
    """The kernels' description of the windows, ``int64``: sizes, output sizes and tap steps
    of three axes (a 2-d pool has a one-entry depth axis in front), then per axis
    :meth:`PoolAxis.spans`, each window's first tap that reads the input and the number of
    such taps (``O(out)`` memory, never a table of every tap)."""
    axes = (_TRIVIAL,) * (3 - len(axes)) + axes
    parts = [torch.tensor([ax.size for ax in axes] + [ax.out for ax in axes]
                          + [ax.dilation for ax in axes], dtype=torch.int64)]
    return torch.cat(parts + [t for ax in axes for t in ax.spans()])


def _threads(work: int) -> int:
    """Threads for ``work`` entries: ``torch.get_num_threads()``, fewer on small inputs (one per
    :data:`GRAIN` entries, ATen's grain size), where waking threads costs more than it saves."""
    return max(1, min(torch.get_num_threads(), work // GRAIN))


@functools.cache
def _neg_inf(dtype: torch.dtype) -> torch.Tensor:
    return torch.full((1,), float("-inf"), dtype=dtype)


def forward(x: torch.Tensor, axes: tuple[PoolAxis, ...], ties: str):
    """``(m, aux)`` of the ``"last"``/``"uniform"`` forward (the companion index of
    :mod:`mtlib.maxpool._torch`) for ``x`` ``(N, C, *S)``, or None (the caller runs the eager
    path)."""
    if not enabled(x):
        return None
    shape = (*x.shape[:2], *(ax.out for ax in axes))
    m, aux = x.new_empty(shape), torch.empty(shape, dtype=torch.int64)
    geo = _geometry(axes)
    getattr(_state["lib"], f"pool_stats_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), m.data_ptr(), aux.data_ptr(), x.shape[0] * x.shape[1], geo.data_ptr(),
        _RULE[ties], _neg_inf(x.dtype).data_ptr(), _threads(x.numel()))
    return m, aux


def backward(grad: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
             axes: tuple[PoolAxis, ...]) -> torch.Tensor | None:
    """The ``"last"`` or ``"uniform"`` gradient with respect to ``x`` (contiguous) given the
    forward's companion ``aux``, or None (the caller runs the eager path)."""
    if not enabled(x):
        return None
    gx = torch.empty_like(x)
    grad, m, aux = grad.contiguous(), m.contiguous(), aux.contiguous()
    threads = _threads(x.numel())
    tied = torch.empty(threads, math.prod(m.shape[2:]), dtype=torch.int64)  # per thread
    getattr(_state["lib"], f"pool_backward_{_SUFFIX[x.dtype]}")(
        gx.data_ptr(), x.data_ptr(), m.data_ptr(), aux.data_ptr(), grad.data_ptr(),
        x.shape[0] * x.shape[1], _geometry(axes).data_ptr(), tied.data_ptr(), threads)
    return gx
