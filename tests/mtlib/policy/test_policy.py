"""tie_policy: one tie rule for relu/clamp/maximum/minimum/hardtanh/relu6/abs/max/amax/min/amin."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import jvp, vmap

from mtlib import max_weights
from mtlib.census import relu_formulations, torch_release
from mtlib.policy import TiePolicy, tie_policy
from mtlib.ties import TIE_RULES

F64 = torch.float64
RELU_AT_0 = {"first": 1.0, "last": 0.0, "uniform": 0.5}
# PyTorch's clamp at its bound: 1 up to torch 2.13, 0 from 2.14 (pytorch #191142)
CLAMP_AT_0 = 1.0 if tuple(int(p) for p in torch_release().split(".")) < (2, 14, 0) else 0.0


def _grad(f, x):
    x = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(x).sum(), x)[0]


def _tangent(f, x):
    return jvp(f, (x,), (torch.ones_like(x),))[1]


def test_pytorch_rules_differ_without_policy():
    x = torch.zeros(1, dtype=F64)
    got = {name: _grad(f, x).item() for name, f in relu_formulations().items()}
    assert got == {"torch.relu(x)": 0.0, "torch.clamp(x, min=0)": CLAMP_AT_0, "torch.maximum(x, 0)": 0.5,
                   "(x + |x|) / 2": 0.5}


def test_four_relus_agree_under_policy(tie_rule):
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=F64)
    for name, f in relu_formulations().items():
        with tie_policy(tie_rule):
            assert torch.equal(f(x), torch.relu(x).detach()), name
            assert _grad(f, x).tolist() == [0.0, RELU_AT_0[tie_rule], 1.0], name
            assert _tangent(f, x).tolist() == [0.0, RELU_AT_0[tie_rule], 1.0], name


def test_relu_entry_points(tie_rule):
    zero = torch.zeros(1, dtype=F64)
    entries = [F.relu, lambda x: x.relu(), torch.nn.ReLU(), lambda x: F.relu(x * 1, inplace=True),
               lambda x: torch.nn.ReLU(inplace=True)(x * 1), lambda x: (x * 1).relu_(),
               lambda x: torch.relu_(x * 1),
               lambda x: F.hardtanh(x, 0.0, float("inf")), lambda x: torch.max(x, torch.zeros_like(x)),
               lambda x: torch.stack([x, torch.zeros_like(x)]).amax(0),
               lambda x: torch.stack([x, torch.zeros_like(x)]).max(dim=0).values,
               lambda x: (x * 1).clamp_(min=0), lambda x: x.clamp_min(0), lambda x: torch.clip(x, 0)]
    with tie_policy(tie_rule):
        for i, f in enumerate(entries):
            assert _grad(f, zero).item() == RELU_AT_0[tie_rule], i


def test_bounded_ops_at_both_kinks(tie_rule):
    want = RELU_AT_0[tie_rule]
    x = torch.tensor([-1.0, 1.0, 0.0, 6.0], dtype=F64)
    with tie_policy(tie_rule):
        assert _grad(F.hardtanh, x[:2]).tolist() == [want, want]
        assert _grad(torch.nn.Hardtanh(), x[:2]).tolist() == [want, want]
        assert _grad(F.relu6, x[2:]).tolist() == [want, want]
        assert _grad(torch.nn.ReLU6(), x[2:]).tolist() == [want, want]
        assert _grad(lambda t: torch.clamp(t, 0, 6), x[2:]).tolist() == [want, want]
        assert _grad(lambda t: t.clamp_max(6.0), x[3:]).tolist() == [want]
        assert _grad(torch.abs, torch.zeros(1, dtype=F64)).item() == 2 * want - 1


def test_tensor_bounds_and_binary_ops(tie_rule):
    a = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True)
    b = torch.tensor([0.0, 0.0], dtype=F64, requires_grad=True)
    first = {"first": 1.0, "last": 0.0, "uniform": 0.5}[tie_rule]
    for op in (torch.maximum, torch.minimum, torch.max, torch.min,
               lambda u, v: torch.clamp(u, min=v), lambda u, v: u.clamp(max=v)):
        with tie_policy(tie_rule):
            ga, gb = torch.autograd.grad(op(a, b).sum(), (a, b))
        assert ga[0].item() == first and gb[0].item() == 1.0 - first
        assert ga[1].item() + gb[1].item() == 1.0


def test_reductions_follow_max_weights(tie_rule):
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], dtype=F64)
    with tie_policy(tie_rule):
        assert torch.equal(_grad(torch.max, x), max_weights(x.reshape(-1), tie_rule).reshape(2, 3))
        assert torch.equal(_grad(torch.amin, x), max_weights(-x.reshape(-1), tie_rule).reshape(2, 3))
        assert torch.equal(_grad(lambda t: t.amax(dim=1), x), max_weights(x, tie_rule))
        assert torch.equal(_grad(lambda t: torch.max(t, dim=1).values, x), max_weights(x, tie_rule))
        assert torch.equal(_grad(lambda t: t.min(1, keepdim=True)[0], x), max_weights(-x, tie_rule))
        cols = _grad(lambda t: torch.amax(t, dim=0, keepdim=True), x)
        assert torch.equal(cols, max_weights(x.T, tie_rule).T)
        out = torch.max(x, 1)
    assert out.indices.tolist() == ([2, 1] if tie_rule == "last" else [1, 0])
    assert out.values.tolist() == [3.0, 2.0]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-2, 2), min_size=6, max_size=6), st.sampled_from(TIE_RULES))
def test_forward_values_equal_pytorch(values, rule):
    x = torch.tensor(values, dtype=F64).reshape(2, 3)
    y = x.flip(1)
    calls = [
        lambda: torch.relu(x), lambda: F.relu6(x * 3), lambda: F.hardtanh(x), lambda: x.abs(),
        lambda: torch.clamp(x, -1, 1), lambda: torch.clamp(x, min=y), lambda: torch.clamp(x, y, y + 1),
        lambda: torch.maximum(x, y), lambda: torch.minimum(x, y), lambda: torch.max(x),
        lambda: torch.amax(x, dim=(0, 1)), lambda: torch.amin(x, 1, keepdim=True),
        lambda: torch.max(x, dim=-1).values, lambda: torch.min(x, 0).values, lambda: x.max(1).indices,
    ]
    expected = [c() for c in calls]
    with tie_policy(rule):
        got = [c() for c in calls]
    for i, (e, g) in enumerate(zip(expected, got)):
        if rule == "last" and i == len(calls) - 1:
            e = 2 - x.flip(1).max(1).indices
        assert g.dtype == e.dtype and torch.equal(g, e), i


def test_cpu_scalar_tensor_follows_the_other_device(tie_rule):
    # PyTorch lets a CPU 0-d tensor meet a tensor on any device; the result stays on that device
    # ("meta" stands in for CUDA here: copying a meta tensor to the CPU fails)
    x = torch.zeros(3, device="meta")
    with tie_policy(tie_rule):
        assert torch.maximum(torch.tensor(0.0), x).device.type == "meta"
        assert torch.minimum(torch.tensor(0.0), x).device.type == "meta"
        assert torch.clamp(x, min=torch.tensor(0.0)).device.type == "meta"


def test_nan_propagates_like_pytorch():
    x = torch.tensor([1.0, float("nan"), 2.0], dtype=F64)
    with tie_policy("uniform"):
        assert torch.max(x).isnan() and torch.maximum(x, torch.ones(3, dtype=F64))[1].isnan()
        assert torch.relu(x)[1].isnan() and torch.clamp(x, 0, 1)[1].isnan()


def test_non_float_and_other_ops_pass_through():
    ints = torch.tensor([-1, 0, 2])
    with tie_policy("first"):
        assert torch.relu(ints).tolist() == [0, 0, 2] and torch.max(ints).item() == 2
        assert torch.equal(torch.sin(torch.ones(2)), torch.ones(2).sin())
        assert torch.max(torch.tensor(3.0, dtype=F64), 0).values.item() == 3.0


def test_vmap_and_jvp_under_policy():
    x = torch.zeros(4, 2, dtype=F64)
    with tie_policy("uniform"):
        assert vmap(torch.amax)(x).tolist() == [0.0] * 4
        assert _tangent(torch.amax, torch.zeros(2, dtype=F64)).item() == 1.0


def test_nesting_innermost_wins_and_restores():
    def d():
        return _grad(lambda t: torch.maximum(t, torch.zeros_like(t)), torch.zeros(1, dtype=F64)).item()

    assert d() == 0.5
    with tie_policy("first"):
        assert d() == 1.0
        with tie_policy("last"):
            assert d() == 0.0
        assert d() == 1.0
    assert d() == 0.5


def test_exception_inside_block_restores_pytorch():
    zero = torch.zeros(1, dtype=F64)
    with pytest.raises(RuntimeError, match="boom"):
        with tie_policy("first"):
            raise RuntimeError("boom")
    assert _grad(torch.relu, zero).item() == 0.0
    with tie_policy("uniform"):
        with pytest.raises(RuntimeError, match="boom"):
            with tie_policy("first"):
                raise RuntimeError("boom")
        assert _grad(torch.relu, zero).item() == 0.5
    assert _grad(torch.relu, zero).item() == 0.0


def test_bad_rule_and_out_argument():
    with pytest.raises(ValueError, match=r"tie_policy: `ties` must be one of .* got 'random'"):
        tie_policy("random")
    assert isinstance(tie_policy("last"), TiePolicy) and tie_policy("last").rule == "last"
    x = torch.zeros(2, dtype=F64)
    with tie_policy("first"):
        with pytest.raises(TypeError, match="`out` is not supported for clamp"):
            torch.clamp(x, min=0, out=torch.empty(2, dtype=F64))
        with pytest.raises(RuntimeError, match="At least one of 'min' or 'max'"):
            torch.clamp(x)


def _sec44(t):
    """Sec 4.4: f(t) = maxpool1d(t, 4t) - maxpool1d(4t, t), the null function."""
    a = F.max_pool1d(torch.cat([t, 4 * t]).view(1, 1, 2), 2, 1)
    return (a - torch.nn.MaxPool1d(2, stride=1)(torch.cat([4 * t, t]).view(1, 1, 2))).sum()


def test_maxpool_follows_the_rule():
    t = torch.zeros(1, dtype=F64)
    assert _grad(_sec44, t).item() == -3.0  # PyTorch: first maximal entry (Table 3)
    got = {}
    for rule in TIE_RULES:
        with tie_policy(rule):
            got[rule] = _grad(_sec44, t).item()
    assert got == {"first": -3.0, "last": 3.0, "uniform": 0.0}
    x = torch.zeros(1, 1, 4, 4, dtype=F64)
    with tie_policy("uniform"):
        assert (_grad(torch.nn.MaxPool2d(2), x) == 0.25).all()
    with tie_policy("last"):
        out, idx = F.max_pool2d(x, 2, return_indices=True)
    assert idx.flatten().tolist() == [5, 7, 13, 15] and out.shape == (1, 1, 2, 2)


@pytest.mark.parametrize("rule", ["first", "last"])
def test_with_indices_functions_return_pairs_under_policy(rule):
    x = torch.tensor([[[1.0, 1.0, 0.0, 2.0]], [[3.0, 0.0, 0.0, 0.0]]], dtype=F64)
    expected = F.max_pool1d_with_indices(x, 2)
    with tie_policy(rule):
        got = F.max_pool1d_with_indices(x, 2)
        got2d = F.max_pool2d_with_indices(x.unsqueeze(1), (1, 2))
    assert isinstance(got, tuple) and len(got) == 2 and isinstance(got2d, tuple) and len(got2d) == 2
    assert torch.equal(got[0], expected[0]) and torch.equal(got2d[0], expected[0].unsqueeze(1))
    want = [[[0, 3]], [[0, 2]]] if rule == "first" else [[[1, 3]], [[0, 3]]]
    assert got[1].tolist() == want and got2d[1].squeeze(1).tolist() == want


def test_3d_and_adaptive_pools_and_modules_follow_the_rule(tie_rule):
    """An nn model with MaxPool3d and AdaptiveMaxPool1d/2d/3d, unedited, gets the rule in every
    pool under the policy: same values as PyTorch, mtlib's gradient for that rule."""
    import mtlib.maxpool as mp

    x = torch.randint(-1, 2, (2, 2, 4, 5, 6)).to(F64)
    model = [torch.nn.MaxPool3d(2, 1, 1), torch.nn.AdaptiveMaxPool3d((2, 3, 2)),
             lambda y: torch.nn.AdaptiveMaxPool2d(2)(y.flatten(2, 3)),
             lambda y: torch.nn.AdaptiveMaxPool1d(3)(y.flatten(2, 4))]
    mine = [lambda y: mp.max_pool3d(y, 2, 1, 1, ties=tie_rule),
            lambda y: mp.adaptive_max_pool3d(y, (2, 3, 2), ties=tie_rule),
            lambda y: mp.adaptive_max_pool2d(y.flatten(2, 3), 2, ties=tie_rule),
            lambda y: mp.adaptive_max_pool1d(y.flatten(2, 4), 3, ties=tie_rule)]
    for torch_pool, mtlib_pool in zip(model, mine):
        xp, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
        with tie_policy(tie_rule):
            yp = torch_pool(xp)
        ym = mtlib_pool(xm)
        assert torch.equal(yp, ym) and torch.equal(yp.detach(), torch_pool(x))
        g = torch.randn(ym.shape, dtype=F64)
        yp.backward(g)
        ym.backward(g)
        assert torch.equal(xp.grad, xm.grad)
    if tie_rule != "uniform":  # "uniform" has no single selected entry, so no indices
        with tie_policy(tie_rule):
            pair = F.adaptive_max_pool2d_with_indices(x[:, :, 0], 2)
            pair3 = F.max_pool3d(x, 2, return_indices=True)
        assert isinstance(pair, tuple) and pair[1].dtype == torch.int64 and len(pair3) == 2


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(-1, 1), min_size=12, max_size=12), st.sampled_from(TIE_RULES))
def test_maxpool_values_equal_pytorch(values, rule):
    x = torch.tensor(values, dtype=F64).view(1, 3, 4)
    expected = (F.max_pool1d(x, 2, 1), F.max_pool2d(x.view(1, 1, 3, 4), 2, 1, padding=1))
    with tie_policy(rule):
        got = (F.max_pool1d(x, 2, 1), F.max_pool2d(x.view(1, 1, 3, 4), 2, 1, padding=1))
    assert all(torch.equal(g, e) for g, e in zip(got, expected))


def test_inner_rule_is_not_reread_by_outer_policy():
    t = torch.zeros(1, dtype=F64)
    with tie_policy("uniform"):
        with tie_policy("first"):  # "first" pools with PyTorch's kernel: not re-read as uniform
            assert _grad(_sec44, t).item() == -3.0
        assert _grad(_sec44, t).item() == 0.0
