"""The kinds of tie on exact examples, placed in the zones of Bertoin et al. and Boustany.

Bertoin et al. (2021) call *bifurcation zone* the parameters where backpropagation with two
choices of ``relu'(0)`` gives different outputs. Boustany (2024), for maxpool, splits the set
where autodiff goes wrong into a *bifurcation zone* (wrong over the reals: the two rules differ
in exact arithmetic) and a *compensation zone* (wrong in floating point, right over the reals).
:func:`tie_kind_examples` builds one pooling window per kind of tie, computes both rules'
parameter gradients in each format, and reads the zone off the result.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import torch
from torch import nn

from mtlib.maxpool import MaxPool2d
from mtlib.training._data import as_float_dtype, dtype_name
from mtlib.training._protocol import rule_gradients, summed_l1_difference
from mtlib.training._ties import tie_counts, window_ties

#: The two-channel patches at the four positions of one 2x2 window (row-major), per kind of tie.
#: With conv weights (1, 1) the window's entries are the patch sums: every value is a dyadic
#: number of at most 13 significant bits, exact in float32 and float64.
TIE_KIND_PATCHES = {
    "dead window": [(-1.0, 0.0), (0.0, -1.0), (-1.0, -1.0), (-2.0, 0.0)],      # all cut by the ReLU
    "identical patches": [(1.0, 0.0), (1.0, 0.0), (-1.0, 0.0), (0.0, -1.0)],   # equal functions of theta
    "genuine tie": [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)],         # w0 = w1, different functions
    "rounding tie": [(1.0, 2.0**-12), (1.0, 0.0), (-1.0, 0.0), (0.0, -1.0)],   # 1 + 2^-12 vs 1
}


def _window_net(ties: str) -> nn.Sequential:
    """1x1 conv with weights (1, 1), ReLU, one 2x2 tie-aware pool, then logits (p, -p)."""
    f64 = {"dtype": torch.float64}
    net = nn.Sequential(nn.Conv2d(2, 1, 1, bias=False, **f64), nn.ReLU(), MaxPool2d(2, ties=ties),
                        nn.Flatten(), nn.Linear(1, 2, bias=False, **f64))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[4].weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return net


def tie_kind_examples(dtypes: Iterable = ("float16", "bfloat16", "float32", "float64")) -> pd.DataFrame:
    """One pooling window per kind of tie: does it tie, and do the rules' gradients differ?

    The window sits after a 1x1 convolution with weights ``(1, 1)`` and a ReLU, and feeds two
    logits ``(p, -p)`` scored by cross-entropy against class 1 (see :data:`TIE_KIND_PATCHES`).
    ``"first"`` and ``"uniform"`` give the parameter gradients; they *differ* when eq (B2) is
    positive. Which of them differ is exact on any machine: the forward values are exact in
    float32 and float64, so float64 is exact arithmetic here, and where the rules agree they
    run the same operations on the same numbers (or add ``g/2`` twice, which is exact).

    The zone of a row: ``"bifurcation"`` when the rules differ in float64 (over the reals),
    ``"compensation"`` when they differ in this format only, ``"neither"`` otherwise.

    Args:
        dtypes: floating-point formats (or their names) to compute in.

    Returns:
        One row per kind and format: ``kind, dtype, tie`` (the window holds a tie), ``active``
        (at a positive max), ``differs`` and ``zone``.

    Raises:
        TypeError: a dtype is not a floating-point dtype.

    Examples:
        >>> table = tie_kind_examples(["float16", "float64"]).set_index(["kind", "dtype"])
        >>> table.loc["rounding tie"][["tie", "differs", "zone"]].values.tolist()
        [[True, True, 'compensation'], [False, False, 'neither']]
    """
    dtypes = [as_float_dtype("tie_kind_examples", dtype) for dtype in dtypes]
    y = torch.tensor([1])
    rows = []
    for kind, patches in TIE_KIND_PATCHES.items():
        x = torch.tensor(patches, dtype=torch.float64).T.reshape(1, 2, 2, 2)
        exact = None
        for dtype in [torch.float64, *dtypes]:
            models = [_window_net(rule).to(dtype) for rule in ("first", "uniform")]
            (first, uniform), seen = rule_gradients(models, x.to(dtype), y)
            _, tied, active = tie_counts(window_ties(seen[0]))
            differs = summed_l1_difference(first, uniform) > 0
            if exact is None:
                exact = differs
                continue
            zone = "bifurcation" if exact else "compensation" if differs else "neither"
            rows.append({"kind": kind, "dtype": dtype_name(dtype), "tie": tied > 0, "active": active > 0,
                         "differs": differs, "zone": zone})
    return pd.DataFrame(rows)
