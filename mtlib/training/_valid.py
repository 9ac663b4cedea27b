"""Training with a provably valid gradient: the perturbed-branch gradient beside PyTorch's own.

PyTorch's gradient of the training chapter's network is an associated gradient (Cor 2): at a tie
of a ReLU or a maxpool window it takes PyTorch's rule (``relu'(0) = 0``, the first maximum). The
perturbed-branch gradient (:func:`mtlib.perturbed_gradient`) takes at every tie the branch that
the parameters perturbed along a random direction enter: an element of Clarke's generalized
gradient with probability one, at the cost of one forward pass carrying one tangent and one
reverse pass. Both are the gradient wherever no op of the network meets a tie, so any
difference between the two comes from ties, genuine or made by rounding.

Two measurements, with the statistics of the training chapter:

* the fixed-weight protocol (:func:`valid_disagreement`): on each minibatch at the initial
  weights rounded to the format, Boustany's differences (B1) and (B2) between the two gradients
  and the fixed thresholds of his code;
* training (:func:`train_valid`): SGD with each gradient from the same initial weights and
  minibatch order; test accuracy, per-step loss and the gap between the two loss curves.

Chapter: training_valid (``book/training_valid.ipynb``); its recorded summary is the
``training_valid`` sweep (:func:`mtlib.sweep.points.training_valid_point`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtlib._validate import check_int, check_positive
from mtlib.directional import perturbed_gradient
from mtlib.training._data import Digits, as_float_dtype, dtype_name, minibatches
from mtlib.training._protocol import THRESHOLDS, summed_l1_difference, summed_max_difference
from mtlib.training._ties import fractions, pool_inputs, window_ties

GRADIENTS = ("pytorch", "perturbed")
"""PyTorch's autograd gradient (its tie rules) and the perturbed-branch gradient."""


def parameter_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gradient: str,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, list]:
    """``(loss, gradients)`` of the cross-entropy of ``model`` on ``(x, y)``, one gradient per
    parameter in ``model.parameters()`` order, by ``gradient`` (one of :data:`GRADIENTS`).

    ``"perturbed"`` draws its direction from ``generator``; the loss is the same number either way.
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"parameter_gradients: `gradient` must be one of {GRADIENTS}, got {gradient!r}")
    params = dict(model.named_parameters())
    if gradient == "pytorch":
        loss = F.cross_entropy(model(x), y)
        return loss.detach(), list(torch.autograd.grad(loss, list(params.values())))

    def loss_of(p):
        return F.cross_entropy(functional_call(model, p, (x,)), y)

    grads = perturbed_gradient(loss_of, params, generator=generator)
    with torch.no_grad():
        loss = loss_of(params)
    return loss, [grads[name] for name in params]


def valid_disagreement(model_factory: Callable[..., nn.Module], data: Digits, dtype, *, batches: int = 20,
                       batch_size: int = 32, seed: int = 0, device: str = "cpu") -> pd.DataFrame:
    """Boustany's fixed-weight protocol with PyTorch's gradient against the perturbed-branch one.

    The network ``model_factory(ties="first")`` (PyTorch's maxpool rule) is cast to ``dtype`` and
    never updated; on each of ``batches`` minibatches both gradients are computed at the same
    weights (the direction of the perturbed one drawn from a generator seeded by ``seed`` and the
    minibatch index).

    Returns:
        One row per minibatch: ``dtype, batch, active`` (fraction of pooling windows holding a
        tie at a positive max, :func:`mtlib.training.tie_fraction`), ``difference`` (eq B1),
        ``l1_difference`` (eq B2) and ``differs`` (``difference`` above the fixed threshold of
        Boustany's code for the format's bits, :data:`mtlib.training.THRESHOLDS`).

    Raises:
        TypeError / ValueError: as :func:`mtlib.training.gradient_disagreement`.

    Examples:
        >>> from functools import partial
        >>> from mtlib.training import digits_cnn, digits_data
        >>> table = valid_disagreement(partial(digits_cnn, 2), digits_data(40), torch.float64,
        ...                            batches=2, batch_size=8)
        >>> table.columns.tolist(), bool((table.difference < 1e-12).all())
        (['dtype', 'batch', 'active', 'difference', 'l1_difference', 'differs'], True)
    """
    dtype = as_float_dtype("valid_disagreement", dtype)
    check_int("valid_disagreement", "batches", batches)
    check_int("valid_disagreement", "batch_size", batch_size)
    model = model_factory(ties="first").to(device=device, dtype=dtype)
    threshold = THRESHOLDS[torch.finfo(dtype).bits]
    rows = []
    for b, idx in enumerate(minibatches(len(data.y_train), batch_size, batches, seed)):
        x, y = data.x_train[idx].to(device=device, dtype=dtype), data.y_train[idx].to(device)
        with pool_inputs(model) as seen:
            _, pytorch = parameter_gradients(model, x, y, "pytorch")
        generator = torch.Generator().manual_seed(1000 * seed + b)
        _, perturbed = parameter_gradients(model, x, y, "perturbed", generator)
        pytorch, perturbed = [g.double() for g in pytorch], [g.double() for g in perturbed]
        delta = summed_max_difference(pytorch, perturbed)
        rows.append({"dtype": dtype_name(dtype), "batch": b, "active": fractions(window_ties(seen))[1],
                     "difference": delta, "l1_difference": summed_l1_difference(pytorch, perturbed),
                     "differs": delta > threshold})
    return pd.DataFrame(rows)


def train_valid(model_factory: Callable[..., nn.Module], data: Digits, *, gradient: str, dtype,
                epochs: int = 4, batch_size: int = 32, lr: float = 0.05, momentum: float = 0.9,
                seed: int = 0, device: str = "cpu") -> tuple[float, list[float]]:
    """Train ``model_factory(ties="first")`` in ``dtype`` with SGD on the gradient ``gradient``.

    As :func:`mtlib.training.train` (weights, data, optimizer state in ``dtype``; minibatch order
    from ``seed``), with the parameter gradient of :func:`parameter_gradients`; the directions of
    the perturbed gradient come from a generator seeded by ``seed``.

    Returns:
        ``(test_accuracy, losses)``: accuracy on the test split and the loss at every step.

    Raises:
        TypeError: ``dtype`` not a floating-point dtype; ``epochs`` or ``batch_size`` not an int.
        ValueError: unknown ``gradient``, ``epochs`` or ``batch_size`` < 1, ``lr`` <= 0.

    Examples:
        >>> from functools import partial
        >>> from mtlib.training import digits_cnn, digits_data
        >>> acc, losses = train_valid(partial(digits_cnn, 2), digits_data(40), gradient="perturbed",
        ...                           dtype="float32", epochs=1)
        >>> 0.0 <= acc <= 1.0, len(losses)
        (True, 1)
    """
    dtype = as_float_dtype("train_valid", dtype)
    if gradient not in GRADIENTS:
        raise ValueError(f"train_valid: `gradient` must be one of {GRADIENTS}, got {gradient!r}")
    check_int("train_valid", "epochs", epochs)
    check_int("train_valid", "batch_size", batch_size)
    check_positive("train_valid", "lr", lr)
    model = model_factory(ties="first").to(device=device, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * -(-len(data.y_train) // batch_size)
    losses = []
    for idx in minibatches(len(data.y_train), batch_size, steps, seed):
        x, y = data.x_train[idx].to(device=device, dtype=dtype), data.y_train[idx].to(device)
        loss, grads = parameter_gradients(model, x, y, gradient, generator)
        for p, g in zip(model.parameters(), grads):
            p.grad = g
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        logits = model(data.x_test.to(device=device, dtype=dtype))
    return (logits.argmax(dim=1).cpu() == data.y_test).double().mean().item(), losses


@dataclass(frozen=True)
class ValidStudy:
    """The chapter's study: the fixed-weight protocol and training, per format.

    Attributes:
        protocol: one row per (format, minibatch), as :func:`valid_disagreement` returns.
        runs: one row per (format, gradient, seed): ``accuracy``, ``final_loss``.
        steps: one row per (format, seed, step): ``loss_pytorch``, ``loss_perturbed`` and
            ``gap = |loss_pytorch - loss_perturbed|``.
        summary: one row per format: ``active``, ``differs``, ``median_delta`` (median of B1),
            ``median_l1`` (median of B2) from the protocol; ``accuracy_pytorch``,
            ``accuracy_perturbed`` (means over seeds), ``accuracy_sd_pytorch``,
            ``accuracy_sd_perturbed`` (standard deviations over seeds), ``accuracy_gap`` (mean
            over seeds of the absolute difference of the paired accuracies), ``loss_gap`` (median
            over seeds of the largest gap between the two loss curves).
    """

    protocol: pd.DataFrame
    runs: pd.DataFrame
    steps: pd.DataFrame
    summary: pd.DataFrame


def valid_study(model_factory: Callable[..., nn.Module], data: Digits, *, dtypes: Sequence[str],
                seeds: Sequence[int], batches: int, batch_size: int, epochs: int, lr: float,
                device: str = "cpu") -> ValidStudy:
    """Run :func:`valid_disagreement` (weights of ``seeds[0]``) and :func:`train_valid` with both
    gradients for every format and seed (``model_factory(ties=..., seed=...)``)."""
    protocol = pd.concat([valid_disagreement(lambda ties: model_factory(ties=ties, seed=seeds[0]), data,
                                             name, batches=batches, batch_size=batch_size, seed=seeds[0],
                                             device=device) for name in dtypes])
    runs, steps = [], []
    for name in dtypes:
        for seed in seeds:
            curves = {}
            for gradient in GRADIENTS:
                accuracy, losses = train_valid(lambda ties, s=seed: model_factory(ties=ties, seed=s), data,
                                               gradient=gradient, dtype=name, epochs=epochs,
                                               batch_size=batch_size, lr=lr, seed=seed, device=device)
                runs.append({"dtype": name, "gradient": gradient, "seed": seed, "accuracy": accuracy,
                             "final_loss": losses[-1]})
                curves[gradient] = losses
            pairs = enumerate(zip(curves["pytorch"], curves["perturbed"]))
            steps += [{"dtype": name, "seed": seed, "step": i, "loss_pytorch": a, "loss_perturbed": b,
                       "gap": abs(a - b)} for i, (a, b) in pairs]
    runs, steps = pd.DataFrame(runs), pd.DataFrame(steps)
    by_seed = runs.pivot_table(index=["dtype", "seed"], columns="gradient", values="accuracy")
    summary = protocol.groupby("dtype", sort=False).agg(
        active=("active", "mean"), differs=("differs", "mean"), median_delta=("difference", "median"),
        median_l1=("l1_difference", "median"))
    accuracy = runs.groupby(["dtype", "gradient"]).accuracy.agg(["mean", "std"]).unstack()
    for gradient in GRADIENTS:
        summary[f"accuracy_{gradient}"] = accuracy["mean", gradient]
    for gradient in GRADIENTS:  # the spread over seeds (NaN with one seed), as in the training chapter
        summary[f"accuracy_sd_{gradient}"] = accuracy["std", gradient]
    summary["accuracy_gap"] = (by_seed["pytorch"] - by_seed["perturbed"]).abs().groupby("dtype").mean()
    summary["loss_gap"] = steps.groupby(["dtype", "seed"]).gap.max().groupby("dtype").median()
    return ValidStudy(protocol, runs, steps, summary)


def valid_record(study: ValidStudy, **point) -> dict:
    """The values the chapter records: ``point``, then ``<measure>_<format>`` for every column of
    ``study.summary``, rounded to 4 significant digits."""
    return dict(**point, **{f"{column}_{name}": float(f"{value:.4g}")
                            for name, row in study.summary.iterrows() for column, value in row.items()})
