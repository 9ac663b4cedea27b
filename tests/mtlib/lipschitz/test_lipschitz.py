"""Lipschitz bounds (mtlib.lipschitz): exact values, bound ordering, the pool constant, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mtlib.lipschitz import (
    StridedMaxPool,
    bounds_sweep,
    exact_lipschitz_1d,
    jacobian_norms,
    layer_lipschitz_constants,
    linear_pieces_1d,
    lower_bound,
    pool_multiplicity,
    smoothed_network,
    steepest_piece_1d,
    upper_bound,
)
from mtlib.networks import VectorMaxPool, random_network

F64 = torch.float64


def _set(linear, weight, bias=None):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.zeros_like(linear.bias) if bias is None else torch.tensor(bias))
    return linear


def _zero_net():
    """f(t) = max(t, 2t) - max(2t, t) = 0, but autograd (first rule) says f'(0) = 1 - 2."""
    return nn.Sequential(
        _set(nn.Linear(1, 4, dtype=F64), [[1.0], [2.0], [2.0], [1.0]]),
        VectorMaxPool(2),
        _set(nn.Linear(2, 1, dtype=F64), [[1.0, -1.0]]),
    )


def _grid_max(net, half_width=40.0, n=400001):
    return jacobian_norms(net, torch.linspace(-half_width, half_width, n, dtype=F64)[:, None]).max().item()


def test_pool_multiplicity_values():
    cases = [(2, 2), (3, 1), (3, 2), (4, 1), (2, 3)]
    assert [pool_multiplicity(8, k, s) for k, s in cases] == [1, 3, 2, 4, 1]
    assert pool_multiplicity(3, 3, 1) == 1


def test_strided_pool_constant_is_attained_at_a_spike():
    net = nn.Sequential(_set(nn.Linear(6, 6, dtype=F64), torch.eye(6).tolist()), StridedMaxPool(3, 1))
    spike = torch.zeros(1, 6, dtype=F64)
    spike[0, 2] = 1.0
    assert layer_lipschitz_constants(net) == [1.0, math.sqrt(3)]
    assert jacobian_norms(net, spike).item() == pytest.approx(math.sqrt(3), abs=1e-15)
    assert upper_bound(net) == pytest.approx(math.sqrt(3), abs=1e-15)
    assert lower_bound(net, spike, steps=0).certified == pytest.approx(math.sqrt(3), rel=1e-6)


def test_disjoint_pool_is_one_lipschitz_and_linear_is_spectral_norm():
    net = random_network([3, 8, 2], pool=2, seed=4)
    constants = layer_lipschitz_constants(net)
    assert constants[1:3] == [1.0, 1.0]
    assert constants[0] == pytest.approx(torch.linalg.svdvals(net[0].weight).max().item(), rel=1e-14)
    assert upper_bound(net) == pytest.approx(math.prod(constants), rel=1e-15)


def test_exact_hand_examples():
    net = nn.Sequential(_set(nn.Linear(1, 2, dtype=F64), [[1.0], [-1.0]]), nn.ReLU(),
                        _set(nn.Linear(2, 1, dtype=F64), [[1.0, 3.0]]))
    assert exact_lipschitz_1d(net) == 3.0
    assert exact_lipschitz_1d(_zero_net()) == 0.0


def test_autograd_norm_at_a_kink_exceeds_lip_but_the_certificate_does_not():
    net = _zero_net()
    found = lower_bound(net, torch.zeros(1, 1, dtype=F64), steps=0)
    assert found.value == 1.0  # |1 - 2|: an associated gradient at the tie t = 0
    assert found.certified == 0.0
    assert _grid_max(net, n=1001) == 0.0  # grid points t != 0 only see the true slope 0


@pytest.mark.parametrize(("seed", "widths", "pool"), [(0, [1, 8, 1], 0), (1, [1, 6, 6, 2], 2),
                                                      (2, [1, 4, 4, 4, 1], 2), (3, [1, 16, 16, 1], 0)])
def test_exact_matches_dense_grid(seed, widths, pool):
    net = random_network(widths, pool=pool, seed=seed)
    assert _grid_max(net) == pytest.approx(exact_lipschitz_1d(net), rel=1e-9)


@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), width=st.sampled_from([2, 4, 6]), depth=st.integers(1, 3),
       pool=st.sampled_from([0, 2]), out=st.integers(1, 2))
def test_exact_sits_between_bounds(seed, width, depth, pool, out):
    net = random_network([1] + [width] * depth + [out], pool=pool, seed=seed)
    exact = exact_lipschitz_1d(net)
    assert _grid_max(net, n=20001) <= exact * (1 + 1e-9) + 1e-12
    found = lower_bound(net, torch.linspace(-3, 3, 7, dtype=F64)[:, None], steps=3)
    assert found.value <= exact * (1 + 1e-9) + 1e-12
    assert found.certified <= exact * (1 + 1e-6) + 1e-9
    assert exact <= upper_bound(net) * (1 + 1e-12)


def test_linear_pieces_of_relu_sum():
    """f(t) = relu(t) + 3 relu(-t) + relu(t - 1): knots 0 and 1, slopes -3, 1, 2."""
    net = nn.Sequential(_set(nn.Linear(1, 3, dtype=F64), [[1.0], [-1.0], [1.0]], [0.0, 0.0, -1.0]), nn.ReLU(),
                        _set(nn.Linear(3, 1, dtype=F64), [[1.0, 3.0, 1.0]]))
    knots, slopes = linear_pieces_1d(net)
    assert knots.tolist() == [0.0, 1.0]
    assert slopes.tolist() == [[-3.0, 1.0, 2.0]]
    assert steepest_piece_1d(net) == (-math.inf, 0.0, 3.0)
    assert exact_lipschitz_1d(net) == 3.0


def test_exact_with_overlapping_pool_matches_grid():
    head = list(random_network([1, 6, 1], seed=3))[:2]
    net = nn.Sequential(*head, StridedMaxPool(3, 1), nn.Linear(4, 2, dtype=F64))
    assert _grid_max(net) == pytest.approx(exact_lipschitz_1d(net), rel=1e-9)


def test_jacobian_norms_match_jacrev():
    net = random_network([3, 8, 8, 2], pool=2, seed=1)
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = torch.stack([torch.linalg.svdvals(torch.func.jacrev(net)(row)).max() for row in x])
    torch.testing.assert_close(jacobian_norms(net, x), ref, rtol=1e-13, atol=0)


def test_smoothed_network_converges():
    net = random_network([3, 8, 8, 1], pool=2, seed=2)
    x = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    errors = [(smoothed_network(net, b)(x) - net(x)).abs().max().item() for b in (10.0, 100.0, 1000.0)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2


@pytest.mark.slow
def test_ascent_increases_the_bound_and_is_certified():
    net = random_network([8, 64, 64, 1], seed=1)
    starts = torch.randn(32, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    found = lower_bound(net, starts, steps=30)
    assert all(a <= b for a, b in zip(found.history, found.history[1:]))
    assert found.history[-1] > 1.2 * found.history[0]
    assert found.value == found.history[-1]
    assert found.certified == pytest.approx(found.value, rel=1e-6)
    assert found.value <= upper_bound(net)


def test_bounds_sweep_columns_and_order():
    table = bounds_sweep([(1, 4, 1), (3, 4, 2)], n_starts=8, steps=2)
    assert table.columns.tolist() == ["input_dim", "width", "depth", "upper", "ascent", "sampled",
                                      "lower", "certified", "exact", "gap"]
    assert math.isnan(table["exact"][1])
    assert (table["lower"] == table[["ascent", "sampled"]].max(axis=1)).all()
    assert table["lower"][0] <= table["exact"][0] * (1 + 1e-9) <= table["upper"][0] * (1 + 1e-9)
    assert (table["gap"] >= 1).all()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: upper_bound(nn.Linear(1, 1)), TypeError, "upper_bound: `net` must be an nn.Sequential"),
        (lambda: upper_bound(nn.Sequential(nn.Linear(1, 1), nn.Tanh())), TypeError,
         r"upper_bound: `net\[1\]`"),
        (lambda: exact_lipschitz_1d(nn.Sequential(nn.Linear(2, 1))), ValueError,
         "exact_lipschitz_1d: `net` must have one input"),
        (lambda: linear_pieces_1d(nn.Sequential(nn.Linear(3, 1))), ValueError,
         "linear_pieces_1d: `net` must have one input"),
        (lambda: linear_pieces_1d(nn.Sequential(nn.ReLU())), TypeError, "linear_pieces_1d: `net` must be"),
        (lambda: steepest_piece_1d(nn.Sequential(nn.Linear(2, 1))), ValueError, "steepest_piece_1d: `net`"),
        (lambda: pool_multiplicity(2, 3, 1), ValueError, "pool_multiplicity: `kernel`"),
        (lambda: StridedMaxPool(0, 1), ValueError, "StridedMaxPool: `kernel`"),
        (lambda: StridedMaxPool(2, 1.5), TypeError, "StridedMaxPool: `stride` must be an int"),
        (lambda: smoothed_network(nn.Sequential(nn.Linear(1, 1)), 0.0), ValueError,
         "smoothed_network: `beta`"),
        (lambda: jacobian_norms(nn.Linear(1, 1), torch.zeros(1)), ValueError, "jacobian_norms: `x`"),
        (lambda: jacobian_norms(nn.Linear(1, 1), torch.zeros(1, 1, dtype=torch.long)), TypeError,
         "jacobian_norms: `x`"),
    ],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"x0s": torch.zeros(2, 3, dtype=F64)}, ValueError, "lower_bound: `x0s` must have shape"),
        ({"x0s": torch.zeros(2, 2, dtype=torch.int64)}, TypeError, "lower_bound: `x0s`"),
        ({"steps": -1}, ValueError, "lower_bound: `steps` must be >= 0"),
        ({"steps": 2.0}, TypeError, "lower_bound: `steps` must be an int"),
        ({"lr": 0.0}, ValueError, "lower_bound: `lr`"),
        ({"h": -1.0}, ValueError, "lower_bound: `h`"),
        ({"beta": (1.0,)}, ValueError, "lower_bound: `beta` must be a pair"),
        ({"beta": (1.0, -2.0)}, ValueError, "lower_bound: `beta`"),
    ],
)
def test_lower_bound_errors(kwargs, error, message):
    net = random_network([2, 4, 1], seed=0)
    args = {"x0s": torch.zeros(2, 2, dtype=F64), **kwargs}
    with pytest.raises(error, match=message):
        lower_bound(net, args.pop("x0s"), **args)
