"""Ties in training: how often maxpool windows tie, and whether the tie rule changes training.

Chapter: training, training_valid (``book/training.ipynb``, ``book/training_valid.ipynb``); their
recorded summaries feed the ``training`` and ``training_valid`` sweeps of the sweeps chapter.

Sec 5 of Despres (2024) asks how associated gradients with respect to the *parameters* behave
in training and points to the experiments of Boustany (2024). This package repeats his
fixed-weight protocol at CPU scale on scikit-learn's 8x8 digits with a small CNN
(conv-ReLU-maxpool twice, then linear) whose maxpools use a tie rule of :mod:`mtlib.maxpool`:
``"first"`` (PyTorch's) or ``"uniform"`` (eq 20 per window). Both rules are associated gradients
of the same network (Cor 2), so they agree off ties; in floating point they differ where values
tie after rounding, which depends on the format and, through the kernels, on the machine.

Import the names from here; the private modules hold, in order of use:

* ``_data``: the digits split, the CNN, dtype names and minibatch orders;
* ``_ties``: which pooling windows tie (forward hooks on the tie-aware maxpools);
* ``_protocol``: Boustany's protocol with both statistics of his code, eqs (B1) and (B2),
  and his threshold calibration;
* ``_zones``: one exact window per kind of tie, placed in Bertoin's and Boustany's zones;
* ``_rounding``: the model of ties made by rounding (rate proportional to ``2^-p``);
* ``_study``: the chapter's protocol study and the summary it records (shared with the sweep);
* ``_train``: training with each rule, over formats and seeds;
* ``_valid``: training with the perturbed-branch gradient beside PyTorch's (chapter
  training_valid).

The machine a low-precision number was measured on is :mod:`mtlib.machine`.
"""

from mtlib.training._data import Digits, digits_cnn, digits_data
from mtlib.training._protocol import (
    BOUSTANY_VGG11_CIFAR10,
    THRESHOLDS,
    calibrate_threshold,
    gradient_disagreement,
    summed_l1_difference,
    summed_max_difference,
)
from mtlib.training._rounding import SIGNIFICAND_BITS, VGG11_CIFAR10_WINDOWS, rounding_tie_model
from mtlib.training._study import ProtocolStudy, protocol_study, study_record
from mtlib.training._ties import tie_fraction
from mtlib.training._train import TrainResult, accuracy_study, train
from mtlib.training._valid import (
    GRADIENTS,
    ValidStudy,
    parameter_gradients,
    train_valid,
    valid_disagreement,
    valid_record,
    valid_study,
)
from mtlib.training._zones import TIE_KIND_PATCHES, tie_kind_examples

__all__ = [
    "BOUSTANY_VGG11_CIFAR10",
    "GRADIENTS",
    "SIGNIFICAND_BITS",
    "THRESHOLDS",
    "TIE_KIND_PATCHES",
    "VGG11_CIFAR10_WINDOWS",
    "Digits",
    "ProtocolStudy",
    "TrainResult",
    "ValidStudy",
    "accuracy_study",
    "calibrate_threshold",
    "digits_cnn",
    "digits_data",
    "gradient_disagreement",
    "parameter_gradients",
    "protocol_study",
    "rounding_tie_model",
    "study_record",
    "summed_l1_difference",
    "summed_max_difference",
    "tie_fraction",
    "tie_kind_examples",
    "train",
    "train_valid",
    "valid_disagreement",
    "valid_record",
    "valid_study",
]
