"""Ties in training: how often maxpool windows tie, and whether the tie rule changes training.

Sec 5 of the paper asks how associated gradients with respect to the *parameters* behave in
training and points to the experiments of Boustany (2024), who found that two valid
implementations of the maxpool derivative give different parameter gradients on 100 % of
VGG11/CIFAR10 minibatches in float16, 55 % in float32 and 0 % in float64. This module repeats
that protocol at CPU scale on scikit-learn's 8x8 digits with a small CNN
(conv-ReLU-maxpool twice, then linear) whose two maxpools use a tie rule of
:mod:`mtlib.maxpool`: ``"first"`` (PyTorch's) or ``"uniform"`` (eq 20 per window).
Both rules are associated gradients of the same network (Cor 2), so they agree off ties.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mtlib._validate import check_count, check_positive, check_ties

#: Minibatches whose two parameter gradients differ, VGG11 on CIFAR10 (Boustany 2024), by bits.
BOUSTANY_VGG11_CIFAR10 = {16: 1.00, 32: 0.55, 64: 0.00}
#: Boustany's thresholds on the summed max-abs gradient difference, by floating-point bits.
THRESHOLDS = {16: 1e-3, 32: 1e-7, 64: 1e-15}


@dataclass(frozen=True)
class Digits:
    """Train/test split of scikit-learn's digits: images ``(N, 1, s, s)`` in ``[0, 1]``, float64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_data(n_samples: int = 1797, *, image_size: int = 8, test_fraction: float = 0.25,
                seed: int = 0) -> Digits:
    """Scikit-learn's digits (shipped with the package, no download), shuffled and split.

    Pixels are integers 0..16 divided by 16, exact in every floating-point format, so ties
    already sit in the input. ``image_size > 8`` upsamples bilinearly (bigger feature maps).

    Args:
        n_samples: images kept (at most 1797), drawn in a random order fixed by ``seed``.
        image_size: side of the images; 8 keeps the originals.
        test_fraction: share of the kept images held out for testing.
        seed: seed of the shuffle.

    Returns:
        A :class:`Digits` with float64 images ``(N, 1, s, s)`` and int64 labels.

    Raises:
        ValueError: ``n_samples``, ``test_fraction`` or ``image_size`` out of range.

    Examples:
        >>> data = digits_data(100, test_fraction=0.2)
        >>> data.x_train.shape, data.y_test.shape
        (torch.Size([80, 1, 8, 8]), torch.Size([20]))
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 2 <= n_samples <= len(digits.target):
        raise ValueError(f"digits_data: `n_samples` must be an int in [2, {len(digits.target)}], got {n_samples!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"digits_data: `test_fraction` must be in (0, 1), got {test_fraction!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"digits_data: `image_size` must be an int >= 8, got {image_size!r}")
    order = torch.randperm(len(digits.target), generator=torch.Generator().manual_seed(seed))[:n_samples]
    x = torch.as_tensor(digits.images, dtype=torch.float64)[order].unsqueeze(1) / 16
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.as_tensor(digits.target, dtype=torch.int64)[order]
    n_test = max(1, round(test_fraction * n_samples))
    return Digits(x[n_test:], y[n_test:], x[:n_test], y[:n_test])


def digits_cnn(width: int = 8, *, ties: str = "first", image_size: int = 8, seed: int = 0) -> nn.Sequential:
    """Conv(3x3)-ReLU-MaxPool(2)-Conv(3x3)-ReLU-MaxPool(2)-Linear, with tie-aware maxpools.

    Parameters are drawn in float64 from ``seed`` (PyTorch's default initialisation), so two
    calls that differ only in ``ties`` give the same weights. Cast with ``.to(dtype)``. The
    global random state is left untouched.

    Args:
        width: channels of the first convolution; the second has ``2 * width``.
        ties: tie rule of both maxpools, ``"first"``, ``"last"`` or ``"uniform"`` (Sec 4.3).
        image_size: side of the input images (a multiple of 4).
        seed: seed of the initial weights.

    Returns:
        An ``nn.Sequential`` mapping ``(N, 1, s, s)`` to 10 logits.

    Raises:
        ValueError: unknown ``ties``, ``width < 1`` or ``image_size`` not a multiple of 4.

    Examples:
        >>> net = digits_cnn(4, ties="uniform")
        >>> net(torch.zeros(2, 1, 8, 8, dtype=torch.float64)).shape
        torch.Size([2, 10])
    """
    from mtlib.maxpool import MaxPool2d

    check_ties("digits_cnn", ties)
    check_count("digits_cnn", "width", width)
    if image_size % 4:
        raise ValueError(f"digits_cnn: `image_size` must be a multiple of 4, got {image_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        f64 = {"dtype": torch.float64}
        return nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, **f64), nn.ReLU(), MaxPool2d(2, ties=ties),
            nn.Conv2d(width, 2 * width, 3, padding=1, **f64), nn.ReLU(), MaxPool2d(2, ties=ties),
            nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, 10, **f64),
        )


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(fn: str, dtype) -> torch.dtype:
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}: `dtype` must be a floating-point torch.dtype or its name, got {dtype!r}")
    return dtype


@contextlib.contextmanager
def _pool_inputs(model: nn.Module):
    """Collect ``(pool, input)`` for every tie-aware maxpool run inside the block."""
    from mtlib.maxpool import MaxPool2d

    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append((mod, args[0].detach())))
             for m in model.modules() if isinstance(m, MaxPool2d)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def _require_pools(fn: str, seen) -> None:
    if not seen:
        raise ValueError(f"{fn}: `model` ran no mtlib.maxpool.MaxPool2d, so it has no pooling "
                         "windows to count (torch.nn.MaxPool2d is not seen)")


def _window_ties(seen) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per pool: masks of the windows holding a tie, and of those whose max is positive."""
    from mtlib.maxpool import window_tie_counts

    masks = []
    for pool, x in seen:
        geometry = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
        tied = window_tie_counts(x, *geometry) >= 2
        masks.append((tied, tied & (F.max_pool2d(x, *geometry) > 0)))
    return masks


def _fractions(masks) -> tuple[float, float]:
    total = sum(tied.numel() for tied, _ in masks)
    return sum(int(t.sum()) for t, _ in masks) / total, sum(int(a.sum()) for _, a in masks) / total


def tie_fraction(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Fractions of the maxpool windows of ``model`` on ``x`` holding a tie.

    A window ties when two or more of its entries equal its max (tie set of size >= 2, Sec 4.3).
    After a ReLU only the active ties can matter: a zero max means every entry was cut by the
    ReLU, whose derivative PyTorch takes as 0, so the tie rule cannot change a gradient there.

    Args:
        model: a network whose maxpools are :class:`mtlib.maxpool.MaxPool2d` modules.
        x: a batch of inputs for ``model``.

    Returns:
        ``(tied, active)``: the fraction of all windows (over every maxpool and every sample)
        holding a tie, and of those holding a tie at a positive max.

    Raises:
        ValueError: ``model`` runs no :class:`mtlib.maxpool.MaxPool2d` on ``x``.

    Examples:
        A blank image: the first convolution outputs its (positive) biases everywhere, so all 32
        first-pool windows tie at a positive max; 8 of the 16 second-pool windows tie at 0.

        >>> tie_fraction(digits_cnn(2), torch.zeros(1, 1, 8, 8, dtype=torch.float64))
        (0.8333333333333334, 0.6666666666666666)
    """
    with torch.no_grad(), _pool_inputs(model) as seen:
        model(x)
    _require_pools("tie_fraction", seen)
    return _fractions(_window_ties(seen))


def _batches(n: int, batch_size: int, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-count * batch_size // n))])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(count)]


def gradient_disagreement(model_factory: Callable[..., nn.Module], data: Digits, dtype, *,
                          batches: int = 20, batch_size: int = 32, thresholds: dict[int, float] = THRESHOLDS,
                          seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """Boustany's protocol: do the two tie rules give different parameter gradients?

    ``model_factory(ties=...)`` builds the network for ``"first"`` and ``"uniform"``; both get
    the same weights, cast to ``dtype``, and are never updated. On each of ``batches``
    minibatches both compute the cross-entropy gradient from zeroed gradients, and

    .. math::

        \\Delta = \\sum_{\\text{parameters } p} \\max |g^{\\text{first}}_p - g^{\\text{uniform}}_p|

    counts as a disagreement above ``thresholds[bits]`` (1e-3, 1e-7, 1e-15 for 16, 32, 64 bits).
    The same rounded weights are also run in float64 on the same minibatch: an active tie in
    ``dtype`` that float64 does not see is a tie *made by rounding*.

    Returns:
        One row per minibatch: ``dtype, batch, windows`` (pooling windows in the minibatch),
        ``tied, active`` (window fractions, see :func:`tie_fraction`), ``rounding`` (fraction
        of windows with an active tie absent in float64), ``difference`` (``Delta``) and
        ``differs``.

    Examples:
        >>> from functools import partial
        >>> data = digits_data(40)
        >>> table = gradient_disagreement(partial(digits_cnn, 2), data, torch.float64, batches=2, batch_size=8)
        >>> table.columns.tolist()
        ['dtype', 'batch', 'windows', 'tied', 'active', 'rounding', 'difference', 'differs']

    References:
        Boustany (2024), Sec 5 of Despres (2024).
    """
    dtype = _dtype("gradient_disagreement", dtype)
    check_count("gradient_disagreement", "batches", batches)
    check_count("gradient_disagreement", "batch_size", batch_size)
    bits = torch.finfo(dtype).bits
    if bits not in thresholds:
        raise ValueError(f"gradient_disagreement: `thresholds` has no entry for {bits}-bit {dtype}")
    threshold = thresholds[bits]
    models = [model_factory(ties=rule).to(device=device, dtype=dtype) for rule in ("first", "uniform")]
    models[1].load_state_dict(models[0].state_dict())
    reference = copy.deepcopy(models[0]).to(torch.float64)
    rows = []
    for b, idx in enumerate(_batches(len(data.y_train), batch_size, batches, seed)):
        x, y = data.x_train[idx].to(device=device, dtype=dtype), data.y_train[idx].to(device)
        grads, seen = [], []
        for model in models:
            model.zero_grad()
            with _pool_inputs(model) as pools:
                F.cross_entropy(model(x), y).backward()
            grads.append([p.grad.detach().to(torch.float64) for p in model.parameters()])
            seen.append(pools)
        with torch.no_grad(), _pool_inputs(reference) as exact:
            reference(x.to(torch.float64))
        _require_pools("gradient_disagreement", seen[0])
        masks = _window_ties(seen[0])
        rounding = sum(int((a & ~t64).sum()) for (_, a), (t64, _) in zip(masks, _window_ties(exact)))
        delta = sum((g1 - g2).abs().max().item() for g1, g2 in zip(*grads))
        tied, active = _fractions(masks)
        windows = sum(t.numel() for t, _ in masks)
        rows.append({"dtype": _name(dtype), "batch": b, "windows": windows, "tied": tied, "active": active,
                     "rounding": rounding / windows, "difference": delta, "differs": delta > threshold})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`: test accuracy, per-step loss and active-tie fraction."""

    test_accuracy: float
    losses: list[float]
    active_ties: list[float]


def train(model_factory: Callable[..., nn.Module], data: Digits, *, ties: str, dtype, epochs: int = 4,
          batch_size: int = 32, lr: float = 0.05, momentum: float = 0.9, seed: int = 0,
          device: str = "cpu") -> TrainResult:
    """Train ``model_factory(ties=ties)`` in ``dtype`` with SGD and report test accuracy.

    Everything (weights, inputs, loss, optimizer state) lives in ``dtype``; the data order
    comes from ``seed``. The fraction of active ties (:func:`tie_fraction`) is recorded at
    every step. The gradients are the associated gradients (Def 1) that the tie rule selects.

    Args:
        model_factory: ``model_factory(ties=...)`` returns the network (e.g. :func:`digits_cnn`).
        data: the :class:`Digits` split.
        ties: the tie rule of the maxpools.
        dtype: floating-point dtype (or its name) of the whole computation.
        epochs, batch_size, lr, momentum: SGD settings.
        seed: seed of the minibatch order.
        device: where to train.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TypeError: ``dtype`` is not a floating-point dtype.
        ValueError: unknown ``ties``, ``epochs`` or ``batch_size`` < 1, ``lr`` <= 0.

    References:
        Boustany (2024); Sec 5 of Despres (2024).

    Examples:
        >>> from functools import partial
        >>> result = train(partial(digits_cnn, 2), digits_data(40), ties="uniform", dtype="float32", epochs=1)
        >>> 0.0 <= result.test_accuracy <= 1.0, len(result.losses)
        (True, 1)
    """
    dtype = _dtype("train", dtype)
    check_ties("train", ties)
    check_count("train", "epochs", epochs)
    check_count("train", "batch_size", batch_size)
    check_positive("train", "lr", lr)
    model = model_factory(ties=ties).to(device=device, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    steps = epochs * -(-len(data.y_train) // batch_size)
    losses, active_ties = [], []
    for idx in _batches(len(data.y_train), batch_size, steps, seed):
        x, y = data.x_train[idx].to(device=device, dtype=dtype), data.y_train[idx].to(device)
        optimizer.zero_grad()
        with _pool_inputs(model) as seen:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        active_ties.append(_fractions(_window_ties(seen))[1])
    with torch.no_grad():
        logits = model(data.x_test.to(device=device, dtype=dtype))
    accuracy = (logits.argmax(dim=1).cpu() == data.y_test).double().mean().item()
    return TrainResult(accuracy, losses, active_ties)


def accuracy_study(model_factory: Callable[..., nn.Module], data: Digits, *, dtypes: Iterable,
                   seeds: Iterable[int], rules: Iterable[str] = ("first", "uniform"),
                   **train_kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run :func:`train` for every dtype, tie rule and seed (the seed fixes weights and data order).

    Args:
        model_factory: ``model_factory(ties=..., seed=...)``, as :func:`digits_cnn`.
        data: the :class:`Digits` split.
        dtypes: dtypes (or names) to train in.
        seeds: seeds of the initial weights and of the minibatch order.
        rules: tie rules to compare.
        **train_kwargs: passed on to :func:`train` (``epochs``, ``lr``, ``device``, ...).

    Returns:
        ``(runs, steps)``: one row per run (``dtype, ties, seed, accuracy, final_loss,
        active_ties`` averaged over steps) and one row per training step (``dtype, ties, seed,
        step, loss, active_ties``).

    Examples:
        >>> runs, steps = accuracy_study(digits_cnn, digits_data(40), dtypes=["float64"], seeds=[0],
        ...                              rules=["first"], epochs=1, batch_size=10)
        >>> len(runs), len(steps)
        (1, 3)
    """
    runs, steps = [], []
    for dtype in dtypes:
        name = _name(_dtype("accuracy_study", dtype))
        for rule in rules:
            for seed in seeds:
                result = train(lambda ties, s=seed: model_factory(ties=ties, seed=s), data, ties=rule,
                               dtype=dtype, seed=seed, **train_kwargs)
                key = {"dtype": name, "ties": rule, "seed": seed}
                runs.append({**key, "accuracy": result.test_accuracy, "final_loss": result.losses[-1],
                             "active_ties": sum(result.active_ties) / len(result.active_ties)})
                steps += [{**key, "step": i, "loss": loss, "active_ties": active}
                          for i, (loss, active) in enumerate(zip(result.losses, result.active_ties))]
    return pd.DataFrame(runs), pd.DataFrame(steps)


#: Significand bits (implicit bit included) of the floating-point formats.
SIGNIFICAND_BITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
#: Maxpool windows per 32x32 image in VGG11: 64*16^2 + 128*8^2 + 256*4^2 + 512*2^2 + 512*1^2.
VGG11_CIFAR10_WINDOWS = 31232


def rounding_tie_model(rates: dict[str, float], windows: int) -> pd.DataFrame:
    """Extrapolate the rate of rounding-made ties to other formats and minibatch sizes.

    Two distinct values tie after rounding when they fall in one rounding cell, whose relative
    width is ``2^{-p}`` for ``p`` significand bits, so the rate per window should scale as

    .. math::

        r(p) = C\\,2^{-p}, \\qquad P(\\text{a minibatch of } W \\text{ windows has one}) = 1 - e^{-r(p) W}

    (independent windows). ``C`` is the geometric mean of ``r 2^p`` over the measured formats.

    Args:
        rates: measured rounding-tie rate per window, by dtype name (zero rates are ignored).
        windows: pooling windows per minibatch to predict for.

    Returns:
        One row per format: ``dtype, bits, rate`` (predicted per window) and ``minibatches``
        (predicted fraction of minibatches with at least one rounding tie).

    Examples:
        >>> rounding_tie_model({"float16": 2.0**-11}, 1024)["rate"].tolist()[:2]
        [0.00048828125, 0.00390625]
    """
    logs = [math.log2(r) + SIGNIFICAND_BITS[name] for name, r in rates.items() if r > 0]
    if not logs:
        raise ValueError("rounding_tie_model: `rates` must hold at least one positive rate")
    check_count("rounding_tie_model", "windows", windows)
    c = 2.0 ** (sum(logs) / len(logs))
    rows = [{"dtype": name, "bits": bits, "rate": c * 2.0**-bits,
             "minibatches": -math.expm1(-c * 2.0**-bits * windows)} for name, bits in SIGNIFICAND_BITS.items()]
    return pd.DataFrame(rows)
