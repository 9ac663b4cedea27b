"""CPU fast path of the tie-aware pools with small windows: a loop compiled by Inductor.

For a strided pool of at most :data:`MAX_TAPS` taps per window on a CPU tensor of at least
:data:`MIN_NUMEL` entries (an adaptive pool whose windows all have one length is one; not a
3-d pool in a 16-bit float, whose two-stage loops Inductor makes up to 1.8x slower than the
C kernel on one thread: forward of the benchmark's 3-d pools in bfloat16, ``"last"`` 73-76
against 43-51 ms, measured), a
``torch.compile``\\ d function replaces the ``"last"``/``"uniform"`` forward of
:mod:`mtlib.maxpool._torch`. The windows are a strided view of ``x`` padded with ``-inf``; the
taps of a window are read in row-major order, in which the flat input index increases. One
pass over each window's taps gives the window max ``m_w = max_{p in w} x_p`` (NaN when the
window holds a NaN), exact; the size of the tie set ``T_w = {p in w : x_p = m_w}`` (the NaN
entries of a NaN window; padding never); and its first (``"uniform"``) or last (``"last"``)
entry, the least or greatest flat index in ``T_w``. From them comes the companion index
(``"uniform"``: the index when ``|T_w| = 1``, ``-|T_w|`` from two on, -1 for an empty window;
``"last"``: the last tie, where the caller then settles the NaN windows, whose pick is their
first NaN). A 3-d pool runs in two stages (depth windows of every ``(h, w)`` column, then the
``(H, W)`` windows of the column results). Inductor vectorizes this loop across neighbouring
windows, which the C kernel (:mod:`mtlib.maxpool._cpu`, one window after another, as PyTorch's
own kernel) does not: on these pools it is up to 1.5x faster than that kernel (measured).
Every other CPU pool, and every backward, runs the C kernel.

The values are those of the eager path bit for bit (the tests compare both with a brute-force
oracle). The function is specialized to the shape, dtype and geometry (``dynamic=False``): the
first call on a new one compiles (about 1 to 10 s on the benchmark's CPU, ``first_call_ms`` in
its table; Inductor caches it on disk), later calls reuse it. With no C++ compiler or
``MTLIB_POOL_COMPILE=0`` in the environment, it does not run; if a compile fails, a warning
says so once and the C kernel (or the eager path) is used from then on.

Chapter: pools_practice (the speed table).
"""

from __future__ import annotations

import math
import os
import warnings

import torch

from mtlib.maxpool._geometry import PoolAxis, window_view

MIN_NUMEL = 1 << 18  # below this the C kernel runs: compiling each new shape would not pay
MAX_TAPS = 27  # larger windows: the C kernel (it reads long rows of taps vectorized)
# one compiled version per (shape, dtype, geometry, rule): Dynamo's recompile limits, raised
# inside our calls only, under the names this torch release has
_LIMITS = {name: 4096 for name in ("recompile_limit", "accumulated_recompile_limit")
           if hasattr(torch._dynamo.config, name)}
_state = {"failed": None}


def _taps(x: torch.Tensor, axes, fill) -> torch.Tensor:
    """The windows of ``x`` ``(B, C, *S)`` as ``(B, C, *out, K)``, taps in row-major order,
    the padding read as ``fill``."""
    return window_view(x, axes, fill).flatten(2 + len(axes))


def _read_taps(axes, device) -> torch.Tensor:
    """``(*out, K)``: whether each tap of each window reads the input (not the padding). The
    test of :meth:`PoolAxis.window_indices`, written as index arithmetic that Inductor fuses
    into the loop (a table built with ``torch.where`` is loaded instead, and made the 3-d
    forward twice as slow)."""
    n = len(axes)
    read = torch.ones((), dtype=torch.bool, device=device)
    for d, ax in enumerate(axes):
        i = ax.starts().to(device)[:, None] + torch.arange(ax.kernel, device=device) * ax.dilation
        shape = [1] * (2 * n)
        shape[d], shape[n + d] = ax.out, ax.kernel
        read = read & ((i >= 0) & (i < ax.size)).view(shape)
    return read.flatten(n)


def _offsets(axes, device, dtype) -> torch.Tensor:
    """``(K,)``: the flat input index of each tap minus that of tap 0 (a window's first tap,
    padding or not), increasing in row-major tap order; flat over the axes of ``axes``."""
    off, inner = torch.zeros((), dtype=dtype, device=device), 1
    for ax in reversed(axes):
        off = (torch.arange(ax.kernel, device=device, dtype=dtype) * (ax.dilation * inner))[:, None] \
            + off.flatten()[None, :]
        inner *= ax.size
    return off.flatten()


def _index_dtype(axes) -> torch.dtype:
    """``int32`` for the offsets when they fit (half the memory traffic), else ``int64``."""
    return torch.int32 if math.prod([ax.size for ax in axes]) < 2**31 - 1 else torch.int64


def _has_padding(axes) -> bool:
    """Whether a window reaches past an edge of ``x`` (its taps there are padding)."""
    return any(ax.padding or ax.overhang for ax in axes)


def _plane_stats(x: torch.Tensor, axes, last: bool):
    """``m``, ``|T_w|`` and the offset (:func:`_offsets`) of the first tie (the last one if
    ``last``), strided windows over the trailing axes of ``x``; a tap in the padding is never
    a tie. An empty tie set gives an offset past every tap (-1 for the last tie)."""
    win = _taps(x, axes, float("-inf"))
    m = win.amax(dim=-1)
    tie = (win == m[..., None]) | (win.isnan() & m.isnan()[..., None])
    if _has_padding(axes):
        tie = tie & _read_taps(axes, x.device)
    off = _offsets(axes, x.device, _index_dtype(axes))
    count = tie.sum(dim=-1, dtype=torch.int32)
    past = math.prod([ax.size for ax in axes])  # above every offset
    if last:  # two forms of one value, the faster loops Inductor makes of each (measured,
        # forward of a k2s2 pool on (128, 512, 4, 4) and (64, 128, 28, 28): bfloat16 1.2 and
        # 10.4 ms with the first, 5.7 and 13.9 with the second; float32 1.1 and 6.7 against
        # 0.7 and 8.0): 16-bit floats take the first tie in reversed offsets
        if x.element_size() == 2:
            rev = past - 1 - off
            return m, count, past - 1 - (past - (tie * (past - rev)).amax(dim=-1))
        return m, count, (tie * (off + 1)).amax(dim=-1) - 1
    return m, count, past - (tie * (past - off)).amax(dim=-1)


def _depth_stats(x: torch.Tensor, axes, last: bool):
    """The same for a 3-d pool, in two stages: the depth windows of every ``(h, w)`` column
    (a pool over ``(D, H*W)`` with a one-entry window along ``H*W``, so the inner loop runs
    along contiguous memory), then the ``(H, W)`` windows of those column statistics ``t``:
    ``m = max_t m_t``, ``|T| = sum of |T_t|`` over the ``t`` with ``m_t = m``, and the least
    (greatest) offset among their ties (row-major order: depth first)."""
    b, c, depth, h, w = x.shape
    column = PoolAxis(h * w, 1, 1, 0, 1, h * w)
    stats = _plane_stats(x.view(b, c, depth, h * w), (axes[0], column), last)
    m, count, at = (t.unflatten(3, (h, w)).flatten(1, 2) for t in stats)
    mt = _taps(m, axes[1:], float("-inf"))
    ct = _taps(count, axes[1:], 0)
    top = mt.amax(dim=-1)
    hit = ((mt == top[..., None]) | (mt.isnan() & top.isnan()[..., None])) & (ct > 0)
    off = _offsets(axes[1:], x.device, _index_dtype(axes)) + _taps(at, axes[1:], 0)
    extreme = (torch.where(hit, off, -1).amax(dim=-1) if last else
               torch.where(hit, off, depth * h * w).amin(dim=-1))
    return tuple(t.unflatten(1, (c, axes[0].out)) for t in (
        top, (ct * hit).sum(dim=-1, dtype=torch.int32), extreme))


def _window_stats(x: torch.Tensor, axes: tuple[PoolAxis, ...], ties: str):
    """``(m, aux)`` for ``x`` ``(N, C, *S)`` (the module docstring); traced by Dynamo. Three
    reductions per window (max, count, one extreme tie; more, or an epilogue that reads the
    max again, make Inductor's 3-d loops several times slower), so under ``"last"`` the index
    of a NaN window is its last NaN, not its first: the caller settles NaN windows."""
    n = len(axes)
    m, count, at = (_depth_stats if n == 3 else _plane_stats)(x, axes, ties == "last")
    base, inner = 0, 1  # flat index of tap 0 of each window
    for d in reversed(range(n)):
        ax = axes[d]
        start = axes[d].starts().to(x.device).view(-1, *[1] * (n - 1 - d))
        base, inner = base + start * inner, inner * ax.size
    if ties == "uniform":
        return m, torch.where(count == 1, base + at, torch.where(count == 0, -1, -count))
    # "last": the last tie; -1 for an empty window
    return m, torch.where(count == 0, -1, base + at)


_compiled = torch.compile(_window_stats, dynamic=False, fullgraph=True)


def enabled(x: torch.Tensor, axes: tuple[PoolAxis, ...]) -> bool:
    """Whether the compiled function runs for this input (the module docstring's conditions)."""
    return (x.device.type == "cpu" and x.numel() >= MIN_NUMEL and not axes[0].adaptive
            and math.prod([ax.kernel for ax in axes]) <= MAX_TAPS
            and (x.dtype in (torch.float32, torch.float64)
                 or (x.dtype in (torch.bfloat16, torch.float16) and len(axes) == 2))
            and _state["failed"] is None and os.environ.get("MTLIB_POOL_COMPILE", "1") != "0")


def forward(x: torch.Tensor, axes: tuple[PoolAxis, ...], ties: str):
    """``(m, aux)`` of the ``"last"``/``"uniform"`` forward, or None (the caller then runs the
    C kernel or the eager path; also if compiling fails: a warning, then never again)."""
    if not enabled(x, axes):
        return None
    try:
        with torch._dynamo.config.patch(**_LIMITS), \
                warnings.catch_warnings():  # Dynamo's and Inductor's own notices, not the user's
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf")
            return _compiled(x, axes, ties)
    except Exception as error:  # no C++ compiler, or an Inductor failure: never again
        _state["failed"] = f"{type(error).__name__}: {error}"
        warnings.warn("mtlib.maxpool: compiling the CPU pool failed, so the C kernel or the eager "
                      f"path runs from now on (same values): {_state['failed'][:300]}",
                      RuntimeWarning, stacklevel=3)
        return None
