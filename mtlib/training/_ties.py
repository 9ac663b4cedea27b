"""Which pooling windows tie: forward hooks on the tie-aware maxpools of a model.

A window ties when two or more of its entries equal its max (tie set of size >= 2, Sec 4.3).
After a ReLU only the *active* ties, at a positive max, can matter: a zero max means every entry
was cut by the ReLU, whose derivative PyTorch takes as 0 there, so no tie rule changes a gradient.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from mtlib.maxpool import MaxPool2d, window_tie_counts


@contextlib.contextmanager
def pool_inputs(model: nn.Module):
    """Collect ``(pool, input)`` for every :class:`mtlib.maxpool.MaxPool2d` run inside the block."""
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append((mod, args[0].detach())))
             for m in model.modules() if isinstance(m, MaxPool2d)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def require_pools(fn: str, seen) -> None:
    """Raise ``ValueError`` naming ``fn`` when no tie-aware maxpool ran."""
    if not seen:
        raise ValueError(f"{fn}: `model` ran no mtlib.maxpool.MaxPool2d, so it has no pooling "
                         "windows to count (torch.nn.MaxPool2d is not seen)")


def window_ties(seen) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per pool: boolean masks of the windows holding a tie, and of those whose max is positive."""
    masks = []
    for pool, x in seen:
        geometry = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
        tied = window_tie_counts(x, *geometry) >= 2
        masks.append((tied, tied & (F.max_pool2d(x, *geometry) > 0)))
    return masks


def tie_counts(masks) -> tuple[int, int, int]:
    """``(windows, tied, active)``: integer counts over every pool of ``masks``."""
    return (sum(t.numel() for t, _ in masks), sum(int(t.sum()) for t, _ in masks),
            sum(int(a.sum()) for _, a in masks))


def fractions(masks) -> tuple[float, float]:
    """``(tied, active)`` as fractions of all windows."""
    total, tied, active = tie_counts(masks)
    return tied / total, active / total


def tie_fraction(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Fractions of the maxpool windows of ``model`` on ``x`` holding a tie.

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

        >>> from mtlib.training import digits_cnn
        >>> tie_fraction(digits_cnn(2), torch.zeros(1, 1, 8, 8, dtype=torch.float64))
        (0.8333333333333334, 0.6666666666666666)
    """
    with torch.no_grad(), pool_inputs(model) as seen:
        model(x)
    require_pools("tie_fraction", seen)
    return fractions(window_ties(seen))
