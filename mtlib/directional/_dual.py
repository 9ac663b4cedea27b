"""The dual tensor behind :mod:`mtlib.directional`: a value that carries one-sided tangents.

A :class:`Dual` stands for the point ``x + h d`` with ``h -> 0+`` (one direction, the
one-sided derivative) or, with ``k`` stacked tangents ``t_1, ..., t_k``, for the
lexicographically perturbed point ``x + e t_1 + e^2 t_2 + ... + e^k t_k``, ``e -> 0+`` (the
LD-derivative of Nesterov 2005 and Khan & Barton 2015). Its data is the primal ``x``; its
``tangents`` have shape ``(k, *x.shape)`` (``tangent`` is the one of a ``k = 1`` dual). Every
torch call on a ``Dual`` goes through ``__torch_function__`` and is answered by the rule
registered for that call in :data:`RULES` (the rules themselves live in
:mod:`mtlib.directional._smooth` and :mod:`mtlib.directional._kinks`):

* smooth ops (arithmetic, matmul, linear, reductions, reshapes, indexing, ...): the tangents
  are pushed forward with ``torch.func.jvp`` (batched over ``k`` by ``vmap``), the chain rule;
* kinks (max, relu, abs, clamp, maxpool): the rules of :mod:`mtlib.directional._kinks`, which
  pick the lexicographically largest perturbed entry (:mod:`mtlib.directional._order`);
* comparisons: the lexicographic order of ``(value, t_1, ..., t_k)``, which is the order of
  the perturbed points for small ``e > 0``, so a Python ``if`` takes the branch of the
  perturbed point;
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
    """A tensor ``x`` with tangents: the point ``x + h d`` (``h -> 0+``), or with ``k``
    stacked tangents the lexicographically perturbed point ``x + e t_1 + ... + e^k t_k``.

    The object *is* the primal tensor (so ``isinstance(x, torch.Tensor)`` checks pass); the
    primal as a plain tensor is ``primal``, the stacked tangents ``tangents`` (shape
    ``(k, *x.shape)``), and for ``k = 1`` the tangent ``tangent`` (shape ``x.shape``).

    Args:
        primal: floating-point tensor, the point ``x``.
        tangent: tensor of ``x``'s shape, the direction ``d`` (cast to ``primal``'s dtype).
        tangents: instead of ``tangent``, a tensor of shape ``(k, *x.shape)``, ``k >= 1``.

    Examples:
        >>> x = Dual(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 2.0]))
        >>> bool(x[0] < x[1])  # 0 + h < 0 + 2h for small h > 0
        True
        >>> y = Dual(torch.zeros(2), tangents=torch.tensor([[1.0, 1.0], [0.0, -1.0]]))
        >>> bool(y[0] > y[1])  # e + 0 e^2 > e - e^2: the second direction breaks the tie
        True
    """

    primal: torch.Tensor
    _one: torch.Tensor | None  # the tangent of a k = 1 dual, of the primal's shape (when known)
    _stack: torch.Tensor | None  # the stacked tangents (k, *shape) (when known)

    @staticmethod
    def __new__(cls, primal: torch.Tensor, tangent: torch.Tensor | None = None, *,
                tangents: torch.Tensor | None = None):
        if (tangent is None) == (tangents is None):
            raise TypeError("Dual: give exactly one of `tangent` and `tangents`")
        name, value = ("tangent", tangent) if tangents is None else ("tangents", tangents)
        for arg, obj in (("primal", primal), (name, value)):
            if not isinstance(obj, torch.Tensor) or isinstance(obj, Dual):
                raise TypeError(f"Dual: `{arg}` must be a plain torch.Tensor, got {type(obj).__name__}")
        if not primal.is_floating_point():
            raise TypeError(f"Dual: `primal` must have a floating-point dtype, got {primal.dtype}")
        if tangents is None:
            if tangent.shape != primal.shape:
                raise ValueError(
                    f"Dual: `tangent` must have the shape of `primal` {tuple(primal.shape)}, "
                    f"got {tuple(tangent.shape)}"
                )
            return wrap_one(primal.detach(), tangent.to(primal))  # keeps its graph (perturbed_gradient)
        if tangents.dim() != primal.dim() + 1 or tangents.shape[1:] != primal.shape or not len(tangents):
            raise ValueError(
                f"Dual: `tangents` must have shape (k, *primal.shape) = (k, "
                f"{', '.join(map(str, primal.shape))}) with k >= 1, got {tuple(tangents.shape)}"
            )
        return wrap(primal.detach(), tangents.to(primal))  # a tangent keeps its graph (perturbed_gradient)

    def __init__(self, primal: torch.Tensor, tangent=None, *, tangents=None):
        super().__init__()

    @property
    def tangents(self) -> torch.Tensor:
        """The stacked tangents, shape ``(k, *shape)``."""
        if self._stack is None:
            self._stack = self._one.unsqueeze(0)
        return self._stack

    @property
    def tangent(self) -> torch.Tensor:
        """The tangent of a one-direction dual (``k = 1``), of the primal's shape."""
        t = one(self)
        if t is None:
            raise AttributeError(
                f"Dual.tangent: this dual carries k = {self.tangents.shape[0]} tangents; read "
                f"`.tangents` (shape (k, *shape))"
            )
        return t

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        rule = RULES.get(func)
        if rule is None:
            raise NotImplementedError(unsupported_message(func))
        if torch.is_grad_enabled():
            return rule(func, args, kwargs or {})
        # inside an autograd.Function's forward (mtlib's pools, max_uniform, relu_z ...) grad is
        # off: keep tangents that require grad differentiable (perturbed_gradient's reverse pass)
        with torch.enable_grad():
            return rule(func, args, kwargs or {})


def wrap(primal: torch.Tensor, tangents: torch.Tensor) -> Dual:
    """A :class:`Dual` from a plain primal and stacked tangents ``(k, *shape)`` of its dtype,
    without checks (a tangent dim of size 1 is expanded to the primal's shape)."""
    obj = primal.as_subclass(Dual)
    obj.primal, obj._one = primal, None
    if tangents.shape[1:] != primal.shape:
        tangents = tangents.expand(tangents.shape[0], *primal.shape)
    obj._stack = tangents
    return obj


def wrap_one(primal: torch.Tensor, tangent: torch.Tensor) -> Dual:
    """A one-direction :class:`Dual` (``k = 1``) from a plain primal and a tangent of its dtype
    (broadcast to its shape), without checks. It is kept without the stacking dim: the rules
    for ``k = 1`` (:func:`one`) then add no view to the forward and the reverse pass."""
    obj = primal.as_subclass(Dual)
    if tangent.shape != primal.shape:
        tangent = tangent.expand(primal.shape)
    obj.primal, obj._one, obj._stack = primal, tangent, None
    return obj


def one(a: Dual) -> torch.Tensor | None:
    """The tangent of a one-direction dual ``a`` (shape of its primal), ``None`` if ``a``
    carries ``k > 1`` tangents."""
    if a._one is None:
        if a._stack.shape[0] != 1:
            return None
        a._one = a._stack[0]
    return a._one


def split(a, like=None) -> tuple:
    """``(primal, tangents)`` of a Dual, tangents stacked ``(k, *shape)``; a constant (tensor
    or number) has the tangent 0, of shape ``(1, *shape)`` (it broadcasts against any ``k``).

    A number becomes a tensor with the dtype and device of ``like`` (a tensor or Dual).
    """
    if isinstance(a, Dual):
        return a.primal, a.tangents
    if not isinstance(a, torch.Tensor):
        like = like.primal if isinstance(like, Dual) else like
        a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    return a, torch.zeros_like(a).unsqueeze(0)


def primals(tree):
    """``tree`` with every Dual replaced by its primal."""
    kind = type(tree)  # the usual arguments first: a flat tuple or dict, or a leaf
    if (kind is dict or kind is tuple) and not tree:
        return tree
    if kind is tuple and not any(isinstance(a, _NESTED) for a in tree):
        return tuple(a.primal if isinstance(a, Dual) else a for a in tree)
    if kind is dict and not any(isinstance(a, _NESTED) for a in tree.values()):
        return {k: a.primal if isinstance(a, Dual) else a for k, a in tree.items()}
    if not isinstance(tree, _NESTED):
        return tree.primal if isinstance(tree, Dual) else tree
    return tree_map(lambda a: a.primal if isinstance(a, Dual) else a, tree)


_NESTED = (tuple, list, dict)


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
