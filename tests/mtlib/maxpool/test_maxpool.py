"""Tie-aware max pooling (mtlib.maxpool): parity with PyTorch, the paper's numbers, tie rules,
NaN, padding, exact integer tie counts, determinism, errors, torch.library / func / compile."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_same, pool_and_grad, pool_oracle, strided_windows, ties_input

from mtlib.maxpool import MaxPool1d, MaxPool2d, max_pool1d, max_pool2d, window_tie_counts
from mtlib.maxpool._geometry import pool_axes

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
RULES = ("first", "last", "uniform")
# (kernel, stride, padding, dilation, ceil_mode) for 2-d pools, as pairs.
GEOMETRIES_2D = [
    ((2, 2), (2, 2), (0, 0), (1, 1), False),
    ((3, 3), (2, 2), (1, 1), (1, 1), False),
    ((3, 3), (1, 1), (0, 0), (1, 1), False),
    ((3, 2), (2, 1), (1, 1), (1, 2), True),
    ((2, 3), (3, 2), (1, 0), (2, 1), True),
    ((1, 3), (1, 3), (0, 1), (1, 1), True),
    ((3, 3), (3, 3), (1, 1), (2, 2), False),
]
GEOMETRIES_1D = [(2, 2, 0, 1, False), (3, 2, 1, 1, False), (3, 1, 1, 2, True), (2, 3, 1, 1, True)]


def oracle(x, g, kernel, stride, padding, dilation, ceil_mode, ties):
    """:func:`helpers.pool_oracle` on 4-d ``x`` with a 2-d pool's windows: (out, grad, counts).
    (Only the output sizes come from mtlib's geometry; they are checked against PyTorch's.)"""
    axes = pool_axes(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
    windows = [strided_windows(ax.size, k, s, p, d, ax.out) for ax, k, s, p, d in
               zip(axes, kernel, stride, padding, dilation)]
    return pool_oracle(x, g, windows, ties)[:3]


# --- the paper's numbers ----------------------------------------------------------------------

@pytest.mark.parametrize("ties, expected", [("first", -3.0), ("last", 3.0), ("uniform", 0.0)])
def test_sec44_table3_derivative_at_zero(ties, expected):
    """Sec 4.4: f(t) = maxpool1d(t, 4t) - maxpool1d(4t, t) is null; f'(0) is -3 with PyTorch's
    rule (Table 3), its mirror +3 with "last", and the true 0 with the uniform rule."""
    def fprime(t0):
        t = torch.tensor([t0], dtype=torch.float64, requires_grad=True)
        pool = MaxPool1d(2, stride=1, ties=ties)
        f = pool(torch.cat([t, 4 * t]).view(1, 2)) - pool(torch.cat([4 * t, t]).view(1, 2))
        return torch.autograd.grad(f.sum(), t)[0].item()

    assert fprime(0.0) == expected
    for t0 in (-1.0, -0.5, -0.01, 0.01, 0.5, 1.0):
        assert fprime(t0) == 0.0


@pytest.mark.parametrize("ties, expected", [
    ("first", [[1.0, 0.0], [0.0, 0.0]]),
    ("last", [[0.0, 0.0], [0.0, 1.0]]),
    ("uniform", [[0.25, 0.25], [0.25, 0.25]]),  # eq 21 on one window
])
def test_single_window_of_zeros(ties, expected):
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    max_pool2d(x, 2, ties=ties).backward()
    assert x.grad[0, 0].tolist() == expected


def test_overlapping_windows_add_their_shares():
    x = torch.zeros(1, 1, 3, 3, requires_grad=True)
    max_pool2d(x, 2, stride=1, ties="uniform").sum().backward()
    assert x.grad[0, 0].tolist() == [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]


# --- parity with PyTorch and with the definitions ---------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES_2D)
@pytest.mark.parametrize("dtype", DTYPES)
def test_2d_matches_torch_and_definitions(geometry, dtype):
    x = ties_input((2, 3, 7, 8), dtype, seed=1, nan=True)
    ref = F.max_pool2d(x, *geometry)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    _, torch_grad = pool_and_grad(F.max_pool2d, x, g, *geometry)
    for ties in RULES:
        out, grad, counts = oracle(x, g, *geometry, ties)
        assert_same(out, ref)
        for backend in ("auto", "torch"):
            y, gx = pool_and_grad(max_pool2d, x, g, *geometry, ties=ties, backend=backend)
            assert_same(y, ref)
            assert_same(gx, grad)
            if ties == "first":
                assert_same(gx, torch_grad)
        assert torch.equal(window_tie_counts(x, *geometry, backend="torch"), counts)


@pytest.mark.parametrize("geometry", GEOMETRIES_1D)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_1d_matches_torch_and_definitions(geometry, dtype):
    x = ties_input((3, 2, 11), dtype, seed=3, nan=True)
    ref = F.max_pool1d(x, *geometry)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    _, torch_grad = pool_and_grad(F.max_pool1d, x, g, *geometry)
    k, s, p, d, cm = geometry
    for ties in RULES:
        out, grad, _ = oracle(x.unsqueeze(2), g.unsqueeze(2), (1, k), (1, s), (0, p), (1, d),
                              cm, ties)
        for backend in ("auto", "torch"):
            y, gx = pool_and_grad(max_pool1d, x, g, *geometry, ties=ties, backend=backend)
            assert_same(y, ref)
            assert_same(gx, grad.squeeze(2))
            if ties == "first":
                assert_same(gx, torch_grad)


@pytest.mark.parametrize("ties", RULES)
def test_unbatched_channels_last_and_strided_inputs(ties):
    x = ties_input((2, 3, 8, 9), seed=5)
    g = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y, gx = pool_and_grad(max_pool2d, x, g, 3, 2, 1, ties=ties, backend="torch")
    for variant in (x.to(memory_format=torch.channels_last),
                    x.transpose(2, 3).contiguous().transpose(2, 3)):
        assert_same(pool_and_grad(max_pool2d, variant, g, 3, 2, 1, ties=ties)[1], gx)
    for b in range(2):
        yb, gxb = pool_and_grad(max_pool2d, x[b], g[b], 3, 2, 1, ties=ties)
        assert_same(yb, y[b])
        assert_same(gxb, gx[b])
    y1, gx1 = pool_and_grad(max_pool1d, x[0, :, 0], g[0, :, 0], 3, 2, 1, ties=ties)
    assert y1.shape == (3, 5) and gx1.shape == (3, 9)


@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((2, 2, 7, 7), 3, 2, 1), ((1, 3, 6, 8), 2, 2, 0), ((2, 1, 5, 9), (3, 1), (1, 2), (1, 0))])
def test_last_is_the_mirror_image_of_torch_first(shape, kernel, stride, padding):
    """Flipping both spatial axes reverses the window scan order (these geometries are symmetric:
    the windows of the flipped input are the flipped windows), so "last" is PyTorch's rule on the
    flipped input, flipped back, NaN included. (Integer upstream gradients keep the sums exact:
    flipping also reverses the order in which overlapping windows add up.)"""
    x = ties_input(shape, seed=6, nan=True)
    y = F.max_pool2d(x, kernel, stride, padding)
    g = ties_input(y.shape, seed=7) * 3 + 1
    flip = (2, 3)
    _, torch_grad = pool_and_grad(F.max_pool2d, x.flip(flip), g.flip(flip), kernel, stride,
                                  padding)
    _, grad = pool_and_grad(max_pool2d, x, g, kernel, stride, padding, ties="last")
    assert_same(grad, torch_grad.flip(flip))


# --- NaN, padding, indices --------------------------------------------------------------------

@pytest.mark.parametrize("ties, expected", [
    ("first", [0.0, 0.0, 1.0, 0.0]), ("last", [0.0, 1.0, 0.0, 0.0]),
    ("uniform", [0.0, 0.5, 0.5, 0.0])])
def test_nan_window_outputs_nan_and_sends_gradient_to_nan_entries(ties, expected):
    x = torch.tensor([[1.0, float("nan"), float("nan"), 0.0]], requires_grad=True)
    y = max_pool1d(x, 4, ties=ties)
    assert y.isnan().all()
    y.backward()
    assert x.grad[0].tolist() == expected
    if ties == "first":
        xt = x.detach().clone().requires_grad_()
        F.max_pool1d(xt, 4).backward()
        assert x.grad.tolist() == xt.grad.tolist()


@pytest.mark.parametrize("ties", RULES)
def test_padding_is_never_a_tie_nor_receives_gradient(ties):
    """With -inf inputs the padding (implicit -inf) would tie with them: it must not count."""
    x = torch.full((1, 1, 3, 3), float("-inf"), dtype=torch.float64)
    geometry = (3, 2, 1, 1, True)
    assert window_tie_counts(x, *geometry).tolist() == [[[[4, 4], [4, 4]]]]
    g = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    y, gx = pool_and_grad(max_pool2d, x, g, *geometry, ties=ties)
    assert_same(y, F.max_pool2d(x, *geometry))
    assert gx.sum().item() == 4.0
    assert_same(gx, oracle(x, g, (3, 3), (2, 2), (1, 1), (1, 1), True, ties)[1])


@pytest.mark.parametrize("ties", RULES)
def test_window_entirely_in_padding(ties):
    """k=2, padding 1, dilation 2 on a length-1 input: the window {-1, 1} is all padding. The
    output is -inf like PyTorch's; it sends no gradient (PyTorch's index points outside)."""
    x = torch.tensor([[[3.0]]], requires_grad=True)
    y = max_pool1d(x, 2, 1, 1, 2, ties=ties)
    assert y.tolist() == F.max_pool1d(x.detach(), 2, 1, 1, 2).tolist() == [[[float("-inf")]]]
    y.backward()
    assert x.grad.tolist() == [[[0.0]]]
    assert window_tie_counts(x.unsqueeze(2), (1, 2), 1, (0, 1), (1, 2)).tolist() == [[[[0]]]]
    if ties != "uniform":
        assert max_pool1d(x, 2, 1, 1, 2, return_indices=True, ties=ties)[1].tolist() == [[[-1]]]


def test_return_indices():
    x = ties_input((2, 3, 7, 6), seed=7, nan=True)
    for geometry in GEOMETRIES_2D:
        y, idx = max_pool2d(x, *geometry, return_indices=True, ties="first", backend="torch")
        ty, tidx = F.max_pool2d(x, *geometry, return_indices=True)
        assert_same(y, ty)
        assert torch.equal(idx, tidx)
    x1 = torch.tensor([[[0.0, 2.0, 2.0, 1.0, 2.0]]])
    assert max_pool1d(x1, 3, 2, ties="last", return_indices=True)[1].tolist() == [[[2, 4]]]
    assert max_pool1d(x1, 3, 2, ties="first", return_indices=True)[1].tolist() == [[[1, 2]]]
    pool = MaxPool2d(2, return_indices=True, ties="last")
    assert pool(torch.zeros(1, 2, 2))[1].tolist() == [[[3]]]


# --- exact integer tie counts, determinism ----------------------------------------------------

@pytest.mark.parametrize("dtype, n", [(torch.float16, 3001), (torch.bfloat16, 301)])
def test_many_ties_in_16_bit_windows(dtype, n):
    """A float count would be wrong here: 3001 is not a float16, 301 not a bfloat16."""
    assert torch.tensor(float(n), dtype=dtype).item() != n
    x = torch.full((1, 1, n), 0.5, dtype=dtype, requires_grad=True)
    assert window_tie_counts(x.detach().unsqueeze(2), (1, n)).item() == n
    g = torch.tensor([[[1.0]]], dtype=dtype)
    max_pool1d(x, n, ties="uniform").backward(g)
    assert torch.equal(x.grad, torch.full_like(x, (1.0 / torch.tensor(n, dtype=torch.float32))
                                           .to(dtype).item()))
    assert abs(x.grad.float().sum().item() - 1.0) < 1e-2


@pytest.mark.parametrize("ties", ("last", "uniform"))
def test_two_backward_passes_are_bit_identical(ties):
    x = ties_input((4, 8, 17, 17), torch.float32, seed=8)
    g = torch.randn(4, 8, 15, 15)
    grads = [pool_and_grad(max_pool2d, x, g, 3, 1, ties=ties)[1] for _ in range(2)]
    assert torch.equal(grads[0].view(torch.int32), grads[1].view(torch.int32))


def test_window_tie_counts_example_and_no_grad():
    x = torch.tensor([[[[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]]]], requires_grad=True)
    counts = window_tie_counts(x, 2, stride=1)
    assert counts.dtype == torch.int32 and not counts.requires_grad
    assert counts.tolist() == [[[[3, 1]]]]
    assert window_tie_counts(x[0], (1, 2)).tolist() == [[[2], [1]]]


def test_empty_batch():
    x = torch.zeros(0, 2, 4, 4, requires_grad=True)
    y = max_pool2d(x, 2, ties="uniform")
    assert y.shape == (0, 2, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda: max_pool2d(torch.zeros(2, 2), 2), ValueError, "`input` must be 3-d or 4-d"),
    (lambda: max_pool1d(torch.zeros(1, 1, 1, 4), 2), ValueError, "`input` must be 2-d or 3-d"),
    (lambda: max_pool2d(torch.zeros(1, 0, 4, 4), 2), ValueError, "non-empty channel"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4, dtype=torch.int64), 2), TypeError,
     "`input` must have a floating-point dtype"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4, dtype=torch.float8_e4m3fn), 2), TypeError,
     "`input` must have a floating-point dtype (float16, bfloat16"),
    (lambda: max_pool2d([[1.0]], 2), TypeError, "`input` must be a torch.Tensor"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 0), ValueError, "`kernel_size` must be > 0, got 0"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 2, stride=(1, 0)), ValueError,
     "`stride` must be > 0, got 0"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 2, dilation=-1), ValueError,
     "`dilation` must be > 0"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 2.5), TypeError,
     "`kernel_size` must be an int or a tuple of 2 ints"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), (2, 2, 2)), TypeError, "`kernel_size` must be"),
    (lambda: max_pool1d(torch.zeros(1, 4), 2, stride=True), TypeError, "`stride` must be"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 3, padding=2), ValueError,
     "`padding` must be at most half of `kernel_size`"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 3, padding=-1), ValueError,
     "`padding` must be >= 0"),
    (lambda: max_pool2d(torch.zeros(1, 2, 5), 3), ValueError,
     "`input` of spatial size (2, 5) is too small"),
    (lambda: max_pool1d(torch.zeros(1, 4), 3, dilation=2), ValueError,
     "the output size would be (0,)"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 2, ties="mean"), ValueError,
     "`ties` must be one of ('first', 'last', 'uniform'), got 'mean'"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 2, return_indices=True, ties="uniform"),
     ValueError, "`return_indices` needs one selected entry per window"),
    (lambda: max_pool2d(torch.zeros(1, 4, 4), 2, backend="cuda"), ValueError,
     "`backend` must be one of ('auto', 'torch', 'triton')"),
    (lambda: MaxPool2d(2, padding=2), ValueError, "MaxPool2d: `padding` must be at most half"),
    (lambda: MaxPool1d(0), ValueError, "MaxPool1d: `kernel_size` must be > 0"),
    (lambda: window_tie_counts(torch.zeros(4, 4), 2), ValueError,
     "window_tie_counts: `input` must be 3-d or 4-d"),
])
def test_errors_name_the_argument(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter enabled")
def test_triton_backend_on_cpu_needs_the_interpreter():
    with pytest.raises(ValueError, match="backend='triton' runs on CUDA tensors"):
        max_pool2d(torch.zeros(1, 4, 4), 2, ties="uniform", backend="triton")


# --- modules, torch.library, torch.func, torch.compile, gradcheck ------------------------------

def test_modules_match_the_functions():
    x = ties_input((2, 3, 8, 8), seed=9)
    pool = MaxPool2d(3, 2, 1, ties="uniform")
    assert repr(pool) == ("MaxPool2d(kernel_size=3, stride=2, padding=1, dilation=1, "
                          "ceil_mode=False, ties='uniform')")
    assert_same(pool(x), max_pool2d(x, 3, 2, 1, ties="uniform"))
    assert_same(MaxPool1d(2, ceil_mode=True, ties="last")(x[0]),
                max_pool1d(x[0], 2, ceil_mode=True, ties="last"))
    assert_same(max_pool2d(x, 2, stride=[], ties="uniform"), F.max_pool2d(x, 2, stride=[]))


# torch 2.14's opcheck reads .grad of its own non-leaf copies of the inputs (meta_utils.safe_grad)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_torch_library_opcheck():
    x = ties_input((2, 3, 1, 5, 6), seed=10).requires_grad_()
    for ties in RULES:
        args = ([1, 2, 2], [1, 1, 2], [0, 1, 0], [1, 1, 1], True, [], ties)
        torch.library.opcheck(torch.ops.mtlib.max_pool_ties.default, (x, *args))
        out, aux = torch.ops.mtlib.max_pool_ties(x.detach(), *args)
        g = torch.randn_like(out).requires_grad_()
        v = torch.randn_like(x).requires_grad_()
        torch.library.opcheck(torch.ops.mtlib.max_pool_ties_backward.default,
                              (g, x.detach(), out, aux, *args))
        torch.library.opcheck(torch.ops.mtlib.max_pool_ties_tangent.default,
                              (v, x.detach(), out, aux, *args))


@pytest.mark.parametrize("ties", RULES)
def test_torch_func_grad_jacrev_jacfwd_and_double_backward(ties):
    x = ties_input((2, 5, 6), seed=11)

    def f(x):
        return max_pool2d(x, 3, 2, 1, ties=ties, backend="torch")

    g = torch.randn(f(x).shape, dtype=torch.float64)
    assert_same(torch.func.grad(lambda x: (f(x) * g).sum())(x), pool_and_grad(f, x, g)[1])
    jac = torch.func.jacrev(f)(x)
    assert_same(jac, torch.func.jacfwd(f)(x))
    torch.testing.assert_close(torch.einsum("abcijk,abc->ijk", jac, g), pool_and_grad(f, x, g)[1])
    xr = torch.randn(x.shape, dtype=torch.float64, requires_grad=True)  # no ties: finite
    assert torch.autograd.gradgradcheck(f, (xr,), (g.requires_grad_(),))  # differences hold


@pytest.mark.parametrize("ties", RULES)
def test_gradcheck_away_from_ties(ties):
    """Off the tie set all rules give the true gradient (Cor 1)."""
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: max_pool2d(x, 3, 2, 1, ties=ties), (x,))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.filterwarnings(  # raised by Dynamo itself for any autograd.Function (torch 2.13)
    "ignore:<class 'torch.autograd.function.Function'> should not be instantiated")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inductor's own
def test_torch_compile_fullgraph(backend):
    x = ties_input((2, 3, 7, 7), seed=12)

    def loss(x):
        return (max_pool2d(x, 3, 2, 1, ties="uniform") ** 2).sum() + max_pool1d(
            x[0], 2, ties="last").sum()

    compiled = torch.compile(loss, fullgraph=True, backend=backend)
    xg, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert_same(compiled(xc), loss(xg))
    loss(xg).backward()
    compiled(xc).backward()
    assert_same(xc.grad, xg.grad)
