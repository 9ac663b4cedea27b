"""The lexicographic order of perturbed points, the one rule behind every kink of ``Dual``.

A :class:`~mtlib.directional._dual.Dual` with value ``v`` and tangents ``t_1, ..., t_k``
(stored stacked, shape ``(k, *v.shape)``) stands for the perturbed point

.. math::

    v + \\varepsilon t_1 + \\varepsilon^2 t_2 + \\dots + \\varepsilon^k t_k,
    \\qquad \\varepsilon \\to 0^+,

and two such points compare, for all small ``eps > 0``, like the vectors
``(v, t_1, ..., t_k)`` in lexicographic order (Nesterov 2005; Khan & Barton 2015). For
``k = 1`` this is the order of ``x + h d`` of the one-sided derivative. The helpers below
evaluate that order elementwise and pick lexicographic maxima along a dimension; the comparison
rules (:mod:`._smooth`) and the kink rules (:mod:`._kinks`) use nothing else.

Values are compared with ``<``/``>`` (exact, ``-inf`` allowed); tangents by the sign of their
difference (IEEE subtraction is exact in sign). A NaN value compares as a tie here; the rules
give a NaN result a NaN tangent.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def align(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Stacked tangents ``(k, *s)`` reshaped to ``(k, 1, ..., 1, *s)`` with ``ndim`` value dims,
    so they broadcast like values of ``ndim`` dimensions."""
    pad = ndim - (t.dim() - 1)
    return t.reshape(t.shape[0], *([1] * pad), *t.shape[1:]) if pad > 0 else t


def first_sign(s: torch.Tensor) -> torch.Tensor:
    """First nonzero entry of ``s`` along dim 0 (``s`` in ``{-1, 0, 1}``), 0 if all are 0."""
    if s.shape[0] == 1:
        return s[0]
    first = (s != 0).to(torch.uint8).argmax(dim=0, keepdim=True)
    return s.gather(0, first).squeeze(0)


def lexsign(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``fsign(v, t_1, ..., t_k)``: the sign of the first nonzero of ``(v, t_1, ..., t_k)``,
    the sign of the perturbed point (the rule of Khan & Barton 2015 for ``abs``)."""
    if t.shape[0] == 1:
        return lexsign_one(v, t[0])[0]
    zero = v == 0
    if not bool(zero.any()):
        return torch.sign(v)
    if t.shape[0] == 1 or zero.all():
        return torch.where(zero, first_sign(torch.sign(t)), torch.sign(v))
    signs = torch.sign(v)  # the tangents matter only at the zeros of v
    t = t.expand(t.shape[0], *v.shape)
    return signs.masked_scatter(zero, first_sign(torch.sign(t[:, zero])))


def lexsign_one(v: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """:func:`lexsign` for one tangent ``t`` of ``v``'s shape (not stacked), a fresh tensor, and
    whether ``v`` is free of zeros and NaNs. Arithmetic only (``torch.where`` and boolean masks
    are slow on CPU), and ``t`` is read only if ``v`` has a zero or a NaN: ``sign(v) . sign(v)``
    is ``v.numel()`` exactly when it has none (a sum of ones and zeros, exact in float32 up to
    ``2^24`` terms)."""
    s = torch.sign(v)
    if s.numel() <= _EXACT_COUNT:
        flat = s.reshape(-1)
        count = torch.dot(flat, flat) if s.dtype in _BLAS else flat.abs().sum(dtype=torch.float32)
        if count.item() == s.numel():
            return s, True
    return s + (1 - s.abs()) * torch.sign(t.detach()), False


_EXACT_COUNT = 2**24
_BLAS = (torch.float32, torch.float64)


def lexcmp(va, ta, vb, tb) -> torch.Tensor:
    """``+1, 0, -1`` as the perturbed point ``a`` is lexicographically above, equal to or
    below ``b`` (broadcasting; tangents stacked along dim 0)."""
    nd = max(va.dim(), vb.dim())
    on_tangents = first_sign(torch.sign(align(ta, nd) - align(tb, nd)))
    return torch.where(va > vb, 1.0, torch.where(va < vb, -1.0, on_tangents))


def lexmax(va, ta, vb, tb) -> torch.Tensor:
    """Tangents of ``max(a, b)`` at the perturbed point: those of the lexicographic max."""
    nd = max(va.dim(), vb.dim())
    return torch.where(lexcmp(va, ta, vb, tb) >= 0, align(ta, nd), align(tb, nd))


def lexmin(va, ta, vb, tb) -> torch.Tensor:
    """Tangents of ``min(a, b)`` at the perturbed point: those of the lexicographic min."""
    nd = max(va.dim(), vb.dim())
    return torch.where(lexcmp(va, ta, vb, tb) <= 0, align(ta, nd), align(tb, nd))


def winners(v: torch.Tensor, t: torch.Tensor, dim: int, mask: torch.Tensor | None = None):
    """Mask of the lexicographic maxima of ``(v, t)`` along ``dim`` (``dim >= 0`` of ``v``).

    Start from the tie set ``T = {i : v_i = max v}`` (or ``mask``, a candidate set); among the
    candidates of a slice, the first tangent column in which they differ decides: keep those
    largest in it, and repeat (the lexicographic maximum of Nesterov 2005). Candidates
    that agree in every column are equivalent and all kept. Each round removes a candidate from
    every slice still undecided, so there are fewer rounds than candidates; away from ties
    there is none.
    """
    if mask is None:
        mask = v == v.amax(dim=dim, keepdim=True)
    while bool((mask.sum(dim=dim) > 1).any()):
        high = t.masked_fill(~mask, NEG_INF).amax(dim=dim + 1, keepdim=True)
        low = t.masked_fill(~mask, float("inf")).amin(dim=dim + 1, keepdim=True)
        varies = high != low  # (k, ..., 1, ...): candidates differ in this column
        undecided = varies.any(dim=0)
        if not bool(undecided.any()):
            break
        column = first_index(varies, 0).expand(1, *t.shape[1:])
        deciding = t.gather(0, column)[0].masked_fill(~mask, NEG_INF)
        mask = mask & ((deciding == deciding.amax(dim=dim, keepdim=True)) | ~undecided)
    return mask


def first_index(mask: torch.Tensor, dim: int, keepdim: bool = True) -> torch.Tensor:
    """Index of the first ``True`` along ``dim`` (0 where there is none)."""
    return mask.to(torch.uint8).argmax(dim=dim, keepdim=keepdim)


def take(t: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Stacked tangents ``t`` (``(k, *s)``) at ``index`` (keepdim form) along value dim ``dim``,
    with ``dim`` kept as size 1."""
    index = index.unsqueeze(0).expand(t.shape[0], *index.shape)
    return t.gather(dim + 1, index)


def lex_max_along(v: torch.Tensor, t: torch.Tensor, dim: int, keepdim: bool,
                  mask: torch.Tensor | None = None):
    """``(tangents, index)`` of the lexicographic max of ``(v, t)`` along ``dim``: the tangent
    rows of the winning entry and its first index (``keepdim`` as in ``torch.max``)."""
    index = first_index(winners(v, t, dim, mask), dim)
    tangent = take(t, index, dim)
    if not keepdim:
        tangent, index = tangent.squeeze(dim + 1), index.squeeze(dim)
    return tangent, index


def flatten_dims(v: torch.Tensor, t: torch.Tensor, dims) -> tuple:
    """Move the value dims ``dims`` (int, tuple, or ``()``/``None`` for all) of ``v`` and of
    the stacked ``t`` to the end, flattened into one: a reduction over them becomes one over
    the last dim. Returns ``(v, t, kept_shape_with_ones)``, the last for ``keepdim``."""
    n = v.dim()
    if dims is None or dims == () or dims == []:
        dims = tuple(range(n))
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    dims = tuple(sorted(d % n for d in dims)) if n else ()
    rest = [d for d in range(n) if d not in dims]
    keep = [1 if d in dims else v.shape[d] for d in range(n)]
    v = v.permute(*rest, *dims).reshape(*[v.shape[d] for d in rest], -1)
    t = t.permute(0, *[d + 1 for d in rest], *[d + 1 for d in dims])
    t = t.reshape(t.shape[0], *v.shape)
    return v, t, keep
