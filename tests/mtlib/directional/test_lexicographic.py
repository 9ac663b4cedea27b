"""LD-derivatives and the lexicographic gradient (chapter lexicographic; Nesterov 2005, Khan &
Barton 2013, 2015), checked against an independent oracle: for a piecewise-linear ``f`` the
lexicographic gradient is autograd's gradient at ``x + e m_1 + e^2 m_2 + ... + e^k m_k``."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import autograd_gradient, perturbation_oracle
from hypothesis import given, settings
from hypothesis import strategies as st

import mtlib
from mtlib.directional import Dual, jvp, ld_jvp, lexicographic_gradient
from mtlib.examples import boustany_f, maxpool_f
from mtlib.networks import integer_points, random_network

f64 = torch.float64


def tensor(values):
    return torch.tensor(values, dtype=f64)


def assert_solved(g, want):
    """g = D M^{-1} comes from an LU solve: exact up to rounding of order cond(M) * eps, and
    cond(M) < 100 for these small integer matrices, so 1e-12 bounds the rounding."""
    torch.testing.assert_close(g.detach(), want, rtol=0, atol=1e-12)


def random_nonsingular(n, gen, low=-2, high=2):
    while True:
        M = torch.randint(low, high + 1, (n, n), generator=gen).to(f64)
        if abs(torch.linalg.det(M)) > 0.5:  # an integer determinant: nonzero means >= 1
            return M


# --- the oracle: random integer networks at integer kinks ------------------------------------


@pytest.mark.parametrize("pool", [0, 2])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_random_integer_networks_match_the_perturbation_oracle(n, pool):
    gen = torch.Generator().manual_seed(100 * n + pool)
    cases = 0
    for seed in range(12):
        net = random_network([n, 4, 4, 1], pool=pool, seed=seed, integer=True)
        f = lambda v, net=net: net(v).sum()  # noqa: E731
        for x in integer_points(4, n, seed=seed):
            M = random_nonsingular(n, gen)
            assert_solved(lexicographic_gradient(f, x, M), perturbation_oracle(f, x, M))
            cases += 1
    assert cases == 48


def test_max_and_min_networks_match_the_oracle():
    gen = torch.Generator().manual_seed(5)
    for seed in range(40):
        A, B = (torch.randint(-2, 3, (5, 3), generator=gen).to(f64) for _ in range(2))

        def f(v, A=A, B=B):
            y, z = A @ v, B @ v
            pooled = F.max_pool1d(y.view(1, 1, 5), 2, 1).sum()
            return torch.maximum(y.amax(), z.min()) - z.abs().sum() + pooled + y.clamp(-1, 1).sum()

        x, M = integer_points(1, 3, seed=seed)[0], random_nonsingular(3, gen)
        assert_solved(lexicographic_gradient(f, x, M), perturbation_oracle(f, x, M))


def test_small_cnn_with_pools_matches_the_oracle(tie_rule):
    gen = torch.Generator().manual_seed(7)
    conv = nn.Conv2d(1, 3, 1, dtype=f64)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 3, conv.weight.shape, generator=gen))
        conv.bias.copy_(torch.randint(-2, 3, conv.bias.shape, generator=gen))
    head = torch.randint(-2, 3, (3,), generator=gen).to(f64)

    def f(v):
        y = torch.relu(conv(v.view(1, 1, 2, 2)))
        pooled = mtlib.max_pool2d(y, 2, ties=tie_rule).flatten() + F.adaptive_max_pool2d(y, 1).flatten()
        return head @ pooled

    for seed in range(25):
        x, M = integer_points(1, 4, seed=seed)[0], random_nonsingular(4, gen)
        assert_solved(lexicographic_gradient(f, x, M), perturbation_oracle(f, x, M))


@pytest.mark.parametrize("pool", [
    lambda v: F.max_pool3d(v, 2, 1),
    lambda v: F.max_pool3d(v, (2, 3, 2), (1, 2, 1), (1, 1, 0), ceil_mode=True),
    lambda v: F.adaptive_max_pool1d(v.flatten(2), 5),
    lambda v: F.adaptive_max_pool2d(v.flatten(1, 2), (3, 2)),
    lambda v: F.adaptive_max_pool3d(v, (2, 3, 2)),
    lambda v: mtlib.max_pool1d(v.flatten(2), 3, 2, 1, ties="uniform"),
    lambda v: mtlib.max_pool2d(v.flatten(1, 2), 2, 1, ties="last"),
    lambda v: mtlib.max_pool3d(v, 2, 1, ties="uniform"),
    lambda v: mtlib.adaptive_max_pool2d(v.flatten(1, 2), (3, 2), ties="last"),
])
def test_every_pool_uses_the_window_rule(pool):
    gen = torch.Generator().manual_seed(11)
    h = 2.0**-20  # integer values, dyadic directions: the difference quotient is exact
    for _ in range(10):
        x = torch.randint(-1, 2, (2, 3, 4, 5, 6), generator=gen).to(f64)
        d = torch.randint(-2, 3, x.shape, generator=gen).to(f64)
        _, t = jvp(pool, x, d)
        assert torch.equal(t, (pool(x + h * d) - pool(x)) / h)
        M = torch.stack([d, torch.randint(-2, 3, x.shape, generator=gen).to(f64)], -1)
        _, D = ld_jvp(pool, x, M)  # column 2: slope along m_2 of the piece m_1 entered
        e = 2.0**-10
        want = (pool(x + e * M[..., 0] + e**2 * M[..., 1]) - pool(x + e * M[..., 0])) / e**2
        assert torch.equal(D[..., 0], t) and torch.equal(D[..., 1], want)


# --- worked examples: the paper's and Khan & Barton's ------------------------------------------


def test_abs_at_zero_follows_the_first_direction():
    zero = tensor([0.0])
    assert lexicographic_gradient(torch.abs, zero, tensor([[1.0]])).item() == 1.0
    assert lexicographic_gradient(torch.abs, zero, tensor([[-1.0]])).item() == -1.0
    assert lexicographic_gradient(lambda v: v.abs().sum(), tensor(0.0), tensor([-3.0])).item() == -1.0


def test_max_at_a_tie_is_a_vertex_chosen_by_the_basis():
    y = torch.zeros(2, dtype=f64)
    assert lexicographic_gradient(torch.max, y).tolist() == [1.0, 0.0]
    swap = tensor([[0.0, 1.0], [1.0, 0.0]])
    assert lexicographic_gradient(torch.max, y, swap).tolist() == [0.0, 1.0]
    # the first direction ties too (m_1 = (1, 1)); the second breaks the tie
    assert lexicographic_gradient(torch.max, y, tensor([[1.0, 0.0], [1.0, 1.0]])).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("x", [(1.0, 2.0, 3.0, 4.0), (4.0, 3.0, 2.0, 1.0), (-1.0, 5.0, 5.0, 0.5), (0.0, 0.0)])
def test_boustany_f_is_zero_at_the_tie_with_pytorchs_rules(x):
    t = tensor(0.0)
    assert autograd_gradient(lambda s: boustany_f(s, x), t).item() != 0.0 or x == (0.0, 0.0)
    for d in (1.0, -1.0):
        assert lexicographic_gradient(lambda s: boustany_f(s, x), t, tensor([d])).item() == 0.0
    g = lexicographic_gradient(lambda s: boustany_f(s, x).sum(), tensor([0.0, 1.0, -2.0]))
    assert g.tolist() == [0.0] * 3


@pytest.mark.parametrize("a, b", [(1.0, 4.0), (2.0, -3.0), (0.5, 0.25)])
def test_maxpool_f_is_zero_at_the_tie_whatever_the_tie_rule(a, b, tie_rule):
    for d in (1.0, -1.0):
        g = lexicographic_gradient(lambda s: maxpool_f(s, a, b, ties=tie_rule), tensor(0.0), tensor([d]))
        assert g.item() == 0.0


def test_khan_barton_2013_published_examples():
    # Khan & Barton (2013), ACM TOMS 39(4), Examples 6.1-6.3, with the values that
    # NonsmoothFwdAD.jl (github kamilkhanlab/nonsmooth-forward-ad, test/runtests.jl) pins.
    zero1, zero2 = torch.zeros(1, dtype=f64), torch.zeros(2, dtype=f64)
    assert lexicographic_gradient(lambda x: x.abs() - x.abs(), zero1).tolist() == [0.0]  # 6.1
    _, D = ld_jvp(lambda x: x.abs() - x.abs(), zero1, tensor([[1.0, 0.0]]))
    assert D.tolist() == [[0.0, 0.0]]
    g1 = lambda x: torch.clamp(x, min=0.0) - torch.clamp(x, max=0.0)  # noqa: E731  (max(x,0) - min(x,0))
    assert lexicographic_gradient(g1, zero1).tolist() == [1.0]  # 6.1: |x| written twice
    f2 = lambda x: torch.maximum(torch.minimum(x[0], -x[1]), x[1] - x[0])  # noqa: E731
    assert lexicographic_gradient(f2, zero2).tolist() == [0.0, -1.0]  # 6.2
    f3 = lambda x: (1.0 + (x[0] - x[1]).abs()) * (x[0] - x[1])  # noqa: E731
    assert lexicographic_gradient(f3, zero2).tolist() == [1.0, -1.0]  # 6.3
    assert jvp(f3, zero2, tensor([1.0, -1.0]))[1].item() == 2.0  # 6.3: f'(0; (1, -1)) = 2


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), sign=st.sampled_from([1.0, -1.0]), pool=st.sampled_from([0, 2]))
def test_1d_result_is_a_one_sided_derivative(seed, sign, pool):
    net = random_network([1, 4, 4, 1], pool=pool, seed=seed, integer=True)
    f = lambda v: net(v).sum()  # noqa: E731
    x = integer_points(1, 1, seed=seed)[0]
    right, left = jvp(f, x, tensor([1.0]))[1], -jvp(f, x, tensor([-1.0]))[1]
    g = lexicographic_gradient(f, x, tensor([[sign]]))
    assert g.item() == (right if sign > 0 else left).item()  # an end of Clarke's [left, right]
    assert min(left, right) <= g <= max(left, right)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(-2, 2), min_size=2, max_size=5), seed=st.integers(0, 10_000))
def test_max_gives_a_vertex_of_the_tie_sets_simplex(values, seed):
    y = tensor(values)
    M = random_nonsingular(len(values), torch.Generator().manual_seed(seed))
    g = lexicographic_gradient(torch.max, y, M)
    tie = y == y.max()
    torch.testing.assert_close(g.sum(), tensor(1.0), rtol=0, atol=1e-12)
    assert g[~tie].abs().max().item() <= 1e-12 if (~tie).any() else True
    assert (g.abs() > 0.5).sum().item() == 1  # one-hot: a vertex, not an interior point
    assert torch.equal(g.round(), perturbation_oracle(torch.max, y, M))  # the vertex of the perturbed point


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), pool=st.sampled_from([0, 2]))
def test_equals_autograd_away_from_kinks(seed, pool):
    net = random_network([4, 6, 6, 1], pool=pool, seed=seed)
    f = lambda v: net(v).sum()  # noqa: E731
    x = torch.randn(4, dtype=f64, generator=torch.Generator().manual_seed(seed))
    M = random_nonsingular(4, torch.Generator().manual_seed(seed + 1))
    want = autograd_gradient(f, x)  # forward and reverse sums round differently: 1e-10 relative
    torch.testing.assert_close(lexicographic_gradient(f, x, M).detach(), want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(lexicographic_gradient(f, x).detach(), want, rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), scales=st.lists(st.integers(-3, 3), min_size=3, max_size=3))
def test_invariant_to_positive_scaling_of_each_direction(seed, scales):
    net = random_network([3, 4, 4, 1], pool=2, seed=seed, integer=True)
    f = lambda v: net(v).sum()  # noqa: E731
    x = integer_points(1, 3, seed=seed)[0]
    M = random_nonsingular(3, torch.Generator().manual_seed(seed))
    scaled = M * tensor([2.0**s for s in scales])  # column j times 2^s_j > 0
    assert_solved(lexicographic_gradient(f, x, scaled), lexicographic_gradient(f, x, M).detach())


# --- ld_jvp: shapes, k = 1, one pass, control flow --------------------------------------------


def test_k_equal_one_reproduces_jvp_exactly():
    net = random_network([3, 4, 4, 2], pool=2, seed=3, integer=True)
    x = integer_points(16, 3, seed=3)
    d = torch.randint(-4, 5, x.shape, generator=torch.Generator().manual_seed(3)).to(f64) / 4
    value, D = ld_jvp(net, x, d.unsqueeze(-1))
    assert D.shape == (16, 2, 1) and torch.equal(value, net(x).detach())
    assert torch.equal(D[..., 0], jvp(net, x, d)[1])


def test_direct_linear_rules_match_torch_jacobians():
    gen = torch.Generator().manual_seed(2)
    W, A = torch.randn(3, 6, dtype=f64, generator=gen), torch.randn(2, 2, dtype=f64, generator=gen)
    k3 = torch.randn(2, 1, 2, 2, 2, dtype=f64, generator=gen)

    def f(v):  # v: (2, 3); every op below has a direct rule in mtlib.directional._linear
        u = (v * v.sum(0) - 2 / (1 + v.exp()) + v.mean(dim=1, keepdim=True) / 4) @ W[:, :3].T
        w = A @ u + (u.reshape(6) @ W.T).unsqueeze(0) - v.flatten().view(2, 3)[:, :2].sum(-1, keepdim=True)
        c = torch.nn.functional.conv3d(w.reshape(1, 1, 2, 3, 1).expand(1, 1, 2, 3, 2), k3, padding=1)
        return torch.cat([w.flatten(), c.flatten(), -(3 - v).sum((0, 1)).unsqueeze(0)])

    x = torch.randn(2, 3, dtype=f64, generator=gen)
    M = torch.randn(2, 3, 4, dtype=f64, generator=gen)
    value, D = ld_jvp(f, x, M)
    J = torch.func.jacfwd(f)(x)  # (out, 2, 3)
    torch.testing.assert_close(value, f(x))
    torch.testing.assert_close(D, torch.einsum("oij,ijk->ok", J, M), rtol=1e-12, atol=1e-12)


def test_shapes_structured_outputs_and_one_pass():
    calls = []

    def f(v):
        calls.append(1)
        return {"a": v.relu(), "b": (v.sum(), torch.zeros(2))}

    x = torch.zeros(2, 3, dtype=f64)
    M = torch.randn(2, 3, 5, dtype=f64)
    value, D = ld_jvp(f, x, M)
    assert len(calls) == 1  # k = 5 directions, one evaluation
    assert D["a"].shape == (2, 3, 5) and D["b"][0].shape == (5,) and D["b"][1].shape == (2, 5)
    assert not D["b"][1].any()


def test_python_control_flow_compares_lexicographically():
    def max_if(v):
        return v[0] if v[0] >= v[1] else v[1]

    y = torch.zeros(2, dtype=f64)
    for M in (torch.eye(2, dtype=f64), tensor([[0.0, 1.0], [1.0, 0.0]]), tensor([[1.0, 0.0], [1.0, 1.0]])):
        assert torch.equal(lexicographic_gradient(max_if, y, M), lexicographic_gradient(torch.max, y, M))
    relu_if = lambda v: v if v > 0 else 0 * v  # noqa: E731
    assert ld_jvp(relu_if, tensor(0.0), tensor([0.0, -1.0]))[1].tolist() == [0.0, 0.0]
    assert ld_jvp(relu_if, tensor(0.0), tensor([0.0, 2.0]))[1].tolist() == [0.0, 2.0]
    x = Dual(torch.zeros(2, dtype=f64), tangents=tensor([[1.0, 1.0], [0.0, -1.0]]))
    assert (bool(x[0] > x[1]), bool(x[0] == x[1]), bool(x[1])) == (True, False, True)


def test_kink_ops_resolve_ties_lexicographically():
    zero = tensor(0.0)
    M = tensor([0.0, 0.0, -2.0])  # the first two directions leave the kink: the third decides
    for f, want in [(torch.relu, [0.0, 0.0, 0.0]), (torch.abs, [0.0, 0.0, 2.0]),
                    (lambda v: F.leaky_relu(v, 0.5), [0.0, 0.0, -1.0]),
                    (lambda v: v.clamp(0.0, 1.0), [0.0, 0.0, 0.0]), (F.relu6, [0.0, 0.0, 0.0]),
                    (F.hardtanh, [0.0, 0.0, -2.0])]:
        assert ld_jvp(f, zero, M)[1].tolist() == want, f
    y = torch.zeros(3, dtype=f64)
    M = tensor([[1.0, 0.0], [1.0, 2.0], [0.0, 5.0]])  # rows: (1, 0), (1, 2), (0, 5)
    assert ld_jvp(torch.max, y, M)[1].tolist() == [1.0, 2.0]
    assert ld_jvp(torch.min, y, M)[1].tolist() == [0.0, 5.0]
    assert ld_jvp(lambda v: v.amax(), y, M)[1].tolist() == [1.0, 2.0]
    assert ld_jvp(lambda v: v.max(0).values, y, M)[1].tolist() == [1.0, 2.0]
    assert ld_jvp(lambda v: v.argmax().to(f64) + v.sum(), y, M)[0].item() == 1.0
    assert ld_jvp(lambda v: F.max_pool1d(v.view(1, 1, 3), 3), y, M)[1].flatten().tolist() == [1.0, 2.0]


# --- errors ----------------------------------------------------------------------------------


def test_unsupported_op_raises_naming_it():
    with pytest.raises(NotImplementedError, match="torch.floor"):
        lexicographic_gradient(lambda v: torch.floor(v).sum(), torch.zeros(2, dtype=f64))
    with pytest.raises(NotImplementedError, match="torch.Tensor.sign"):
        ld_jvp(lambda v: v.sign(), torch.zeros(2, dtype=f64), torch.eye(2, dtype=f64))
    with pytest.raises(AttributeError, match="carries k = 2 tangents"):
        Dual(torch.zeros(1), tangents=torch.ones(2, 1)).tangent  # noqa: B018


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: lexicographic_gradient(torch.sum, torch.zeros(2, dtype=f64), torch.eye(3, dtype=f64)),
         ValueError, "must be square"),
        (lambda: lexicographic_gradient(torch.sum, torch.zeros(2, dtype=f64), torch.ones(2, 1, dtype=f64)),
         ValueError, "must be square"),
        (lambda: lexicographic_gradient(torch.sum, torch.zeros(2, dtype=f64), torch.ones(2, 2, dtype=f64)),
         ValueError, "nonsingular"),
        (lambda: lexicographic_gradient(torch.sum, torch.zeros(2, dtype=f64), torch.zeros(2, 2, dtype=f64)),
         ValueError, "nonsingular"),
        (lambda: lexicographic_gradient(lambda v: v, torch.zeros(2, dtype=f64)), ValueError, "one number"),
        (lambda: lexicographic_gradient(torch.sum, [0.0]), TypeError, "`x` must be a torch.Tensor"),
        (lambda: lexicographic_gradient(torch.sum, torch.zeros(2), torch.eye(2, dtype=torch.int64)),
         TypeError, "`M`"),
        (lambda: lexicographic_gradient(3, torch.zeros(2, dtype=f64)), TypeError, "callable"),
        (lambda: ld_jvp(torch.sum, torch.zeros(2, dtype=f64), torch.zeros(3, 1, dtype=f64)), ValueError,
         r"\(\*x.shape, k\)"),
        (lambda: ld_jvp(torch.sum, torch.zeros(2, dtype=f64), torch.zeros(2, 0, dtype=f64)), ValueError,
         "k >= 1"),
        (lambda: Dual(torch.zeros(2), tangents=torch.zeros(2)), ValueError, "`tangents` must have shape"),
        (lambda: Dual(torch.zeros(2)), TypeError, "exactly one of"),
    ],
)
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_exported_at_top_level():
    assert mtlib.lexicographic_gradient is lexicographic_gradient and mtlib.ld_jvp is ld_jvp
    assert "lexicographic_gradient" in mtlib.directional.__all__ and "ld_jvp" in mtlib.directional.__all__
