"""PyTorch's own pooling test material, run against mtlib's pools under every tie rule and both
backends.

Ported (re-expressed, same inputs and expectations) from PyTorch 2.13's test suite:

* the OpInfo samples and error inputs of ``nn.functional.max_pool1d/2d/3d`` and
  ``adaptive_max_pool1d/2d/3d`` (``common_methods_invocations``: ``_TestParamsMaxPool*``,
  ``sample_inputs_adaptive_max_pool*``, ``error_inputs_*max_pool*``);
* the ModuleInfo samples of ``nn.MaxPool1d/2d/3d`` and ``nn.AdaptiveMaxPool1d/2d/3d``
  (``common_modules``), and ``MaxPool2d``'s module error inputs;
* cases of ``test/nn/test_pooling.py``: corner cases, channels-last (nhwc / ndhwc), 16-bit
  against float32, zero batch, non-contiguous inputs, ``size=None``, size overflow.

Every sample runs with values in {-1, 0, 1} (ties in most windows) and once with NaN and inf.
A brute-force reference, written here from PyTorch's window definitions, is first checked
against PyTorch's own pool ("first": values, indices, gradient) on the sample, and only then
judges "last" and "uniform". The output keeps PyTorch's memory format, the gradient has the
input's layout. The OpInfo grid is subsampled deterministically (every ``STEP``-th sample of
a fixed shuffle) so the file runs in well under a minute.

Deliberate differences from PyTorch (also in ``mtlib.maxpool``'s docs): an adaptive pool with
an output size of 0 raises at the call (PyTorch raises in the backward); ``return_indices``
with ``ties="uniform"`` raises; the error messages name mtlib's argument; the exception is
PyTorch's class (``RuntimeError``, or ``ValueError`` for the adaptive rank check) *and*
``ValueError``/``TypeError`` (:class:`mtlib.maxpool._args.PoolArgumentError`).
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from helpers import adaptive_windows, assert_same, pool_oracle, strided_windows

import mtlib.maxpool as mp

BACKENDS = ("auto", "torch")
STEP = 23  # keep every STEP-th OpInfo sample of the shuffled grid (deterministic)


def _windows_of(kind, n, x5shape, args):
    """The per-axis windows of a sample (``x5shape``: the batched shape)."""
    spatial = x5shape[2:]
    if kind == "adaptive":
        size = args["output_size"]
        size = (size,) * n if not isinstance(size, tuple) else size
        return [adaptive_windows(L, L if o is None else o) for L, o in zip(spatial, size)]
    def per_axis(v, default):
        v = default if v is None else v
        return tuple(v) * (n if len(tuple(v)) == 1 else 1) if isinstance(v, tuple) else (v,) * n

    k = per_axis(args["kernel_size"], None)
    s = per_axis(args.get("stride"), k)
    p, d = per_axis(args.get("padding", 0), 0), per_axis(args.get("dilation", 1), 1)
    ceil = args.get("ceil_mode", False)
    windows = []
    for L, kk, ss, pp, dd in zip(spatial, k, s, p, d):
        span = L + 2 * pp - dd * (kk - 1) - 1 + (ss - 1 if ceil else 0)
        out = span // ss + 1
        if ceil and (out - 1) * ss >= L + pp:
            out -= 1
        windows.append(strided_windows(L, kk, ss, pp, dd, out))
    return windows


def _fill(x, nan):
    gen = torch.Generator().manual_seed(x.numel())
    values = torch.randint(-1, 2, x.shape, generator=gen).to(x.dtype)
    if nan and x.numel() >= 4:
        flat = values.view(-1)
        pick = torch.randperm(x.numel(), generator=gen)[:3]
        flat[pick[0]], flat[pick[1]], flat[pick[2]] = float("nan"), float("inf"), float("-inf")
    return values


def _layout_of(t):
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "cl" if not t.is_contiguous() else "both"
    if t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d):
        return "cl" if not t.is_contiguous() else "both"
    return "contiguous" if t.is_contiguous() else "strided"


def run_sample(kind, n, x, args, dtype=torch.float64, nan=False):
    """Check one sample: PyTorch, the reference and mtlib under every rule and backend."""
    torch_fn = getattr(F, f"{'adaptive_' if kind == 'adaptive' else ''}max_pool{n}d")
    mtlib_fn = getattr(mp, f"{'adaptive_' if kind == 'adaptive' else ''}max_pool{n}d")
    values = _fill(x, nan).to(dtype)
    x = torch.empty_like(x, dtype=dtype).copy_(values)  # keeps x's strides (channels_last ...)
    args = dict(args, return_indices=True)
    xt = x.detach().clone().requires_grad_()
    try:
        ty, tidx = torch_fn(xt, **args)
    except (RuntimeError, ValueError) as err:
        for ties in mp_rules():
            with pytest.raises(type(err)):
                mtlib_fn(x, **{**args, "return_indices": False}, ties=ties)
        return "error"
    g = torch.randint(-4, 5, ty.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (tgrad,) = torch.autograd.grad(ty, xt, g)
    batched = x if x.dim() == n + 2 else x.unsqueeze(0)
    gb = g if x.dim() == n + 2 else g.unsqueeze(0)
    windows = _windows_of(kind, n, batched.shape, args)
    ref_y, ref_g, _, ref_idx = pool_oracle(batched.detach().contiguous(), gb.contiguous(), windows,
                                      "first")
    squeeze = (lambda t: t) if x.dim() == n + 2 else (lambda t: t.squeeze(0))  # noqa: E731
    # the reference is PyTorch on this sample before it judges the other rules
    assert_same(squeeze(ref_y), ty)
    assert torch.equal(squeeze(ref_idx), tidx)
    if dtype == torch.float64:
        assert_same(squeeze(ref_g), tgrad)
    for ties, backend in itertools.product(mp_rules(), BACKENDS):
        ref_y, ref_g, _, ref_idx = pool_oracle(batched.detach().contiguous(), gb.contiguous(),
                                          windows, ties)
        xm = x.detach().clone().requires_grad_()
        with_idx = ties != "uniform"
        res = mtlib_fn(xm, **{**args, "return_indices": with_idx}, ties=ties, backend=backend)
        y, idx = res if with_idx else (res, None)
        (gx,) = torch.autograd.grad(y, xm, g)
        assert_same(y, squeeze(ref_y))
        assert _layout_of(y) == _layout_of(ty), (ties, backend)
        assert _layout_of(gx) == _layout_of(tgrad), (ties, backend)
        if with_idx:
            assert torch.equal(idx, squeeze(ref_idx))
            assert _layout_of(idx) == _layout_of(tidx)
        assert_same(gx, squeeze(ref_g))
    return "ok"


def mp_rules():
    return ("first", "last", "uniform")


# --- the OpInfo samples --------------------------------------------------------------------------

def _opinfo_max_pool(n):
    """``sample_inputs_max_pool``'s grid for ``max_pool{n}d`` (PyTorch's ``_TestParamsMaxPool``)."""
    tuples = {1: ((3,), (2,), (1,), (1,)), 2: ((3, 2), (2, 1), (1, 1), (1, 2)),
              3: ((3, 2, 3), (2, 1, 2), None, (1, 2, 1))}[n]
    kwargs = {"kernel_size": [3, tuples[0]], "stride": [2, None, tuples[1]],
              "ceil_mode": [True, False], "padding": [0, 1] + [tuples[2]] * (n < 3),
              "dilation": [1, tuples[3]]}
    shapes = [[1, 2, None], [2], [3, 6]] + [[6]] * (n >= 2) + [[5]] * (n >= 3)
    for shape in itertools.product(*shapes):
        shape = shape[1:] if shape[0] is None else shape
        formats = [torch.contiguous_format] + [torch.channels_last] * (n == 2 and len(shape) == 4)
        for fmt, values in itertools.product(formats, itertools.product(*kwargs.values())):
            yield shape, fmt, dict(zip(kwargs, values))


def _opinfo_adaptive(n):
    cases = {1: [((3, 4, 4), 3), ((3, 4, 4), 1)],
             2: [((1, 4, 4, 4), (2, 3)), ((2, 4, 4, 4), (None, 3)), ((2, 4, 4, 4), (1, 1)),
                 ((1, 4, 4, 3), (3, None)), ((1, 4, 4, 3), (None, None)), ((1, 4, 4, 3), 3)],
             3: [((1, 4, 4, 3, 5), (None, None, None)), ((1, 4, 4, 3, 5), (1, 1, 1)),
                 ((3, 3, 4, 4, 6), (2, 3, None)), ((1, 3, 4, 4, 6), (3, None, 2)),
                 ((3, 3, 4, 4, 6), (None, 3, 2))]}[n]
    for (shape, size), batched in itertools.product(cases, (True, False)):
        yield (shape if batched else shape[1:]), torch.contiguous_format, {"output_size": size}


def _subsample(samples, step=STEP):
    samples = list(samples)
    random.Random(0).shuffle(samples)
    return samples[::step]


OPINFO = ([("max", n, *s) for n in (1, 2, 3) for s in _subsample(_opinfo_max_pool(n))]
          + [("adaptive", n, *s) for n in (1, 2, 3) for s in _opinfo_adaptive(n)])


@pytest.mark.parametrize("nan", (False, True), ids=("ties", "nan-inf"))
@pytest.mark.parametrize("kind, n, shape, fmt, kwargs", OPINFO,
                         ids=[f"{k}{n}d-{i}" for i, (k, n, *_) in enumerate(OPINFO)])
def test_opinfo_samples(kind, n, shape, fmt, kwargs, nan):
    x = torch.empty(shape).to(memory_format=fmt)
    run_sample(kind, n, x, {k: v for k, v in kwargs.items() if k != "return_indices"}, nan=nan)


def test_opinfo_grid_covers_errors_and_channels_last():
    """The subsample keeps samples PyTorch rejects and channels-last ones (both are checked)."""
    kinds = {(fmt == torch.channels_last) for k, n, shape, fmt, kw in OPINFO}
    assert kinds == {True, False}
    assert len(OPINFO) >= 60


# --- the OpInfo error inputs ----------------------------------------------------------------------

def _error_inputs():
    x1 = torch.empty(0, 1, 49)
    for n, x in ((1, x1), (2, x1), (3, torch.empty(0, 1, 49, 50))):
        yield n, x, {"kernel_size": 2, "stride": 50, "padding": -1}
        yield n, x, {"kernel_size": 2, "stride": 50, "padding": 4}
        yield n, x, {"kernel_size": (3, 2, 2)[:n] if n > 1 else 3, "stride": 50, "padding": 4}
    yield 1, x1, {"kernel_size": 3, "dilation": 2, "stride": 1, "padding": 3}
    for shape in ((), (0,), (0, 10), (1, 10, 0)):
        yield 1, torch.empty(shape), {"kernel_size": 1}
    yield 1, torch.empty(3, 3, 3), {"kernel_size": 1, "stride": 0}
    yield 1, torch.empty(3, 3, 3), {"kernel_size": 1, "stride": 1, "dilation": 0}
    yield 1, torch.empty(2, 2, 2), {"kernel_size": 5, "stride": 1}
    yield 1, x1, {"kernel_size": 0}
    yield 2, torch.empty(1, 0, 10), {"kernel_size": 1}
    yield 2, torch.empty(2, 1, 10, 0), {"kernel_size": 1}
    yield 2, torch.empty(1, 1, 4), {"kernel_size": 2}
    yield 3, torch.empty(0, 1, 2, 10), {"kernel_size": 1}
    yield 3, torch.empty(2, 1, 0, 1, 2), {"kernel_size": 1}
    yield 3, torch.empty(1, 1, 1, 4, 4), {"kernel_size": 2}
    yield 2, torch.empty(3, 4), {"kernel_size": 2}         # ModuleInfo: MaxPool2d, 2-d input
    yield 2, torch.empty(1, 2, 3, 4, 5), {"kernel_size": 2}  # ModuleInfo: MaxPool2d, 5-d input
    for n, shape, size in ((1, (1, 2, 3), ()), (1, (1, 1, 1), (-1,)), (2, (2, 2), (2, 2)),
                           (2, (1, 2, 3, 4), ()), (2, (1, 1, 1, 1), (-1, 0)),
                           (3, (2, 2, 2), (2, 2, 2)), (3, (1, 2, 3, 4), ()),
                           (3, (1, 1, 1, 1, 1), (-1, 0, 2))):
        yield -n, torch.empty(shape), {"output_size": size}


ERRORS = list(_error_inputs())


@pytest.mark.parametrize("n, x, kwargs", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_error_inputs_raise_pytorchs_class(n, x, kwargs, tie_rule):
    adaptive = n < 0
    name = f"{'adaptive_' if adaptive else ''}max_pool{abs(n)}d"
    with pytest.raises(Exception) as expected:
        getattr(F, name)(x, **kwargs)
    for backend in BACKENDS:
        with pytest.raises(type(expected.value)):
            getattr(mp, name)(x, **kwargs, ties=tie_rule, backend=backend)


# --- the ModuleInfo samples ----------------------------------------------------------------------

MODULES = [
    ("MaxPool1d", (4,), {}, (2, 10, 4)), ("MaxPool1d", (4, 4), {}, (2, 10, 4)),
    ("MaxPool2d", ((3, 3), (2, 2), (1, 1)), {}, (3, 7, 7)),
    ("MaxPool2d", ((3, 3), (2, 2), (1, 1)), {}, (1, 3, 7, 7)),
    ("MaxPool3d", ((2, 2, 2),), {}, (2, 3, 5, 5, 5)), ("MaxPool3d", (2, (2, 2, 2)), {}, (2, 3, 5, 5, 5)),
    ("MaxPool3d", (2, 2, (1, 1, 1)), {}, (2, 3, 5, 5, 5)),
    ("AdaptiveMaxPool1d", (3,), {}, (1, 3, 5)), ("AdaptiveMaxPool1d", (3,), {}, (3, 5)),
    ("AdaptiveMaxPool2d", (3,), {}, (1, 3, 5, 6)), ("AdaptiveMaxPool2d", (3,), {}, (3, 5, 6)),
    ("AdaptiveMaxPool2d", ((3, 4),), {}, (1, 3, 5, 6)),
    ("AdaptiveMaxPool2d", ((3, None),), {}, (1, 3, 5, 6)),
    ("AdaptiveMaxPool3d", (3,), {}, (2, 3, 5, 6, 7)), ("AdaptiveMaxPool3d", (3,), {}, (3, 5, 6, 7)),
    ("AdaptiveMaxPool3d", ((3, 4, 5),), {}, (2, 3, 5, 6, 7)),
    ("AdaptiveMaxPool3d", ((3, None, 5),), {}, (2, 3, 5, 6, 7)),
    ("AdaptiveMaxPool3d", (3,), {}, (2, 3, 12, 9, 3)),
    ("AdaptiveMaxPool3d", ((3, 4, 5),), {}, (2, 3, 6, 4, 10)),
]


@pytest.mark.parametrize("name, args, kwargs, shape", MODULES)
def test_module_samples(name, args, kwargs, shape, tie_rule):
    x = _fill(torch.empty(shape, dtype=torch.float64), nan=False).requires_grad_()
    ref = getattr(torch.nn, name)(*args, **kwargs)
    y = ref(x)
    (ref_grad,) = torch.autograd.grad(y.sum(), x)
    for backend in BACKENDS:
        mod = getattr(mp, name)(*args, **kwargs, ties=tie_rule, backend=backend)
        xm = x.detach().clone().requires_grad_()
        out = mod(xm)
        assert_same(out, y)
        (gx,) = torch.autograd.grad(out.sum(), xm)
        # every window sends its whole gradient into its own entries
        assert gx.sum().item() == pytest.approx(out.numel(), rel=1e-12)
        if tie_rule == "first":
            assert_same(gx, ref_grad)


# --- cases of test/nn/test_pooling.py -----------------------------------------------------------

def test_max_pool1d_corner_cases(tie_rule):
    """A window lying entirely in the padding gives -inf (and no gradient), as PyTorch."""
    for x, args, expected in (([[1.0]], (2, None, 1, 2, False), [[float("-inf")]]),
                              ([[1.0], [1.0]], (2, None, 1, 2, False), [[float("-inf")]] * 2),
                              ([[1.0, 2.0]], (2, 1, 1, 2, False), [[2.0, 1.0]]),
                              ([[1.0, 2.0]], (2, 2, 1, 2, True), [[2.0, 2.0]])):
        x = torch.tensor(x, requires_grad=True)
        y = mp.max_pool1d(x, *args, ties=tie_rule, backend="torch")
        assert y.tolist() == expected
        y.sum().backward()
        assert x.grad.sum().item() == sum(v != float("-inf") for row in expected for v in row)


@pytest.mark.parametrize("fmt", (torch.contiguous_format, torch.channels_last))
def test_max_pool2d_corner_case(fmt, tie_rule):
    x = torch.tensor([[[[-1.0, -2.0], [-3.0, -4.0]]]]).to(memory_format=fmt)
    y = mp.max_pool2d(x, 2, 2, 1, 2, True, ties=tie_rule)
    assert y.tolist() == [[[[-4.0, -4.0], [-4.0, -4.0]]]]


@pytest.mark.parametrize("shape, kernel, stride", [((2, 8, 8, 8), 7, None), ((2, 8, 7, 7), 3, 1),
                                                   ((1, 5, 9, 9), 3, 2)])
def test_max_pool2d_nhwc(shape, kernel, stride):
    x = torch.empty(shape).to(memory_format=torch.channels_last)
    run_sample("max", 2, x, {"kernel_size": kernel, "stride": stride})


@pytest.mark.parametrize("shape, kernel, stride", [((2, 3, 8, 8, 8), 7, None),
                                                   ((1, 3, 8, 8, 8), (5, 6, 7), None),
                                                   ((2, 3, 7, 7, 7), 3, 1),
                                                   ((1, 4, 9, 9, 9), (1, 2, 3), 2)])
def test_max_pool3d_ndhwc(shape, kernel, stride):
    x = torch.empty(shape).to(memory_format=torch.channels_last_3d)
    run_sample("max", 3, x, {"kernel_size": kernel, "stride": stride})


@pytest.mark.parametrize("contig", (True, False))
@pytest.mark.parametrize("shape, size", [((2, 4, 10, 10), (7, 7)), ((2, 4, 9, 14), (5, 8)),
                                         ((2, 4, 11, 11), (1, 1)), ((2, 1, 3, 3), (1, 1)),
                                         ((2, 4, 6, 6, 6), (4, 4, 4)), ((2, 1, 3, 3, 3), (1, 1, 1))])
def test_adaptive_pooling_max_nhwc(shape, size, contig):
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    x = torch.empty(shape).to(memory_format=fmt)
    x = x if contig else x[:, ::2]
    run_sample("adaptive", len(size), x, {"output_size": size})


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
@pytest.mark.parametrize("shape, kernel, stride, fmt", [
    ((2, 6, 8, 8), 7, 1, torch.contiguous_format), ((2, 5, 8, 8), 7, 1, torch.channels_last),
    ((1, 3, 20, 10), 8, 2, torch.channels_last), ((1, 3, 10, 9, 14), 8, 2, torch.channels_last_3d),
    ((2, 3, 3, 8, 8), 3, 1, torch.contiguous_format)])
def test_max_pool_bfloat16_half(dtype, shape, kernel, stride, fmt, tie_rule):
    """16-bit pools equal the float32 pool rounded (values, indices, gradient)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x = x.to(memory_format=fmt)
    fn = mp.max_pool2d if len(shape) == 4 else mp.max_pool3d
    with_idx = tie_rule != "uniform"
    for backend in BACKENDS:
        xs = [x.detach().clone().requires_grad_(), x.detach().float().requires_grad_()]
        outs = [fn(t, kernel, stride, return_indices=with_idx, ties=tie_rule, backend=backend)
                for t in xs]
        for out in outs:
            (out[0] if with_idx else out).sum().backward()
        y, y32 = ((o[0], o[1]) if with_idx else (o, None) for o in outs)
        assert y[0].is_contiguous(memory_format=fmt) and y[0].dtype == dtype
        assert_same(y[0], y32[0].to(dtype))
        if with_idx:
            assert torch.equal(y[1], y32[1])
        assert xs[0].grad.dtype == dtype
        assert_same(xs[0].grad, xs[1].grad.to(dtype))


def test_max_pool1d_against_indices_and_non_contiguous():
    """Random sizes and geometries (seeded), and strided / transposed inputs."""
    rng = random.Random(0)
    for _ in range(6):
        size = [rng.randint(1, 3), rng.randint(1, 4), rng.randint(8, 40)]
        k, s, d = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 4)
        args = {"kernel_size": k, "stride": s, "padding": rng.randint(0, k // 2), "dilation": d,
                "ceil_mode": rng.random() < 0.5}
        run_sample("max", 1, torch.empty(size), args)
    t = torch.empty(3, 12, 33)[::2, ::3, ::2]
    run_sample("max", 1, t, {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 2,
                             "ceil_mode": True})
    run_sample("max", 1, t.transpose(1, 2), {"kernel_size": 3, "stride": 2, "padding": 1,
                                             "dilation": 2, "ceil_mode": True})


def test_zero_batch_and_zero_channels(tie_rule):
    for name, args, shape in (("MaxPool1d", (3, 2), (0, 16, 50)), ("MaxPool2d", (3, 2), (0, 16, 50, 32)),
                              ("MaxPool3d", (3, 2), (0, 16, 50, 44, 31)),
                              ("AdaptiveMaxPool1d", (3,), (0, 16, 50)),
                              ("AdaptiveMaxPool2d", (3,), (0, 16, 50, 32)),
                              ("AdaptiveMaxPool3d", (3,), (0, 16, 50, 44, 31))):
        for backend in BACKENDS:
            mod = getattr(mp, name)(*args, ties=tie_rule, backend=backend)
            x = torch.ones(shape, requires_grad=True)
            y = mod(x)
            assert y.shape == getattr(torch.nn, name)(*args)(x).shape
            y.sum().backward()
            assert torch.equal(x.grad, torch.zeros_like(x))
            with pytest.raises(RuntimeError):
                mod(torch.ones(1, 0, *shape[2:]))


def test_adaptive_size_none_and_overflow(tie_rule):
    for n in (2, 3):
        size = (2,) * (n - 1) + (None,)
        mod = getattr(mp, f"AdaptiveMaxPool{n}d")(size, ties=tie_rule)
        assert mod(torch.randn((4,) * (n + 1))).shape == (4,) + (2,) * (n - 1) + (4,)
    with pytest.raises(RuntimeError):
        mp.AdaptiveMaxPool1d(0x3FFFFFFFFFFFFFFF, ties=tie_rule)(torch.empty(2, 2, 2))


def test_adaptive_output_size_zero_raises(tie_rule):
    """PyTorch raises in the backward ("Expected grad_output to have non-zero size"); mtlib at
    the call (a deliberate difference: the forward's empty output is never useful)."""
    x = torch.randn(1, 6, 10, 9, requires_grad=True)
    with pytest.raises(RuntimeError):
        F.adaptive_max_pool2d(x, 0).sum().backward()
    for fn, inp in ((mp.adaptive_max_pool2d, x), (mp.adaptive_max_pool3d, x),
                    (mp.adaptive_max_pool1d, torch.randn(1, 6))):
        with pytest.raises(RuntimeError):
            fn(inp, 0, ties=tie_rule)


# --- dynamic shapes -------------------------------------------------------------------------------

COMPILED = [("MaxPool1d", (3, 2, 1), [(2, 3, 9), (2, 3, 12)]),
            ("MaxPool2d", (3, 2, 1), [(2, 3, 9, 9), (1, 3, 11, 10)]),
            ("MaxPool3d", (2, 2, 1), [(1, 2, 5, 6, 6), (2, 2, 7, 6, 5)]),
            ("AdaptiveMaxPool1d", (3,), [(2, 3, 9), (2, 3, 10)]),
            ("AdaptiveMaxPool2d", ((3, 2),), [(2, 3, 9, 9), (1, 3, 7, 10)]),
            ("AdaptiveMaxPool3d", (2,), [(1, 2, 5, 6, 6), (2, 2, 4, 7, 5)])]


@pytest.mark.filterwarnings(  # raised by Dynamo itself for any autograd.Function (torch 2.13)
    "ignore:<class 'torch.autograd.function.Function'> should not be instantiated")
@pytest.mark.parametrize("name, args, shapes", COMPILED)
def test_compile_fullgraph_dynamic_shapes(name, args, shapes, tie_rule):
    """``torch.compile(fullgraph=True, dynamic=True)`` traces forward and backward (Dynamo and
    AOTAutograd; ``aot_eager`` skips the C++ code generation, whose cost the pools don't
    change) on two shapes, and gives PyTorch's values and the eager gradient."""
    torch._dynamo.reset()
    mod = getattr(mp, name)(*args, ties=tie_rule, backend="torch")
    compiled = torch.compile(mod, fullgraph=True, dynamic=True, backend="aot_eager")
    for shape in shapes:
        x = _fill(torch.empty(shape), nan=False).requires_grad_()
        y = compiled(x)
        assert_same(y, getattr(torch.nn, name)(*args)(x))
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        xe = x.detach().requires_grad_()
        (ge,) = torch.autograd.grad(mod(xe), xe, torch.ones_like(y))
        assert_same(gx, ge)
    if name == "MaxPool2d":  # no gradient to trace: the forward op alone (one more trace)
        assert_same(compiled(x.detach()), y)
