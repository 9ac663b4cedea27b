"""One tie rule for every nonsmooth op: ``with tie_policy("uniform"): ...``.

PyTorch's ops each choose their own derivative at their kinks (see the census chapter):
``torch.relu'(0) = 0``, ``torch.clamp(x, min=0)'(0) = 1``, ``torch.maximum(x, 0)'(0) = 1/2``.
Under :func:`tie_policy` they all follow a single rule, so that different ways of writing
the same function get the same associated gradient (Def 1 of Despres 2024).

Chapter: pools_practice, census.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from mtlib.maxpool import (
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)
from mtlib.policy import _ops as ops
from mtlib.ties import check_ties


def _relu(rule, func, input, inplace=False):
    return _result(input, ops.relu(_src(input, inplace), rule), inplace)


def _relu_(rule, func, input):
    return _relu(rule, func, input, inplace=True)


def _relu6(rule, func, input, inplace=False):
    return _result(input, ops.clamp(_src(input, inplace), 0.0, 6.0, rule), inplace)


def _hardtanh(rule, func, input, min_val=-1.0, max_val=1.0, inplace=False):
    return _result(input, ops.clamp(_src(input, inplace), min_val, max_val, rule), inplace)


def _clamp(rule, func, input, min=None, max=None):
    if min is None and max is None:
        return func(input, min, max)
    return ops.clamp(input, min, max, rule)


def _clamp_(rule, func, input, min=None, max=None):
    return _result(input, _clamp(rule, func, input.clone(), min, max), True)


def _clamp_min(rule, func, input, min):
    return ops.clamp(input, min, None, rule)


def _clamp_max(rule, func, input, max):
    return ops.clamp(input, None, max, rule)


def _maximum(rule, func, input, other):
    return ops.max_or_min(input, other, rule, largest=True)


def _minimum(rule, func, input, other):
    return ops.max_or_min(input, other, rule, largest=False)


def _abs(rule, func, input):
    return ops.absolute(input, rule)


def _max_handler(largest: bool, result_type):
    def handler(rule, func, input, dim=None, keepdim=False, *, other=None):
        if isinstance(dim, torch.Tensor):
            dim, other = None, dim
        if other is not None:
            return ops.max_or_min(input, other, rule, largest)
        if dim is None:
            return ops.reduce(input, None, False, rule, largest)
        if not isinstance(dim, int) or input.dim() == 0:
            return func(input, dim, keepdim)
        return result_type(ops.reduce_with_indices(input, dim, keepdim, rule, largest))

    return handler


def _amax_handler(largest: bool):
    def handler(rule, func, input, dim=(), keepdim=False):
        return ops.reduce(input, dim, keepdim, rule, largest)

    return handler


def _pool_handler(pool, with_indices: bool = False):
    # F.max_pool*d_with_indices always returns (values, indices), whatever `return_indices` says
    def handler(rule, func, input, kernel_size, stride=None, padding=0, dilation=1,
                ceil_mode=False, return_indices=False):
        return pool(input, kernel_size, stride, padding, dilation, ceil_mode,
                    return_indices or with_indices, ties=rule)

    return handler


def _adaptive_handler(pool, with_indices: bool = False):
    def handler(rule, func, input, output_size, return_indices=False):
        return pool(input, output_size, return_indices or with_indices, ties=rule)

    return handler


def _src(x: torch.Tensor, inplace: bool) -> torch.Tensor:
    # an in-place op must not overwrite the tensor that its own backward saves
    return x.clone() if inplace else x


def _result(x: torch.Tensor, out: torch.Tensor, inplace: bool) -> torch.Tensor:
    return x.copy_(out) if inplace else out


_T = torch.Tensor
_HANDLERS = {
    torch.relu: _relu, F.relu: _relu, _T.relu: _relu, torch.relu_: _relu_, _T.relu_: _relu_,
    F.relu6: _relu6, F.hardtanh: _hardtanh,
    torch.clamp: _clamp, torch.clip: _clamp, _T.clamp: _clamp, _T.clip: _clamp,
    _T.clamp_: _clamp_, _T.clip_: _clamp_, torch.clamp_: _clamp_, torch.clip_: _clamp_,
    torch.clamp_min: _clamp_min, _T.clamp_min: _clamp_min,
    torch.clamp_max: _clamp_max, _T.clamp_max: _clamp_max,
    torch.maximum: _maximum, _T.maximum: _maximum, torch.minimum: _minimum, _T.minimum: _minimum,
    torch.abs: _abs, _T.abs: _abs, torch.absolute: _abs, _T.absolute: _abs,
    torch.max: _max_handler(True, torch.return_types.max),
    _T.max: _max_handler(True, torch.return_types.max),
    torch.min: _max_handler(False, torch.return_types.min),
    _T.min: _max_handler(False, torch.return_types.min),
    torch.amax: _amax_handler(True), _T.amax: _amax_handler(True),
    torch.amin: _amax_handler(False), _T.amin: _amax_handler(False),
    F.max_pool1d: _pool_handler(max_pool1d),
    F.max_pool1d_with_indices: _pool_handler(max_pool1d, with_indices=True),
    F.max_pool2d: _pool_handler(max_pool2d),
    F.max_pool2d_with_indices: _pool_handler(max_pool2d, with_indices=True),
    F.max_pool3d: _pool_handler(max_pool3d),
    F.max_pool3d_with_indices: _pool_handler(max_pool3d, with_indices=True),
    F.adaptive_max_pool1d: _adaptive_handler(adaptive_max_pool1d),
    F.adaptive_max_pool1d_with_indices: _adaptive_handler(adaptive_max_pool1d, with_indices=True),
    F.adaptive_max_pool2d: _adaptive_handler(adaptive_max_pool2d),
    F.adaptive_max_pool2d_with_indices: _adaptive_handler(adaptive_max_pool2d, with_indices=True),
    F.adaptive_max_pool3d: _adaptive_handler(adaptive_max_pool3d),
    F.adaptive_max_pool3d_with_indices: _adaptive_handler(adaptive_max_pool3d, with_indices=True),
}


class TiePolicy(TorchFunctionMode):
    """The ``TorchFunctionMode`` returned by :func:`tie_policy`; ``rule`` is its tie rule."""

    def __init__(self, rule: str):
        super().__init__()
        self.rule = check_ties("tie_policy", rule)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = _HANDLERS.get(func)
        x = args[0] if args else kwargs.get("input")
        if handler is None or not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return func(*args, **kwargs)
        if kwargs.get("out") is not None:
            raise TypeError(
                f"tie_policy: `out` is not supported for {func.__name__} under a tie policy; "
                "assign the result instead"
            )
        kwargs.pop("out", None)
        with torch._C.DisableTorchFunction():  # the rule's own torch calls are not re-read
            return handler(self.rule, func, *args, **kwargs)


def tie_policy(rule: str) -> TiePolicy:
    """Context manager under which PyTorch's nonsmooth ops all follow one tie ``rule``.

    Every intercepted op is read as a ``max`` or ``min`` of an *ordered* list of candidates,
    and at a tie (two or more candidates attaining it) the derivative goes to

    * ``"first"``: the first tied candidate (weight 1);
    * ``"last"``: the last tied candidate (weight 1);
    * ``"uniform"``: each of the ``N`` tied candidates (weight ``1/N``, eq 20).

    The candidates, in order:

    .. math::

        \\operatorname{relu}(x) = \\max(x, 0), \\quad
        \\operatorname{clamp}(x, a, b) = \\min(\\max(x, a), b), \\quad
        |x| = \\max(x, -x), \\quad
        \\operatorname{maximum}(a, b) = \\max(a, b),

    ``hardtanh(x, a, b)`` and ``relu6(x) = clamp(x, 0, 6)`` like ``clamp``, ``clamp_min`` and
    ``clamp_max`` as one-sided clamps, ``max``/``amax``/``min``/``amin`` over the entries of
    the reduced dimensions in row-major order, ``F.max_pool1d``/``2d``/``3d`` and
    ``F.adaptive_max_pool1d``/``2d``/``3d`` (and their ``nn`` modules, which call them) over each
    window in row-major order, through :mod:`mtlib.maxpool` with ``ties=rule``. So at ``x = 0``

    .. math::

        \\tilde R'(0) = 1 \\ (\\text{first}), \\quad 0 \\ (\\text{last, PyTorch's relu}),
        \\quad 1/2 \\ (\\text{uniform, PyTorch's maximum}),

    and ``|x|'(0) = 1, -1, 0``, which makes ``relu(x)``, ``clamp(x, min=0)``,
    ``maximum(x, 0)`` and ``(x + |x|)/2`` agree under every rule. Each rule is an associated
    gradient of a representation (17)-(20) of the op, valid by the tangent condition (15).
    ``torch.max(x, dim)`` returns the index its rule favours (the first maximal one under
    ``"uniform"``). Intercepted: ``torch.relu``/``relu_``, ``F.relu``, ``F.relu6``,
    ``F.hardtanh`` (also ``inplace=True``), ``clamp``/``clip`` (and in-place, tensor or
    number bounds), ``clamp_min``, ``clamp_max``, ``maximum``, ``minimum``, ``abs``,
    ``max``, ``min``, ``amax``, ``amin``, as functions and ``Tensor`` methods, and 1-d/2-d/3-d
    and adaptive max pooling, for floating-point inputs. Comparisons (``torch.where(x > 0,
    ...)``, Python ``if``), fractional max pooling and ``max_unpool`` are not intercepted; max pooling
    under ``"last"``/``"uniform"`` has no forward-mode AD, and ``"uniform"`` no
    ``return_indices``. Modes nest (the innermost rule applies) and are removed on exit, also
    when an exception leaves the block. Forward values equal PyTorch's.

    Args:
        rule: ``"first"``, ``"last"`` or ``"uniform"``.

    Returns:
        A :class:`TiePolicy`, to use in a ``with`` statement.

    Raises:
        ValueError: unknown ``rule``.
        TypeError: (inside the block) an intercepted op called with ``out=``.

    Examples:
        >>> x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        >>> with tie_policy("uniform"):
        ...     y = torch.relu(x) + torch.clamp(x, min=0) + (x + x.abs()) / 2
        >>> torch.autograd.grad(y.sum(), x)[0].tolist()      # 1/2 + 1/2 + 1/2
        [1.5]

    References:
        Despres (2024), Sec 4.1 (relu, z), Sec 4.2 (eq 15), Sec 4.3 (eqs 17-21).
    """
    return TiePolicy(rule)
