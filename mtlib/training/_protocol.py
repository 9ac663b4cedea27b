"""Boustany's fixed-weight protocol: do two maxpool tie rules give different parameter gradients?

Two statistics of the gradient difference appear in Boustany's public code
(``github.com/ryanboustany/MaxPool-numerical``, commit ``ec0eba5``), both written there as
``compute_norms(net1, net2)``:

* ``notebooks/volume_estimation_by_architecture.ipynb`` (the notebook whose VGG11 output reads
  391/391, 216/391 and 0/391 minibatches) sums per-tensor max norms, eq (B1) below, and counts a
  minibatch when the sum exceeds a fixed threshold: 1e-3, 1e-7, 1e-15 for 16, 32, 64 bits;
* ``notebooks/threshold_maxpool.ipynb`` sums per-tensor L1 norms, eq (B2), and calibrates a
  threshold from the norms it observes: in 16 bits the smallest positive norm, otherwise the
  largest norm (:func:`calibrate_threshold`).

.. math::

    \\Delta_\\infty = \\sum_p \\max_i |g^{\\text{first}}_{p,i} - g^{\\text{uniform}}_{p,i}|
    \\quad (B1), \\qquad
    \\Delta_1 = \\sum_p \\sum_i |g^{\\text{first}}_{p,i} - g^{\\text{uniform}}_{p,i}| \\quad (B2)

over the parameter tensors ``p``. Here both are computed in float64 from the gradients (cast
exactly), so the statistic itself adds no rounding of the format under test; Boustany's code
subtracts and sums in the format of the gradients.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mtlib._validate import check_int
from mtlib.training._data import Digits, as_float_dtype, dtype_name, minibatches
from mtlib.training._ties import fractions, pool_inputs, require_pools, window_ties

#: Share of the 391 CIFAR10 minibatches (batch 128, one epoch, one run, fixed initial weights)
#: on which VGG11's two maxpool rules differ above :data:`THRESHOLDS` by (B1), by bits, as printed
#: by ``volume_estimation_by_architecture.ipynb`` of Boustany's code: 391, 216 and 0 of 391.
BOUSTANY_VGG11_CIFAR10 = {16: 391 / 391, 32: 216 / 391, 64: 0 / 391}
#: The fixed thresholds on (B1) of that notebook, by floating-point bits.
THRESHOLDS = {16: 1e-3, 32: 1e-7, 64: 1e-15}

Gradients = Sequence[torch.Tensor]


def _check_pair(fn: str, grads_a: Gradients, grads_b: Gradients) -> None:
    if len(grads_a) != len(grads_b) or any(a.shape != b.shape for a, b in zip(grads_a, grads_b)):
        raise ValueError(f"{fn}: the two gradient lists must hold tensors of the same shapes, "
                         "in the same order")


def summed_max_difference(grads_a: Gradients, grads_b: Gradients) -> float:
    """Eq (B1): the sum over parameter tensors of the max-norm of their difference, in float64.

    Examples:
        >>> summed_max_difference([torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])],
        ...                       [torch.tensor([0.0, 0.0]), torch.tensor([[0.25]])])
        2.25
    """
    _check_pair("summed_max_difference", grads_a, grads_b)
    return sum((a.double() - b.double()).abs().max().item() for a, b in zip(grads_a, grads_b))


def summed_l1_difference(grads_a: Gradients, grads_b: Gradients) -> float:
    """Eq (B2), Boustany's ``compute_norms`` of ``threshold_maxpool.ipynb``: summed L1 norms, in float64.

    Examples:
        >>> summed_l1_difference([torch.tensor([1.0, -2.0]), torch.tensor([[0.5]])],
        ...                      [torch.tensor([0.0, 0.0]), torch.tensor([[0.25]])])
        3.25
    """
    _check_pair("summed_l1_difference", grads_a, grads_b)
    return sum((a.double() - b.double()).abs().sum().item() for a, b in zip(grads_a, grads_b))


def calibrate_threshold(norms, bits: int) -> float:
    """Boustany's calibrated threshold: in 16 bits the smallest positive norm, otherwise the largest.

    This is the rule that ends ``diffMaxpool`` in ``threshold_maxpool.ipynb`` of his code, applied
    there to the (B2) norms of every minibatch of every run (each run redraws the weights).
    bfloat16 has 16 bits and gets the 16-bit rule.

    Args:
        norms: observed norms (any iterable of non-negative floats).
        bits: bits of the floating-point format the norms were measured in.

    Returns:
        The threshold.

    Raises:
        ValueError: no norms, a negative or NaN norm, or 16 bits and no positive norm.

    Examples:
        >>> calibrate_threshold([0.0, 3e-4, 1e-2], 16), calibrate_threshold([0.0, 3e-4, 1e-2], 32)
        (0.0003, 0.01)
    """
    values = [float(v) for v in norms]
    if not values or any(math.isnan(v) or v < 0 for v in values):
        raise ValueError("calibrate_threshold: `norms` must be a non-empty list of non-negative numbers")
    check_int("calibrate_threshold", "bits", bits)
    if bits == 16:
        positive = [v for v in values if v > 0]
        if not positive:
            raise ValueError("calibrate_threshold: in 16 bits the rule needs at least one positive norm")
        return min(positive)
    return max(values)


def rule_gradients(models: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor):
    """Cross-entropy parameter gradients of each model on ``(x, y)`` from zeroed gradients.

    Returns:
        ``(grads, seen)``: per model, its parameter gradients cast to float64 (unused
        parameters give zeros), and the ``(pool, input)`` pairs of its tie-aware maxpools.
    """
    grads, seen = [], []
    for model in models:
        model.zero_grad()
        with pool_inputs(model) as pools:
            F.cross_entropy(model(x), y).backward()
        grads.append([torch.zeros_like(p, dtype=torch.float64) if p.grad is None else p.grad.detach().double()
                      for p in model.parameters()])
        seen.append(pools)
    return grads, seen


def gradient_disagreement(model_factory: Callable[..., nn.Module], data: Digits, dtype, *,
                          batches: int = 20, batch_size: int = 32, thresholds: dict[int, float] = THRESHOLDS,
                          seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """Boustany's protocol: per minibatch, the tie statistics and both gradient differences.

    ``model_factory(ties=...)`` builds the network for ``"first"`` and ``"uniform"``; both get
    the same weights, cast to ``dtype``, and are never updated. On each of ``batches``
    minibatches both compute the cross-entropy gradient from zeroed gradients. The same rounded
    weights are also run in float64 on the same minibatch: an active tie in ``dtype`` that
    float64 does not see is a tie *made by rounding*.

    Returns:
        One row per minibatch: ``dtype, batch, windows`` (pooling windows in the minibatch),
        ``tied, active`` (window fractions, see :func:`mtlib.training.tie_fraction`),
        ``rounding`` (fraction of windows with an active tie absent in float64), ``difference``
        (eq B1), ``l1_difference`` (eq B2) and ``differs`` (``difference > thresholds[bits]``).

    Raises:
        TypeError: ``dtype`` is not a floating-point dtype; ``batches`` or ``batch_size`` not an int.
        ValueError: ``batches`` or ``batch_size`` < 1; ``thresholds`` lacks the bits of ``dtype``;
            the model runs no :class:`mtlib.maxpool.MaxPool2d`.

    Examples:
        >>> from functools import partial
        >>> from mtlib.training import digits_cnn, digits_data
        >>> table = gradient_disagreement(partial(digits_cnn, 2), digits_data(40), torch.float64,
        ...                               batches=2, batch_size=8)
        >>> table.columns.tolist()
        ['dtype', 'batch', 'windows', 'tied', 'active', 'rounding', 'difference', 'l1_difference', 'differs']

    References:
        Boustany (2024) and his code (module docstring); Sec 5 of Despres (2024).
    """
    dtype = as_float_dtype("gradient_disagreement", dtype)
    check_int("gradient_disagreement", "batches", batches)
    check_int("gradient_disagreement", "batch_size", batch_size)
    bits = torch.finfo(dtype).bits
    if bits not in thresholds:
        raise ValueError(f"gradient_disagreement: `thresholds` has no entry for {bits}-bit {dtype}")
    models = [model_factory(ties=rule).to(device=device, dtype=dtype) for rule in ("first", "uniform")]
    models[1].load_state_dict(models[0].state_dict())
    reference = copy.deepcopy(models[0]).to(torch.float64)
    rows = []
    for b, idx in enumerate(minibatches(len(data.y_train), batch_size, batches, seed)):
        x, y = data.x_train[idx].to(device=device, dtype=dtype), data.y_train[idx].to(device)
        (first, uniform), seen = rule_gradients(models, x, y)
        with torch.no_grad(), pool_inputs(reference) as exact:
            reference(x.to(torch.float64))
        require_pools("gradient_disagreement", seen[0])
        masks = window_ties(seen[0])
        rounding = sum(int((a & ~t64).sum()) for (_, a), (t64, _) in zip(masks, window_ties(exact)))
        delta = summed_max_difference(first, uniform)
        tied, active = fractions(masks)
        windows = sum(t.numel() for t, _ in masks)
        rows.append({"dtype": dtype_name(dtype), "batch": b, "windows": windows, "tied": tied,
                     "active": active, "rounding": rounding / windows, "difference": delta,
                     "l1_difference": summed_l1_difference(first, uniform),
                     "differs": delta > thresholds[bits]})
    return pd.DataFrame(rows)
