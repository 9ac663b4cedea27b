"""mtlib: associated gradients and tie-aware maxpool, after Despres (2024).

The public surface is re-exported here from small modules; each function's docstring names the
equation of the paper it implements.
"""

from mtlib import directional
from mtlib.activations import abs_eps, abs_shift_eps, relu_z
from mtlib.appendix import AppendixTerms, appendix_example, convergence_table, regularized_integrals
from mtlib.directional import Dual, compare_directional, one_sided_difference
from mtlib.kinkcheck import KinkReport, kinkcheck
from mtlib.lipschitz import (
    LowerBound,
    StridedMaxPool,
    exact_lipschitz_1d,
    jacobian_norms,
    lower_bound,
    pool_multiplicity,
    upper_bound,
)
from mtlib.maxpool import MaxPool1d, MaxPool2d, max_pool1d, max_pool2d, window_tie_counts
from mtlib.piecewise import Piecewise, associated_gradient, chain_jacobian
from mtlib.policy import TiePolicy, tie_policy
from mtlib.networks import KinkCount, count_kinks
from mtlib.representations import (
    compose_piecewise,
    max_pair_piecewise,
    max_piecewise,
    max_pool_layer_piecewise,
    network_layers,
    relu_layer_piecewise,
    relu_piecewise,
)
from mtlib.ties import TangentReport, check_tangent, max_first, max_last, max_uniform, max_weights, tie_set
from mtlib.training import gradient_disagreement, tie_fraction

__all__ = [
    "AppendixTerms",
    "Dual",
    "KinkCount",
    "KinkReport",
    "LowerBound",
    "MaxPool1d",
    "MaxPool2d",
    "Piecewise",
    "StridedMaxPool",
    "TangentReport",
    "TiePolicy",
    "abs_eps",
    "abs_shift_eps",
    "appendix_example",
    "associated_gradient",
    "chain_jacobian",
    "check_tangent",
    "compare_directional",
    "compose_piecewise",
    "convergence_table",
    "count_kinks",
    "directional",
    "exact_lipschitz_1d",
    "gradient_disagreement",
    "jacobian_norms",
    "kinkcheck",
    "lower_bound",
    "max_first",
    "max_last",
    "max_pair_piecewise",
    "max_piecewise",
    "max_pool1d",
    "max_pool2d",
    "max_pool_layer_piecewise",
    "max_uniform",
    "max_weights",
    "network_layers",
    "one_sided_difference",
    "pool_multiplicity",
    "regularized_integrals",
    "relu_layer_piecewise",
    "relu_piecewise",
    "relu_z",
    "tie_fraction",
    "tie_policy",
    "tie_set",
    "upper_bound",
    "window_tie_counts",
]
__version__ = "0.1.0"
