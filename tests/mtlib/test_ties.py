"""max_first / max_last / max_uniform, tie_set and check_tangent (Sec 4.2-4.3, eqs 15-21)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, jacrev, jvp, vmap

from mtlib import check_tangent, max_first, max_last, max_uniform, max_weights, tie_set
from mtlib.ties import MAX_BY_RULE, RELU_SLOPE, TIE_RULES, TRITON_CODES


def autograd_grad(fn, x):
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eq21_zero_vector(dtype):
    x = torch.zeros(4, dtype=dtype)
    assert autograd_grad(max_uniform, x).tolist() == [0.25] * 4
    assert autograd_grad(max_first, x).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert autograd_grad(max_last, x).tolist() == [0.0, 0.0, 0.0, 1.0]


def test_uniform_matches_torch_max_and_amax():
    x = torch.tensor([3.0, 1.0, 3.0, 3.0, -2.0], dtype=torch.float64)
    expected = torch.tensor([1 / 3, 0.0, 1 / 3, 1 / 3, 0.0], dtype=torch.float64)
    torch.testing.assert_close(autograd_grad(max_uniform, x), expected, rtol=0, atol=0)
    torch.testing.assert_close(autograd_grad(torch.max, x), expected, rtol=0, atol=0)
    torch.testing.assert_close(autograd_grad(lambda v: v.amax(-1), x), expected, rtol=0, atol=0)


def test_first_matches_paper_max1_script():
    from mtlib.examples import max1

    for x in ([2.0, 5.0, 5.0, 1.0], [7.0, 7.0, 7.0, 7.0], [0.0, -1.0, 4.0, 4.0]):
        x = torch.tensor(x, dtype=torch.float64)
        assert torch.equal(autograd_grad(max_first, x), autograd_grad(max1, x))


def test_batched_values_and_rows():
    x = torch.tensor([[1.0, 2.0, 2.0], [5.0, 0.0, 5.0]], dtype=torch.float64)
    for rule in TIE_RULES:
        assert MAX_BY_RULE[rule](x).tolist() == [2.0, 5.0]
    assert autograd_grad(max_first, x).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert autograd_grad(max_last, x).tolist() == [[0, 0, 1], [0, 0, 1]]
    assert autograd_grad(max_uniform, x).tolist() == [[0, 0.5, 0.5], [0.5, 0, 0.5]]


def test_torch_func_grad_jacrev_jvp_vmap(tie_rule):
    fn = MAX_BY_RULE[tie_rule]
    x = torch.tensor([[4.0, 4.0, 1.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    w = max_weights(x, tie_rule)
    torch.testing.assert_close(vmap(grad(fn))(x), w, rtol=0, atol=0)
    torch.testing.assert_close(jacrev(fn)(x[0]), w[0], rtol=0, atol=0)
    d = torch.tensor([[1.0, -2.0, 5.0], [3.0, 1.0, 1.0]], dtype=torch.float64)
    _, tangent = jvp(fn, (x,), (d,))
    torch.testing.assert_close(tangent, (w * d).sum(-1), rtol=0, atol=0)


def test_gradcheck_away_from_ties(tie_rule):
    x = torch.tensor([[0.3, -1.2, 2.5], [1.0, 4.0, -3.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(MAX_BY_RULE[tie_rule], (x,))


def test_every_rule_has_its_tables(tie_rule):
    """Each rule of TIE_RULES has its max, its ReLU slope and its Triton code (the checklist's step 1)."""
    assert MAX_BY_RULE[tie_rule].__name__ == f"max_{tie_rule}"
    assert RELU_SLOPE[tie_rule] == max_weights(torch.zeros(2, dtype=torch.float64), tie_rule)[0].item()
    assert sorted(TRITON_CODES.values()) == list(range(len(TIE_RULES))) and tie_rule in TRITON_CODES
    assert set(MAX_BY_RULE) == set(RELU_SLOPE) == set(TRITON_CODES) == set(TIE_RULES)


def test_nan_row_propagates():
    x = torch.tensor([1.0, float("nan"), 2.0])
    assert max_uniform(x).isnan()
    assert tie_set(x).tolist() == [False, True, False]


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        ([1.0, 2.0], TypeError, "`x` must be a torch.Tensor"),
        (torch.tensor([1, 2]), TypeError, "floating-point dtype"),
        (torch.empty(3, 0), ValueError, "non-empty last dimension"),
        (torch.tensor(1.0), ValueError, "non-empty last dimension"),
    ],
)
def test_bad_input(bad, exc, match):
    with pytest.raises(exc, match=match):
        max_first(bad)


def test_max_weights_unknown_rule():
    with pytest.raises(ValueError, match="`ties` must be one of"):
        max_weights(torch.zeros(2), "random")


def test_check_tangent_remark1_and_failures():
    x = torch.zeros(2, dtype=torch.float64)
    assert check_tangent(x, torch.tensor([1.5, -0.5]))
    assert not check_tangent(x, torch.tensor([1.5, -0.5]), convex=True)
    report = check_tangent(x, torch.tensor([1.0, 1.0]))
    assert not report and "sum to 2" in report.reason
    y = torch.tensor([3.0, 1.0], dtype=torch.float64)
    report = check_tangent(y, torch.tensor([0.5, 0.5]))
    assert not report and "off the tie set" in report.reason
    assert check_tangent(y, torch.tensor([1.0, 0.0]), convex=True)
    with pytest.raises(ValueError, match="`g` must have the shape"):
        check_tangent(y, torch.zeros(3))


@pytest.mark.parametrize("g, why", [([float("nan")] * 2, "sum to nan"),
                                    ([1.0, float("nan")], "sum to nan")])
def test_check_tangent_rejects_nan(g, why):
    report = check_tangent(torch.zeros(2), torch.tensor(g))
    assert not report and why in report.reason
    assert not check_tangent(torch.tensor([0.0, 1.0]), torch.tensor([float("nan"), 1.0]))


tie_rows = st.lists(st.integers(-2, 2), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(tie_rows, min_size=1, max_size=4).filter(lambda rows: len({len(r) for r in rows}) == 1),
       st.sampled_from(TIE_RULES))
def test_every_rule_passes_tangent_check_on_random_ties(rows, rule):
    x = torch.tensor(rows, dtype=torch.float64)
    g = autograd_grad(MAX_BY_RULE[rule], x)
    report = check_tangent(x, g, convex=True)
    assert report, report.reason
    mask = tie_set(x)
    if rule == "uniform":
        expected = mask.to(g.dtype) / mask.sum(-1, keepdim=True)
        torch.testing.assert_close(g, expected, rtol=0, atol=1e-15)
    else:
        assert ((g == 1).sum(-1) == 1).all() and g[~mask].abs().sum() == 0
        tied = mask.to(torch.int8)
        chosen = tied.argmax(-1) if rule == "first" else x.shape[-1] - 1 - tied.flip(-1).argmax(-1)
        assert g.argmax(-1).tolist() == chosen.tolist()


@settings(max_examples=40, deadline=None)
@given(tie_rows, st.floats(-3, 3, allow_nan=False))
def test_normal_component_is_free(row, s):
    x = torch.tensor(row, dtype=torch.float64)
    mask = tie_set(x)
    g = mask.to(torch.float64) / mask.sum()
    if mask.sum() >= 2:
        first, second = mask.nonzero()[:2, 0].tolist()
        g = g.clone()
        g[first] += s
        g[second] -= s
    assert check_tangent(x, g, atol=1e-9)
