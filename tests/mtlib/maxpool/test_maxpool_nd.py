"""max_pool3d and the adaptive max pools (issue 13): PyTorch parity, brute-force window oracles,
tie rules, NaN, indices, determinism, errors, modules, torch.library / func / compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    adaptive_windows,
    assert_same,
    pool_and_grad,
    pool_oracle,
    strided_windows,
    ties_input,
)
from torch.utils.checkpoint import checkpoint

from mtlib.maxpool import (
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    MaxPool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    adaptive_tie_counts,
    max_pool2d,
    max_pool3d,
    window_tie_counts3d,
)
from mtlib.maxpool._geometry import adaptive_axis

RULES = ("first", "last", "uniform")
ADAPTIVE = {1: adaptive_max_pool1d, 2: adaptive_max_pool2d, 3: adaptive_max_pool3d}
NATIVE_ADAPTIVE = {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}
# (kernel, stride, padding, dilation, ceil_mode) of 3-d pools
GEOMETRIES_3D = [
    (2, 2, 0, 1, False),
    (3, 2, 1, 1, False),
    ((1, 3, 2), (1, 1, 2), (0, 1, 1), (1, 1, 1), True),
    ((2, 2, 3), (2, 1, 2), (1, 0, 1), (2, 1, 1), True),
    ((1, 3, 2), (1, 2, 1), (0, 1, 1), (1, 1, 1), True),  # a depth window of one entry
    (3, 3, 1, 2, False),
]


def triple(v):
    return tuple(v) if isinstance(v, tuple) else (v,) * 3


def oracle(x, g, windows, ties):
    """:func:`helpers.pool_oracle` without the indices: (out, grad, counts)."""
    return pool_oracle(x, g, windows, ties)[:3]


# --- geometry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size, out", [(5, 3), (7, 7), (3, 5), (10, 4), (1, 3), (6, 1)])
def test_adaptive_axis_is_pytorchs_windows(size, out):
    ax = adaptive_axis(size, out)
    windows = adaptive_windows(size, out)
    assert [list(range(ax.start(o), ax.end(o))) for o in range(out)] == windows
    assert ax.kernel == max(len(w) for w in windows)
    assert ax.readers == max(sum(p in w for w in windows) for p in range(size))
    idx = ax.window_indices().tolist()
    assert [[i for i in row if i >= 0] for row in idx] == windows


# --- max_pool3d ---------------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES_3D)
@pytest.mark.parametrize("dtype", (torch.float64, torch.bfloat16))
def test_3d_matches_torch_and_definitions(geometry, dtype):
    x = ties_input((1, 2, 5, 6, 7), dtype, seed=1, nan=True)
    ref = F.max_pool3d(x, *geometry)
    g = torch.randint(-4, 5, ref.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    _, torch_grad = pool_and_grad(F.max_pool3d, x, g, *geometry)
    kernel, stride, padding, dilation = (triple(v) for v in geometry[:4])
    windows = [strided_windows(L, *a, n) for L, *a, n in
               zip(x.shape[2:], kernel, stride, padding, dilation, ref.shape[2:])]
    for ties in RULES:
        out, grad, counts = oracle(x, g, windows, ties)
        assert_same(out, ref)
        y, gx = pool_and_grad(max_pool3d, x, g, *geometry, ties=ties, backend="torch")
        assert_same(y, ref)
        assert_same(gx, grad)
        if ties == "first":
            assert_same(gx, torch_grad)
            assert_same(pool_and_grad(max_pool3d, x, g, *geometry)[1], torch_grad)
    assert torch.equal(window_tie_counts3d(x, *geometry, backend="torch"), counts)


def test_3d_return_indices_unbatched_and_layouts():
    x = ties_input((2, 3, 5, 6, 6), seed=3, nan=True)
    for geometry in GEOMETRIES_3D:
        y, idx = max_pool3d(x, *geometry, return_indices=True, backend="torch")
        ty, tidx = F.max_pool3d(x, *geometry, return_indices=True)
        assert_same(y, ty)
        assert torch.equal(idx, tidx)
    g = torch.randn(F.max_pool3d(x, 3, 2, 1).shape, dtype=x.dtype)
    for ties in RULES:
        _, gx = pool_and_grad(max_pool3d, x, g, 3, 2, 1, ties=ties)
        for variant in (x.to(memory_format=torch.channels_last_3d), x.transpose(2, 4)
                        .contiguous().transpose(2, 4)):
            assert_same(pool_and_grad(max_pool3d, variant, g, 3, 2, 1, ties=ties)[1], gx)
        assert_same(pool_and_grad(max_pool3d, x[1], g[1], 3, 2, 1, ties=ties)[1], gx[1])


def test_3d_last_is_the_mirror_of_torch_first():
    """Flipping the three spatial axes reverses the scan (symmetric geometry, integer g)."""
    x = ties_input((1, 2, 5, 5, 7), seed=4, nan=True)
    g = ties_input(F.max_pool3d(x, 3, 2, 1).shape, seed=5) * 3 + 1
    flip = (2, 3, 4)
    _, ref = pool_and_grad(F.max_pool3d, x.flip(flip), g.flip(flip), 3, 2, 1)
    assert_same(pool_and_grad(max_pool3d, x, g, 3, 2, 1, ties="last")[1], ref.flip(flip))


def test_video_like_uniform_split():
    """A (frames, H, W) clip where two frames are equal: the uniform rule splits each window's
    gradient between the two frames (and among equal pixels), conserving its mass."""
    frame = torch.tensor([[1.0, 2.0], [2.0, 0.0]])
    clip = torch.stack([frame, frame]).view(1, 1, 2, 2, 2).requires_grad_()
    max_pool3d(clip, 2, ties="uniform").backward()
    assert clip.grad.flatten().tolist() == [0, 0.25, 0.25, 0, 0, 0.25, 0.25, 0]


# --- adaptive pools -----------------------------------------------------------------------------

ADAPTIVE_CASES = [  # (input shape, output_size)
    ((2, 2, 7), 3), ((1, 3, 5), 5), ((2, 1, 3), 5),
    ((1, 2, 5, 7), (3, 4)), ((2, 2, 6, 4), (4, None)), ((1, 2, 2, 3), 1),
    ((1, 2, 4, 5, 3), (3, 2, 2)), ((1, 1, 3, 3, 5), (5, 1, 3)),
]


@pytest.mark.parametrize("shape, output_size", ADAPTIVE_CASES)
def test_adaptive_matches_torch_and_definitions(shape, output_size):
    n = len(shape) - 2
    x = ties_input(shape, seed=6, nan=True)
    ref = NATIVE_ADAPTIVE[n](x, output_size)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    _, torch_grad = pool_and_grad(NATIVE_ADAPTIVE[n], x, g, output_size)
    windows = [adaptive_windows(L, o) for L, o in zip(shape[2:], ref.shape[2:])]
    for ties in RULES:
        out, grad, counts = oracle(x, g, windows, ties)
        assert_same(out, ref)
        y, gx = pool_and_grad(ADAPTIVE[n], x, g, output_size, ties=ties, backend="torch")
        assert_same(y, ref)
        assert_same(gx, grad)
        if ties == "first":
            assert_same(gx, torch_grad)
        else:
            idx_ok = ties == "last"
            if idx_ok:
                _, idx = ADAPTIVE[n](x, output_size, True, ties=ties, backend="torch")
                assert idx.shape == ref.shape
    sizes = output_size if isinstance(output_size, tuple) else (output_size,) * n
    assert torch.equal(adaptive_tie_counts(x, sizes, backend="torch"), counts)
    y, idx = ADAPTIVE[n](x, output_size, True, backend="torch")
    assert torch.equal(idx, NATIVE_ADAPTIVE[n](x, output_size, True)[1])


def test_adaptive_16_bit_and_determinism():
    x = ties_input((2, 3, 9, 11), torch.bfloat16, seed=8)
    g = torch.randint(-3, 4, (2, 3, 4, 5)).to(torch.bfloat16)
    windows = [adaptive_windows(9, 4), adaptive_windows(11, 5)]
    for ties in RULES:
        grads = [pool_and_grad(adaptive_max_pool2d, x, g, (4, 5), ties=ties)[1]
                 for _ in range(2)]
        assert torch.equal(grads[0].view(torch.int16), grads[1].view(torch.int16))
        assert_same(grads[0], oracle(x, g, windows, ties)[1])


def test_3d_and_adaptive_backward_bit_identical():
    x = ties_input((2, 4, 6, 9, 9), torch.float32, seed=9)
    for fn, args in ((max_pool3d, (3, 1)), (adaptive_max_pool3d, ((4, 5, 5),))):
        g = torch.randn(fn(x, *args).shape)
        grads = [pool_and_grad(fn, x, g, *args, ties="uniform")[1] for _ in range(2)]
        assert torch.equal(grads[0].view(torch.int32), grads[1].view(torch.int32))


# --- errors, modules ------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda: max_pool3d(torch.zeros(2, 4, 4), 2), ValueError, "`input` must be 4-d or 5-d"),
    (lambda: max_pool3d(torch.zeros(1, 4, 4, 4), (2, 2)), TypeError,
     "`kernel_size` must be an int or a tuple of 3 ints"),
    (lambda: max_pool3d(torch.zeros(1, 4, 4, 4), 3, padding=2), ValueError,
     "max_pool3d: `padding` must be at most half"),
    (lambda: max_pool3d(torch.zeros(1, 1, 4, 4), 2), ValueError, "too small"),
    (lambda: adaptive_max_pool2d(torch.zeros(1, 4, 4), 0), ValueError,
     "adaptive_max_pool2d: `output_size` must be > 0"),
    (lambda: adaptive_max_pool2d(torch.zeros(1, 4, 4), (2, 2, 2)), TypeError,
     "`output_size` must be an int or a tuple of 2 ints"),
    (lambda: adaptive_max_pool1d(torch.zeros(4), 2), ValueError, "`input` must be 2-d or 3-d"),
    (lambda: adaptive_max_pool3d(torch.zeros(1, 2, 2, 2, dtype=torch.int32), 1), TypeError,
     "floating-point"),
    (lambda: adaptive_max_pool2d(torch.zeros(1, 4, 4), 2, True, ties="uniform"), ValueError,
     "`return_indices` needs one selected entry"),
    (lambda: AdaptiveMaxPool3d(2, ties="mean"), ValueError, "AdaptiveMaxPool3d: `ties` must be"),
    (lambda: MaxPool3d(0), ValueError, "MaxPool3d: `kernel_size` must be > 0"),
])
def test_errors_name_the_argument(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_modules_match_the_functions_and_torch():
    x = ties_input((2, 3, 4, 6, 6), seed=10)
    pool = MaxPool3d(3, 2, 1, ties="uniform")
    assert repr(pool).startswith("MaxPool3d(kernel_size=3, stride=2, padding=1")
    assert_same(pool(x), max_pool3d(x, 3, 2, 1, ties="uniform"))
    for n, module in ((1, AdaptiveMaxPool1d), (2, AdaptiveMaxPool2d), (3, AdaptiveMaxPool3d)):
        xin = x.flatten(2, 5 - n)
        assert_same(module(3, ties="last")(xin), NATIVE_ADAPTIVE[n](xin, 3))
        y, idx = module(3, return_indices=True)(xin)
        assert torch.equal(idx, NATIVE_ADAPTIVE[n](xin, 3, True)[1])
    assert repr(AdaptiveMaxPool2d((2, None), ties="uniform")) == (
        "AdaptiveMaxPool2d(output_size=(2, None), ties='uniform')")


# --- torch.library, torch.func, torch.compile ----------------------------------------------------

# torch 2.14's opcheck reads .grad of its own non-leaf copies of the inputs (meta_utils.safe_grad)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "permuted"])
def test_opcheck_3d_and_adaptive(layout):
    """opcheck runs the schema, fake-tensor, autograd-registration and AOT (static and dynamic
    shapes) tests of each op."""
    x = ties_input((2, 3, 4, 5, 6), seed=11)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last_3d)
    elif layout == "permuted":
        x = x.permute(0, 1, 4, 3, 2)
    x = x.requires_grad_()
    for params in (([2, 3, 2], [2, 1, 2], [1, 1, 0], [1, 1, 2], True, []),
                   ([1, 1, 1], [1, 1, 1], [0, 0, 0], [1, 1, 1], False, [3, 2, 4])):
        for ties in ("first", "uniform") if layout == "contiguous" else ("last",):
            args = (*params, ties)
            torch.library.opcheck(torch.ops.mtlib.max_pool_ties.default, (x, *args))
            out, aux = torch.ops.mtlib.max_pool_ties(x.detach(), *args)
            g = torch.randn_like(out).requires_grad_()
            torch.library.opcheck(torch.ops.mtlib.max_pool_ties_backward.default,
                                  (g, x.detach(), out, aux, *args))
            torch.library.opcheck(torch.ops.mtlib.max_pool_ties_tangent.default,
                                  (torch.randn_like(x), x.detach(), out, aux, *args))


@pytest.mark.parametrize("ties", RULES)
def test_torch_func_and_double_backward(ties):
    x = ties_input((1, 3, 4, 4), seed=12)

    def f(x):
        return adaptive_max_pool3d(x, (2, 3, 2), ties=ties, backend="torch") + max_pool3d(
            x, 2, 1, ties=ties, backend="torch")[..., :2, :3, :2]

    g = torch.randn(f(x).shape, dtype=torch.float64)
    assert_same(torch.func.grad(lambda x: (f(x) * g).sum())(x), pool_and_grad(f, x, g)[1])
    jac = torch.func.jacrev(f)(x)
    assert_same(jac, torch.func.jacfwd(f)(x))
    if ties == "uniform":  # off ties every rule is the true gradient: one rule suffices
        xr = torch.randn(x.shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(f, (xr,), (g.requires_grad_(),))


@pytest.mark.filterwarnings(  # raised by Dynamo itself for any autograd.Function (torch 2.13)
    "ignore:<class 'torch.autograd.function.Function'> should not be instantiated")
def test_compile_fullgraph_dynamic_with_activation_checkpointing():
    """A small video model (conv, max_pool3d, adaptive pool) compiled with fullgraph=True and
    dynamic shapes, with the pools under activation checkpointing: the recompute in backward
    sees the same ties (saved max and integer counts), so gradients equal eager's bit for bit."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 2, 1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).view(2, 2, 1, 1, 1))
        conv.bias.zero_()

    def block(x):
        y = max_pool3d(torch.relu(conv(x)), 2, 1, ties="uniform")
        return adaptive_max_pool3d(y, (2, 2, 2), ties="last")

    def model(x):
        return (checkpoint(block, x, use_reentrant=False) ** 2).sum()

    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in ((1, 2, 4, 5, 5), (2, 2, 5, 6, 4)):
        x = ties_input(shape, seed=sum(shape))
        xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
        model(xe).backward()
        compiled(xc).backward()
        assert_same(xc.grad, xe.grad)


def test_missing_triton_or_triton_op_degrades_with_one_warning(monkeypatch):
    """backend="auto" on a CUDA tensor without a usable Triton backend takes the PyTorch path and
    warns once; an explicit backend="triton" says what is missing."""
    import types
    import warnings

    from mtlib.maxpool import _args

    monkeypatch.delattr(torch.library, "triton_op")
    assert "triton_op" in _args._triton_missing() and "2.6" in _args._triton_missing()
    monkeypatch.setattr(_args, "TRITON_MISSING", "the `triton` package")
    _args._warn_once.cache_clear()
    cuda_like = types.SimpleNamespace(is_cuda=True)
    with pytest.warns(RuntimeWarning, match="using the PyTorch path"):
        assert _args.choose_backend("max_pool3d", "auto", cuda_like) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        assert _args.choose_backend("max_pool3d", "auto", cuda_like) == "torch"
    with pytest.raises(ImportError, match="max_pool3d: backend='triton' needs the `triton` package"):
        _args.choose_backend("max_pool3d", "triton", cuda_like)


# --- no Python loop over taps, windows or strides ---------------------------------------------

@pytest.mark.parametrize("ties", RULES)
def test_cost_does_not_grow_with_kernel_stride_or_output_in_python(ties):
    """Each case ran a Python loop of 4096 taps, 10**6 stride phases or 2**62 windows before;
    now each is a handful of tensor ops (bounds 30x above an idle machine's time)."""
    import time

    x = ties_input((1, 2, 64, 64), seed=5).requires_grad_()
    max_pool2d(x, 2, ties=ties, backend="torch").sum().backward()  # first-call set-up, untimed
    start = time.perf_counter()
    y = max_pool2d(x, 64, ties=ties, backend="torch")  # a global pool: 4096 taps
    y.sum().backward()
    assert_same(y, F.max_pool2d(x.detach(), 64))
    y = max_pool2d(x, 2, stride=1000, ties=ties, backend="torch")  # 1000 x 1000 stride phases
    assert y.shape == (1, 2, 1, 1)
    with pytest.raises(RuntimeError):  # PyTorch's own error, at once: no loop over 2**62 windows
        adaptive_max_pool1d(torch.empty(2, 2, 2), 2**62, ties=ties, backend="torch")
    assert time.perf_counter() - start < 3.0
