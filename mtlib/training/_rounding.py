"""A model of ties made by rounding: rate per window proportional to ``2^-p``."""

from __future__ import annotations

import math

import pandas as pd

from mtlib._validate import check_int

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
    The second formula predicts minibatches that *hold* a rounding tie, not minibatches whose
    gradients differ above a threshold: a tie can change the gradient by less than any threshold.

    Args:
        rates: measured rounding-tie rate per window, by dtype name (zero rates are ignored).
        windows: pooling windows per minibatch to predict for.

    Returns:
        One row per format: ``dtype, bits, rate`` (predicted per window) and ``minibatches``
        (predicted fraction of minibatches with at least one rounding tie).

    Raises:
        TypeError: ``windows`` is not an int.
        ValueError: no positive rate, or ``windows`` < 1.

    Examples:
        >>> rounding_tie_model({"float16": 2.0**-11}, 1024)["rate"].tolist()[:2]
        [0.00048828125, 0.00390625]
    """
    logs = [math.log2(r) + SIGNIFICAND_BITS[name] for name, r in rates.items() if r > 0]
    if not logs:
        raise ValueError("rounding_tie_model: `rates` must hold at least one positive rate")
    check_int("rounding_tie_model", "windows", windows)
    c = 2.0 ** (sum(logs) / len(logs))
    rows = [{"dtype": name, "bits": bits, "rate": c * 2.0**-bits,
             "minibatches": -math.expm1(-c * 2.0**-bits * windows)}
            for name, bits in SIGNIFICAND_BITS.items()]
    return pd.DataFrame(rows)
