"""kinkcheck: Clarke membership by piece gradients and an LP; rejections only with a proof."""

import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib import check_tangent, max_first, max_last, max_uniform, max_weights, relu_z
from mtlib.examples import boustany_f, maxpool_f
from mtlib.kinkcheck import (
    ASSOCIATED,
    CLARKE,
    CLARKE_NUMERICAL,
    NOT_DERIVATIVE,
    UNDETERMINED,
    VERDICTS,
    KinkReport,
    kinkcheck,
)
from mtlib.kinkcheck._hull import convex_weights, separating_direction
from mtlib.ties import TIE_RULES

F64 = torch.float64
kinkcheck_module = importlib.import_module("mtlib.kinkcheck")


def _with_gradient(w):
    """``max`` of a vector, whose backward returns ``w`` (any candidate rule) at every point."""
    w = torch.as_tensor(w, dtype=F64)

    class _Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y):
            return y.amax()

        @staticmethod
        def backward(ctx, grad):
            return grad * w

    return _Rule.apply


def _zeros(*shape):
    return torch.zeros(*shape, dtype=F64)


def _vec(*values):
    return torch.tensor(values, dtype=F64)


def test_verdict_vocabulary():
    assert VERDICTS == ("Clarke-valid", "Clarke-valid (numerical)", "associated-valid on a stratum",
                        "not the derivative", "undetermined")
    assert not hasattr(kinkcheck_module, "one_sided")  # the old name is gone


def test_relu_and_abs_at_zero_are_clarke_valid_with_complete_pieces():
    relu = kinkcheck(torch.relu, _zeros(1))
    assert relu and relu.verdict == CLARKE and relu.complete and relu.exact
    assert relu.pieces["gradient"].tolist() == ["0", "1"] and relu.pieces["weight"].tolist() == [1.0, 0.0]
    assert relu.sections[["g", "left", "right"]].values.tolist() == [[0.0, 0.0, 1.0]]
    absolute = kinkcheck(torch.abs, _zeros(1))
    assert absolute.verdict == CLARKE and absolute.pieces["weight"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize("z", [0.0, 0.25, 0.5, 1.0])
def test_relu_z_in_clarke_interval(z):
    assert kinkcheck(lambda t: relu_z(t, z), _zeros(1)).verdict == CLARKE


@pytest.mark.parametrize("z", [2.0, -0.5])
def test_relu_z_outside_interval_is_associated_on_the_point(z):
    report = kinkcheck(lambda t: relu_z(t, z), _zeros(1))
    assert report.verdict == ASSOCIATED and not report and not report.rejected
    assert report.reason == (f"g = {z:g} is associated-valid on the stratum {{x}} (a point); "
                             "not in Clarke's generalized gradient [0, 1]")
    assert kinkcheck(lambda t: relu_z(t, z), _zeros(1), convex=False)


def test_counterexample_1_pytorch_zero_is_clarke_valid():
    """relu(x1) - relu(-x2) at 0: PyTorch's (0, 0) is the gradient of the piece {x1 < 0 < x2}."""
    report = kinkcheck(lambda y: torch.relu(y[0]) - torch.relu(-y[1]), _zeros(2))
    assert report.gradient.tolist() == [0.0, 0.0]
    assert report.verdict == CLARKE and report and not report.complete
    assert sorted(report.pieces["gradient"]) == ["(0, 0)", "(0, 1)", "(1, 0)", "(1, 1)"]  # [0, 1]^2
    assert report.pieces.set_index("gradient").loc["(0, 0)", "weight"] == 1.0
    inner = kinkcheck(lambda y: torch.relu(y[0]) - torch.relu(-y[1]), _zeros(2), gradient=_vec(0.5, 0.25))
    assert inner.verdict == CLARKE


@pytest.mark.parametrize("convex", [True, False])
def test_counterexample_2_adjacent_piece_is_clarke_valid(convex):
    """relu(x1) - relu(x1 - x2) at 0: (1, 0) is the gradient of the piece {0 < x1 < x2}."""
    f = lambda y: torch.relu(y[0]) - torch.relu(y[0] - y[1])  # noqa: E731
    report = kinkcheck(f, _zeros(2), gradient=_vec(1.0, 0.0), convex=convex)
    assert report and report.verdict == CLARKE
    assert sorted(report.pieces["gradient"]) == ["(-1, 1)", "(0, 0)", "(0, 1)", "(1, 0)"]
    assert kinkcheck(f, _zeros(2)).verdict == CLARKE  # PyTorch's own (0, 0)


@pytest.mark.parametrize(("f", "g"), [(boustany_f, -1.5), (maxpool_f, -3.0)])
def test_tables_2_and_3_are_not_the_derivative(f, g):
    report = kinkcheck(f, _zeros(()))
    assert report.gradient.item() == g and report.rejected and report.complete
    assert report.verdict == NOT_DERIVATIVE
    assert report.reason == (f"g = {g:g} is not in Clarke's generalized gradient {{0}} "
                             "(not the derivative of f)")
    assert kinkcheck(f, torch.tensor(0.5, dtype=F64)).verdict == CLARKE


def test_wrong_value_at_a_smooth_point_of_one_variable():
    report = kinkcheck(torch.relu, _vec(1.0), gradient=_vec(0.5))
    assert report.verdict == NOT_DERIVATIVE and "{1}" in report.reason


@pytest.mark.parametrize("fn", [max_first, max_last, max_uniform])
@pytest.mark.parametrize("x", [[0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, 2.0]])
def test_max_rules_at_ties_are_clarke_valid(fn, x):
    report = kinkcheck(fn, torch.tensor(x, dtype=F64))
    assert isinstance(report, KinkReport) and report.verdict == CLARKE


def test_partial_tie_of_max():
    report = kinkcheck(torch.amax, _vec(0.0, 0.0, -1.0))
    assert report.gradient.tolist() == [0.5, 0.5, 0.0] and report.verdict == CLARKE
    assert sorted(report.pieces["gradient"]) == ["(0, 1, 0)", "(1, 0, 0)"]


def test_fake_max_weights_not_summing_to_one():
    x, diagonal = _zeros(2), [torch.ones(2, dtype=F64)]
    doubled = _with_gradient([1.0, 1.0])
    unsure = kinkcheck(doubled, x)  # outside the two pieces found, but they are not proven complete
    assert unsure.verdict == UNDETERMINED and not unsure.rejected and not unsure
    assert "not proven complete" in unsure.reason
    report = kinkcheck(doubled, x, stratum=diagonal)
    assert report.verdict == NOT_DERIVATIVE and report.rejected
    assert report.reason == ("g . d = 2 but f'(x; d) = 1 along d = (1, 1): not the derivative of f along "
                             "the stratum x + span{(1, 1)}")
    assert "FAIL" not in str(report) and "not the derivative" in str(report)
    half = kinkcheck(_with_gradient([0.5, 0.5, 0.5, 0.5]), _zeros(4), stratum=[torch.ones(4, dtype=F64)])
    assert half.verdict == NOT_DERIVATIVE


def test_normal_component_is_associated_but_not_shown_clarke():
    f = _with_gradient([1.5, -0.5])  # Remark 1: the normal part is free
    report = kinkcheck(f, _zeros(2), stratum=[torch.ones(2, dtype=F64)])
    assert report.verdict == ASSOCIATED and not report and kinkcheck(f, _zeros(2), stratum=[torch.ones(2)],
                                                                      convex=False)
    assert report.reason.endswith("; Clarke membership undetermined")
    assert kinkcheck(f, _zeros(2)).verdict == UNDETERMINED
    assert kinkcheck(_with_gradient([0.25, 0.75]), _zeros(2)).verdict == CLARKE


def test_a_smooth_point_in_two_variables_is_undetermined_not_rejected():
    report = kinkcheck(lambda y: y[0] + 2 * y[1], _vec(1.0, 1.0), gradient=_vec(1.0, 1.0))
    assert report.verdict == UNDETERMINED and "f looks differentiable at x" in report.reason
    assert kinkcheck(lambda y: y[0] + 2 * y[1], _vec(1.0, 1.0)).verdict == CLARKE


def test_median_triple_tie_falls_back_to_differences():
    report = kinkcheck(torch.median, _zeros(3))
    assert report.verdict == CLARKE_NUMERICAL and not report.exact and not report
    assert sorted(report.pieces["gradient"]) == ["(0, 0, 1)", "(0, 1, 0)", "(1, 0, 0)"]


def test_forward_mode():
    prelu = kinkcheck(lambda t: torch.nn.functional.prelu(t, torch.tensor([0.25], dtype=F64)), _zeros(1),
                      mode="forward")
    # forward AD: the right piece; prelu has no exact rule, so the slopes are finite differences
    assert prelu.verdict == CLARKE_NUMERICAL and prelu.gradient.tolist() == [1.0]
    report = kinkcheck(torch.amax, _zeros(2, 2), mode="forward")
    assert report.verdict == CLARKE and report.gradient.tolist() == [[0.25, 0.25], [0.25, 0.25]]


def test_without_lexicographic_gradient_the_perturbed_points_give_the_same_pieces(monkeypatch):
    monkeypatch.setattr(kinkcheck_module, "_lexicographic_gradient", None)
    f = lambda y: torch.relu(y[0]) - torch.relu(y[0] - y[1])  # noqa: E731
    report = kinkcheck(f, _zeros(2), gradient=_vec(1.0, 0.0))
    assert report.verdict == CLARKE_NUMERICAL and not report.exact  # adjacency assumed, not proven
    assert sorted(report.pieces["gradient"]) == ["(-1, 1)", "(0, 0)", "(0, 1)", "(1, 0)"]


def test_stratum_must_be_differentiable_and_shaped():
    x = _zeros(2)
    with pytest.raises(ValueError, match=r"not differentiable along `stratum\[0\]`"):
        kinkcheck(torch.amax, x, stratum=[_vec(1.0, 0.0)])
    with pytest.raises(ValueError, match=r"`stratum\[0\]` must have the shape of `x` \(2,\), got \(3,\)"):
        kinkcheck(torch.amax, x, stratum=[torch.ones(3)])


def test_bad_input():
    x = _zeros(2)
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
    with pytest.raises(ValueError, match=r"`gradient` must have the shape of `x` \(2,\), got \(3,\)"):
        kinkcheck(torch.amax, x, gradient=_zeros(3))
    with pytest.raises(ValueError, match="samples"):
        kinkcheck(torch.amax, x, samples=-1)
    with pytest.raises(ValueError, match="one-element tensor"):
        kinkcheck(lambda y: y, x)


_POINTS = st.lists(st.integers(-2, 2), min_size=2, max_size=4)


@settings(max_examples=30, deadline=None)
@given(_POINTS, st.sampled_from([*TIE_RULES, "mix", "normal", "off", "scaled"]),
       st.integers(0, 3))
def test_agrees_with_check_tangent_on_max(values, kind, k):
    """On max: Clarke-valid iff check_tangent(convex=True); with the tie stratum, the stratum
    test is check_tangent(convex=False), and nothing else is ever rejected."""
    x = torch.tensor(values, dtype=F64)
    ties = (x == x.max()).nonzero().flatten()
    if kind in TIE_RULES:
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
    plain = kinkcheck(f, x, samples=8)
    assert (plain.verdict == CLARKE) == bool(check_tangent(x, w, convex=True))
    assert not plain.rejected
    tie = (x == x.max()).to(F64)
    stratum = [tie] + [torch.eye(len(values), dtype=F64)[j] for j in range(len(values)) if not tie[j]]
    full = kinkcheck(f, x, stratum=stratum, samples=8)
    assert (full.verdict in (CLARKE, ASSOCIATED)) == bool(check_tangent(x, w))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.lists(st.integers(-2, 2), min_size=3, max_size=3), min_size=1, max_size=4),
       st.lists(st.sampled_from([-1.0, 1.0]), min_size=4, max_size=4),
       st.lists(st.floats(-1, 1), min_size=3, max_size=3))
def test_never_rejects_the_gradient_of_an_adjacent_piece(rows, signs, u):
    """Soundness: for f = sum_k c_k relu(a_k . y) at the kink 0, the gradient at 0 + s u (the
    gradient of a piece active around 0, in Clarke's set) is never rejected."""
    A = torch.tensor(rows, dtype=F64)
    c = torch.tensor(signs[: len(rows)], dtype=F64)
    f = lambda y: (c * torch.relu(A @ y)).sum()  # noqa: E731
    y = (2.0**-20 * torch.tensor(u, dtype=F64)).requires_grad_(True)
    (g,) = torch.autograd.grad(f(y), y)
    report = kinkcheck(f, _zeros(3), gradient=g, samples=16)
    assert report.verdict in (CLARKE, UNDETERMINED) and not report.rejected


def test_a_thin_piece_needs_more_directions():
    """{y : A y < 0} is a thin cone: 128 directions miss its gradient 0, 512 find it. f is
    concave, so the directions from the LP's dual find a seventh piece but not that one."""
    A = torch.tensor([[0, 1, 1], [1, 0, -1], [-1, -1, 1]], dtype=F64)
    f = lambda y: -torch.relu(A @ y).sum()  # noqa: E731
    few = kinkcheck(f, _zeros(3), gradient=_zeros(3), samples=128, columns=0)
    assert few.verdict == UNDETERMINED and len(few.pieces) == 6 and few.queries == 6 + 128
    generated = kinkcheck(f, _zeros(3), gradient=_zeros(3), samples=128)
    assert generated.verdict == UNDETERMINED and len(generated.pieces) == 7
    assert generated.reason.endswith("the directions from the LP's dual found no new piece")
    many = kinkcheck(f, _zeros(3), gradient=_zeros(3), samples=512)
    assert many.verdict == CLARKE and len(many.pieces) == 8


def test_planted_n6_a_kink_within_the_step_is_never_certified():
    """hardswish(t + 3 + 2^-22): kink at -2^-22, f'(0) = 1; the left quotient with step 2^-20
    straddles the kink (1.375, the slope of no piece). Two steps expose it."""
    f = lambda t: torch.nn.functional.hardswish(t + 3 + 2.0**-22).sum()  # noqa: E731
    wrong = kinkcheck(f, _zeros(1), gradient=_vec(1.2))
    assert wrong.verdict == UNDETERMINED and not wrong and not wrong.exact
    assert "1 direction(s) gave no piece gradient" in wrong.reason
    right = kinkcheck(f, _zeros(1), gradient=_vec(1.0))
    assert right.verdict == CLARKE_NUMERICAL and not right  # never "Clarke-valid" from differences
    assert right.pieces["gradient"].tolist() == ["1"]
    # at a genuine kink of an op without a rule: numerical, and a wrong value is not "rejected"
    hard = kinkcheck(torch.nn.functional.hardswish, _vec(3.0), gradient=_vec(1.25))  # in [1, 1.5]
    assert hard.verdict == CLARKE_NUMERICAL and hard.complete
    low = kinkcheck(torch.nn.functional.hardswish, _vec(3.0), gradient=_vec(0.5))
    assert low.verdict == ASSOCIATED
    assert low.reason.endswith("Clarke membership undetermined (finite differences or perturbed points: "
                               "not a proof)")
    outside = kinkcheck(lambda t: torch.nn.functional.hardswish(t).sum(), _vec(4.0), gradient=_vec(0.5))
    assert outside.verdict == UNDETERMINED and "not a proof" in outside.reason


@pytest.mark.parametrize("n", [1, 2, 3])
def test_planted_n12_nan_is_not_the_derivative_and_never_crashes(n):
    sqrt_square = lambda y: torch.sqrt((y**2).sum())  # noqa: E731  |y|, autograd gives NaN at 0
    report = kinkcheck(sqrt_square, _zeros(n))
    assert report.verdict == NOT_DERIVATIVE and report.rejected
    assert report.reason.startswith("g = nan" if n == 1 else "g = (nan")
    if n > 1:  # every lexicographic gradient is NaN too: dropped, with a note
        assert len(report.pieces) == 0 and "gave no piece gradient" in report.reason
    # a finite candidate at the same point: in one variable the slopes come from differences
    # (jvp gives NaN), so 0 in [-1, 1] is numerical; in several all pieces are NaN: undetermined
    finite = kinkcheck(sqrt_square, _zeros(n), gradient=_zeros(n))
    assert finite.verdict == (CLARKE_NUMERICAL if n == 1 else UNDETERMINED) and not finite


@pytest.mark.parametrize(("n", "k"), [(6, 2), (8, 2), (12, 3), (16, 5)])
def test_planted_n13_column_generation_certifies_overlapping_pools(n, k):
    """PyTorch's gradient of sum(max_pool1d(x, k, stride=1)) at 0 is a vertex of Clarke's set,
    entered only by directions decreasing in every window; random directions miss it."""
    f = lambda y: torch.nn.functional.max_pool1d(y.reshape(1, 1, -1), k, stride=1).sum()  # noqa: E731
    report = kinkcheck(f, _zeros(n))
    assert report.gradient.tolist() == [1.0] * (n - 1) + [0.0] if k == 2 else True
    assert report.verdict == CLARKE and report.exact and report.queries > 2 * n + 64
    assert kinkcheck(f, _zeros(n), columns=0).verdict == UNDETERMINED  # without the columns
    # a wrong gradient (weights adding up to 2 in one window) is never certified
    wrong = report.gradient.clone()
    wrong[0] += 1.0
    assert kinkcheck(f, _zeros(n), gradient=wrong).verdict == UNDETERMINED


def test_separating_direction_is_the_lp_dual():
    points = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for g in ([0.2, 0.3, 0.5], [1.0, 1.0, 0.0], [2.0, -1.0, 0.0]):
        g = np.array(g)
        d, margin = separating_direction(points, g)
        inside = convex_weights(points, g, 1e-9) is not None
        assert (margin <= 1e-9) == inside
        if not inside:  # d separates: g . d exceeds every point's by the margin
            assert g @ d - (points @ d).max() == pytest.approx(margin) and np.abs(d).sum() <= 1 + 1e-9
