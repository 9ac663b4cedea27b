"""Nonsmooth PyTorch ops written as a max or min of ordered candidates, with a tie rule.

The building blocks of :func:`mtlib.policy.tie_policy`: each op is a ``max`` (or ``min``) of
an ordered list of candidates, computed with :func:`mtlib.max_first`, :func:`mtlib.max_last`
or :func:`mtlib.max_uniform`, so its derivative at a tie is the associated gradient of the
chosen representation (eqs 17-20 of Despres 2024). Values equal PyTorch's.
"""

from __future__ import annotations

import torch

from mtlib.activations import relu_z
from mtlib.ties import MAX_BY_RULE, RELU_SLOPE, tie_set


def _max_last_dim(s: torch.Tensor, rule: str, largest: bool) -> torch.Tensor:
    return MAX_BY_RULE[rule](s) if largest else -MAX_BY_RULE[rule](-s)


def max_or_min(a, b, rule: str, largest: bool) -> torch.Tensor:
    """``max(a, b)`` (or ``min``) elementwise with broadcasting; ties resolved by ``rule``.

    ``a`` and ``b`` are tensors or Python numbers, in that order: under ``"first"`` the
    derivative at ``a = b`` goes to ``a``, under ``"last"`` to ``b``, under ``"uniform"``
    half to each. The dtype is PyTorch's promotion of the two, the device as in PyTorch: a
    CPU 0-d tensor follows the other tensor's device.
    """
    dtype = torch.result_type(a, b)
    tensors = [v for v in (a, b) if isinstance(v, torch.Tensor)]
    device = next((v.device for v in tensors if v.dim() or v.device.type != "cpu"), tensors[0].device)
    a, b = (torch.as_tensor(v, dtype=dtype, device=device) for v in (a, b))
    return _max_last_dim(torch.stack(torch.broadcast_tensors(a, b), dim=-1), rule, largest)


def relu(x: torch.Tensor, rule: str) -> torch.Tensor:
    """``relu(x) = max(x, 0)``: derivative 1 (first), 0 (last) or 1/2 (uniform) at 0."""
    return relu_z(x, RELU_SLOPE[rule])


def clamp(x: torch.Tensor, lo, hi, rule: str) -> torch.Tensor:
    """``clamp(x, lo, hi) = min(max(x, lo), hi)``, ``x`` the first candidate of both."""
    if lo is not None:
        x = max_or_min(x, lo, rule, largest=True)
    if hi is not None:
        x = max_or_min(x, hi, rule, largest=False)
    return x


def absolute(x: torch.Tensor, rule: str) -> torch.Tensor:
    """``|x| = max(x, -x)``: derivative 1 (first), -1 (last) or 0 (uniform) at 0."""
    return max_or_min(x, -x, rule, largest=True) + 0.0  # + 0.0 turns a -0.0 result into 0.0


def _reduced_dims(dim, ndim: int) -> tuple[int, ...]:
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted({d % ndim for d in dims}))


def reduce(x: torch.Tensor, dim, keepdim: bool, rule: str, largest: bool) -> torch.Tensor:
    """``max`` (or ``min``) of ``x`` over ``dim`` (``None`` or ``()``: all dims), by ``rule``.

    The candidates are the entries of the reduced dimensions in row-major order, so
    ``"first"`` favours the lowest index.
    """
    dims = _reduced_dims(dim, x.dim())
    kept = [d for d in range(x.dim()) if d not in dims]
    moved = x.permute(*kept, *dims).reshape(*[x.shape[d] for d in kept], -1)
    out = _max_last_dim(moved, rule, largest)
    for d in dims if keepdim else ():
        out = out.unsqueeze(d)
    return out


def reduce_with_indices(x: torch.Tensor, dim: int, keepdim: bool, rule: str, largest: bool):
    """``torch.max(x, dim)`` (or ``min``): values by ``rule`` and the index that rule favours.

    The index is the first maximal entry under ``"first"`` and ``"uniform"`` and the last one
    under ``"last"``. Returns ``(values, indices)`` like PyTorch.
    """
    values = reduce(x, dim, keepdim, rule, largest)
    moved = x.detach().movedim(dim, -1)
    mask = tie_set(moved if largest else -moved).to(torch.int8)
    if rule == "last":
        indices = moved.shape[-1] - 1 - mask.flip(-1).argmax(dim=-1)
    else:
        indices = mask.argmax(dim=-1)
    return values, indices.unsqueeze(dim) if keepdim else indices
