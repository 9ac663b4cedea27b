"""Training with each tie rule, in each floating-point format, over seeds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mtlib._validate import check_int, check_positive
from mtlib.ties import check_ties
from mtlib.training._data import Digits, as_float_dtype, dtype_name, minibatches
from mtlib.training._ties import fractions, pool_inputs, window_ties


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
    comes from ``seed``. The fraction of active ties (:func:`mtlib.training.tie_fraction`) is
    recorded at every step. The gradients are the associated gradients (Def 1) that the tie
    rule selects.

    Args:
        model_factory: ``model_factory(ties=...)`` returns the network, e.g.
            :func:`mtlib.training.digits_cnn`.
        data: the :class:`mtlib.training.Digits` split.
        ties: the tie rule of the maxpools.
        dtype: floating-point dtype (or its name) of the whole computation.
        epochs, batch_size, lr, momentum: SGD settings.
        seed: seed of the minibatch order.
        device: where to train.

    Returns:
        A :class:`TrainResult`.

    Raises:
        TypeError: ``dtype`` is not a floating-point dtype; ``epochs`` or ``batch_size`` not an int.
        ValueError: unknown ``ties``, ``epochs`` or ``batch_size`` < 1, ``lr`` <= 0.

    References:
        Boustany (2024); Sec 5 of Despres (2024).

    Examples:
        >>> from functools import partial
        >>> from mtlib.training import digits_cnn, digits_data
        >>> result = train(partial(digits_cnn, 2), digits_data(40), ties="uniform", dtype="float32", epochs=1)
        >>> 0.0 <= result.test_accuracy <= 1.0, len(result.losses)
        (True, 1)
    """
    dtype = as_float_dtype("train", dtype)
    check_ties("train", ties)
    check_int("train", "epochs", epochs)
    check_int("train", "batch_size", batch_size)
    check_positive("train", "lr", lr)
    model = model_factory(ties=ties).to(device=device, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    steps = epochs * -(-len(data.y_train) // batch_size)
    losses, active_ties = [], []
    for idx in minibatches(len(data.y_train), batch_size, steps, seed):
        x, y = data.x_train[idx].to(device=device, dtype=dtype), data.y_train[idx].to(device)
        optimizer.zero_grad()
        with pool_inputs(model) as seen:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        active_ties.append(fractions(window_ties(seen))[1])
    with torch.no_grad():
        logits = model(data.x_test.to(device=device, dtype=dtype))
    accuracy = (logits.argmax(dim=1).cpu() == data.y_test).double().mean().item()
    return TrainResult(accuracy, losses, active_ties)


def accuracy_study(model_factory: Callable[..., nn.Module], data: Digits, *, dtypes: Iterable,
                   seeds: Iterable[int], rules: Iterable[str] = ("first", "uniform"),
                   **train_kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run :func:`train` for every dtype, tie rule and seed (the seed fixes weights and data order).

    Args:
        model_factory: ``model_factory(ties=..., seed=...)``, as :func:`mtlib.training.digits_cnn`.
        data: the :class:`mtlib.training.Digits` split.
        dtypes: dtypes (or names) to train in.
        seeds: seeds of the initial weights and of the minibatch order.
        rules: tie rules to compare.
        **train_kwargs: passed on to :func:`train` (``epochs``, ``lr``, ``device``, ...).

    Returns:
        ``(runs, steps)``: one row per run (``dtype, ties, seed, accuracy, final_loss,
        active_ties`` averaged over steps) and one row per training step (``dtype, ties, seed,
        step, loss, active_ties``).

    Examples:
        >>> from mtlib.training import digits_cnn, digits_data
        >>> runs, steps = accuracy_study(digits_cnn, digits_data(40), dtypes=["float64"], seeds=[0],
        ...                              rules=["first"], epochs=1, batch_size=10)
        >>> len(runs), len(steps)
        (1, 3)
    """
    runs, steps = [], []
    for dtype in dtypes:
        name = dtype_name(as_float_dtype("accuracy_study", dtype))
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
