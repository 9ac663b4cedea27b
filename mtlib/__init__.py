"""mtlib: associated gradients and tie-aware maxpool, after Despres (2024).

The public surface is re-exported here, grouped by role; each function's docstring names the
equation of the paper it implements and each module's docstring the chapters that use it.
What is top level: the paper's objects, the tie-aware pools, the one-rule policy, the exact
directional derivative, the checks, and the one or two entry points of each chapter's study;
everything else stays in its module (``mtlib.networks.random_network``, ``mtlib.sweep.record``).
"""

# core: the paper's objects (tie rules of max, ReLU at its kink, representations, Cor 2)
from mtlib.activations import abs_eps, abs_shift_eps, relu_z
from mtlib.piecewise import Piecewise, associated_gradient, chain_jacobian
from mtlib.representations import (
    compose_piecewise,
    max_pair_piecewise,
    max_piecewise,
    max_pool_layer_piecewise,
    network_layers,
    relu_layer_piecewise,
    relu_piecewise,
)
from mtlib.ties import max_first, max_last, max_uniform, max_weights, tie_set

# maxpool: PyTorch's max pools with a tie rule for the gradient (torch, Triton backends)
from mtlib.maxpool import MaxPool1d, MaxPool2d, max_pool1d, max_pool2d, window_tie_counts
from mtlib.maxpool import (
    AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d, MaxPool3d,
    adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d, max_pool3d,
)

# policy: one tie rule for every nonsmooth torch op inside a `with` block
from mtlib.policy import TiePolicy, tie_policy

# directional: exact one-sided and lexicographic derivatives through kinks, and their check
from mtlib import directional
from mtlib.directional import (
    Dual,
    compare_directional,
    ld_jvp,
    lexicographic_gradient,
    one_sided_difference,
    perturbed_gradient,
)

# checks: is a gradient a valid associated gradient (eq 15), a gradcheck at kinks, kink counts
from mtlib.kinkcheck import KinkReport, kinkcheck
from mtlib.networks import KinkCount, count_kinks
from mtlib.ties import TangentReport, check_tangent

# studies: the entry points of the chapters' studies (appendix, Lipschitz, training)
from mtlib.appendix import AppendixTerms, appendix_example, convergence_table, regularized_integrals
from mtlib.lipschitz import (
    LowerBound,
    StridedMaxPool,
    exact_lipschitz_1d,
    jacobian_norms,
    lower_bound,
    pool_multiplicity,
    upper_bound,
)
from mtlib.training import gradient_disagreement, tie_fraction

__all__ = [
    # core
    "Piecewise",
    "abs_eps",
    "abs_shift_eps",
    "associated_gradient",
    "chain_jacobian",
    "compose_piecewise",
    "max_first",
    "max_last",
    "max_pair_piecewise",
    "max_piecewise",
    "max_pool_layer_piecewise",
    "max_uniform",
    "max_weights",
    "network_layers",
    "relu_layer_piecewise",
    "relu_piecewise",
    "relu_z",
    "tie_set",
    # maxpool
    "MaxPool1d",
    "MaxPool2d",
    "max_pool1d",
    "max_pool2d",
    "window_tie_counts",
    "max_pool3d",
    "MaxPool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    # policy
    "TiePolicy",
    "tie_policy",
    # directional
    "Dual",
    "compare_directional",
    "directional",
    "ld_jvp",
    "lexicographic_gradient",
    "one_sided_difference",
    "perturbed_gradient",
    # checks
    "KinkCount",
    "KinkReport",
    "TangentReport",
    "check_tangent",
    "count_kinks",
    "kinkcheck",
    # studies
    "AppendixTerms",
    "LowerBound",
    "StridedMaxPool",
    "appendix_example",
    "convergence_table",
    "exact_lipschitz_1d",
    "gradient_disagreement",
    "jacobian_norms",
    "lower_bound",
    "pool_multiplicity",
    "regularized_integrals",
    "tie_fraction",
    "upper_bound",
]
__version__ = "0.1.0"
