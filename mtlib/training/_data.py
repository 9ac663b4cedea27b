"""The digits data, the small CNN and the floating-point formats of the training chapter."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtlib._validate import check_int
from mtlib.maxpool import MaxPool2d
from mtlib.ties import check_ties


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
        TypeError: ``n_samples`` or ``image_size`` is not an int.
        ValueError: ``n_samples``, ``test_fraction`` or ``image_size`` out of range.

    Examples:
        >>> data = digits_data(100, test_fraction=0.2)
        >>> data.x_train.shape, data.y_test.shape
        (torch.Size([80, 1, 8, 8]), torch.Size([20]))
    """
    # scikit-learn is an optional dependency (mtlib[book]); importing it here keeps
    # `import mtlib` working without it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    check_int("digits_data", "n_samples", n_samples, min=2)
    if n_samples > len(digits.target):
        raise ValueError(f"digits_data: `n_samples` must be <= {len(digits.target)}, got {n_samples}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"digits_data: `test_fraction` must be in (0, 1), got {test_fraction!r}")
    check_int("digits_data", "image_size", image_size, min=8)
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
        TypeError: ``width`` or ``image_size`` is not an int.
        ValueError: unknown ``ties``, ``width < 1`` or ``image_size`` not a positive multiple of 4.

    Examples:
        >>> net = digits_cnn(4, ties="uniform")
        >>> net(torch.zeros(2, 1, 8, 8, dtype=torch.float64)).shape
        torch.Size([2, 10])
    """
    check_ties("digits_cnn", ties)
    check_int("digits_cnn", "width", width)
    check_int("digits_cnn", "image_size", image_size, min=4)
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


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


def as_float_dtype(fn: str, dtype) -> torch.dtype:
    """A floating-point ``torch.dtype`` from itself or its name, else ``TypeError`` naming ``fn``."""
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}: `dtype` must be a floating-point torch.dtype or its name, got {dtype!r}")
    return dtype


def minibatches(n: int, batch_size: int, count: int, seed: int) -> list[torch.Tensor]:
    """``count`` index minibatches of ``batch_size`` from ``0..n-1``: shuffled epochs, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-count * batch_size // n))])
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(count)]
