"""The training chapter's protocol study and its recorded summary, once for the notebook and the sweep.

``book/training.ipynb`` calls :func:`protocol_study` and records :func:`study_record`; the
function form of the ``training`` sweep (:func:`mtlib.sweep.points.training_point`) calls the
same two, so the two forms of the sweep cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import pandas as pd
import torch

from mtlib.training._data import Digits, digits_cnn
from mtlib.training._protocol import calibrate_threshold, gradient_disagreement


@dataclass(frozen=True)
class ProtocolStudy:
    """Boustany's fixed-weight protocol over several formats, with both of his statistics.

    Attributes:
        protocol: one row per (format, minibatch) for the weights of ``seeds[0]``, as
            :func:`gradient_disagreement` returns, plus ``differs_l1`` (summed L1 difference
            above the calibrated threshold).
        summary: one row per format: mean fractions of windows that tie (``tied``), at a positive
            value (``active``), by rounding only (``rounding``); fraction of minibatches holding a
            rounding tie (``with_rounding_tie``); fraction above the fixed threshold
            (``differs``) and the median difference (``median_delta``); the same for the L1
            statistic (``differs_l1``, ``median_l1``, ``threshold_l1``).
        windows: pooling windows per minibatch.
    """

    protocol: pd.DataFrame
    summary: pd.DataFrame
    windows: int


def protocol_study(data: Digits, *, width: int, image_size: int, batch_size: int, batches: int,
                   seeds: Sequence[int], calibration_seeds: Sequence[int], dtypes: Sequence[str],
                   device: str = "cpu") -> ProtocolStudy:
    """Run the protocol at the weights of ``seeds[0]``; calibrate the L1 thresholds on the others.

    The thresholds follow Boustany's ``threshold_maxpool`` notebook (:func:`calibrate_threshold`),
    computed from the runs with initial weights ``calibration_seeds``.
    """
    dtypes = list(dtypes)

    def run(seed, dtype):
        factory = partial(digits_cnn, width, image_size=image_size, seed=seed)
        return gradient_disagreement(factory, data, dtype, batches=batches, batch_size=batch_size,
                                     seed=seed, device=device)

    protocol = pd.concat([run(seeds[0], dtype) for dtype in dtypes])
    calibration = pd.concat([run(seed, dtype) for seed in calibration_seeds for dtype in dtypes])
    bits = {name: torch.finfo(getattr(torch, name)).bits for name in dtypes}
    thresholds = {name: calibrate_threshold(calibration[calibration.dtype == name].l1_difference, bits[name])
                  for name in dtypes}
    protocol["differs_l1"] = protocol.l1_difference > protocol.dtype.map(thresholds)
    summary = protocol.groupby("dtype", sort=False).agg(
        tied=("tied", "mean"), active=("active", "mean"), rounding=("rounding", "mean"),
        with_rounding_tie=("rounding", lambda r: (r > 0).mean()), differs=("differs", "mean"),
        median_delta=("difference", "median"), differs_l1=("differs_l1", "mean"),
        median_l1=("l1_difference", "median"))
    summary["threshold_l1"] = pd.Series(thresholds)
    return ProtocolStudy(protocol, summary, int(protocol.windows.iloc[0]))


def study_record(study: ProtocolStudy, **point) -> dict:
    """The values the chapter records: ``point``, the windows, then ``<measure>_<format>``.

    Measures are the columns of ``study.summary`` and ``delta_tied`` (median difference over the
    minibatches with a rounding tie, NaN when there is none), rounded to 4 significant digits.
    """
    protocol = study.protocol
    dtypes = list(study.summary.index)
    tied_delta = protocol[protocol.rounding > 0].groupby("dtype").difference.median().reindex(dtypes)
    per_format = study.summary.assign(delta_tied=tied_delta)
    return dict(**point, windows=study.windows,
                **{f"{column}_{name}": float(f"{value:.4g}")
                   for name, row in per_format.iterrows() for column, value in row.items()})
