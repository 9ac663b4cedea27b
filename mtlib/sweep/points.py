"""Sweep points as plain functions: what a chapter records, computed without a notebook kernel.

:func:`training_point` is the function form of the ``training`` sweep (and
:func:`training_valid_point` that of ``training_valid``): the values that
``book/training.ipynb`` passes to :func:`mtlib.sweep.record`, computed by the same two functions
the notebook calls (:func:`mtlib.training.protocol_study`, :func:`mtlib.training.study_record`)
in the same state, so that
``map_grid(training_point, grid)`` and ``run_sweep("book/training.ipynb", grid, ...)`` give the
same records (tested on a small point). Module-level, hence picklable by reference: a Dask worker
or a spawned process imports it by name.

Chapter: sweeps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import partial

import torch

from mtlib.machine import machine_info
from mtlib.training import digits_cnn, digits_data, protocol_study, study_record, valid_record, valid_study

DTYPES = ("float16", "bfloat16", "float32", "float64")


def training_point(*, n_samples: int = 1797, image_size: int = 8, width: int = 8, batch_size: int = 32,
                   batches: int = 40, calibration_seeds: Sequence[int] = (1, 2),
                   seeds: Sequence[int] = (0, 1, 2), dtypes: Sequence[str] = DTYPES, epochs: int = 6,
                   lr: float = 0.05, device: str | None = None) -> dict:
    """Boustany's fixed-weight protocol at one point: the training chapter's recorded summary.

    The parameters are those of the chapter's ``parameters`` cell. For each format of
    ``dtypes``, over ``batches`` minibatches of ``batch_size`` images with the initial weights
    of ``seeds[0]`` and tie rules ``"first"`` and ``"uniform"``: the mean fractions of windows
    that tie (``tied``), at a positive value (``active``), by rounding only (``rounding``); the
    fraction of minibatches holding a rounding tie (``with_rounding_tie``); the fraction whose
    summed max-norm difference exceeds the fixed threshold (``differs``) and its median
    (``median_delta``); the same for the summed L1 difference against the threshold calibrated
    on ``calibration_seeds`` (``differs_l1``, ``median_l1``, ``threshold_l1``); and the median
    difference over the minibatches with a rounding tie (``delta_tied``). Keys are
    ``<measure>_<dtype>``, values rounded to 4 significant digits as the chapter records them,
    followed by ``batch_size``, ``width``, ``image_size``, ``batches``, ``windows`` and
    :func:`mtlib.machine.machine_info`.

    ``epochs`` and ``lr`` set the chapter's training part, which records nothing: they are
    accepted so that one grid serves both forms, and ignored.

    Runs in float64 by default with one CPU thread, as the chapter does; restores the default
    dtype and the thread count of the calling process afterwards.
    """
    del epochs, lr  # the training part of the chapter records nothing
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with _chapter_state(device):
        data = digits_data(n_samples, image_size=image_size, seed=seeds[0])
        study = protocol_study(data, width=width, image_size=image_size, batch_size=batch_size,
                               batches=batches, seeds=seeds, calibration_seeds=calibration_seeds,
                               dtypes=dtypes, device=device)
        machine = machine_info()
    return {**study_record(study, batch_size=batch_size, width=width, image_size=image_size, batches=batches),
            **machine}


def training_valid_point(*, n_samples: int = 600, width: int = 8, batch_size: int = 32, batches: int = 10,
                         seeds: Sequence[int] = (0,), dtypes: Sequence[str] = DTYPES, epochs: int = 3,
                         lr: float = 0.05, device: str | None = None) -> dict:
    """PyTorch's gradient against the perturbed-branch gradient at one point: the training_valid
    chapter's recorded summary.

    The parameters and their defaults are those of the chapter's ``parameters`` cell. For each
    format of ``dtypes``: the fixed-weight protocol over ``batches`` minibatches at the initial
    weights of ``seeds[0]`` (``active``, ``differs``, ``median_delta``, ``median_l1``) and SGD with
    each gradient for every seed (``accuracy_pytorch``, ``accuracy_perturbed``, their standard
    deviations ``accuracy_sd_pytorch``, ``accuracy_sd_perturbed``, ``accuracy_gap``, ``loss_gap``),
    as :func:`mtlib.training.valid_study` defines them. Keys ``<measure>_<dtype>``,
    rounded to 4 significant digits, after ``batch_size``, ``width``, ``batches``, ``epochs``;
    then :func:`mtlib.machine.machine_info`. Same global state as :func:`training_point`.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with _chapter_state(device):
        data = digits_data(n_samples, seed=seeds[0])
        study = valid_study(partial(digits_cnn, width), data, dtypes=dtypes,
                            seeds=seeds, batches=batches, batch_size=batch_size, epochs=epochs, lr=lr,
                            device=device)
        machine = machine_info()
    return {**valid_record(study, batch_size=batch_size, width=width, batches=batches, epochs=epochs),
            **machine}


@contextlib.contextmanager
def _chapter_state(device: str):
    """The chapter's global torch state (float64 default, seed 0, one CPU thread), then the caller's."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            if device == "cpu":
                torch.set_num_threads(1)
            yield
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)


def square_point(a: float) -> dict:
    """The sweeps chapter's demonstration point as a function: refuses ``a < 0``, records ``a**2``.

    The function form of the chapter's three-cell notebook, whose cost is all overhead; the
    chapter times both forms with it.

    Raises:
        ValueError: ``a < 0``, with the notebook's message.

    Examples:
        >>> square_point(3.0)
        {'square': 9.0}
    """
    if a < 0:
        raise ValueError(f"a must be >= 0, got {a}")
    return {"square": a * a}
