"""The dual tensor behind :mod:`mtlib.directional`: a value that carries a one-sided tangent.

A :class:`Dual` stands for the point ``x + h d`` with ``h -> 0+``: its data is the primal ``x``
and its ``tangent`` is ``d``. Every torch call on a ``Dual`` goes through
``__torch_function__`` and is answered by the rule registered for that call in :data:`RULES`
(the rules themselves live in :mod:`mtlib.directional._smooth` and
:mod:`mtlib.directional._kinks`):

* smooth ops (arithmetic, matmul, linear, reductions, reshapes, indexing, ...): the tangent is
  pushed forward with ``torch.func.jvp``, the ordinary chain rule;
* kinks (max, relu, abs, clamp, maxpool): the one-sided rules of :mod:`mtlib.directional._kinks`;
* comparisons: the lexicographic order of ``(value, tangent)``, which is the order of
  ``x + h d`` for small ``h > 0``, so a Python ``if`` takes the branch of the perturbed point;
* metadata (``shape``, ``dim()``, ``dtype`` ...) and constants (``zeros_like``, ``detach``):
  evaluated on the primal, without tangent.

Anything else raises ``NotImplementedError`` naming the op: a silently wrong tangent is worse
than no answer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

Rule = Callable[[Callable, tuple, dict], object]
RULES: dict[Callable, Rule] = {}
_NAMESPACES = (torch, torch.Tensor, F, torch.special)


def funcs_named(*names: str) -> list[Callable]:
    """The torch callables called ``name`` in ``torch``, ``torch.Tensor``, ``F``, ``torch.special``."""
    found = [getattr(ns, name) for name in names for ns in _NAMESPACES if hasattr(ns, name)]
    found = [f.__get__ if type(f).__name__ == "getset_descriptor" else f for f in found]
    return [f for f in found if callable(f) and not isinstance(f, type)]


def register_rule(funcs, rule: Rule) -> None:
    """Answer every call of a function in ``funcs`` on a :class:`Dual` with ``rule``."""
    if not callable(rule):
        raise TypeError(f"register_rule: `rule` must be callable, got {type(rule).__name__}")
    funcs = list(funcs)
    for func in funcs:
        if not callable(func):
            raise TypeError(f"register_rule: `funcs` must hold callables, got {type(func).__name__}")
    RULES.update(dict.fromkeys(funcs, rule))


class Dual(torch.Tensor):
    """A tensor ``x`` with a tangent ``d``: the point ``x + h d`` as ``h -> 0+``.

    The object *is* the primal tensor (so ``isinstance(x, torch.Tensor)`` checks pass); the
    tangent is the attribute ``tangent``, the primal as a plain tensor is ``primal``.

    Args:
        primal: floating-point tensor, the point ``x``.
        tangent: tensor of the same shape, the direction ``d`` (cast to ``primal``'s dtype).

    Examples:
        >>> x = Dual(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]))
        >>> bool(x[0] < x[1])  # 0 + h < 0 + 2h for small h > 0
        True
    """

    primal: torch.Tensor
    tangent: torch.Tensor

    @staticmethod
    def __new__(cls, primal: torch.Tensor, tangent: torch.Tensor):
        for name, value in (("primal", primal), ("tangent", tangent)):
            if not isinstance(value, torch.Tensor) or isinstance(value, Dual):
                raise TypeError(f"Dual: `{name}` must be a plain torch.Tensor, got {type(value).__name__}")
        if not primal.is_floating_point():
            raise TypeError(f"Dual: `primal` must have a floating-point dtype, got {primal.dtype}")
        if tangent.shape != primal.shape:
            raise ValueError(
                f"Dual: `tangent` must have the shape of `primal` {tuple(primal.shape)}, "
                f"got {tuple(tangent.shape)}"
            )
        return wrap(primal.detach(), tangent.detach().to(primal))

    def __init__(self, primal: torch.Tensor, tangent: torch.Tensor):
        super().__init__()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        rule = RULES.get(func)
        if rule is None:
            raise NotImplementedError(unsupported_message(func))
        return rule(func, args, kwargs or {})


def wrap(primal: torch.Tensor, tangent: torch.Tensor) -> Dual:
    """A :class:`Dual` from plain tensors of equal shape and dtype, without checks."""
    obj = primal.as_subclass(Dual)
    obj.primal = primal
    obj.tangent = tangent
    return obj


def split(a, like=None) -> tuple:
    """``(primal, tangent)`` of a Dual; a constant (tensor or number) has tangent 0.

    A number becomes a tensor with the dtype and device of ``like`` (a tensor or Dual).
    """
    if isinstance(a, Dual):
        return a.primal, a.tangent
    if not isinstance(a, torch.Tensor):
        like = like.primal if isinstance(like, Dual) else like
        a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    return a, torch.zeros_like(a)


def primals(tree):
    """``tree`` with every Dual replaced by its primal."""
    return tree_map(lambda a: a.primal if isinstance(a, Dual) else a, tree)


def op_name(func) -> str:
    """``torch.nn.functional.relu``-style name of a torch callable."""
    return torch.overrides.resolve_name(func) or getattr(func, "__name__", repr(func))


def unsupported_message(func) -> str:
    """Error text for a call without a rule: names the op and says how to add one."""
    name = op_name(func)
    if (name.endswith("_") and not name.endswith("__")) or name.split(".")[-1] in _INPLACE_DUNDERS:
        return (
            f"mtlib.directional: `{name}` is in-place; duals are immutable, write the "
            f"out-of-place form (e.g. `y = y + x` for `y += x`)"
        )
    return (
        f"mtlib.directional: no directional-derivative rule for `{name}`. If the op is "
        f"differentiable everywhere, register it with `mtlib.directional.register_smooth({name})`; "
        f"if it has kinks, give its one-sided rule with `mtlib.directional.register_rule`."
    )


_INPLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ipow__", "__imatmul__",
                    "__setitem__"}
