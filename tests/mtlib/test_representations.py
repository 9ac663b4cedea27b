"""Tests of mtlib.representations: the representations (6) of the paper and their gradients (7)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import jacrev

from mtlib import Piecewise, associated_gradient, chain_jacobian, check_tangent, relu_z
from mtlib.examples import max1
from mtlib.networks import KinkCount, VectorMaxPool, count_kinks, integer_points, random_network
from mtlib.representations import (
    compose_piecewise,
    max_pair_piecewise,
    max_piecewise,
    max_pool_layer_piecewise,
    network_layers,
    relu_layer_piecewise,
    relu_piecewise,
)
from mtlib.ties import MAX_BY_RULE, TIE_RULES, max_first, max_last, max_uniform, max_weights

F64 = torch.float64
small_ints = st.integers(min_value=-2, max_value=2)
reals = st.floats(min_value=-10, max_value=10, allow_nan=False)


def vec(values):
    return torch.tensor(values, dtype=F64)


# --- relu_piecewise (Sec 4.1) -------------------------------------------------------------

@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, -3.0])
def test_relu_piecewise_derivative_is_r_prime_z(z):
    relu = relu_piecewise(z)
    grads = [relu.associated_gradient(vec(t)).item() for t in (-1.0, 0.0, 2.0)]
    assert grads == [0.0, z, 1.0]
    assert [len(relu.pieces), relu.piece_index(vec(-1.0)), relu.piece_index(vec(0.0))] == [3, 0, 2]


@settings(max_examples=40, deadline=None)
@given(x=st.one_of(st.just(0.0), reals), z=reals)
def test_relu_piecewise_matches_relu_z_autograd(x, z):
    relu, t = relu_piecewise(z), vec(x)
    assert relu(t).item() == torch.relu(t).item()
    assert relu.associated_gradient(t).item() == associated_gradient(lambda v: relu_z(v, z), t).item()


def test_relu_piecewise_errors():
    with pytest.raises(TypeError, match="relu_piecewise: `z` must be a real number, got bool"):
        relu_piecewise(True)
    with pytest.raises(TypeError, match="relu_piecewise: `z` must be a real number, got str"):
        relu_piecewise("0")
    with pytest.raises(ValueError, match=r"relu_piecewise: `x` must hold one number, got shape \(2,\)"):
        relu_piecewise()(torch.zeros(2, dtype=F64))


# --- max_piecewise (eqs 17-21) --------------------------------------------------------------

def test_max_piecewise_paper_values():
    zero = torch.zeros(4, dtype=F64)
    assert {t: len(max_piecewise(4, t).pieces) for t in TIE_RULES} == {"first": 4, "last": 4, "uniform": 15}
    assert max_piecewise(4).associated_gradient(zero).tolist() == [1.0, 0.0, 0.0, 0.0]  # eq 18
    assert max_piecewise(4, "last").associated_gradient(zero).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert max_piecewise(4, "uniform").associated_gradient(zero).tolist() == [0.25] * 4  # eq 21
    # pieces ordered as in eq 19: P^5 = {x1 = x2 > max(x3, x4)}, P^11 = {x1 = x2 = x3 > x4}
    uniform = max_piecewise(4, "uniform")
    assert uniform.piece_index(vec([3.0, 3.0, 1.0, 2.0])) == 4
    assert uniform.piece_index(vec([3.0, 3.0, 3.0, 2.0])) == 10
    assert uniform.piece_index(vec([1.0, 2.0, 3.0, 4.0])) == 3
    # eq 17: P^2 = {x1 < x2 and x2 >= max(x3, x4)} holds (0, 1, 1, 0)
    assert max_piecewise(4).piece_index(vec([0.0, 1.0, 1.0, 0.0])) == 1


@settings(max_examples=60, deadline=None)
@given(values=st.lists(small_ints, min_size=1, max_size=5))
def test_max_piecewise_matches_autograd_at_ties(values):
    x = vec(values)
    n = len(values)
    grads = {}
    for rule in TIE_RULES:
        rep = max_piecewise(n, rule)
        assert rep(x).item() == x.max().item()
        grads[rule] = rep.associated_gradient(x)
        assert torch.equal(grads[rule], associated_gradient(MAX_BY_RULE[rule], x))
        assert torch.equal(grads[rule], max_weights(x, rule))
        assert check_tangent(x, grads[rule], convex=True)
    assert torch.equal(grads["first"], associated_gradient(max1, x))  # the paper's script (Table 1)
    assert torch.equal(grads["uniform"], associated_gradient(torch.max, x))  # PyTorch's rule


def test_max_piecewise_errors():
    with pytest.raises(TypeError, match="max_piecewise: `n` must be an int, got float"):
        max_piecewise(1.5)
    with pytest.raises(ValueError, match="max_piecewise: `n` must be >= 1, got 0"):
        max_piecewise(0)
    with pytest.raises(ValueError, match="max_piecewise: `ties` must be one of"):
        max_piecewise(3, "middle")
    with pytest.raises(ValueError, match="max_piecewise: `n` gives 131071 pieces, more than the 100000"):
        max_piecewise(17, "uniform")
    for ties in TIE_RULES:
        with pytest.raises(ValueError, match=r"max_piecewise: `x` must have shape \(4,\), got \(5,\)"):
            max_piecewise(4, ties)(torch.zeros(5, dtype=F64))


# --- max_pair_piecewise (Sec 4.2, Remark 1) ---------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(s=reals, y=reals)
def test_max_pair_piecewise_normal_component_is_free(s, y):
    rep = max_pair_piecewise(s)
    diag = vec([y, y])
    g = rep.associated_gradient(diag)
    assert g.tolist() == [0.5 + s, 0.5 - s]
    assert rep(diag).item() == y
    assert check_tangent(diag, g)
    f0 = Piecewise([lambda x: x.repeat(2)], lambda x: 0)
    assert chain_jacobian([f0, rep], vec([y])).item() == pytest.approx(1.0, abs=1e-12)  # eq 16


def test_max_pair_piecewise_rules_and_off_diagonal():
    diag = vec([1.0, 1.0])
    for s, rule in ((0.5, max_first), (-0.5, max_last), (0.0, max_uniform)):
        assert torch.equal(max_pair_piecewise(s).associated_gradient(diag), associated_gradient(rule, diag))
    for s in (-2.0, 0.0, 3.0):
        assert max_pair_piecewise(s).associated_gradient(vec([2.0, -1.0])).tolist() == [1.0, 0.0]
        assert max_pair_piecewise(s).associated_gradient(vec([-1.0, 2.0])).tolist() == [0.0, 1.0]
    with pytest.raises(TypeError, match="max_pair_piecewise: `s` must be a real number, got NoneType"):
        max_pair_piecewise(None)
    with pytest.raises(ValueError, match=r"max_pair_piecewise: `x` must have shape \(2,\), got \(3,\)"):
        max_pair_piecewise(0.0)(torch.zeros(3, dtype=F64))


# --- layers, composition, networks (Cor 2) ---------------------------------------------------

def test_relu_layer_piecewise():
    layer = relu_layer_piecewise(3, z=0.25)
    assert len(layer.pieces) == 27
    x = vec([-1.0, 0.0, 2.0])
    assert layer(x).tolist() == [0.0, 0.0, 2.0]
    assert torch.equal(layer.associated_jacobian(x), torch.diag(vec([0.0, 0.25, 1.0])))
    with pytest.raises(ValueError, match="relu_layer_piecewise: `n` gives 177147 pieces"):
        relu_layer_piecewise(11)
    with pytest.raises(ValueError, match=r"relu_layer_piecewise: `x` must have shape \(3,\), got \(2,\)"):
        layer(torch.zeros(2, dtype=F64))


def max_uniform_row(w):
    return associated_gradient(max_uniform, w).reshape(1, -1)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(small_ints, min_size=6, max_size=6))
def test_max_pool_layer_piecewise_matches_pytorch(values):
    x = vec(values)
    pool = max_pool_layer_piecewise(6, 3)
    assert len(pool.pieces) == 9
    assert torch.equal(pool(x), VectorMaxPool(3)(x))
    assert torch.equal(pool.associated_jacobian(x), jacrev(VectorMaxPool(3))(x))
    uniform = max_pool_layer_piecewise(6, 2, "uniform")
    expected = torch.block_diag(*(max_uniform_row(w) for w in x.reshape(3, 2)))
    assert torch.equal(uniform.associated_jacobian(x), expected)


def test_max_pool_layer_piecewise_errors():
    with pytest.raises(ValueError, match=r"max_pool_layer_piecewise: `kernel` \(4\) must divide `n` \(6\)"):
        max_pool_layer_piecewise(6, 4)
    with pytest.raises(TypeError, match="max_pool_layer_piecewise: `kernel` must be an int"):
        max_pool_layer_piecewise(6, 2.0)


def test_compose_piecewise_example_2_2_and_errors():
    f0 = Piecewise([lambda x: x.repeat(2)], lambda x: 0)
    for ties in TIE_RULES:
        f = compose_piecewise([f0, max_piecewise(2, ties)])
        assert f(vec([-2.0])).item() == -2.0
        assert f.associated_gradient(vec([-2.0])).tolist() == [1.0]
    with pytest.raises(ValueError, match="compose_piecewise: `layers` must hold at least one Piecewise"):
        compose_piecewise([])
    with pytest.raises(TypeError, match=r"compose_piecewise: `layers\[1\]` must be a Piecewise, "
                                        r"got builtin_function_or_method"):
        compose_piecewise([f0, torch.relu])
    with pytest.raises(ValueError, match="compose_piecewise: `layers` gives 177147 pieces"):
        compose_piecewise([relu_layer_piecewise(10), relu_layer_piecewise(1)])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_network_representation_is_what_autograd_computes(seed):
    """Cor 2 at kinks: the product of associated Jacobians (z = 0, first rule) is jacrev's."""
    net = random_network([3, 4, 4, 2], pool=2, seed=seed, integer=True)
    layers = network_layers(net)
    small = random_network([2, 4, 1], pool=2, seed=seed, integer=True)
    whole = compose_piecewise(network_layers(small))
    for x in integer_points(4, 3, seed=seed):
        assert torch.equal(chain_jacobian(layers, x), jacrev(net)(x))
    for x in integer_points(4, 2, seed=seed):
        assert torch.equal(whole(x), small(x))
        assert torch.equal(whole.associated_gradient(x), associated_gradient(lambda v: small(v).sum(), x))


def test_network_layers_z_matters_only_where_a_zero_reaches_the_output():
    net = random_network([2, 3, 1], seed=0, integer=True)
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3, 2))
        net[0].bias.zero_()
        net[2].weight.fill_(1.0)
    one = network_layers(net, z=1.0)
    assert chain_jacobian(one, vec([0.0, 1.0])).tolist() == [[1.0, 1.0]]      # y_1 = 0, y_3 = 0
    assert jacrev(net)(vec([0.0, 1.0])).tolist() == [[0.0, 1.0]]               # PyTorch: z = 0
    assert chain_jacobian(one, vec([0.5, 1.0])).tolist() == [[1.0, 1.0]]      # y_3 = 0 has weight 0
    assert jacrev(net)(vec([0.5, 1.0])).tolist() == [[1.0, 1.0]]


def test_network_layers_errors():
    with pytest.raises(TypeError, match=r"network_layers: `net\[1\]` must be nn.Linear, nn.ReLU or "
                                        r"VectorMaxPool, got Tanh"):
        network_layers(nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    with pytest.raises(ValueError, match="network_layers: `net` must start with nn.Linear, got ReLU"):
        network_layers(nn.Sequential(nn.ReLU(), nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="network_layers: `ties` must be one of"):
        network_layers(nn.Sequential(nn.Linear(2, 2)), ties="middle")
    with pytest.raises(TypeError, match="network_layers: `z` must be a real number, got str"):
        network_layers(nn.Sequential(nn.Linear(2, 2)), z="0")


# --- count_kinks ----------------------------------------------------------------------------

def test_count_kinks_hand_made_network():
    net = nn.Sequential(nn.Linear(2, 6, dtype=F64), nn.ReLU(), VectorMaxPool(2), nn.Linear(3, 1, dtype=F64))
    with torch.no_grad():
        net[0].weight.copy_(vec([[1, 0], [0, 1], [1, 1], [1, -1], [-1, 0], [0, -1]]))
        net[0].bias.zero_()
    # pre-activations (0, -1, -1, 1, 0, 1): two zeros; windows (0, 0) tie at 0 (dead), (0, 1), (0, 1)
    assert count_kinks(net, vec([0.0, -1.0])) == KinkCount(relu=2, pool=0, dead=1)
    # pre-activations (1, 1, 2, 0, -1, -1): one zero; (1, 1) live tie, (2, 0), (0, 0) dead tie
    assert count_kinks(net, vec([1.0, 1.0])) == KinkCount(relu=1, pool=1, dead=1)
    assert count_kinks(net, vec([2.0, 1.0])) == KinkCount(relu=0, pool=0, dead=1)
    batch = count_kinks(net, vec([[0.0, -1.0], [1.0, 1.0], [2.0, 3.0]]))
    assert (batch.relu, batch.pool, batch.dead, batch.total) == (3, 1, 3, 4)


def test_count_kinks_ties_at_zero_without_relu_are_live():
    net = nn.Sequential(nn.Linear(2, 2, dtype=F64), VectorMaxPool(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2, dtype=F64))
        net[0].bias.zero_()
    assert count_kinks(net, vec([0.0, 0.0])) == KinkCount(relu=0, pool=1, dead=0)


def test_count_kinks_generic_points_have_no_live_kinks():
    net = random_network([3, 8, 8, 1], pool=2, seed=1)
    counts = count_kinks(net, torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(0)))
    assert (counts.relu, counts.pool, counts.total) == (0, 0, 0)
    assert counts.dead > 0   # dead windows fill a set of positive measure


def test_network_constructor_errors():
    with pytest.raises(TypeError, match="VectorMaxPool: `kernel` must be an int, got float"):
        VectorMaxPool(2.0)
    with pytest.raises(ValueError, match=r"random_network: `pool` must be >= 0, got -2"):
        random_network([2, 4, 1], pool=-2)
    with pytest.raises(TypeError, match=r"random_network: `pool` must be an int, got str"):
        random_network([2, 4, 1], pool="2")
    with pytest.raises(TypeError, match=r"random_network: `widths` must be an int, got bool"):
        random_network([2, True])
    with pytest.raises(ValueError, match=r"random_network: `widths` must be >= 1, got 0"):
        random_network([2, 0, 1])
    with pytest.raises(ValueError, match=r"random_network: `widths` must hold >= 2 entries"):
        random_network([2])


def test_count_kinks_errors():
    with pytest.raises(TypeError, match="count_kinks: `x` must be a torch.Tensor, got list"):
        count_kinks(random_network([2, 1]), [0.0, 0.0])
    with pytest.raises(TypeError, match=r"count_kinks: `net\[1\]` must be nn.Linear, nn.ReLU or "
                                        r"VectorMaxPool, got Sigmoid"):
        count_kinks(nn.Sequential(nn.Linear(2, 2, dtype=F64), nn.Sigmoid()), torch.zeros(2, dtype=F64))
