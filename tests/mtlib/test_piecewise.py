"""Piecewise (Def 1, eqs 6-7), associated_gradient and chain_jacobian (Cor 2, eq 14)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlib import Piecewise, associated_gradient, chain_jacobian, max_first, max_uniform
from mtlib.networks import VectorMaxPool, integer_points, random_network


def relu_pieces(z):
    """Sec 4.1: P1 = (-inf, 0), P2 = (0, inf), P3 = {0} with f3(x) = z x."""
    return Piecewise(
        [lambda x: 0 * x, lambda x: x, lambda x: z * x],
        lambda x: 0 if x < 0 else (1 if x > 0 else 2),
    )


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, 7.0])
def test_relu_representation_value_and_associated_derivative(z):
    relu = relu_pieces(z)
    for x, slope in [(-1.5, 0.0), (0.0, z), (2.0, 1.0)]:
        x = torch.tensor(x, dtype=torch.float64)
        assert relu(x).item() == torch.relu(x).item()
        assert relu.associated_gradient(x).item() == slope


def test_max_representation_eq17_matches_autograd_of_max1():
    from mtlib.examples import max1

    def select(x):  # eq 17: the first index alpha with x_alpha >= all later entries and > all earlier
        return int(torch.nonzero(x == x.max())[0, 0])

    rep = Piecewise([lambda x, i=i: x[i] for i in range(4)], select)
    for x in ([0.0, 0.0, 0.0, 0.0], [1.0, 3.0, 3.0, 2.0], [5.0, 1.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0]):
        x = torch.tensor(x, dtype=torch.float64)
        assert rep(x).item() == max1(x).item()
        assert torch.equal(rep.associated_gradient(x), associated_gradient(max1, x))


def test_associated_jacobian_vector_output():
    rep = Piecewise([lambda x: torch.stack([x[0], 2 * x[1]])], lambda x: 0)
    jac = rep.associated_jacobian(torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert jac.tolist() == [[1.0, 0.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match="scalar-valued"):
        rep.associated_gradient(torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_piecewise_bad_input():
    with pytest.raises(ValueError, match="`pieces` must hold"):
        Piecewise([], lambda x: 0)
    with pytest.raises(TypeError, match=r"`pieces\[1\]` must be callable"):
        Piecewise([abs, 3], lambda x: 0)
    with pytest.raises(TypeError, match="`select` must be callable"):
        Piecewise([abs], 0)
    rep = Piecewise([lambda x: x], lambda x: 4)
    with pytest.raises(ValueError, match=r"piece index in range\(1\), got 4"):
        rep(torch.zeros(()))
    with pytest.raises(TypeError, match="floating-point"):
        rep(torch.zeros((), dtype=torch.int32))


def test_associated_gradient_of_torch_ops_at_kinks():
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert associated_gradient(torch.relu, zero).item() == 0.0
    assert associated_gradient(torch.abs, zero).item() == 0.0
    x = torch.zeros(4, dtype=torch.float64)
    assert associated_gradient(torch.max, x).tolist() == [0.25] * 4
    assert associated_gradient(lambda v: torch.tensor(3.0), x).tolist() == [0.0] * 4


def test_associated_gradient_bad_input():
    with pytest.raises(ValueError, match="one-element tensor"):
        associated_gradient(lambda v: v * 2, torch.zeros(3))
    with pytest.raises(TypeError, match="`f` must be callable"):
        associated_gradient(None, torch.zeros(3))


def test_chain_jacobian_example_2_2_every_rule():
    """Eq 16: grad S0(f0(x)) W0 = 1 on the diagonal, whatever the tie rule."""
    duplicate = lambda t: t.repeat(2)  # noqa: E731  f0(x) = (x, x), W0 = (1, 1)
    for rule in (max_first, max_uniform):
        for x in (-1.0, 0.0, 2.5):
            jac = chain_jacobian([duplicate, rule], torch.tensor([x], dtype=torch.float64))
            assert jac.tolist() == [1.0]


def test_chain_jacobian_uses_piecewise_representation():
    x = torch.tensor(0.0, dtype=torch.float64)
    jac = chain_jacobian([lambda t: 3 * t, relu_pieces(0.5)], x)
    assert jac.item() == 1.5


def test_chain_jacobian_bad_input():
    with pytest.raises(ValueError, match="`layers` must hold"):
        chain_jacobian([], torch.zeros(2))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from([2, 4]),
    st.integers(1, 2),
    st.sampled_from([0, 2]),
    st.integers(0, 10_000),
)
def test_cor2_chain_jacobian_equals_autograd_at_kinks(d_in, width, depth, pool, seed):
    net = random_network([d_in] + [width] * depth + [2], pool=pool, seed=seed, integer=True)
    for x in integer_points(6, d_in, seed=seed):
        expected = torch.autograd.functional.jacobian(net, x)
        assert torch.equal(chain_jacobian(net, x), expected)


def test_networks_helpers():
    net = random_network([2, 4, 1], pool=2, seed=3, integer=True)
    assert isinstance(net[2], VectorMaxPool)
    assert set(net[0].weight.unique().tolist()) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    with pytest.raises(ValueError, match="must divide"):
        random_network([2, 3, 1], pool=2)
    with pytest.raises(ValueError, match="`widths`"):
        random_network([2])
    with pytest.raises(ValueError, match="`kernel`"):
        VectorMaxPool(0)
    with pytest.raises(ValueError, match="`high`"):
        integer_points(1, 2, low=3, high=1)
