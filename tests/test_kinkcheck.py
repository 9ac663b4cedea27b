"""kinkcheck: a gradcheck at kinks (one-sided sections + tangent condition, Sec 4.1-4.2)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib import check_tangent, max_first, max_last, max_uniform, max_weights, relu_z
from mtlib.examples import boustany_f
from mtlib.kinkcheck import KinkReport, kinkcheck, one_sided

F64 = torch.float64


def _with_gradient(w: torch.Tensor):
    """``max`` over the last dim, but with the gradient ``w`` everywhere (any candidate)."""
    return lambda y: torch.amax(y).detach() + (w * (y - y.detach())).sum()


class _TieDoubler(torch.autograd.Function):
    """max of two numbers, correct off the tie, gradient (1, 1) on it: not associated."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return y.amax()

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (y == y.amax()).to(y.dtype)


def test_one_sided_exact_for_piecewise_affine():
    zero = torch.tensor(0.0, dtype=F64)
    assert one_sided(torch.relu, zero, torch.tensor(1.0)) == (0.0, 1.0)
    assert one_sided(torch.abs, zero, torch.tensor(1.0)) == (-1.0, 1.0)
    assert one_sided(torch.amax, torch.zeros(2, dtype=F64), torch.tensor([1.0, 1.0])) == (1.0, 1.0)


@pytest.mark.parametrize("fn", [max_first, max_last, max_uniform])
@pytest.mark.parametrize("x", [[0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, 2.0]])
def test_passes_on_max_rules_at_ties(fn, x):
    report = kinkcheck(fn, torch.tensor(x, dtype=F64))
    assert report and report.ok and report.section_ok and report.tangent_ok
    assert isinstance(report, KinkReport)


def test_relu_and_abs_at_zero():
    zero = torch.zeros((), dtype=F64)
    relu = kinkcheck(torch.relu, zero)
    assert relu and relu.sections[["g", "left", "right"]].values.tolist() == [[0.0, 0.0, 1.0]]
    assert relu.tangents.empty  # the piece {0} has no tangent direction (Sec 4.1)
    absolute = kinkcheck(torch.abs, zero)
    assert absolute and absolute.sections[["g", "left", "right"]].values.tolist() == [[0.0, -1.0, 1.0]]


@pytest.mark.parametrize("z", [0.0, 0.25, 0.5, 1.0])
def test_relu_z_in_clarke_interval_passes(z):
    assert kinkcheck(lambda t: relu_z(t, z), torch.zeros(1, dtype=F64))


@pytest.mark.parametrize("z", [2.0, -0.5])
def test_relu_z_outside_interval_fails_but_is_associated(z):
    report = kinkcheck(lambda t: relu_z(t, z), torch.zeros(1, dtype=F64))
    assert not report and report.tangent_ok and not report.section_ok
    assert report.reason == f"g[0] = {z:g} is outside the one-sided derivatives [0, 1]"
    assert kinkcheck(lambda t: relu_z(t, z), torch.zeros(1, dtype=F64), convex=False)


def test_max_with_gradient_one_one_at_tie_fails():
    x = torch.zeros(2, dtype=F64)
    report = kinkcheck(_TieDoubler.apply, x)
    assert not report and not report.tangent_ok and report.section_ok
    assert report.reason == "g . d = 2 but f'(x; d) = 1 along d = (1, 1)"
    assert "FAIL" in str(report)
    assert kinkcheck(_TieDoubler.apply, torch.tensor([1.0, 0.0], dtype=F64))  # fine off the tie


def test_normal_component_is_associated_but_not_convex():
    x = torch.zeros(2, dtype=F64)
    f = _with_gradient(torch.tensor([1.5, -0.5], dtype=F64))  # Remark 1: normal part is free
    assert kinkcheck(f, x, convex=False)
    strict = kinkcheck(f, x)
    assert not strict and strict.tangent_ok and not strict.section_ok


def test_boustany_derivative_at_zero_fails():
    report = kinkcheck(boustany_f, torch.zeros((), dtype=F64))
    assert report.gradient.item() == -1.5
    assert not report.tangent_ok and not report.section_ok
    assert kinkcheck(boustany_f, torch.tensor(0.5, dtype=F64))


def test_forward_mode():
    zero = torch.zeros(1, dtype=F64)
    prelu = kinkcheck(lambda t: torch.nn.functional.prelu(t, torch.tensor([0.25], dtype=F64)), zero,
                      mode="forward")
    assert prelu and prelu.gradient.tolist() == [1.0]  # forward AD takes the right piece
    report = kinkcheck(torch.amax, torch.zeros(2, 2, dtype=F64), mode="forward")
    assert report and report.gradient.tolist() == [[0.25, 0.25], [0.25, 0.25]]


def test_median_triple_tie_needs_explicit_tangent():
    x = torch.zeros(3, dtype=F64)
    assert not kinkcheck(torch.median, x)  # flat along every axis, yet not differentiable
    assert kinkcheck(torch.median, x, tangents=[torch.ones(3, dtype=F64)], convex=False)


def test_explicit_tangent_must_be_differentiable_and_shaped():
    x = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match=r"not differentiable along `tangents\[0\]`"):
        kinkcheck(torch.amax, x, tangents=[torch.tensor([1.0, 0.0])])
    with pytest.raises(ValueError, match=r"`tangents\[0\]` must have the shape of `x` \(2,\), got \(3,\)"):
        kinkcheck(torch.amax, x, tangents=[torch.ones(3)])


def test_bad_input():
    x = torch.zeros(2, dtype=F64)
    with pytest.raises(TypeError, match="`f` must be callable"):
        kinkcheck("max", x)
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype"):
        kinkcheck(torch.amax, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        kinkcheck(torch.amax, x, eps=0.0)
    with pytest.raises(ValueError, match="`atol` must be > 0"):
        kinkcheck(torch.amax, x, atol=-1.0)
    with pytest.raises(ValueError, match="`mode` must be 'reverse' or 'forward', got 'sideways'"):
        kinkcheck(torch.amax, x, mode="sideways")
    with pytest.raises(ValueError, match="one-element tensor"):
        kinkcheck(lambda y: y, x)


_POINTS = st.lists(st.integers(-2, 2), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None)
@given(_POINTS, st.sampled_from(["first", "last", "uniform", "mix", "normal", "off", "scaled"]),
       st.integers(0, 4))
def test_agrees_with_check_tangent(values, kind, k):
    """kinkcheck's tangent test is check_tangent's (convex=False) on max; sections give convex."""
    x = torch.tensor(values, dtype=F64)
    mask = x == x.max()
    ties = mask.nonzero().flatten()
    if kind in ("first", "last", "uniform"):
        w = max_weights(x, kind)
    elif kind in ("mix", "normal"):
        w = max_weights(x, "first") * 0.25 + max_weights(x, "last") * 0.75
        if kind == "normal" and len(ties) >= 2:
            w[ties[0]] += 1.0
            w[ties[1]] -= 1.0
    elif kind == "off":
        w = max_weights(x, "uniform")
        w[k % len(values)] += 0.25
    else:
        w = 2.0 * max_weights(x, "uniform")
    f = _with_gradient(w)
    assert kinkcheck(f, x, convex=False).ok == bool(check_tangent(x, w))
    assert kinkcheck(f, x).ok == bool(check_tangent(x, w, convex=True))
