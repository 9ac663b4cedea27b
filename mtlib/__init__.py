"""mtlib: associated gradients and tie-aware maxpool, after Despres (2024).

The public surface is re-exported here from small modules; each function's docstring names the
equation of the paper it implements.
"""

from mtlib.activations import abs_eps, abs_shift_eps, relu_z
from mtlib.piecewise import Piecewise, associated_gradient, chain_jacobian
from mtlib.ties import TangentReport, check_tangent, max_first, max_last, max_uniform, max_weights, tie_set

__all__ = [
    "Piecewise",
    "TangentReport",
    "abs_eps",
    "abs_shift_eps",
    "associated_gradient",
    "chain_jacobian",
    "check_tangent",
    "max_first",
    "max_last",
    "max_uniform",
    "max_weights",
    "relu_z",
    "tie_set",
]
__version__ = "0.1.0"
