"""The tie-aware max pool as PyTorch operators (``torch.library``).

Three custom ops on 4-d ``(N, C, H, W)`` inputs, each with a fake (meta) implementation so that
``torch.compile(fullgraph=True)`` traces through them, an autograd formula, and a batching rule
(``torch.func.vmap`` / ``jacrev``):

* ``mtlib::max_pool2d_ties(x, ...) -> (out, aux)``: window max and ``int32`` tie count
  (``"uniform"``) or selected tap (``"first"``/``"last"``); its backward is
* ``mtlib::max_pool2d_ties_backward(grad, x, out, aux, ...) -> grad_x``, a linear map of
  ``grad`` whose transpose (and the forward's JVP) is
* ``mtlib::max_pool2d_ties_tangent(v, x, out, aux, ...) -> out``; the two give each other's
  derivative, so double backward works too.

The forward saves ``x``, the window max and the integer ``aux``; the backward compares ``x``
with the saved max (exact: the max is an entry of ``x``) and divides by the saved count.
``backend`` is ``"torch"`` (:mod:`mtlib.maxpool._torch`) or ``"triton"``
(:mod:`mtlib.maxpool._triton`, imported on first use); the tangent always uses the former.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from mtlib.maxpool import _torch
from mtlib.maxpool._geometry import pool_axes

_BACKENDS = {"torch": "mtlib.maxpool._torch", "triton": "mtlib.maxpool._triton"}


def _impl(backend: str):
    return importlib.import_module(_BACKENDS[backend])


def _axes(x: Tensor, kernel, stride, padding, dilation, ceil_mode):
    return pool_axes(tuple(x.shape[2:]), kernel, stride, padding, dilation, ceil_mode)


@torch.library.custom_op("mtlib::max_pool2d_ties", mutates_args=())
def max_pool2d_ties(x: Tensor, kernel: list[int], stride: list[int], padding: list[int],
                    dilation: list[int], ceil_mode: bool, ties: str,
                    backend: str) -> tuple[Tensor, Tensor]:
    """Window max of ``x`` (N, C, H, W) and the ``int32`` companion the backward needs."""
    ah, aw = _axes(x, kernel, stride, padding, dilation, ceil_mode)
    return _impl(backend).forward(x.contiguous(), ah, aw, ties)


@max_pool2d_ties.register_fake
def _(x, kernel, stride, padding, dilation, ceil_mode, ties, backend):
    ah, aw = _axes(x, kernel, stride, padding, dilation, ceil_mode)
    shape = (x.shape[0], x.shape[1], ah.out, aw.out)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int32)


@torch.library.custom_op("mtlib::max_pool2d_ties_backward", mutates_args=())
def max_pool2d_ties_backward(grad: Tensor, x: Tensor, out: Tensor, aux: Tensor,
                             kernel: list[int], stride: list[int], padding: list[int],
                             dilation: list[int], ceil_mode: bool, ties: str,
                             backend: str) -> Tensor:
    """Gradient with respect to ``x`` of :func:`max_pool2d_ties` under the tie rule."""
    ah, aw = _axes(x, kernel, stride, padding, dilation, ceil_mode)
    return _impl(backend).backward(grad.contiguous(), x.contiguous(), out.contiguous(),
                                   aux.contiguous(), ah, aw, ties)


@max_pool2d_ties_backward.register_fake
def _(grad, x, out, aux, kernel, stride, padding, dilation, ceil_mode, ties, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("mtlib::max_pool2d_ties_tangent", mutates_args=())
def max_pool2d_ties_tangent(v: Tensor, x: Tensor, out: Tensor, aux: Tensor,
                            kernel: list[int], stride: list[int], padding: list[int],
                            dilation: list[int], ceil_mode: bool, ties: str,
                            backend: str) -> Tensor:
    """The pool's associated Jacobian applied to ``v`` (shape of ``x``)."""
    ah, aw = _axes(x, kernel, stride, padding, dilation, ceil_mode)
    return _torch.tangent(v.contiguous(), x.contiguous(), out.contiguous(),
                                aux.contiguous(), ah, aw, ties)


@max_pool2d_ties_tangent.register_fake
def _(v, x, out, aux, kernel, stride, padding, dilation, ceil_mode, ties, backend):
    return torch.empty_like(out, memory_format=torch.contiguous_format)


def _save(ctx, inputs, output):
    """``setup_context`` of the forward: keep ``x``, the max and the integer companion."""
    x, *params = inputs
    out, aux = output
    ctx.mark_non_differentiable(aux)
    ctx.save_for_backward(x, out, aux)
    ctx.params = params


def _save_jvp(ctx, inputs, output):
    """``setup_context`` of the forward with forward-mode AD (eager only)."""
    _save(ctx, inputs, output)
    ctx.save_for_forward(*inputs[:1], *output)


def _save_linear(ctx, inputs, output):
    """``setup_context`` of the two linear maps: keep the forward's saved tensors."""
    _, x, out, aux, *params = inputs
    ctx.save_for_backward(x, out, aux)
    ctx.params = params


def _pool_backward(ctx, grad_out, _grad_aux):
    grad_x = torch.ops.mtlib.max_pool2d_ties_backward(grad_out, *ctx.saved_tensors, *ctx.params)
    return (grad_x,) + (None,) * len(ctx.params)


def _pool_backward_func(ctx, grad_out, _grad_aux):
    grad_x = _Backward.apply(grad_out, *ctx.saved_tensors, *ctx.params)
    return (grad_x,) + (None,) * len(ctx.params)


def _backward_backward(ctx, gg):
    return (_Tangent.apply(gg, *ctx.saved_tensors, *ctx.params),) + (None,) * (3 + len(ctx.params))


def _tangent_backward(ctx, gg):
    return (_Backward.apply(gg, *ctx.saved_tensors, *ctx.params),) + (None,) * (3 + len(ctx.params))


max_pool2d_ties.register_autograd(_pool_backward, setup_context=_save)
max_pool2d_ties_backward.register_autograd(_backward_backward, setup_context=_save_linear)
max_pool2d_ties_tangent.register_autograd(_tangent_backward, setup_context=_save_linear)


# The wrappers that `register_autograd` generates lack `setup_context`, so `torch.func.grad`
# rejects them in this PyTorch (pytorch/pytorch#170834). In eager mode the same formulas run as
# `autograd.Function`s, which torch.func accepts; Dynamo traces neither a custom `jvp` nor a
# Function applied in a backward, so compiled code calls the ops (no forward-mode AD there).
class _PoolTiesCompiled(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_save)
    backward = staticmethod(_pool_backward)

    @staticmethod
    def forward(x, *params):
        return torch.ops.mtlib.max_pool2d_ties(x, *params)


class _PoolTies(_PoolTiesCompiled):
    setup_context = staticmethod(_save_jvp)
    backward = staticmethod(_pool_backward_func)

    @staticmethod
    def jvp(ctx, x_t, *_):
        return _Tangent.apply(x_t, *ctx.saved_tensors, *ctx.params), None


class _Backward(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_save_linear)
    backward = staticmethod(_backward_backward)

    @staticmethod
    def forward(grad, x, out, aux, *params):
        return torch.ops.mtlib.max_pool2d_ties_backward(grad, x, out, aux, *params)


class _Tangent(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_save_linear)
    backward = staticmethod(_tangent_backward)

    @staticmethod
    def forward(v, x, out, aux, *params):
        return torch.ops.mtlib.max_pool2d_ties_tangent(v, x, out, aux, *params)


def pool_ties(x: Tensor, kernel: list[int], stride: list[int], padding: list[int],
              dilation: list[int], ceil_mode: bool, ties: str,
              backend: str) -> tuple[Tensor, Tensor]:
    """Differentiable entry point: :func:`max_pool2d_ties` under autograd and ``torch.func``."""
    fn = _PoolTiesCompiled if torch.compiler.is_compiling() else _PoolTies
    return fn.apply(x, kernel, stride, padding, dilation, ceil_mode, ties, backend)


def _merge_batch(t: Tensor, bdim, size: int) -> Tensor:
    """Move the vmap dimension ``bdim`` of ``t`` into its leading (N) dimension."""
    t = t.unsqueeze(0).expand(size, *t.shape) if bdim is None else t.movedim(bdim, 0)
    return t.reshape(size * t.shape[1], *t.shape[2:])


@max_pool2d_ties.register_vmap
def _(info, in_dims, x, *params):
    out, aux = max_pool2d_ties(_merge_batch(x, in_dims[0], info.batch_size), *params)
    size = info.batch_size
    return (out.unflatten(0, (size, -1)), aux.unflatten(0, (size, -1))), (0, 0)


def _linear_vmap(op):
    def rule(info, in_dims, v, x, out, aux, *params):
        size = info.batch_size
        tensors = [_merge_batch(t, d, size) for t, d in zip((v, x, out, aux), in_dims)]
        return op(*tensors, *params).unflatten(0, (size, -1)), 0
    return rule


max_pool2d_ties_backward.register_vmap(_linear_vmap(max_pool2d_ties_backward))
max_pool2d_ties_tangent.register_vmap(_linear_vmap(max_pool2d_ties_tangent))
