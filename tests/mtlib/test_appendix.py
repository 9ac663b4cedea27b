"""Tests of mtlib.appendix: the quadrature of the appendix integrals (eqs 22-24)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib import relu_z
from mtlib.appendix import (
    appendix_example,
    bump,
    convergence_table,
    elementwise_derivative,
    graded_gauss_legendre,
    regularized_integrals,
)

EIGHT_FIFTEENTHS = 8 / 15  # int_0^1 (1 - x^2)^2 dx


def quartic(x):
    return (1 - x**2) ** 2


def relu_case(eps, **kw):
    return regularized_integrals(torch.relu, quartic, eps, (-1.0, 1.0), [0.0], **kw)


# --- closed-form cases -------------------------------------------------------------------------


def test_relu_quartic_limits_are_eight_fifteenths():
    t = relu_case(1e-6)
    assert t.weak == pytest.approx(EIGHT_FIFTEENTHS, abs=1e-14)
    assert t.rhs23 == pytest.approx(EIGHT_FIFTEENTHS, abs=1e-14)
    assert t.rhs24 == pytest.approx(EIGHT_FIFTEENTHS, abs=1e-14)
    assert t.positive == pytest.approx(EIGHT_FIFTEENTHS, abs=1e-14)
    assert t.negative == 0.0
    assert t.zero == 0.0


@pytest.mark.parametrize("eps", [1e-8, 1e-10, 1e-12])
def test_convergence_rates_match_the_closed_form(eps):
    # int_0^1 (x/sqrt(x^2+eps) - 1) dx ~ -sqrt(eps); the shifted one ~ (1 - sqrt 2) sqrt(eps)
    t = relu_case(eps)
    s = math.sqrt(eps)
    assert (t.first - EIGHT_FIFTEENTHS) / s == pytest.approx(-1.0, abs=1e-3)
    assert (t.second - EIGHT_FIFTEENTHS) / s == pytest.approx(1 - math.sqrt(2), abs=1e-3)


def test_linear_w_crossing_zero():
    # w(x) = x, phi(x) = x (1 - x^2)^2: int sign(x) x (1-x^2)^2 = 1/3, no flat zero set
    t = regularized_integrals(lambda x: x, lambda x: x * quartic(x), 1e-10, (-1.0, 1.0), [0.0])
    assert t.rhs23 == pytest.approx(1 / 3, abs=1e-14)
    assert t.weak == pytest.approx(1 / 3, abs=1e-14)
    assert t.zero == 0.0
    assert abs(t.first - 1 / 3) < 1e-8


@pytest.mark.parametrize("name", ["flat", "flat_crossing", "relu"])
@pytest.mark.parametrize("eps", [1e-2, 1e-6, 1e-12])
def test_integration_by_parts_holds_for_every_eps(name, eps):
    ex = appendix_example(name)
    t = regularized_integrals(ex.w, bump, eps, ex.interval, ex.breakpoints)
    assert t.first == pytest.approx(t.first_ibp, abs=1e-12)
    assert t.second == pytest.approx(t.second_ibp, abs=1e-12)
    assert t.zero == 0.0  # autograd's w' vanishes on the zero set (eq 22)
    assert t.rhs23 == pytest.approx(t.weak, abs=1e-12)  # eq 23
    assert t.rhs24 == pytest.approx(t.weak, abs=1e-12)  # eq 24 with a vanishing third term


@pytest.mark.parametrize("name", ["flat", "flat_crossing", "relu"])
def test_errors_are_order_sqrt_eps(name):
    ex = appendix_example(name)
    df = convergence_table(ex.w, bump, [10.0**-k for k in range(2, 13, 2)], ex.interval, ex.breakpoints)
    assert df["err23"].is_monotonic_decreasing
    assert (df["err23"] <= 1.1 * df["eps"] ** 0.5).all()
    assert (df["err24"] <= 1.1 * df["eps"] ** 0.5).all()
    assert df["err23"].iloc[-1] < 1e-5


def test_a_wrong_derivative_on_the_zero_set_breaks_eq_24_only():
    # pretend w' = 1 everywhere: wrong on {w = 0} = [-1, 0], a set of positive measure
    t = relu_case(1e-12, dw=torch.ones_like)
    assert t.zero == pytest.approx(EIGHT_FIFTEENTHS, abs=1e-14)
    assert t.rhs24 == pytest.approx(EIGHT_FIFTEENTHS * (1 + 1 / math.sqrt(2)), abs=1e-14)
    assert t.first == pytest.approx(t.rhs23, abs=1e-5)  # eq 23 does not see the zero set
    assert t.second == pytest.approx(t.rhs24, abs=1e-5)  # the 1/sqrt(2) term is there...
    assert t.second_ibp == pytest.approx(t.weak, abs=1e-5)  # ...but the true limit is weak
    assert abs(t.second - t.second_ibp) > 0.3


def test_associated_derivative_at_kinks_does_not_matter():
    # relu with derivative 0.7 at 0: a different associated gradient on a null set
    t0 = relu_case(1e-8)
    t1 = regularized_integrals(lambda x: relu_z(x, 0.7), quartic, 1e-8, (-1.0, 1.0), [0.0])
    assert t1 == t0


# --- the Stampacchia property on the examples -------------------------------------------------


@pytest.mark.parametrize("name", ["flat", "flat_crossing", "relu"])
def test_autograd_derivative_vanishes_on_zero_set_off_breakpoints(name):
    ex = appendix_example(name)
    x = torch.linspace(*ex.interval, 6001, dtype=torch.float64)
    wx = ex.w(x)
    d = elementwise_derivative(ex.w, x)
    nonzero = x[(wx == 0) & (d != 0)].tolist()
    assert set(nonzero) <= set(ex.breakpoints)
    assert (wx == 0).double().mean() > 0.1  # the zero set has positive measure


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(["flat", "flat_crossing", "relu"]), st.floats(-3.0, 3.0))
def test_breakpoints_include_every_sign_change(name, x0):
    ex = appendix_example(name)
    ends = [ex.interval[0], *ex.breakpoints, ex.interval[1]]
    piece = next(i for i in range(len(ends) - 1) if ends[i] <= x0 <= ends[i + 1])
    p, q = ends[piece], ends[piece + 1]
    inside = torch.linspace(p, q, 33, dtype=torch.float64)[1:-1]
    signs = set(torch.sign(ex.w(inside)).tolist())
    assert len(signs) == 1


def test_bump_is_a_c1_test_function():
    x = torch.tensor([-3.0, 3.0, -4.0, 4.0], dtype=torch.float64)
    assert bump(x).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert elementwise_derivative(bump, x).tolist() == [0.0, 0.0, 0.0, 0.0]
    assert bump(torch.tensor(0.0, dtype=torch.float64)).item() == 1.0


# --- building blocks ---------------------------------------------------------------------------


def test_elementwise_derivative_uses_the_associated_derivative():
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    assert elementwise_derivative(lambda u: relu_z(u, 0.5), x).tolist() == [0.0, 0.5, 1.0]
    assert elementwise_derivative(lambda u: torch.ones_like(u), x).tolist() == [0.0, 0.0, 0.0]


def test_elementwise_derivative_rejects_non_elementwise():
    with pytest.raises(ValueError, match="elementwise_derivative: `fn` must map"):
        elementwise_derivative(lambda u: u.sum(), torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="got float"):
        elementwise_derivative(lambda u: 1.0, torch.zeros(3, dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 9), st.floats(-2.0, -0.1), st.floats(0.1, 2.0), st.floats(0.01, 0.99))
def test_gauss_legendre_is_exact_for_polynomials(k, a, b, frac):
    x, wt = graded_gauss_legendre((a, b), [a + frac * (b - a)], nodes=5)
    exact = (b ** (k + 1) - a ** (k + 1)) / (k + 1)
    assert float((wt * x**k).sum()) == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_gauss_legendre_grading_reaches_finest():
    x, wt = graded_gauss_legendre((0.0, 1.0), [0.5], finest=1e-6, nodes=2)
    assert float(wt.sum()) == pytest.approx(1.0, abs=1e-15)
    assert float(x.min()) < 1e-6 and float(x.max()) > 1 - 1e-6
    assert float(((x - 0.5).abs()).min()) < 1e-6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"interval": (1.0, 0.0)}, "`interval` must satisfy a < b"),
        ({"interval": (0.0, math.inf)}, "`interval` must satisfy a < b"),
        ({"interval": 3.0}, "`interval` must be a pair"),
        ({"interval": (0.0, 1.0, 2.0)}, "`interval` must be a pair"),
        ({"breakpoints": [1.0]}, "`breakpoints` must lie strictly inside"),
        ({"finest": 0.0}, "`finest` must be > 0"),
        ({"nodes": 0}, "`nodes` must be >= 1, got 0"),
    ],
)
def test_gauss_legendre_errors(kwargs, match):
    args = {"interval": (0.0, 1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        graded_gauss_legendre(args.pop("interval"), **args)


@pytest.mark.parametrize("nodes", [True, 2.0, "2"])
def test_gauss_legendre_nodes_type(nodes):
    with pytest.raises(TypeError, match="graded_gauss_legendre: `nodes` must be an int"):
        graded_gauss_legendre((0.0, 1.0), nodes=nodes)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"w": 1.0}, TypeError, "`w` must be callable"),
        ({"phi": None}, TypeError, "`phi` must be callable"),
        ({"dw": 2}, TypeError, "`dw` must be callable or None"),
        ({"eps": 0.0}, ValueError, "`eps` must be > 0"),
        ({"eps": "1e-3"}, TypeError, "`eps` must be a real number"),
        ({"interval": (1.0, -1.0)}, ValueError, "regularized_integrals: `interval`"),
        ({"dw": lambda x: 1.0}, ValueError, r"regularized_integrals: `dw` must map the nodes.*got float"),
        ({"dw": lambda x: x[:1]}, ValueError, r"`dw` must map the nodes, shape \(\d+,\).*got \(1,\)"),
        ({"w": lambda x: x.sum(), "dw": torch.ones_like}, ValueError, r"`w` must map the nodes.*got \(\)"),
    ],
)
def test_regularized_integrals_errors(kwargs, exc, match):
    args = {"w": torch.relu, "phi": quartic, "eps": 1e-3, "interval": (-1.0, 1.0), **kwargs}
    with pytest.raises(exc, match=match):
        regularized_integrals(**args)


def test_convergence_table_errors_and_columns():
    with pytest.raises(ValueError, match="`eps_values` must hold at least one value"):
        convergence_table(torch.relu, quartic, [], (-1.0, 1.0))
    df = convergence_table(torch.relu, quartic, [1e-4], (-1.0, 1.0), [0.0])
    assert {"eps", "first", "second", "rhs23", "rhs24", "err23", "err24", "zero", "weak"} <= set(df)


def test_appendix_example_unknown_name():
    with pytest.raises(ValueError, match="appendix_example: `name` must be one of"):
        appendix_example("smooth")
