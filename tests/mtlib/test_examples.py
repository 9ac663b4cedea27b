"""Tests of mtlib.examples: Boustany's function (Sec 4.3, Table 2) and maxpool_f (Sec 4.4, Table 3)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib import associated_gradient
from mtlib.examples import boustany_f, derivative_table, max1, maxpool_f

F64 = torch.float64
PAPER_TS = [-1.0, -0.5, -0.01, 0.0, 0.01, 0.5, 1.0]
vectors = st.lists(st.floats(-10, 10, allow_nan=False).map(lambda v: round(v, 3)), min_size=1, max_size=9)


def derivative(f, t):
    return associated_gradient(f, torch.tensor(t, dtype=F64)).item()


# --- max1 (Table 1) ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_max1_value_and_first_index_gradient(x):
    x = torch.tensor(x, dtype=F64)
    assert max1(x) == x.max()
    g = associated_gradient(max1, x)
    first = int((x == x.max()).nonzero()[0, 0])
    assert g.tolist() == [1.0 if i == first else 0.0 for i in range(len(x))]  # eq 18


def test_max1_errors():
    with pytest.raises(ValueError, match="max1: `x` must be a non-empty vector"):
        max1(torch.zeros(2, 2, dtype=F64))
    with pytest.raises(ValueError, match="max1: `x` must be a non-empty vector"):
        max1(torch.zeros(0, dtype=F64))
    with pytest.raises(TypeError, match="max1: `x` must have a floating-point dtype"):
        max1(torch.tensor([1, 2]))


# --- boustany_f (Table 2) ----------------------------------------------------------------------


def test_table2():
    table = derivative_table(boustany_f, PAPER_TS)
    assert table["t"].tolist() == PAPER_TS
    assert table["f(t)"].tolist() == [0.0] * 7
    assert table["f'(t)"].tolist() == [0.0, 0.0, 0.0, -1.5, 0.0, 0.0, 0.0]


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_boustany_derivative_at_zero_is_x1_minus_mean(x):
    xt = torch.tensor(x, dtype=F64)
    d0 = derivative(lambda t: boustany_f(t, x), 0.0)
    assert d0 == pytest.approx((xt[0] - xt.mean()).item(), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(vectors, st.sampled_from([-2.0, -0.3, 0.01, 1.0, 7.5]))
def test_boustany_is_zero_with_zero_derivative_off_the_origin(x, t):
    # off t = 0 the tied entries of t x (if any) have equal slopes x_i, so both rules give the
    # same number, up to the rounding of the uniform weights 1/N (x = (7, 7, 7): 8.9e-16)
    assert boustany_f(torch.tensor(t, dtype=F64), x).item() == 0.0
    assert derivative(lambda s: boustany_f(s, x), t) == pytest.approx(0.0, abs=1e-12)


def test_boustany_batched_t_keeps_shape_and_differentiates_elementwise():
    t = torch.tensor([[-1.0, 0.0, 0.5], [0.0, 2.0, -0.01]], dtype=F64, requires_grad=True)
    y = boustany_f(t, (2.0, -1.0, 5.0))
    assert y.shape == (2, 3)
    assert (y == 0).all()
    y.sum().backward()
    expected = 2.0 - (2.0 - 1.0 + 5.0) / 3
    grads = t.grad
    assert grads[0, 1].item() == pytest.approx(expected, abs=1e-15)
    assert grads[1, 0].item() == pytest.approx(expected, abs=1e-15)
    mask = torch.ones_like(grads, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = False
    assert (grads[mask] == 0).all()


def test_boustany_accepts_tensor_x_and_follows_t_dtype():
    t = torch.tensor(0.0, dtype=torch.float32, requires_grad=True)
    y = boustany_f(t, torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64))
    assert y.dtype == torch.float32
    y.backward()
    assert t.grad.item() == -1.5


def test_boustany_errors():
    with pytest.raises(TypeError, match="boustany_f: `t` must have a floating-point dtype"):
        boustany_f(torch.tensor(0))
    with pytest.raises(TypeError, match="boustany_f: `t` must be a torch.Tensor"):
        boustany_f(0.0)
    with pytest.raises(ValueError, match="boustany_f: `x` must be a non-empty vector"):
        boustany_f(torch.tensor(0.0, dtype=F64), [[1.0, 2.0]])
    with pytest.raises(ValueError, match="boustany_f: `x` must be a non-empty vector"):
        boustany_f(torch.tensor(0.0, dtype=F64), [])
    with pytest.raises(TypeError, match="boustany_f: `x` must have a floating-point dtype"):
        boustany_f(torch.tensor(0.0, dtype=F64), torch.tensor([1, 2]))


# --- maxpool_f (Table 3) -----------------------------------------------------------------------


def test_table3():
    table = derivative_table(maxpool_f, PAPER_TS)
    assert table["f(t)"].tolist() == [0.0] * 7
    assert table["f'(t)"].tolist() == [0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0]


slopes = st.floats(-8, 8, allow_nan=False).map(lambda v: round(v, 2))


@settings(max_examples=40, deadline=None)
@given(slopes, slopes)
def test_maxpool_f_first_rule_gives_a_minus_b(a, b):
    assert derivative(lambda t: maxpool_f(t, a, b), 0.0) == pytest.approx(a - b, abs=1e-12)
    for t in (-0.5, 0.25):
        assert maxpool_f(torch.tensor(t, dtype=F64), a, b).item() == 0.0
        assert derivative(lambda s: maxpool_f(s, a, b), t) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(slopes, slopes)
def test_maxpool_f_last_and_uniform_rules(a, b):
    assert derivative(lambda t: maxpool_f(t, a, b, ties="last"), 0.0) == pytest.approx(b - a, abs=1e-12)
    assert derivative(lambda t: maxpool_f(t, a, b, ties="uniform"), 0.0) == pytest.approx(0.0, abs=1e-12)


def test_maxpool_f_batched_and_errors():
    t = torch.tensor([0.0, 1.0, -2.0], dtype=F64, requires_grad=True)
    y = maxpool_f(t)
    assert y.shape == (3,) and (y == 0).all()
    y.sum().backward()
    assert t.grad.tolist() == [-3.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="maxpool_f: `ties` must be one of"):
        maxpool_f(torch.tensor(0.0, dtype=F64), ties="random")
    with pytest.raises(TypeError, match="maxpool_f: `t` must have a floating-point dtype"):
        maxpool_f(torch.tensor(0))


# --- derivative_table --------------------------------------------------------------------------


def test_derivative_table_columns_and_errors():
    table = derivative_table(lambda t: t * t, [0.0, 1.5])
    assert list(table.columns) == ["t", "f(t)", "f'(t)"]
    assert table["f'(t)"].tolist() == [0.0, 3.0]
    with pytest.raises(TypeError, match="derivative_table: `f` must be callable"):
        derivative_table(3.0, [0.0])
    with pytest.raises(ValueError, match="derivative_table: `ts` must hold at least one point"):
        derivative_table(boustany_f, [])
