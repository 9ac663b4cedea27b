"""Triton backend of the tie-aware max pool (CUDA; CPU under ``TRITON_INTERPRET=1``).

Same contract as the PyTorch path (:mod:`mtlib.maxpool._torch`): the forward returns the window
max and the ``int64`` companion of :mod:`mtlib.maxpool._op` per output (the selected entry's
spatial index, or for ``"uniform"`` that of a single max and minus the count of a tie), the
backward the input
gradient; 5-d ``(N, C, D, H, W)`` inputs, strided or adaptive windows
(:class:`mtlib.maxpool._geometry.PoolAxis`). Two kernels:

* forward: one lane per output scans its window's taps in row-major order with PyTorch's
  update ``v > max or isnan(v)``, so the max is PyTorch's value bit for bit, and keeps the
  selected entry (``"first"``: first max, last NaN; ``"last"``: last max, first NaN) and for
  ``"uniform"`` the tie count too;
* backward: one lane per *input* position gathers, over the windows that contain it in
  increasing row-major order, ``g`` where it is the selected entry, and then (``"uniform"``)
  ``g / count`` where it equals the saved max of a tied window (eq 20 per window), in the
  order of the PyTorch path. No atomics,
  so the result is deterministic; sums run in float32 (float64 for float64), as in PyTorch's
  CUDA kernel, and are rounded once.

They are registered as ``torch.library.triton_op``\\ s, ``mtlib::max_pool_ties_triton`` and
``mtlib::max_pool_ties_triton_backward``, launched through ``torch.library.wrap_triton``, so
``torch.compile`` sees the kernels; their CPU kernel is the PyTorch path (the Triton kernels
under the interpreter). Importing this module imports ``triton``; :mod:`mtlib.maxpool._dispatch`
does so where the kernels can run (a GPU, or ``TRITON_INTERPRET=1``) or on first use.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from mtlib.maxpool import _op
from mtlib.maxpool._geometry import PoolAxis, output_shape
from mtlib.ties import TRITON_CODES

_BLOCK = 256
COMPILE_OPTIONS = {"enable_fp_fusion": False}  # no FMA contraction: sums as PyTorch rounds them


@triton.jit
def _tap(o, i, L, OUT, S, P, DIL, ADAPTIVE: tl.constexpr):
    """Input index read by tap ``i`` of output ``o`` along one axis, and whether it is read."""
    if ADAPTIVE:
        idx = (o * L) // OUT + i
        ok = idx < ((o + 1) * L + OUT - 1) // OUT
    else:
        idx = o * S - P + i * DIL
        ok = (idx >= 0) & (idx < L)
    return idx, ok


@triton.jit
def _reader(p, r, L, OUT, S, P, DIL, K: tl.constexpr, ADAPTIVE: tl.constexpr):
    """The ``r``-th window (increasing output order) holding input ``p`` along one axis: its
    output ``o``, the tap of ``p`` in it, and whether it exists."""
    if ADAPTIVE:
        o = (p * OUT) // L + r
        ok = o * L < (p + 1) * OUT
        i = p - (o * L) // OUT
    else:
        i = K - 1 - r
        t = p + P - i * DIL
        t0 = tl.where(t >= 0, t, 0)
        o = t0 // S
        ok = (t >= 0) & (t0 - o * S == 0) & (o < OUT)
    return o, i, ok


@triton.jit
def _forward_kernel(x_ptr, out_ptr, aux_ptr, total, D, H, W, OD, OH, OW, SD, SH, SW, PD, PH, PW,
                    DD, DH, DW, KD: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                    ADAPTIVE: tl.constexpr, RULE: tl.constexpr, ACC: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < total
    ow = offs % OW
    oh = (offs // OW) % OH
    od = (offs // (OW * OH)) % OD
    base = (offs // (OW * OH * OD)) * D * H * W
    m = tl.full([BLOCK], float("-inf"), ACC)
    seen = offs < 0
    cnt = tl.zeros([BLOCK], tl.int32)
    sel = tl.full([BLOCK], -1, tl.int64)
    for a in range(KD):
        id_, ok_d = _tap(od, a, D, OD, SD, PD, DD, ADAPTIVE)
        for i in range(KH):
            ih, ok_h = _tap(oh, i, H, OH, SH, PH, DH, ADAPTIVE)
            for j in range(KW):
                iw, ok_w = _tap(ow, j, W, OW, SW, PW, DW, ADAPTIVE)
                ok = live & ok_d & ok_h & ok_w
                v = tl.load(x_ptr + base + (id_ * H + ih) * W + iw, mask=ok, other=0.0).to(ACC)
                v_nan = v != v
                m_nan = m != m
                new = ok & ((seen == 0) | (v > m) | (v_nan & (m_nan == 0)))
                tie = ok & (new == 0) & ((v == m) | (v_nan & m_nan))
                tap = (id_ * H + ih) * W + iw  # the entry's spatial index
                if RULE == 1:
                    sel = tl.where(new | (tie & (v_nan == 0)), tap, sel)
                else:
                    sel = tl.where(new | (tie & v_nan), tap, sel)
                if RULE == 2:
                    cnt = tl.where(new, 1, tl.where(tie, cnt + 1, cnt))
                m = tl.where(new, v, m)
                seen = seen | ok
    tl.store(out_ptr + offs, m.to(out_ptr.dtype.element_ty), mask=live)
    if RULE == 2:  # the entry of a single max, minus the count of a tie (see _op)
        tl.store(aux_ptr + offs, tl.where(cnt >= 2, -cnt.to(tl.int64), sel), mask=live)
    else:
        tl.store(aux_ptr + offs, sel, mask=live)


@triton.jit
def _backward_kernel(g_ptr, x_ptr, m_ptr, aux_ptr, gx_ptr, total, D, H, W, OD, OH, OW,
                     SD, SH, SW, PD, PH, PW, DD, DH, DW, KD: tl.constexpr, KH: tl.constexpr,
                     KW: tl.constexpr, RD: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr,
                     ADAPTIVE: tl.constexpr, RULE: tl.constexpr, ACC: tl.constexpr,
                     BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < total
    pw = offs % W
    ph = (offs // W) % H
    pd = (offs // (W * H)) % D
    base = (offs // (W * H * D)) * OD * OH * OW
    xv = tl.load(x_ptr + offs, mask=live, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK], ACC)
    # "uniform": the windows that select p alone first, then the tied ones (the CPU order)
    for phase in tl.static_range(2 if RULE == 2 else 1):
        for rd in range(RD):
            od, _, ok_d = _reader(pd, rd, D, OD, SD, PD, DD, KD, ADAPTIVE)
            for rh in range(RH):
                oh, _, ok_h = _reader(ph, rh, H, OH, SH, PH, DH, KH, ADAPTIVE)
                for rw in range(RW):
                    ow, _, ok_w = _reader(pw, rw, W, OW, SW, PW, DW, KW, ADAPTIVE)
                    ok = live & ok_d & ok_h & ok_w
                    o = base + (od * OH + oh) * OW + ow
                    g = tl.load(g_ptr + o, mask=ok, other=0.0).to(ACC)
                    a = tl.load(aux_ptr + o, mask=ok, other=0)
                    if phase == 1:
                        mv = tl.load(m_ptr + o, mask=ok, other=0.0).to(ACC)
                        hit = ok & (a <= -2) & ((xv == mv) | ((xv != xv) & (mv != mv)))
                        count = tl.where(a <= -2, -a, 1).to(ACC)
                        if ACC == tl.float64:
                            share = g / count
                        else:
                            share = tl.math.div_rn(g, count)
                        acc += tl.where(hit, share, 0.0)
                    else:
                        acc += tl.where(ok & (a == (pd * H + ph) * W + pw), g, 0.0)
    tl.store(gx_ptr + offs, acc.to(gx_ptr.dtype.element_ty), mask=live)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geometry(axes: tuple[PoolAxis, ...]) -> tuple[int, ...]:
    return tuple(getattr(ax, name) for name in ("size", "out", "stride", "padding", "dilation")
                 for ax in axes)


def _grid(total):
    return (triton.cdiv(total, _BLOCK),)


def _forward(x: Tensor, kernel: list[int], stride: list[int], padding: list[int],
             dilation: list[int], ceil_mode: bool, output_size: list[int],
             ties: str) -> tuple[Tensor, Tensor]:
    """Window max and ``int64`` companion (see :mod:`mtlib.maxpool._op`) of ``x`` (N, C, D, H, W)."""
    shape = output_shape(x.shape, kernel, stride, padding, dilation, ceil_mode, output_size)
    out = x.new_empty(shape)
    aux = x.new_empty(shape, dtype=torch.int64)
    total = math.prod(shape)
    if total:
        axes = _op.axes_of(x, kernel, stride, padding, dilation, ceil_mode, output_size)
        wrap_triton(_forward_kernel)[_grid(total)](
            x.contiguous(), out, aux, total, *_geometry(axes), KD=axes[0].kernel,
            KH=axes[1].kernel, KW=axes[2].kernel, ADAPTIVE=axes[0].adaptive,
            RULE=TRITON_CODES[ties], ACC=_acc(x.dtype), BLOCK=_BLOCK, **COMPILE_OPTIONS)
    return out, aux


def _backward(grad: Tensor, x: Tensor, out: Tensor, aux: Tensor,
              kernel: list[int], stride: list[int], padding: list[int], dilation: list[int],
              ceil_mode: bool, output_size: list[int], ties: str) -> Tensor:
    """Input gradient by gathering, for each input position, the windows it receives from."""
    gx = torch.empty_like(x, memory_format=torch.contiguous_format)
    total = gx.numel()
    if total:
        axes = _op.axes_of(x, kernel, stride, padding, dilation, ceil_mode, output_size)
        wrap_triton(_backward_kernel)[_grid(total)](
            grad.contiguous(), x.contiguous(), out.contiguous(), aux.contiguous(), gx, total,
            *_geometry(axes), KD=axes[0].kernel, KH=axes[1].kernel, KW=axes[2].kernel,
            RD=axes[0].readers, RH=axes[1].readers, RW=axes[2].readers,
            ADAPTIVE=axes[0].adaptive, RULE=TRITON_CODES[ties], ACC=_acc(x.dtype),
            BLOCK=_BLOCK, **COMPILE_OPTIONS)
    return gx


max_pool_ties_triton = triton_op("mtlib::max_pool_ties_triton", _forward, mutates_args=())
max_pool_ties_triton_backward = triton_op("mtlib::max_pool_ties_triton_backward", _backward,
                                          mutates_args=())


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@max_pool_ties_triton.register_kernel("cpu")
def _(x, *params):
    """CPU: the PyTorch path, or the Triton kernels under the interpreter."""
    return (_forward if _interpreted() else _op.torch_forward)(x, *params)


@max_pool_ties_triton_backward.register_kernel("cpu")
def _(grad, x, out, aux, *params):
    return (_backward if _interpreted() else _op.torch_backward)(grad, x, out, aux, *params)


_op.register_autograd(max_pool_ties_triton, max_pool_ties_triton_backward)
_op.register_vmap(max_pool_ties_triton, (max_pool_ties_triton_backward,))
