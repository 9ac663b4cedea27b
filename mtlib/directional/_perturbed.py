"""The perturbed-branch gradient: one tangent forward, one reverse pass, an element of Clarke's
generalized gradient with probability one.

Pick one direction ``m`` in the space of all inputs (for a network: all its parameters) and
evaluate ``f`` on the dual point ``x + e m``, ``e -> 0+`` (a :class:`~mtlib.directional.Dual`
with one tangent). Every kink takes the branch that the perturbed point enters: the
lexicographic comparison of ``(value, tangent)`` pairs of :mod:`mtlib.directional._order`, the
``k = 1`` case of the LD-derivative. The tangent that comes out is the one-sided derivative
``f'(x; m)``, computed by a chain of linear maps, one per op: the Jacobian of each smooth op at
``x`` and, at each kink, the linear piece that was selected. The reverse pass of that chain is
the gradient of the selected composite piece,

.. math::

    g = \\nabla_m f'(x; m) = J_L^\\top \\cdots J_1^\\top, \\qquad
    f'(x; m) = J_L \\cdots J_1 m,                                          \\qquad (\\text{P})

computed by autograd with respect to ``m`` (the branch decisions are comparisons: piecewise
constant in ``m``, no gradient). For a piecewise-linear ``f`` (every composition of affine
maps with relu, abs, max, clamp and the max pools) and every ``m`` off a finite union of
hyperplanes, hence with probability one for a Gaussian ``m``, the decisions do not change in
a neighbourhood of ``m``, ``f'(x; .)`` is linear there, and ``g`` is the gradient of ``f`` at
``x + e m`` for every small ``e > 0``: the gradient of a piece active on an open set whose
closure holds ``x``, an element of the B-subdifferential and so of Clarke's generalized
gradient (Clarke 1990, Thm 2.5.1). Beyond piecewise-linear maps, Park (2023) proves that for
programs of analytic functions and linear branches (max, abs, relu and every network built from
them with smooth layers) the branches taken at a random perturbation of the input, followed by
the reverse pass, give an element of Clarke's generalized gradient at a cost independent of the
input dimension; here the perturbation is infinitesimal (a tangent), so no step size is tuned,
and our tests check the piecewise-linear statement exactly. Away from ties every
op is differentiable at its input and ``g`` is the gradient autograd returns, whatever ``m``.

Cost: one forward pass carrying one tangent (each op computes its value and the image of the
tangent) and one reverse pass through the tangent's chain: independent of the number of
inputs, where :func:`mtlib.directional.lexicographic_gradient` carries one tangent per input.
Drawing the default Gaussian direction adds one random number per input; with the Python
dispatch of the dual ops it is what keeps an MLP above twice PyTorch's forward and backward
pass on CPU (``benchmarks/perturbed.py``, four runs: 1.7x to 2.1x for CNNs of ``10^4`` to
``10^6`` parameters, 2.0x to 2.35x for MLPs; see ``benchmarks/README.md``).

Chapter: lexicographic, training_valid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from mtlib.directional._dual import Dual, one, wrap_one

_FN = "perturbed_gradient"


def perturbed_gradient(f: Callable, inputs, *, direction=None, generator: torch.Generator | None = None):
    """The gradient of the piece of ``f`` that ``inputs + e * direction`` enters (eq P).

    ``f`` runs once on dual tensors carrying ``direction`` as their tangent; at every tie of
    relu, abs, clamp, max, min or a max pool the branch of the perturbed point is taken, and one
    reverse pass through the branches taken returns the gradient. For a piecewise-linear ``f``
    it is, with probability one over a random direction, the gradient at ``inputs + e *
    direction`` for small ``e > 0``: an element of Clarke's generalized gradient at every
    point, ties included (Boustany's zero function, Sec 4.3, gets 0 at ``t = 0`` where autograd
    returns -1.5). Where no op meets a tie it is autograd's gradient. Cost: one forward pass with
    one tangent plus one reverse pass, whatever the number of inputs.

    Supported ops: those of :func:`mtlib.directional.jvp`: smooth torch ops (arithmetic,
    linear, conv, batch norm, softmax, cross-entropy, the average pools, ...), relu, leaky_relu,
    abs, clamp, hardtanh, relu6, max/min/amax/amin/maximum/minimum, every max pool and adaptive
    max pool of torch and mtlib's tie-aware pools. Any other op on a perturbed tensor raises
    ``NotImplementedError`` naming it: no tie is ever resolved by PyTorch's own rule.

    Args:
        f: maps ``inputs`` (passed as one argument, with their structure) to a one-element tensor.
            For a network: ``lambda p: loss(torch.func.functional_call(model, p, (x,)), y)``
            with ``inputs = dict(model.named_parameters())``.
        inputs: a floating-point tensor, or a tuple, list or dict of them.
        direction: the perturbation ``m``, with the structure and shapes of ``inputs``; default:
            a standard Gaussian draw from ``generator`` (float32, cast to each input's dtype).
        generator: the ``torch.Generator`` of the default direction (default: torch's global one).

    Returns:
        The gradient with the structure of ``inputs`` (tensors of their shapes and dtypes).

    Raises:
        TypeError: ``f`` not callable, an input or direction that is not a floating-point tensor,
            ``generator`` not a ``torch.Generator``, ``f`` returning a non-tensor.
        ValueError: ``direction`` of another structure or shape, ``f`` not returning one number.
        NotImplementedError: an op without a directional rule (the message names it).
        RuntimeError: a rule (e.g. one registered with ``register_rule``) computed the tangent
            outside autograd, so the branches taken cannot be differentiated.

    Examples:
        >>> from mtlib.examples import boustany_f
        >>> t = torch.tensor(0.0, dtype=torch.float64)
        >>> [perturbed_gradient(boustany_f, t, direction=torch.tensor(s, dtype=torch.float64)).item()
        ...  for s in (1.0, -1.0)]
        [0.0, 0.0]
        >>> y = torch.zeros(2, dtype=torch.float64)
        >>> perturbed_gradient(lambda v: v.max(), y, direction=torch.tensor([1.0, 2.0])).tolist()
        [0.0, 1.0]
        >>> w = {"a": torch.tensor([1.0, -1.0]), "b": torch.tensor(0.0)}
        >>> g = perturbed_gradient(lambda p: torch.relu(p["a"] * p["b"]).sum(), w,
        ...                        direction={"a": torch.zeros(2), "b": torch.tensor(1.0)})
        >>> g["a"].tolist(), g["b"].item()
        ([0.0, 0.0], 1.0)

    References:
        Park (2023), Efficient automatic subdifferentiation for programs with linear branches,
        Mathematics 11(23):4858; Nesterov (2005); Khan & Barton (2015), Sec 3; Clarke (1990),
        Thm 2.5.1. Chapters: lexicographic, training_valid.
    """
    if not callable(f):
        raise TypeError(f"{_FN}: `f` must be callable, got {type(f).__name__}")
    leaves, spec = tree_flatten(inputs)
    for i, leaf in enumerate(leaves):
        _check_leaf("inputs", i, leaf, spec)
    tangents = _directions(leaves, spec, direction, generator)
    with torch.enable_grad():
        duals = [wrap_one(leaf.detach(), m) for leaf, m in zip(leaves, tangents)]
        out = f(tree_unflatten(duals, spec))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{_FN}: `f` must return a tensor, got {type(out).__name__}")
        if (out.primal if isinstance(out, Dual) else out).numel() != 1:
            raise ValueError(f"{_FN}: `f` must return one number, got shape {tuple(out.shape)}")
        slope = one(out).reshape(()) if isinstance(out, Dual) else None
        grads = [None] * len(leaves)
        if slope is not None and slope.requires_grad:
            grads = torch.autograd.grad(slope, tangents, allow_unused=True)
        elif slope is not None and bool(slope != 0):  # a zero slope without graph: f is constant
            raise RuntimeError(f"{_FN}: the output's tangent {slope.item():g} no longer depends on "
                               "the direction (a rule computed it outside autograd, e.g. with "
                               "`.detach()`), so no reverse pass can follow the branches taken")
    return tree_unflatten([torch.zeros_like(leaf) if g is None else g.detach()
                           for leaf, g in zip(leaves, grads)], spec)


def _check_leaf(name: str, i: int, leaf, spec) -> None:
    where = f"`{name}`" if spec.is_leaf() else f"entry {i} of `{name}`"
    if not isinstance(leaf, torch.Tensor) or isinstance(leaf, Dual):
        raise TypeError(f"{_FN}: {where} must be a torch.Tensor (inputs may be a tensor or a "
                        f"tuple, list or dict of tensors), got {type(leaf).__name__}")
    if not leaf.is_floating_point():
        raise TypeError(f"{_FN}: {where} must have a floating-point dtype, got {leaf.dtype}")


def _directions(leaves, spec, direction, generator) -> list[torch.Tensor]:
    """The tangents ``m`` (leaf tensors requiring grad): ``direction``'s, or Gaussian draws."""
    if direction is None:
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"{_FN}: `generator` must be a torch.Generator, got {type(generator).__name__}")
        device = None if generator is None else generator.device
        drawn = [torch.randn(leaf.shape, generator=generator, device=device or leaf.device)
                 for leaf in leaves]  # float32: the draw costs a fifth of float64's
        return [(m if m.dtype == leaf.dtype and m.device == leaf.device else m.to(leaf)).requires_grad_()
                for m, leaf in zip(drawn, leaves)]
    drawn, dspec = tree_flatten(direction)
    if dspec != spec:
        raise ValueError(f"{_FN}: `direction` must have the structure of `inputs` ({spec}), "
                         f"got {dspec}")
    for i, (m, leaf) in enumerate(zip(drawn, leaves)):
        _check_leaf("direction", i, m, spec)
        if m.shape != leaf.shape:
            raise ValueError(f"{_FN}: `direction` entry {i} must have the shape "
                             f"{tuple(leaf.shape)} of its input, got {tuple(m.shape)}")
    return [m.detach().to(leaf).requires_grad_() for m, leaf in zip(drawn, leaves)]
