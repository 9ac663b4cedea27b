"""mtlib.directional: exact one-sided derivatives f'(x; d) (chapter directional, Sec 4.3-4.4)."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib.directional import (
    Dual,
    _dual,
    compare_directional,
    jvp,
    one_sided_difference,
    register_rule,
    register_smooth,
)
from mtlib.examples import boustany_f, max1, maxpool_f
from mtlib.networks import integer_points, random_network

f64 = torch.float64
H = 2.0**-20  # with integer points and dyadic directions, x + H d and the quotient are exact


def tensor(values):
    return torch.tensor(values, dtype=f64)


def autograd_derivative(f, x):
    x = x.clone().requires_grad_(True)
    f(x).sum().backward()
    return x.grad


def exact_difference(f, x, d, h=H):
    """(f(x + h d) - f(x)) / h: exact for piecewise linear f on integers with dyadic d."""
    return (f(x + h * d) - f(x)) / h


integer_vectors = st.lists(st.integers(-2, 2), min_size=1, max_size=6)
dyadic = st.integers(-8, 8).map(lambda k: k / 4)


# --- the paper's examples: the true derivative 0 where autograd says -1.5 and -3 -------------


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_boustany_table2_is_zero_in_both_directions(sign):
    value, slope = jvp(boustany_f, tensor(0.0), tensor(sign))
    assert (value.item(), slope.item()) == (0.0, 0.0)
    assert autograd_derivative(boustany_f, tensor(0.0)).item() == -1.5


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_maxpool_table3_is_zero_in_both_directions(sign):
    value, slope = jvp(maxpool_f, tensor(0.0), tensor(sign))
    assert (value.item(), slope.item()) == (0.0, 0.0)
    assert autograd_derivative(maxpool_f, tensor(0.0)).item() == -3.0


@settings(max_examples=40, deadline=None)
@given(x=integer_vectors, t=st.sampled_from([0.0, 0.5, -1.0]), d=dyadic, a=dyadic, b=dyadic)
def test_zero_functions_have_zero_directional_derivative(x, t, d, a, b):
    assert jvp(lambda s: boustany_f(s, x), tensor(t), tensor(d))[1].item() == 0.0
    assert jvp(lambda s: maxpool_f(s, a, b), tensor(t), tensor(d))[1].item() == 0.0


def test_max1_python_loop_follows_the_perturbed_point():
    x, d = torch.zeros(4, dtype=f64), tensor([1.0, 2.0, 3.0, 4.0])
    assert jvp(max1, x, d)[1].item() == 4.0
    assert jvp(max1, x, -d)[1].item() == -1.0
    assert jvp(torch.max, x, d)[1].item() == 4.0
    assert jvp(torch.max, x, -d)[1].item() == -1.0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_abs_at_zero_is_one_both_ways(sign):
    assert jvp(torch.abs, tensor(0.0), tensor(sign))[1].item() == 1.0
    assert jvp(abs, tensor(0.0), tensor(sign))[1].item() == 1.0
    assert autograd_derivative(torch.abs, tensor(0.0)).item() == 0.0


@pytest.mark.parametrize("d", [-2.0, -0.5, 0.0, 0.5, 3.0])
def test_relu_at_zero_is_positive_part(d):
    for relu in (torch.relu, F.relu, torch.nn.ReLU(), lambda v: v.relu()):
        assert jvp(relu, tensor(0.0), tensor(d))[1].item() == max(d, 0.0)


# --- ties of max and the other kinks, checked against exact differences -------------------


KINKS = {
    "max": torch.max,
    "max_dim": lambda v: torch.max(v, dim=-1).values,
    "min_dim_keepdim": lambda v: v.min(-1, keepdim=True).values,
    "amax": lambda v: v.amax(dim=(0, 1)),
    "amin": lambda v: torch.amin(v, -1),
    "maximum": lambda v: torch.maximum(v, v.flip(-1)),
    "minimum_const": lambda v: torch.minimum(v, torch.zeros(v.shape[-1], dtype=f64)),
    "max_other": lambda v: torch.max(v, other=-v),
    "relu": F.relu,
    "leaky_relu": lambda v: F.leaky_relu(v, 0.25),
    "abs": torch.abs,
    "clamp": lambda v: v.clamp(-1, 1),
    "clamp_tensor": lambda v: torch.clamp(v, min=v.flip(-1)),
    "clip_inverted": lambda v: torch.clip(v, 1, -1),
    "clamp_min": lambda v: v.clamp_min(0),
    "clamp_max": lambda v: torch.clamp_max(v, 1),
    "hardtanh": F.hardtanh,
    "relu6": lambda v: F.relu6(v * 3),
    "pool1d": lambda v: F.max_pool1d(v, 2, 1),
    "pool2d_module": torch.nn.MaxPool2d(2, stride=1, padding=1),
    "chain": lambda v: torch.relu(v.abs() - 1).amax(-1) - F.max_pool1d(v.clamp(0), 2).sum(),
}


@pytest.mark.parametrize("name", sorted(KINKS))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_kinks_match_exact_one_sided_differences(name, data):
    rows, cols = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 5))
    draw = data.draw(st.lists(st.integers(-2, 2), min_size=2 * rows * cols, max_size=2 * rows * cols))
    x = tensor(draw[: rows * cols]).reshape(1, rows, cols)
    d = (tensor(draw[rows * cols:]) / 4).reshape(1, rows, cols)
    f = KINKS[name]
    value, slope = jvp(f, x, d)
    assert torch.equal(value, f(x))
    assert torch.equal(slope, exact_difference(f, x, d))


def test_max_dim_returns_lexicographic_index():
    x, d = tensor([[1.0, 3.0, 3.0, 3.0]]), tensor([[9.0, 1.0, 2.0, 2.0]])
    out, slope = jvp(lambda v: torch.max(v, dim=1), x, d)
    assert out.values.tolist() == [3.0] and slope.values.tolist() == [2.0]
    assert out.indices.tolist() == [2]
    assert jvp(lambda v: torch.argmax(v), x, d)[0].item() == 2
    assert jvp(lambda v: (-v).argmin(dim=1, keepdim=True), x, d)[0].tolist() == [[2]]


def test_input_passed_by_keyword():
    x, d = tensor([0.0, 0.0]), tensor([1.0, 2.0])
    assert jvp(lambda v: torch.abs(input=v), x, -d)[1].tolist() == [1.0, 2.0]
    assert jvp(lambda v: torch.max(input=v), x, d)[1].item() == 2.0
    out, slope = jvp(lambda v: torch.min(input=v, dim=0), x, d)
    assert (out.indices.item(), slope.values.item()) == (0, 1.0)
    assert jvp(lambda v: torch.max(input=v, other=v.flip(0)), x, d)[1].tolist() == [2.0, 2.0]


def test_nan_values_get_nan_tangents():
    x, d = tensor([1.0, float("nan")]), tensor([1.0, 1.0])
    assert jvp(torch.max, x, d)[1].isnan()
    assert jvp(torch.relu, x, d)[1][1].isnan()
    assert jvp(torch.argmax, x, d)[0].item() == 1


# --- maxpool: every option of torch's windows --------------------------------------------


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_maxpool_windows_match_torch(data):
    nd = data.draw(st.sampled_from([1, 2]))
    k = [data.draw(st.integers(1, 4)) for _ in range(nd)]
    dilation = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    padding = [data.draw(st.integers(0, ki // 2)) for ki in k]
    stride = [data.draw(st.integers(1, 3)) for _ in range(nd)]
    size = [max(1, dilation[i] * (k[i] - 1) + 1 - 2 * padding[i] + data.draw(st.integers(0, 4)))
            for i in range(nd)]
    ceil_mode = data.draw(st.booleans())
    shape = [data.draw(st.integers(1, 2)) for _ in range(data.draw(st.integers(1, 2)))] + size
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    x = torch.randint(-2, 3, shape, generator=gen).to(f64)
    d = torch.randint(-8, 9, shape, generator=gen).to(f64) / 4
    pool = F.max_pool1d if nd == 1 else F.max_pool2d

    def f(v):
        return pool(v, k, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)

    value, slope = jvp(f, x, d)
    assert torch.equal(value, f(x))
    finite = value.isfinite()  # dilation can put a window on padding only: constant -inf
    assert torch.equal(slope[finite], exact_difference(f, x, d)[finite])
    assert (slope[~finite] == 0).all()


def test_maxpool_without_ties_matches_forward_mode():
    x, d = torch.randn(2, 3, 7, 6, dtype=f64), torch.randn(2, 3, 7, 6, dtype=f64)
    for f in (lambda v: F.max_pool2d(v, 3, 2, 1), lambda v: torch.max_pool1d(v[0], 2)):
        assert torch.equal(jvp(f, x, d)[1], torch.func.jvp(f, (x,), (d,))[1])


# --- compositions and Python control flow --------------------------------------------------


def test_chain_rule_through_compositions():
    zero = tensor(0.0)
    identity = lambda v: torch.relu(v) - torch.relu(-v)  # noqa: E731  (= v)
    diagonal_max = lambda v: torch.stack([v, v]).max()  # noqa: E731  Sec 2.2: max(x, x) = x
    for d in (1.0, -2.0):
        assert jvp(identity, zero, tensor(d))[1].item() == d
        assert jvp(diagonal_max, zero, tensor(d))[1].item() == d
        assert jvp(lambda v: torch.relu(v) + torch.relu(-v), zero, tensor(d))[1].item() == abs(d)
    assert autograd_derivative(identity, zero).item() == 0.0


def test_smooth_ops_follow_the_ordinary_chain_rule():
    x, d = torch.randn(3, 4, dtype=f64), torch.randn(3, 4, dtype=f64)
    lin = torch.nn.Linear(4, 2, dtype=f64)

    def f(v):
        y = torch.cat([v[:, :2] * 2 - 1 / (1 + v[:, 2:] ** 2), v.T.reshape(3, 4)], dim=1)
        return (lin(y[:, :4]).tanh() @ torch.ones(2, dtype=f64)).mean() + y.sum(-1).exp()[0]

    value, slope = jvp(f, x, d)
    ref_value, ref_slope = torch.func.jvp(f, (x,), (d,))
    assert torch.equal(value, ref_value)
    torch.testing.assert_close(slope, ref_slope, rtol=1e-12, atol=1e-12)


def test_python_if_and_builtins_compare_lexicographically():
    def relu_if(v):
        return v if v > 0 else 0 * v

    def identity_if(v):
        return 0 * v if v == 0 else v  # equals v: the branch v == 0 is taken only if d == 0

    zero = tensor(0.0)
    assert [jvp(relu_if, zero, tensor(d))[1].item() for d in (-1.0, 2.0)] == [0.0, 2.0]
    assert jvp(identity_if, zero, tensor(3.0))[1].item() == 3.0
    assert jvp(lambda v: max(list(v)), torch.zeros(3, dtype=f64), tensor([1.0, 5.0, 2.0]))[1].item() == 5.0
    assert jvp(lambda v: v * 1 if v else -v, zero, tensor(-1.0))[1].item() == -1.0
    x = Dual(torch.zeros(2, dtype=f64), tensor([1.0, 1.0]))
    assert (x[0] >= x[1], x[0] <= x[1], x[0] != x[1], x[0] < 0) == (True, True, False, False)


def test_output_structures_and_constants():
    x, d = tensor([1.0, -1.0]), tensor([1.0, 1.0])
    value, slope = jvp(lambda v: {"a": v.relu(), "b": (torch.zeros_like(v), v.detach())}, x, d)
    assert slope["a"].tolist() == [1.0, 0.0]
    assert slope["b"][0].tolist() == [0.0, 0.0] and slope["b"][1].tolist() == [0.0, 0.0]
    assert "tangent=tensor([1., 1.]" in repr(Dual(x, d)) and f"{Dual(x, d)}".startswith("Dual(")
    assert Dual(x, d).shape == (2,) and len(Dual(x, d)) == 2
    assert jvp(lambda v: +v, x, d)[1].tolist() == [1.0, 1.0]


# --- random networks at kinks: finite differences agree, autograd does not ----------------


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), pool=st.sampled_from([0, 2]), depth=st.integers(1, 3))
def test_random_networks_match_finite_differences(seed, pool, depth):
    net = random_network([3] + [4] * depth + [1], pool=pool, seed=seed, integer=True)
    points = integer_points(32, 3, seed=seed)
    directions = torch.randn(32, 3, dtype=f64, generator=torch.Generator().manual_seed(seed))
    df = compare_directional(net, points, directions, h=1e-7)
    scale = 1.0 + df["f"].abs()
    assert ((df["directional"] - df["fd1"]).abs() <= 1e-6 * scale).all()
    assert ((df["directional"] - df["fd2"]).abs() <= 1e-6 * scale).all()
    gen = torch.Generator().manual_seed(seed)
    dyadic_directions = torch.randint(-8, 9, (32, 3), dtype=f64, generator=gen) / 8
    _, slope = jvp(net, points, dyadic_directions)
    assert torch.equal(slope, exact_difference(net, points, dyadic_directions, h=2.0**-16))


def test_autograd_slope_against_the_one_sided_slopes_of_a_network():
    net = random_network([4, 8, 8, 1], pool=2, seed=1, integer=True)
    points = integer_points(300, 4, seed=1)
    directions = torch.randn(300, 4, dtype=f64, generator=torch.Generator().manual_seed(1))
    df = compare_directional(net, points, directions)
    kink = df["kink"]
    assert 0.1 < kink.mean() < 0.9
    assert df.loc[~kink, "matches_d_side"].all() and df.loc[~kink, "matches_opposite_side"].all()
    assert not (kink & df["matches_d_side"] & df["matches_opposite_side"]).any()  # f'(x; .) not linear
    neither = ~df["matches_d_side"] & ~df["matches_opposite_side"]
    assert (df["outside_interval"] <= (kink & neither)).all()  # outside: at a kink, matching no side
    low = np.minimum(df["directional"], -df["reverse"])
    high = np.maximum(df["directional"], -df["reverse"])
    assert (df["outside_interval"] == ((df["autograd"] < low - 1e-6) | (df["autograd"] > high + 1e-6))).all()


def test_directional_chapter_counts():
    """The counts the directional chapter prints (seeds 0-2, 300 points each, widths 4-8-8-1, pool 2)."""
    frames = []
    for seed in range(3):
        net = random_network([4, 8, 8, 1], pool=2, seed=seed, integer=True)
        points = integer_points(300, 4, seed=seed)
        directions = torch.randn(300, 4, dtype=f64, generator=torch.Generator().manual_seed(seed))
        frames.append(compare_directional(net, points, directions))
    df = pd.concat(frames, ignore_index=True)
    d_side, opposite, outside = df["matches_d_side"], df["matches_opposite_side"], df["outside_interval"]
    assert (df["kink"].sum(), (~d_side).sum(), outside.sum()) == (397, 228, 24)
    assert ((opposite & ~d_side).sum(), (~opposite & ~d_side).sum()) == (171, 57)


def test_off_kinks_directional_equals_autograd():
    net = random_network([5, 6, 6, 1], pool=2, seed=3)
    points = torch.randn(20, 5, dtype=f64, generator=torch.Generator().manual_seed(0))
    df = compare_directional(net, points, torch.randn(20, 5, dtype=f64))
    assert not df["kink"].any() and df["matches_d_side"].all() and not df["outside_interval"].any()


def test_positive_homogeneity_in_the_direction():
    net = random_network([3, 4, 4, 1], pool=2, seed=7, integer=True)
    x, d = integer_points(16, 3, seed=7), torch.randint(-4, 5, (16, 3)).to(f64) / 4
    assert torch.equal(jvp(net, x, 4 * d)[1], 4 * jvp(net, x, d)[1])


# --- registration ------------------------------------------------------------------------


@pytest.fixture
def scratch_rules(monkeypatch):
    monkeypatch.setattr(_dual, "RULES", dict(_dual.RULES))


def test_register_smooth_and_rule(scratch_rules):
    with pytest.raises(NotImplementedError, match="torch.erfc"):
        jvp(torch.erfc, tensor(1.0), tensor(1.0))
    register_smooth(torch.erfc)
    torch.testing.assert_close(jvp(torch.erfc, tensor(1.0), tensor(1.0))[1],
                               -2 / torch.pi**0.5 * torch.exp(tensor(-1.0)))
    register_rule([torch.floor], lambda func, args, kwargs: Dual(func(args[0].primal), 0 * args[0].tangent))
    assert jvp(torch.floor, tensor(1.5), tensor(1.0))[1].item() == 0.0


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "f, match",
    [
        (torch.floor, r"no directional-derivative rule for `torch.floor`.*register_smooth"),
        (lambda v: v.sign(), r"`torch.Tensor.sign`"),
        (lambda v: v.add_(1), r"`torch.Tensor.add_` is in-place"),
        (lambda v: F.relu(v, inplace=True), r"inplace=True"),
        (lambda v: v.sum().item(), r"would drop the tangent"),
        (lambda v: float(v[0, 0]), r"would drop the tangent"),
        (lambda v: f"{v[0, 0]:.2f}", r"would drop the tangent"),
        (lambda v: v.to(torch.int64), r"returns a torch.int64 tensor"),
        (lambda v: F.max_pool1d(v, 2, return_indices=True), r"return_indices=True"),
    ],
)
def test_unsupported_ops_raise_naming_the_op(f, match):
    with pytest.raises(NotImplementedError, match=match):
        jvp(f, torch.zeros(1, 4, dtype=f64), torch.ones(1, 4, dtype=f64))


def test_inplace_dunder_message():
    x = Dual(torch.zeros(2, dtype=f64), torch.ones(2, dtype=f64))
    with pytest.raises(NotImplementedError, match="in-place"):
        x[0] = 1.0


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: jvp(1, tensor(0.0), tensor(1.0)), TypeError, "jvp: `f` must be callable"),
        (lambda: jvp(torch.abs, 0.0, tensor(1.0)), TypeError, "jvp: `x` must be a torch.Tensor"),
        (lambda: jvp(torch.abs, torch.tensor(0), tensor(1.0)), TypeError, "`x` must have a floating"),
        (lambda: jvp(torch.abs, tensor([0.0]), tensor([1.0, 2.0])), ValueError, "`d` must have the shape"),
        (lambda: jvp(lambda v: 1.0, tensor(0.0), tensor(1.0)), TypeError, "must return tensors"),
        (lambda: Dual([0.0], tensor(1.0)), TypeError, "`primal` must be a plain torch.Tensor"),
        (lambda: Dual(torch.tensor([0]), torch.tensor([1])), TypeError, "`primal` must have a floating"),
        (lambda: Dual(tensor([0.0]), tensor([1.0, 2.0])), ValueError, "`tangent` must have the shape"),
        (lambda: register_smooth("floor"), TypeError, "`funcs` must hold callables"),
        (lambda: register_rule([torch.floor], None), TypeError, "`rule` must be callable"),
        (lambda: one_sided_difference(torch.abs, tensor(0.0), tensor(1.0), h=0.0), ValueError,
         "`h` must be > 0"),
        (lambda: one_sided_difference(torch.abs, tensor(0.0), tensor(1.0), order=3), ValueError, "`order`"),
        (lambda: compare_directional(torch.abs, tensor([0.0]), tensor([1.0])), ValueError, "must be 2-d"),
        (lambda: compare_directional(torch.abs, tensor([[0.0]]), tensor([[1.0]]), atol=-1e-6), ValueError,
         r"compare_directional: `atol` must be a real number >= 0, got -1e-06"),
        (lambda: compare_directional(torch.abs, tensor([[0.0]]), tensor([[1.0]]), atol=float("nan")),
         ValueError, "`atol` must be a real number >= 0, got nan"),
    ],
)
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_one_sided_differences_at_a_kink():
    zero, minus = tensor(0.0), tensor(-1.0)
    assert one_sided_difference(torch.abs, zero, minus, h=0.25).item() == 1.0
    assert one_sided_difference(torch.relu, zero, minus, h=0.25, order=2).item() == 0.0


def test_an_equality_test_follows_the_perturbed_point_so_an_undefined_branch_gives_nan():
    """The documented limit of `jvp`, a branch on `==`: `x == 0` is decided at x + h d, h -> 0+."""
    sin_over_x = lambda x: torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)   # noqa: E731
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    assert sin_over_x(zero).item() == 1.0                        # the plain value takes the `1` branch
    value, slope = jvp(sin_over_x, zero, one)
    assert value.isnan().item() and slope.isnan().item()         # the dual takes sin(x)/x: 0/0
    value, slope = jvp(sin_over_x, torch.tensor(0.5, dtype=torch.float64), one)
    assert value.item() == math.sin(0.5) / 0.5                   # away from the switch: exact
    assert slope.item() == pytest.approx(math.cos(0.5) / 0.5 - math.sin(0.5) / 0.25, abs=1e-15)
    register_smooth(torch.sinc)                                  # the rewrite the docstring gives
    value, slope = jvp(lambda x: torch.sinc(x / math.pi), zero, one)
    assert (value.item(), slope.item()) == (1.0, 0.0)
