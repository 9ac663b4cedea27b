"""relu_z (Sec 4.1) and the appendix regularizations abs_eps / abs_shift_eps (eqs 23-24)."""

import math

import pytest
import torch
from torch.func import grad, jvp, vmap

from mtlib import abs_eps, abs_shift_eps, relu_z


@pytest.mark.parametrize("z", [0.0, 0.5, 1.0, -3.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_z_derivative(z, dtype):
    x = torch.tensor([-2.0, 0.0, 3.0], dtype=dtype, requires_grad=True)
    y = relu_z(x, z)
    assert y.tolist() == [0.0, 0.0, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, z, 1.0]


def test_relu_z_zero_is_pytorch_choice():
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    torch.relu(x).sum().backward()
    assert x.grad.tolist() == vmap(grad(lambda v: relu_z(v, 0.0)))(x.detach()).tolist()


def test_relu_z_zero_matches_torch_relu_at_nan_and_infinities():
    x = torch.tensor([float("nan"), -float("inf"), float("inf"), 0.0], dtype=torch.float64)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    relu_z(ours, 0.0).sum().backward()
    torch.relu(theirs).sum().backward()
    assert ours.grad.tolist() == theirs.grad.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_relu_z_forward_mode_and_gradcheck():
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    _, tangent = jvp(lambda v: relu_z(v, 0.25), (x,), (torch.ones(3, dtype=torch.float64),))
    assert tangent.tolist() == [0.0, 0.25, 1.0]
    xs = torch.tensor([-0.7, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: relu_z(v, 0.3), (xs,))


def test_relu_z_bad_input():
    with pytest.raises(TypeError, match="`z` must be a real number"):
        relu_z(torch.zeros(1), "half")
    with pytest.raises(TypeError, match="floating-point dtype"):
        relu_z(torch.zeros(1, dtype=torch.int64))


def test_abs_regularizations_values_and_kink_slopes():
    x = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    for eps in (1.0, 1e-4, 1e-12):
        assert grad(lambda v, eps=eps: abs_eps(v, eps).sum())(x).item() == 0.0
        slope = grad(lambda v, eps=eps: abs_shift_eps(v, eps).sum())(x).item()
        assert slope == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    assert abs_eps(torch.tensor([3.0], dtype=torch.float64), 16.0).item() == 5.0


def test_abs_regularizations_converge_to_abs():
    x = torch.linspace(-2, 2, 101, dtype=torch.float64)
    errors = [(abs_shift_eps(x, eps) - x.abs()).abs().max().item() for eps in (1e-2, 1e-4, 1e-6)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 3e-3
    assert (abs_eps(x, 1e-8) - x.abs()).abs().max().item() <= 1e-4


@pytest.mark.parametrize("fn", [abs_eps, abs_shift_eps])
def test_eps_must_be_positive(fn):
    with pytest.raises(ValueError, match="`eps` must be > 0"):
        fn(torch.zeros(1), 0.0)
    with pytest.raises(TypeError, match="`eps` must be a real number"):
        fn(torch.zeros(1), "small")
