"""The tie-aware max pool as PyTorch operators (``torch.library``).

The ops work on 5-d ``(N, C, D, H, W)`` inputs (a 1-d or 2-d pool has size-1 axes in front) and
take the window geometry as ``kernel, stride, padding, dilation`` (three ints each),
``ceil_mode`` and ``output_size`` (three ints for an adaptive pool, which ignores the others;
empty otherwise). Each has a fake (meta) implementation, so ``torch.compile(fullgraph=True)``
traces through them, an autograd formula, and a batching rule (``torch.func.vmap``/``jacrev``):

* ``mtlib::max_pool_ties(x, ...) -> (out, aux)``: window max and an ``int64`` companion, an
  index over the spatial axes as PyTorch's ``return_indices``: the selected entry
  (``"first"``/``"last"``; -1 for a window lying entirely in the padding), or for
  ``"uniform"`` that entry when the tie set has one element and ``-|T_w|`` when it has more
  (-1: an empty window; :func:`mtlib.maxpool._torch.tie_counts` decodes it); its backward is
* ``mtlib::max_pool_ties_backward(grad, x, out, aux, ...) -> grad_x``, a linear map of ``grad``
  whose transpose (and the forward's JVP) is
* ``mtlib::max_pool_ties_tangent(v, x, out, aux, ...) -> out``; the two give each other's
  derivative, so double backward works too.

These three are opaque custom ops backed by the PyTorch path (:mod:`mtlib.maxpool._torch`,
strided and adaptive windows). With ``backend="triton"`` the forward and backward are instead
``mtlib::max_pool_ties_triton`` and ``mtlib::max_pool_ties_triton_backward``, ``triton_op``\\ s
(:mod:`mtlib.maxpool._triton`, which :mod:`mtlib.maxpool._dispatch` imports) whose Triton
kernels ``torch.compile`` sees; the tangent always uses the PyTorch path.

The forward saves ``x``, the window max and the integer ``aux``; the backward compares ``x``
with the saved max (exact: the max is an entry of ``x``) and divides by the saved count, so a
recomputation (activation checkpointing) cannot change which entries tie.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

from mtlib.maxpool import _torch
from mtlib.maxpool._geometry import output_shape, pool_axes


def axes_of(x: Tensor, kernel, stride, padding, dilation, ceil_mode, output_size):
    shape = tuple(x.shape[2:])
    args = (*map(tuple, (kernel, stride, padding, dilation)), ceil_mode, tuple(output_size))
    if all(type(s) is int for s in shape):
        return _axes(shape, *args)
    return pool_axes(shape, *args)  # symbolic sizes (a trace of the Triton ops): not hashable


@functools.lru_cache(maxsize=1024)
def _axes(*args):
    """:func:`pool_axes`, remembered (the ops' calls repeat a few geometries)."""
    return pool_axes(*args)


def _run(fn, tensors, axes, ties):
    """``fn(*tensors, axes, ties)`` on contiguous tensors. A pool whose depth window is a
    single entry (1-d and 2-d pools, 3-d ones of kernel ``(1, kH, kW)``, adaptive ones that
    keep the depth) runs as a 2-d pool over the ``C * D`` planes, on 4-d views, where
    PyTorch's 2-d kernels are faster than its 3-d ones; ``aux`` (an index, when >= 0) then
    counts within a plane, and is moved to and from the depth's index here."""
    tensors = [t.contiguous() for t in tensors]
    d = axes[0]
    trivial = d.out == d.size and d.kernel == 1 and (d.adaptive or (d.stride, d.padding) == (1, 0))
    if not trivial:
        return fn(*tensors, axes, ties)
    if d.size > 1:  # the depth's offset of each plane's indices
        depth = torch.arange(d.size, device=tensors[0].device).view(-1, 1, 1) * (
            axes[1].size * axes[2].size)
    if len(tensors) == 4 and d.size > 1:  # (v or grad, x, out, aux): aux within the plane
        aux = tensors[3]
        tensors[3] = torch.where(aux >= 0, aux - depth, aux)
    out = fn(*(t.flatten(1, 2) for t in tensors), axes[1:], ties)
    unflat = lambda t: t.unflatten(1, tensors[0].shape[1:3])  # noqa: E731
    if not isinstance(out, tuple):
        return unflat(out)
    out, aux = map(unflat, out)
    return out, (torch.where(aux >= 0, aux + depth, aux) if d.size > 1 else aux)


def torch_forward(x: Tensor, kernel: list[int], stride: list[int], padding: list[int],
                  dilation: list[int], ceil_mode: bool, output_size: list[int],
                  ties: str) -> tuple[Tensor, Tensor]:
    """Window max of ``x`` (N, C, D, H, W) and the ``int32`` companion the backward needs."""
    axes = axes_of(x, kernel, stride, padding, dilation, ceil_mode, output_size)
    return _run(_torch.forward, (x,), axes, ties)


max_pool_ties = torch.library.custom_op("mtlib::max_pool_ties", torch_forward, mutates_args=())


def fake_forward(x, kernel, stride, padding, dilation, ceil_mode, output_size, ties):
    shape = output_shape(x.shape, kernel, stride, padding, dilation, ceil_mode, output_size)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


def fake_backward(grad, x, out, aux, *params):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


max_pool_ties.register_fake(fake_forward)


def torch_backward(grad: Tensor, x: Tensor, out: Tensor, aux: Tensor, kernel: list[int],
                   stride: list[int], padding: list[int], dilation: list[int], ceil_mode: bool,
                   output_size: list[int], ties: str) -> Tensor:
    """Gradient with respect to ``x`` of :func:`max_pool_ties` under the tie rule."""
    axes = axes_of(x, kernel, stride, padding, dilation, ceil_mode, output_size)
    return _run(_torch.backward, (grad, x, out, aux), axes, ties)


max_pool_ties_backward = torch.library.custom_op("mtlib::max_pool_ties_backward", torch_backward,
                                                 mutates_args=())
max_pool_ties_backward.register_fake(fake_backward)


@torch.library.custom_op("mtlib::max_pool_ties_tangent", mutates_args=())
def max_pool_ties_tangent(v: Tensor, x: Tensor, out: Tensor, aux: Tensor,
                          kernel: list[int], stride: list[int], padding: list[int],
                          dilation: list[int], ceil_mode: bool, output_size: list[int],
                          ties: str) -> Tensor:
    """The pool's associated Jacobian applied to ``v`` (shape of ``x``)."""
    axes = axes_of(x, kernel, stride, padding, dilation, ceil_mode, output_size)
    return _run(_torch.tangent, (v, x, out, aux), axes, ties)


@max_pool_ties_tangent.register_fake
def _(v, x, out, aux, *params):
    return torch.empty_like(out, memory_format=torch.contiguous_format)


# --- autograd -------------------------------------------------------------------------------------

def _save(ctx, inputs, output):
    """``setup_context`` of a forward op: keep ``x``, the max and the integer companion."""
    x, *params = inputs
    out, aux = output
    ctx.mark_non_differentiable(aux)
    ctx.save_for_backward(x, out, aux)
    ctx.params = params


def _save_linear(ctx, inputs, output):
    """``setup_context`` of the two linear maps: keep the forward's saved tensors."""
    _, x, out, aux, *params = inputs
    ctx.save_for_backward(x, out, aux)
    ctx.params = params


def _tangent_op(gg, x, out, aux, *params):
    return torch.ops.mtlib.max_pool_ties_tangent(gg, x, out, aux, *params)


def register_autograd(forward_op, backward_op) -> None:
    """Autograd formulas of a forward op and its backward op (the tangent is shared)."""
    def pool_backward(ctx, grad_out, _grad_aux):
        grad_x = backward_op(grad_out, *ctx.saved_tensors, *ctx.params)
        return (grad_x,) + (None,) * len(ctx.params)

    def backward_backward(ctx, gg):
        return (_tangent_op(gg, *ctx.saved_tensors, *ctx.params),) + (None,) * (3 + len(ctx.params))

    forward_op.register_autograd(pool_backward, setup_context=_save)
    backward_op.register_autograd(backward_backward, setup_context=_save_linear)


def _tangent_backward(ctx, gg):
    grad = torch.ops.mtlib.max_pool_ties_backward(gg, *ctx.saved_tensors, *ctx.params)
    return (grad,) + (None,) * (3 + len(ctx.params))


register_autograd(max_pool_ties, max_pool_ties_backward)
max_pool_ties_tangent.register_autograd(_tangent_backward, setup_context=_save_linear)


_NAMES = {"torch": ("max_pool_ties", "max_pool_ties_backward"),
          "triton": ("max_pool_ties_triton", "max_pool_ties_triton_backward")}


def ops(backend: str):
    """``(forward_op, backward_op)`` of a backend. The Triton ops exist once
    :mod:`mtlib.maxpool._triton` is imported, which :mod:`mtlib.maxpool._dispatch` does
    before it picks that backend (this module never imports it: ``_triton`` builds on it)."""
    forward, backward = _NAMES[backend]
    return getattr(torch.ops.mtlib, forward), getattr(torch.ops.mtlib, backward)


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_TRANSFORMS_ACTIVE = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


def _apply(backend: str, which: int, *args):
    """Op ``which`` (0: forward, 1: backward) of ``backend`` on ``args``. In plain eager code
    on the PyTorch backend (no ``torch.compile`` trace, no ``torch.func`` transform, a plain
    tensor on a real device) the op's own Python implementation is called directly: the same
    function, without the custom-op dispatch (about 15 us a call, which dominates small
    pools)."""
    x = args[0]
    if (backend == "torch" and type(x) in _PLAIN and x.device.type != "meta"
            and not torch.compiler.is_compiling() and not _TRANSFORMS_ACTIVE()):
        return (torch_forward, torch_backward)[which](*args)
    return ops(backend)[which](*args)


# The wrappers that `register_autograd` generates lack `setup_context`, so `torch.func.grad`
# rejects them in this PyTorch (pytorch/pytorch#170834). In eager mode the same formulas run as
# `autograd.Function`s, which torch.func accepts; Dynamo traces neither a custom `jvp` nor a
# Function applied in a backward, so compiled code calls the ops (no forward-mode AD there).
def _layout(x: Tensor):
    """``torch.channels_last_3d`` when ``x`` is laid out so (a channels-last 4-d input seen
    with a size-1 depth axis is too): the pool's output and gradient keep it, as PyTorch's."""
    if x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return None


def _save_fn(ctx, inputs, output):
    x, backend, *params = inputs
    _save(ctx, (x, *params), output)
    ctx.backend, ctx.layout = backend, _layout(x)


def _in_layout(t: Tensor, layout) -> Tensor:
    return t if layout is None else t.contiguous(memory_format=layout)


class _PoolTiesCompiled(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_save_fn)

    @staticmethod
    def forward(x, backend, *params):
        layout = _layout(x)
        return tuple(_in_layout(t, layout) for t in _apply(backend, 0, x, *params))

    @staticmethod
    def backward(ctx, grad_out, _grad_aux):
        grad_x = ops(ctx.backend)[1](grad_out, *ctx.saved_tensors, *ctx.params)
        return (_in_layout(grad_x, ctx.layout), None) + (None,) * len(ctx.params)


class _PoolTies(_PoolTiesCompiled):
    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_fn(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], *output)

    @staticmethod
    def backward(ctx, grad_out, _grad_aux):
        if torch.is_grad_enabled():  # create_graph: the backward is differentiable in turn
            grad_x = _Backward.apply(grad_out, *ctx.saved_tensors, ctx.backend, *ctx.params)
        else:
            grad_x = _apply(ctx.backend, 1, grad_out, *ctx.saved_tensors, *ctx.params)
        return (_in_layout(grad_x, ctx.layout), None) + (None,) * len(ctx.params)

    @staticmethod
    def jvp(ctx, x_t, *_):
        return _Tangent.apply(x_t, *ctx.saved_tensors, "torch", *ctx.params), None


def _save_linear_fn(ctx, inputs, output):
    v, x, out, aux, backend, *params = inputs
    _save_linear(ctx, (v, x, out, aux, *params), output)
    ctx.backend = backend


class _Backward(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_save_linear_fn)

    @staticmethod
    def forward(grad, x, out, aux, backend, *params):
        return _apply(backend, 1, grad, x, out, aux, *params)

    @staticmethod
    def backward(ctx, gg):
        grad = _Tangent.apply(gg, *ctx.saved_tensors, ctx.backend, *ctx.params)
        return (grad,) + (None,) * (4 + len(ctx.params))


class _Tangent(torch.autograd.Function):
    generate_vmap_rule = True
    setup_context = staticmethod(_save_linear_fn)

    @staticmethod
    def forward(v, x, out, aux, backend, *params):
        return _tangent_op(v, x, out, aux, *params)

    @staticmethod
    def backward(ctx, gg):
        grad = _Backward.apply(gg, *ctx.saved_tensors, ctx.backend, *ctx.params)
        return (grad,) + (None,) * (4 + len(ctx.params))


# Function.apply binds its arguments with inspect.signature(forward) on every call (about 10 us
# for these three); a signature computed once makes that a lookup
for _fn in (_PoolTiesCompiled, _Backward, _Tangent):
    _fn.forward.__signature__ = inspect.signature(_fn.forward)


def pool_ties(x: Tensor, kernel: list[int], stride: list[int], padding: list[int],
              dilation: list[int], ceil_mode: bool, output_size: list[int], ties: str,
              backend: str) -> tuple[Tensor, Tensor]:
    """Differentiable entry point on 5-d ``x``: the forward op of ``backend`` under autograd
    and ``torch.func``."""
    params = (kernel, stride, padding, dilation, ceil_mode, output_size, ties)
    if not torch.compiler.is_compiling():
        return _PoolTies.apply(x, backend, *params)
    if torch.is_grad_enabled() and x.requires_grad:
        return _PoolTiesCompiled.apply(x, backend, *params)
    # no gradient to trace: the op itself (Dynamo in torch 2.13 passes a Function instance as
    # the first argument of a setup_context-style forward when no input requires grad)
    layout = _layout(x)
    return tuple(_in_layout(t, layout) for t in ops(backend)[0](x, *params))


# --- vmap -----------------------------------------------------------------------------------------

def _merge_batch(t: Tensor, bdim, size: int) -> Tensor:
    """Move the vmap dimension ``bdim`` of ``t`` into its leading (N) dimension."""
    t = t.unsqueeze(0).expand(size, *t.shape) if bdim is None else t.movedim(bdim, 0)
    return t.reshape(size * t.shape[1], *t.shape[2:])


def register_vmap(forward_op, linear_ops) -> None:
    """Batching rules: the vmap dimension is merged into the batch dimension N."""
    def forward_rule(info, in_dims, x, *params):
        out, aux = forward_op(_merge_batch(x, in_dims[0], info.batch_size), *params)
        size = info.batch_size
        return (out.unflatten(0, (size, -1)), aux.unflatten(0, (size, -1))), (0, 0)

    def linear_rule(op):
        def rule(info, in_dims, v, x, out, aux, *params):
            size = info.batch_size
            tensors = [_merge_batch(t, d, size) for t, d in zip((v, x, out, aux), in_dims)]
            return op(*tensors, *params).unflatten(0, (size, -1)), 0
        return rule

    forward_op.register_vmap(forward_rule)
    for op in linear_ops:
        op.register_vmap(linear_rule(op))


register_vmap(max_pool_ties, (max_pool_ties_backward, max_pool_ties_tangent))
