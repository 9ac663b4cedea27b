"""The census of PyTorch's kink rules: pinned findings on torch 2.13 and 2.14, and the judges.

A row that torch 2.14 changed is pinned for both releases (BEFORE_2_14); the shipped table of each
release pins every row (test_history.py)."""

import math

import pytest
import torch
from helpers import fixed_backward

from mtlib.activations import relu_z
from mtlib.census import (
    Case,
    CensusRecord,
    by_convention,
    format_jacobian,
    kink_derivatives,
    relu_formulations,
    run,
    to_frame,
    torch_release,
)
from mtlib.kinkcheck import VERDICTS, kinkcheck
from mtlib.ties import TIE_RULES

F64 = torch.float64
# torch 2.14 moved the clamp family, fmax and fmin at their ties (pytorch #191142)
BEFORE_2_14 = tuple(int(p) for p in torch_release().split(".")) < (2, 14, 0)


@pytest.fixture(scope="module")
def records():
    return {(r.op, r.kink): r for r in run()}


def _ops(records, pred):
    return sorted({op for (op, _), r in records.items() if pred(r)})


def _kinks(records, pred):
    return sorted(key for key, r in records.items() if pred(r))


SCATTER = "scatter_reduce('amax', include_self=False)"


def test_records_are_complete_and_unique(records):
    from mtlib.census.cases import CASES

    assert len(records) == len(CASES) == 82  # one record per case, no (op, kink) twice
    assert all(isinstance(r, CensusRecord) for r in records.values())
    assert all(len(r.reverse) >= 1 and all(len(row) >= 1 for row in r.reverse) for r in records.values())


def test_pinned_rules(records):
    assert records["torch.relu", "x = 0"].reverse == ((0.0,),)
    assert records["torch.relu", "x = 0"].rule == "left piece"
    assert records["torch.abs", "x = 0"].reverse == ((0.0,),)
    assert records["torch.clamp(x, 0, 6)", "x = 6"].reverse == (((1.0,),) if BEFORE_2_14 else ((0.0,),))
    assert records["F.relu6", "x = 6"].reverse == ((0.0,),)
    assert records["torch.amax(x)", "x = (0, 0, 0)"].reverse == ((1 / 3,) * 3,)
    assert records["torch.max(x, dim=0)", "x = (0, 0, 0)"].rule == "first"
    assert records["torch.median(x, dim=0)", "x = (0, 0, 0)"].rule == "index 1"
    assert records["torch.maximum(x, y)", "x = y = 0"].rule == "uniform"
    assert records["torch.mode(x)", "x = (0, 0, 0)"].rule == "last; outside the theory: not locally Lipschitz"
    assert records["torch.cummax(x, 0)", "x = (0, 0, 0)"].rule == "last"
    assert records["torch.sort(x)", "x = (0, 0, 0)"].rule == "per output: first, index 1, last"
    assert records["torch.quantile(x, 0.25)", "x = (0, 0, 0)"].rule == "weights (0.5, 0.5, 0)"
    assert records["F.selu", "x = 0"].rule == "left piece"
    assert records["F.celu(x, 0.5)", "x = 0"].rule == "the derivative (smooth here)"
    assert records["torch.linalg.matrix_norm(X, 'nuc')", "x = 0"].reverse == ((1.0, 0.0, 0.0, 1.0),)
    assert records["torch.linalg.vector_norm(x, inf)", "x = (1, -1)"].rule == "uniform"
    assert records["F.embedding_bag(mode='max')", "all-zero bag"].forward is None
    for op in ("F.max_pool1d(x, 2, stride=1)", "F.max_pool2d(x, 2)", "F.max_pool3d(x, 2)",
               "F.adaptive_max_pool2d(x, 1)", "F.fractional_max_pool2d(x, 2, 1)"):
        assert next(r for (o, _), r in records.items() if o == op).rule == "first"


def test_forward_reverse_disagreements(records):
    until_2_14 = ["torch.clamp(x, max=y)", "torch.clamp(x, min=y)", "torch.fmax(x, y)"] if BEFORE_2_14 else []
    assert _ops(records, lambda r: r.agree is False) == [
        "F.lp_pool1d(x, 2, 2)", "F.prelu(x, 0.25)", "scatter_reduce('amax', include_self=False)", *until_2_14]
    prelu = records["F.prelu(x, 0.25)", "x = 0"]
    assert (prelu.reverse, prelu.forward) == (((0.25,),), ((1.0,),))
    assert prelu.rule == "reverse: left piece; forward: right piece"
    clamp = records["torch.clamp(x, min=y)", "x = y = 0"]
    if BEFORE_2_14:  # to the input going backward, to the bound going forward
        assert (clamp.reverse, clamp.forward) == (((1.0, 0.0),), ((0.0, 1.0),))
    else:  # the tie split evenly in both modes
        assert (clamp.reverse, clamp.forward) == (((0.5, 0.5),), ((0.5, 0.5),))
    assert records["torch.clamp_min(x, y)", "x = y = 0"].agree


def test_invalid_records(records):
    assert all(r.valid is not None and r.clarke is not None for r in records.values())  # all decided
    assert _kinks(records, lambda r: not r.valid) == [
        (SCATTER, "self = src = (0, 0, 0)"), (SCATTER, "self = src_i = t = -2.5"),
        (SCATTER, "self = src_i = t = 0"), (SCATTER, "self = src_i = t = 1"),
        ("torch.logsumexp(x, 0)", "x = (-inf, -inf), outside R^n"),
        ("torch.mode(x)", "x = (0, 0, 0)")]  # outside the theory: not locally Lipschitz
    forward_invalid = _ops(records, lambda r: r.forward_valid is False)
    assert forward_invalid == ["F.lp_pool1d(x, 2, 2)", "torch.logsumexp(x, 0)", "torch.mode(x)"]
    # valid but not Clarke-valid: the src-only views, at src = self = 0 (the stratum is the point)
    # and on the face {src_1 = 0 = self}, where f is differentiable and its gradient is unique
    assert _kinks(records, lambda r: r.valid and not r.clarke) == [
        (SCATTER, "src = (0, -1, -2), self = 0 (differentiable)"),
        (SCATTER, "src = (0, 0, 0), self = 0")]


def test_scatter_reduce_amax_without_self(records):
    """src-only valid at a point; jointly invalid; wrong where differentiable (on the identity line)."""
    src = records[SCATTER, "src = (0, 0, 0), self = 0"]
    assert src.variables == "src (self = 0 fixed)" and src.reverse == ((0.25, 0.25, 0.25),)
    assert (src.valid, src.clarke, src.forward) == (True, False, ((1 / 3, 1 / 3, 1 / 3),))
    joint = records[SCATTER, "self = src = (0, 0, 0)"]
    assert joint.variables == "(self, src)" and joint.reverse == ((0.0, 0.25, 0.25, 0.25),)
    for t in ("0", "1", "-2.5"):  # f(t) = t, autograd 3/4 at every t
        line = records[SCATTER, f"self = src_i = t = {t}"]
        assert (line.reverse, line.forward, line.valid) == (((0.75,),), ((1.0,),), False)
    smooth = records[SCATTER, "src = (0, -1, -2), self = 0 (differentiable)"]
    assert (smooth.reverse, smooth.forward) == (((0.5, 0.0, 0.0),), ((1.0, 0.0, 0.0),))


def test_every_row_names_its_variables(records):
    assert {r.variables for r in records.values()} == {
        "x", "(x, y)", "(x, y, z)", "X (2 x 2)", "weight (3 x 1)", "src (self = 0 fixed)", "(self, src)",
        "t (self = src_i = t)"}


def test_partial_ties(records):
    assert records["torch.max(x, dim=0)", "x = (0, 0, -1)"].reverse == ((1.0, 0.0, 0.0),)
    assert records["torch.max(x, dim=0)", "x = (-1, 0, 0)"].reverse == ((0.0, 1.0, 0.0),)
    assert records["torch.amax(x)", "x = (0, 0, -1)"].reverse == ((0.5, 0.5, 0.0),)
    assert records["torch.median(x, dim=0)", "x = (0, 1, 0)"].rule == "last"
    assert records["torch.sort(x)", "x = (0, 0, -1)"].rule == "per output: unique, first, last"
    points = ("x = (0, 0, -1)", "x = (-1, 0, 0)", "x = (0, 0, 1)", "x = (0, 1, 0)", "x = (0, -1, 0)")
    partial = [r for (_, kink), r in records.items() if kink in points]
    assert len(partial) == 12 and all(r.valid and r.clarke for r in partial)


def test_condensed_view(records):
    view = by_convention(to_frame(list(records.values())))
    assert view["cases"].sum() == len(records)
    assert list(view.columns) == ["cases", "operations", "valid", "clarke"]
    assert view.loc[["first", "left piece"], "cases"].tolist() == ([22, 15] if BEFORE_2_14 else [15, 14])
    assert view.loc["per output: one tied entry each", "operations"] == "torch.topk(x, 2); torch.sort(x)"


def test_elementwise_verdicts_match_kinkcheck(records):
    from mtlib.census.cases import CASES

    for case in CASES:
        if case.kind == "elementwise":
            report = kinkcheck(lambda t, f=case.f: f(t).reshape(()), torch.tensor(case.x, dtype=F64))
            rec = records[case.op, case.kink]
            # the census reads slopes from values at two steps, as kinkcheck does without a rule
            assert (report.verdict in ("Clarke-valid", "Clarke-valid (numerical)")) == rec.clarke, case.op
            assert (report.verdict == "Clarke-valid") == (rec.clarke and report.exact), case.op
            # only the scatter line, f(t) = t: scatter_reduce has no exact rule, so kinkcheck
            # finds 3/4 wrong by differences only and leaves it undetermined
            assert report.verdict in (("undetermined",) if not rec.valid else VERDICTS[:3]), case.op


@pytest.mark.parametrize(
    ("z", "rule", "clarke"),
    [(0.25, "0.75 left + 0.25 right", True), (0.5, "mean of the two pieces", True),
     (2.0, "outside [0, 1]", False), (float("nan"), "nan", False)],
)
def test_elementwise_judge(z, rule, clarke):
    (rec,) = run([Case("relu_z", "x = 0", lambda x: relu_z(x, z), (0.0,))])
    assert (rec.rule, rec.clarke, rec.valid) == (rule, clarke, z == z)


def test_elementwise_judge_at_a_smooth_point():
    good, bad, detached = run([
        Case("relu_z", "x = 1", lambda x: relu_z(x, 0.5), (1.0,)),
        Case("2x with gradient 1", "x = 1", lambda x: 2 * x.detach() + 0 * x + x, (1.0,)),
        Case("x with gradient 0", "x = 1", lambda x: x.detach() + 0 * x, (1.0,))])
    assert (good.rule, good.clarke) == ("the derivative (smooth here)", True)
    # differentiable at x: the stratum is an open interval, only the derivative is valid there;
    # jvp sees only the undetached part (slope 1), the values say 3: the judge does not decide
    assert (bad.valid, bad.clarke) == (None, None) and "disagree" in bad.rule
    # jvp says 0, the values say 1 and autograd 0: never certified
    assert (detached.valid, detached.clarke) == (None, None)


def test_ties_judge_normal_component_and_bad_weights():
    def with_grad(w):
        w = torch.tensor(w, dtype=F64)
        return lambda y: torch.amax(y).detach() + (w * (y - y.detach())).sum()

    normal, doubled = run([
        Case("normal", "x = 0", with_grad([1.5, -0.5]), (0.0, 0.0), "ties", ((True, True),)),
        Case("doubled", "x = 0", with_grad([1.0, 1.0]), (0.0, 0.0), "windows"),
    ])
    assert normal.valid and not normal.clarke and normal.rule == "weights (1.5, -0.5)"
    assert not doubled.valid and doubled.rule == "weights (1, 1)"


def test_ball_judge():
    ball = lambda g: torch.linalg.vector_norm(g, 2)  # noqa: E731
    big = lambda x: 2 * torch.linalg.vector_norm(x) - torch.linalg.vector_norm(x).detach()  # noqa: E731
    (rec,) = run([Case("2|x|", "x = 0", big, (0.0, 0.0), "ball", norm=ball)])
    assert rec.valid and rec.clarke and rec.rule == "0, centre of the dual ball"
    (out,) = run([Case("x.sum()", "x = 0", lambda x: 2 * x.sum(), (0.0, 0.0), "ball", norm=ball)])
    assert out.valid and not out.clarke and out.rule == "outside of the dual ball"


def test_run_rejects_bad_cases():
    with pytest.raises(TypeError, match=r"`cases\[0\]` must be a Case, got tuple"):
        run([("relu", "x = 0", torch.relu, (0.0,))])
    with pytest.raises(ValueError, match=r"`cases\[0\].kind` must be one of"):
        run([Case("relu", "x = 0", torch.relu, (0.0,), kind="kink")])
    with pytest.raises(ValueError, match=r"`cases\[0\]` of kind 'ties' needs its `masks`"):
        run([Case("max", "x = 0", torch.amax, (0.0, 0.0), kind="ties")])
    with pytest.raises(ValueError, match=r"kind 'elementwise' needs a point with one coordinate, got 2"):
        run([Case("relu", "x = 0", torch.relu, (0.0, 0.0))])
    with pytest.raises(ValueError, match=r"`cases\[0\]` of kind 'ball' needs its `norm`"):
        run([Case("norm", "x = 0", torch.linalg.vector_norm, (0.0, 0.0), kind="ball")])
    with pytest.raises(ValueError,
                       match=r"`cases\[0\].signs` must hold one sign per coordinate of `x` \(2\), got 1"):
        run([Case("max", "x = 0", torch.amax, (0.0, 0.0), "ties", ((True, True),), signs=(1.0,))])
    with pytest.raises(ValueError, match=r"`masks` of case 'max' must be the tie sets of its outputs, "
                                         r"\[\[True, True\]\]"):
        run([Case("max", "x = 0", torch.amax, (0.0, 0.0), "ties", ((True, True), (True, False)))])
    with pytest.raises(ValueError, match=r"`masks` of case 'max' must be the tie sets"):  # a wrong tie set
        run([Case("max", "x = 0", torch.amax, (0.0, 0.0, -1.0), "ties", ((True, True, True),))])


def test_frame_and_formatting(records):
    frame = to_frame(list(records.values()))
    assert list(frame.columns) == ["op", "kink", "variables", "reverse", "forward", "rule", "valid", "clarke",
                                   "forward valid", "agree"]
    assert len(frame) == len(records)
    assert format_jacobian(None) == "n/a"
    assert format_jacobian(((float("nan"), 2 / 3),)) == "(nan, 0.6667)"
    assert format_jacobian(((-0.0,),)) == "0"


def test_kink_derivatives_table():
    table = kink_derivatives(relu_formulations())
    assert table.columns.tolist() == ["PyTorch", *TIE_RULES]
    assert table["PyTorch"].tolist() == [0.0, 1.0 if BEFORE_2_14 else 0.0, 0.5, 0.5]  # clamp(x, min=0)
    relu_at_0 = {"first": 1.0, "last": 0.0, "uniform": 0.5}
    for rule in TIE_RULES:
        assert table[rule].tolist() == [relu_at_0[rule]] * 4
    away = kink_derivatives(relu_formulations(), x=-2.0)
    assert (away.values == 0.0).all()


def test_planted_n1_scatter_face_is_associated_not_clarke(records):
    row = records[SCATTER, "src = (0, -1, -2), self = 0 (differentiable)"]
    assert (row.reverse, row.valid, row.clarke) == (((0.5, 0.0, 0.0),), True, False)
    # without the face as its stratum the same numbers are judged where f is differentiable
    (bare,) = run([Case(SCATTER, "bare", fixed_backward(torch.amax, [0.5, 0, 0]), (0.0, -1.0, -2.0),
                        "windows")])
    assert (bare.valid, bare.clarke) == (False, False)


def test_planted_n2_quantile_is_not_an_order_statistic():
    quantile = lambda x: torch.quantile(x, 0.25)  # noqa: E731  (x_(1) + x_(2)) / 2 for 3 entries
    bad_tie, bad_smooth, pytorch = run([
        Case("quantile, backward (1, 0, 0)", "x = (0, 0, 0)", fixed_backward(quantile, [1.0, 0, 0]),
             (0.0, 0.0, 0.0), "ties", ((True,) * 3,)),
        Case("quantile, backward (1, 0, 0)", "x = (0, 0, 1)", fixed_backward(quantile, [1.0, 0, 0]),
             (0.0, 0.0, 1.0), "windows"),
        Case("quantile", "x = (0, 0, 0)", quantile, (0.0, 0.0, 0.0), "ties", ((True,) * 3,)),
    ])
    # Clarke's set at the full tie is conv{(e_i + e_j) / 2}: (1, 0, 0) is outside, (1/2, 1/2, 0) a vertex
    assert (bad_tie.valid, bad_tie.clarke) == (True, False)
    assert (bad_smooth.valid, bad_smooth.clarke) == (True, False)  # smooth there: only (1/2, 1/2, 0)
    assert (pytorch.reverse, pytorch.clarke) == (((0.5, 0.5, 0.0),), True)


def test_planted_n3_weight_below_the_tie_is_not_certified():
    (rec,) = run([Case("max, backward (0.5, 0, 0.5)", "x = (0, 0, -0.5)",
                       fixed_backward(torch.amax, [0.5, 0.0, 0.5]), (0.0, 0.0, -0.5), "windows")])
    assert (rec.valid, rec.clarke, rec.rule) == (False, False, "weights (0.5, 0)")
    for gap in (1e-3, 0.5, 1.0, 7.0):  # no bump size involved: any gap below the tie
        (rec,) = run([Case("max", "x", fixed_backward(torch.amax, [0.5, 0.0, 0.5]), (0.0, 0.0, -gap),
                           "windows")])
        assert (rec.valid, rec.clarke) == (False, False)


def test_planted_n4_multi_output_clarke_is_joint():
    three_max = lambda x: torch.stack([x.amax(), x.amax(), x.amax()])  # noqa: E731
    row_wise = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]  # every row Clarke-valid, the Jacobian not
    common = [[1 / 3] * 3] * 3
    bad, good = run([Case("(max, max, max)", "x = 0", fixed_backward(three_max, row_wise), (0.0,) * 3,
                          "windows"),
                     Case("(max, max, max)", "x = 0", fixed_backward(three_max, common), (0.0,) * 3,
                          "windows")])
    assert (bad.valid, bad.clarke, good.valid, good.clarke) == (True, False, True, True)
    # sort at a full tie: its Clarke Jacobian is the Birkhoff polytope; a doubly stochastic one passes
    sort = lambda x: torch.sort(x).values  # noqa: E731
    mixed = [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]]
    row_only = [[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]]  # rows Clarke-valid, columns not
    good, bad = run([Case("sort", "x = 0", fixed_backward(sort, rows), (0.0,) * 3, "windows")
                     for rows in (mixed, row_only)])
    assert (good.clarke, bad.valid, bad.clarke) == (True, True, False)


def test_planted_n5_mode_is_outside_the_theory(records):
    mode = records["torch.mode(x)", "x = (0, 0, 0)"]
    assert (mode.valid, mode.clarke, mode.forward_valid) == (False, False, False)
    assert mode.rule.endswith("outside the theory: not locally Lipschitz")
    # the reason: mode(0, b, -a) - mode(0, 0, -a) = -a for every b > 0, an unbounded quotient a / b
    f = lambda v: torch.mode(torch.tensor(v, dtype=F64)).values.item()  # noqa: E731
    assert [f([0.0, 0.0, -1e-3]), f([0.0, 1e-9, -1e-3])] == [0.0, -1e-3]


def test_judge_takes_the_jacobian_as_data():
    from mtlib.census._judge import judge

    case = Case("max", "x = (0, 0, -1)", torch.amax, (0.0, 0.0, -1.0), "windows")
    x = torch.tensor(case.x, dtype=F64)
    assert judge(case, x, torch.tensor([[0.5, 0.5, 0.0]], dtype=F64)) == (True, True, "uniform")
    assert judge(case, x, torch.tensor([[1.5, -0.5, 0.0]], dtype=F64))[:2] == (True, False)
    assert judge(case, x, torch.tensor([[float("nan"), 0.0, 0.0]], dtype=F64)) == (False, False, "nan")


def test_large_tie_sampled_orderings_never_reject():
    """8! orderings exceed MAX_ORDERINGS: a Jacobian outside the pieces found is undetermined."""
    from mtlib.census._judge import MAX_ORDERINGS

    assert math.factorial(8) > MAX_ORDERINGS
    first, doubled = run([Case("max", "8 ties", fixed_backward(torch.amax, w), (0.0,) * 8, "windows")
                          for w in ([1.0] + [0.0] * 7, [2.0] + [0.0] * 7)])
    assert (first.valid, first.clarke) == (True, True)
    assert (doubled.valid, doubled.clarke) == (False, None)


def test_planted_ball_with_a_wrong_norm_is_not_certified():
    """A case of kind "ball" declares the norm; a function that is not that norm (|x|_2 / 2,
    whose Clarke set is the ball of radius 1/2) does not get (0.8, 0) certified."""
    half = lambda x: torch.linalg.vector_norm(x) / 2  # noqa: E731
    ball = lambda g: torch.linalg.vector_norm(g, 2)  # noqa: E731
    wrong, right = run([Case("|x|/2", "x = 0", fixed_backward(half, [w, 0.0]), (0.0, 0.0), "ball", norm=ball)
                        for w in (0.8, 0.4)])
    assert (wrong.valid, wrong.clarke) == (True, None)
    assert wrong.rule.endswith("not the norm the case declares")
    assert (right.valid, right.clarke) == (True, True)
