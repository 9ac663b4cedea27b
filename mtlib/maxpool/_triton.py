"""Triton backend of the tie-aware max pool (CUDA; CPU under ``TRITON_INTERPRET=1``).

Same contract as :mod:`mtlib.maxpool._torch` (``forward`` returns the window max and an ``int32``
tie count or selected tap per output; ``backward`` returns the input gradient), with two
kernels:

* forward: one lane per output scans its window's taps in row-major order with PyTorch's
  update ``v > max or isnan(v)``, so the max is PyTorch's value bit for bit, and keeps the tie
  count (``"uniform"``) or the selected tap (``"first"``: first max, last NaN; ``"last"``: last
  max, first NaN);
* backward: one lane per *input* position gathers, over the windows that contain it in
  increasing row-major order, ``g / count`` where it equals the window's saved max
  (``"uniform"``, eq 20 per window) or ``g`` where it is the selected tap. There are no atomics,
  so the result is deterministic; sums run in float32 (float64 for float64), as in PyTorch's
  CUDA kernel, and are rounded once.

Importing this module imports ``triton``; :mod:`mtlib.maxpool` does so only when needed.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from mtlib.maxpool._geometry import PoolAxis
from mtlib.ties import TRITON_CODES

_BLOCK = 256
COMPILE_OPTIONS = {"enable_fp_fusion": False}  # no FMA contraction: sums as PyTorch rounds them


@triton.jit
def _forward_kernel(x_ptr, out_ptr, aux_ptr, total, H, W, OH, OW, SH, SW, PH, PW, DH, DW,
                    KH: tl.constexpr, KW: tl.constexpr, RULE: tl.constexpr,
                    ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < total
    ow = offs % OW
    oh = (offs // OW) % OH
    base = (offs // (OW * OH)) * H * W
    m = tl.full([BLOCK], float("-inf"), ACC)
    seen = offs < 0
    cnt = tl.zeros([BLOCK], tl.int32)
    sel = tl.full([BLOCK], -1, tl.int32)
    for i in tl.static_range(KH):
        ih = oh * SH - PH + i * DH
        for j in tl.static_range(KW):
            iw = ow * SW - PW + j * DW
            ok = live & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            v = tl.load(x_ptr + base + ih * W + iw, mask=ok, other=0.0).to(ACC)
            v_nan = v != v
            m_nan = m != m
            new = ok & ((seen == 0) | (v > m) | (v_nan & (m_nan == 0)))
            tie = ok & (new == 0) & ((v == m) | (v_nan & m_nan))
            if RULE == 0:
                sel = tl.where(new | (tie & v_nan), i * KW + j, sel)
            elif RULE == 1:
                sel = tl.where(new | (tie & (v_nan == 0)), i * KW + j, sel)
            else:
                cnt = tl.where(new, 1, tl.where(tie, cnt + 1, cnt))
            m = tl.where(new, v, m)
            seen = seen | ok
    tl.store(out_ptr + offs, m.to(out_ptr.dtype.element_ty), mask=live)
    if RULE == 2:
        tl.store(aux_ptr + offs, cnt, mask=live)
    else:
        tl.store(aux_ptr + offs, sel, mask=live)


@triton.jit
def _backward_kernel(g_ptr, x_ptr, m_ptr, aux_ptr, gx_ptr, total, H, W, OH, OW,
                     SH, SW, PH, PW, DH, DW, KH: tl.constexpr, KW: tl.constexpr,
                     RULE: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < total
    iw = offs % W
    ih = (offs // W) % H
    base = (offs // (W * H)) * OH * OW
    xv = tl.load(x_ptr + offs, mask=live, other=0.0).to(ACC)
    acc = tl.zeros([BLOCK], ACC)
    for ii in tl.static_range(KH):
        i = KH - 1 - ii
        th = ih + PH - i * DH
        th0 = tl.where(th >= 0, th, 0)
        oh = th0 // SH
        ok_h = (th >= 0) & (th0 - oh * SH == 0) & (oh < OH)
        for jj in tl.static_range(KW):
            j = KW - 1 - jj
            tw = iw + PW - j * DW
            tw0 = tl.where(tw >= 0, tw, 0)
            ow = tw0 // SW
            ok = live & ok_h & (tw >= 0) & (tw0 - ow * SW == 0) & (ow < OW)
            o = base + oh * OW + ow
            g = tl.load(g_ptr + o, mask=ok, other=0.0).to(ACC)
            a = tl.load(aux_ptr + o, mask=ok, other=0)
            if RULE == 2:
                mv = tl.load(m_ptr + o, mask=ok, other=0.0).to(ACC)
                hit = ok & ((xv == mv) | ((xv != xv) & (mv != mv)))
                count = tl.maximum(a, 1).to(ACC)
                if ACC == tl.float64:
                    share = g / count
                else:
                    share = tl.math.div_rn(g, count)
                acc += tl.where(hit, share, 0.0)
            else:
                acc += tl.where(ok & (a == i * KW + j), g, 0.0)
    tl.store(gx_ptr + offs, acc.to(gx_ptr.dtype.element_ty), mask=live)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _geometry(ah: PoolAxis, aw: PoolAxis) -> tuple[int, ...]:
    return (ah.size, aw.size, ah.out, aw.out, ah.stride, aw.stride, ah.padding, aw.padding,
            ah.dilation, aw.dilation)


def _on_device(x: torch.Tensor):
    """Launch on ``x``'s GPU (the interpreter runs CPU tensors as they are)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def forward(x: torch.Tensor, ah: PoolAxis, aw: PoolAxis, ties: str):
    """Window max and ``int32`` tie count / selected tap of contiguous ``x`` (N, C, H, W)."""
    shape = (x.shape[0], x.shape[1], ah.out, aw.out)
    out = x.new_empty(shape)
    aux = torch.empty(shape, dtype=torch.int32, device=x.device)
    total = out.numel()
    if total:
        with _on_device(x):
            _forward_kernel[(triton.cdiv(total, _BLOCK),)](
                x, out, aux, total, *_geometry(ah, aw), KH=ah.kernel, KW=aw.kernel,
                RULE=TRITON_CODES[ties], ACC=_acc(x.dtype), BLOCK=_BLOCK, **COMPILE_OPTIONS)
    return out, aux


def backward(grad: torch.Tensor, x: torch.Tensor, m: torch.Tensor, aux: torch.Tensor,
             ah: PoolAxis, aw: PoolAxis, ties: str) -> torch.Tensor:
    """Input gradient by gathering, for each input position, the windows it receives from."""
    gx = torch.empty_like(x)
    total = gx.numel()
    if total:
        with _on_device(x):
            _backward_kernel[(triton.cdiv(total, _BLOCK),)](
                grad, x, m, aux, gx, total, *_geometry(ah, aw), KH=ah.kernel, KW=aw.kernel,
                RULE=TRITON_CODES[ties], ACC=_acc(x.dtype), BLOCK=_BLOCK, **COMPILE_OPTIONS)
    return gx
