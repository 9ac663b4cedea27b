"""The C kernel of the CPU "last"/"uniform" pools (mtlib/maxpool/_cpu.c, loaded by _cpu.py).

Through the public pools (small CPU inputs, so the C kernel runs and Inductor does not): the
values (bit for bit, signed zeros and NaN included), the "last" indices, the "uniform" companion
(tie counts) and the gradients equal the brute-force oracle of tests/helpers.py, on padding,
dilation, ceil mode, empty windows, 1-d/2-d/3-d, overlapping, disjoint, adaptive and global
windows and long rows (the vectorized two-pass path), in the four float dtypes, with NaN and
+-inf planted; a spy checks that the kernel ran. A property test: the kernel and the eager path
(MTLIB_POOL_COMPILE=0) agree bit for bit on random geometries. Threads change no bit; the switch
and the inputs the kernel refuses; a failed build warns once and falls back; the build cache.
"""

from __future__ import annotations

import itertools
import subprocess
import types
import warnings

import pytest
import torch
from helpers import adaptive_windows, pool_and_grad, pool_oracle, strided_windows, ties_input
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mtlib.maxpool as mp
from mtlib.maxpool import _cpu, _torch
from mtlib.maxpool._geometry import PoolAxis, adaptive_axis, pool_axes, pool_output_size
from mtlib.maxpool._torch import tie_counts

pytestmark = pytest.mark.skipif(_cpu._compiler() is None, reason="no C compiler on this machine")

BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
        torch.float16: torch.int16}
INF, NAN = float("inf"), float("nan")

# (id, pool, input shape, (kernel, stride, padding, dilation, ceil_mode) or the output size)
CASES = [
    ("2d-pad-dilation-ceil", mp.max_pool2d, (2, 2, 5, 5), ((2, 2), (2, 2), (1, 1), (3, 3), True)),
    ("2d-empty", mp.max_pool2d, (2, 2, 2, 7), ((2, 3), (1, 2), (1, 1), (3, 1), False)),
    ("2d-overlap", mp.max_pool2d, (2, 2, 7, 8), ((3, 3), (2, 2), (1, 1), (1, 1), True)),
    ("1d-dilation", mp.max_pool1d, (2, 2, 11), ((3,), (2,), (1,), (2,), True)),
    ("3d", mp.max_pool3d, (2, 2, 5, 6, 7), ((2, 2, 3), (2, 1, 2), (1, 0, 1), (2, 1, 1), True)),
    ("2d-disjoint", mp.max_pool2d, (2, 2, 7, 9), ((2, 3), (2, 3), (1, 1), (1, 1), True)),
    ("2d-global-28", mp.max_pool2d, (2, 2, 28, 28), ((28, 28), (28, 28), (0, 0), (1, 1), False)),
    ("3d-global", mp.max_pool3d, (2, 2, 3, 4, 5), ((3, 4, 5), (3, 4, 5), (0,) * 3, (1,) * 3, False)),
    ("1d-k40", mp.max_pool1d, (2, 2, 90), ((40,), (25,), (10,), (1,), True)),
    ("2d-rows-of-40", mp.max_pool2d, (2, 2, 6, 45), ((2, 40), (2, 5), (1, 0), (1, 1), False)),
    ("adaptive-13to5", mp.adaptive_max_pool2d, (2, 2, 13, 13), (5, 5)),
    ("adaptive-7to3", mp.adaptive_max_pool2d, (2, 2, 7, 7), (3, 3)),
    ("adaptive1d-300to7", mp.adaptive_max_pool1d, (2, 2, 300), (7,)),
    ("adaptive3d", mp.adaptive_max_pool3d, (2, 2, 5, 7, 6), (2, 3, 4)),
    ("adaptive-7x7to1", mp.adaptive_max_pool2d, (2, 2, 7, 7), (1, 1)),
    ("adaptive-9x40to1", mp.adaptive_max_pool2d, (2, 2, 9, 40), (1, 1)),
    ("adaptive-4x70to3x2", mp.adaptive_max_pool2d, (2, 2, 4, 70), (3, 2)),
]


@pytest.fixture(autouse=True)
def switch_on(monkeypatch):
    monkeypatch.delenv("MTLIB_POOL_COMPILE", raising=False)


@pytest.fixture
def c_calls(monkeypatch):
    """Records each call of _cpu.forward/backward: its name, or 'NAME skipped' if it ran nothing."""
    calls = []

    def spy(name, original):
        def call(*args):
            out = original(*args)
            calls.append(name if out is not None else f"{name} skipped")
            return out
        return call

    for name in ("forward", "backward"):
        monkeypatch.setattr(_cpu, name, spy(name, getattr(_cpu, name)))
    return calls


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.view(BITS[a.dtype]), b.view(BITS[b.dtype])), (a, b)


def geometry(pool, shape, params):
    """(the pool's arguments after the input, the oracle's windows, the PoolAxis tuple)."""
    if pool.__name__.startswith("adaptive"):
        axes = pool_axes(shape[2:], None, None, None, None, False, params)
        return (params,), [adaptive_windows(L, o) for L, o in zip(shape[2:], params)], axes
    axes = pool_axes(shape[2:], *params)
    windows = [strided_windows(ax.size, *a, ax.out) for ax, *a in zip(axes, *params[:4])]
    return params, windows, axes


def planted(shape, dtype, windows, seed):
    """Ties in {-1, 0, 1}; plane 0: its first window all -inf; among the entries that windows
    read, plane 1: +inf and -inf, plane 2: NaN, +inf and -inf (NaN in long rows where the
    windows are long)."""
    x = ties_input(shape, dtype, seed=seed)
    for taps in itertools.product(*(w[0] for w in windows)):
        x[(0, 0, *taps)] = -INF
    read = torch.tensor(list(itertools.product(*(sorted({t for w in ax for t in w})
                                                 for ax in windows))), dtype=torch.long)
    if not len(read):
        return x
    pos = read[torch.randperm(len(read), generator=torch.Generator().manual_seed(seed))]
    x[(0, 1, *pos[:3].T)], x[(0, 1, *pos[3:6].T)] = INF, -INF
    x[(1, 0, *pos[:2].T)], x[(1, 0, *pos[2:3].T)], x[(1, 0, *pos[3:5].T)] = NAN, INF, -INF
    return x


def check_against_oracle(pool, x, args, windows, axes, calls):
    out_shape = (*x.shape[:2], *(len(w) for w in windows))
    gen = torch.Generator().manual_seed(x.numel())
    g = torch.randint(-3, 4, out_shape, generator=gen).to(x.dtype) / 2
    for ties in ("last", "uniform"):
        ref_y, ref_g, counts, index = pool_oracle(x, g, windows, ties)
        calls.clear()
        y, gx = pool_and_grad(pool, x, g, *args, ties=ties, backend="torch")
        assert calls == ["forward", "backward"]  # the C kernel ran, both ways
        same_bits(y, ref_y)
        same_bits(gx, ref_g)
        if ties == "last":
            assert torch.equal(pool(x, *args, return_indices=True, ties=ties)[1], index)
            assert calls[-1] == "forward"
        else:  # the companion: the maximal entry, -|T_w| for ties, -1 for an empty window
            aux = _cpu.forward(x, axes, ties)[1]
            assert torch.equal(aux, torch.where(counts >= 2, -counts.long(), index))
            assert torch.equal(tie_counts(aux), counts.long())
    return ref_y


@pytest.mark.parametrize("dtype", list(BITS), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_the_c_kernel_is_the_definition(case, dtype, c_calls):
    _, pool, shape, params = case
    args, windows, axes = geometry(pool, shape, params)
    x = planted(shape, dtype, windows, seed=sum(shape))
    ref_y = check_against_oracle(pool, x, args, windows, axes, c_calls)
    if all(w[0] for w in windows):  # the all -inf window and a NaN window are there
        assert ref_y[0, 0].flatten()[0] == -INF and ref_y[1, 0].isnan().any()


@pytest.mark.parametrize("dtype", list(BITS), ids=str)
@pytest.mark.parametrize("case", [CASES[2], CASES[8], CASES[15]], ids=lambda c: c[0])
def test_a_signed_zero_max_is_the_first_maximal_entry(case, dtype, c_calls):
    _, pool, shape, params = case
    args, windows, axes = geometry(pool, shape, params)
    pick = torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(7))
    x = torch.tensor([-1.0, -0.0, 0.0], dtype=dtype)[pick]
    bits = check_against_oracle(pool, x, args, windows, axes, c_calls).view(BITS[dtype])
    assert (bits == 0).any() and (bits < 0).any()  # both zeros are maxima somewhere


@st.composite
def kernel_cases(draw):
    """A random 2-d or 3-d pool (strided or adaptive) over random integers in {-2..2}, a few NaN."""
    dims = draw(st.sampled_from([2, 3]))
    spatial = [draw(st.integers(1, 4)) for _ in range(dims - 1)] + [draw(st.integers(1, 40))]
    if draw(st.booleans()):
        out = [draw(st.integers(1, L)) for L in spatial]
        axes = pool_axes(tuple(spatial), None, None, None, None, False, out)
    else:
        dilation = [draw(st.integers(1, 3)) for _ in spatial]
        kernel = [draw(st.integers(1, (L + 1) // d + 1)) for L, d in zip(spatial, dilation)]
        stride = [draw(st.integers(1, 3)) for _ in spatial]
        padding = [draw(st.integers(0, k // 2)) for k in kernel]
        axes = pool_axes(tuple(spatial), kernel, stride, padding, dilation, draw(st.booleans()))
        assume(all(ax.out >= 1 for ax in axes))
    dtype = draw(st.sampled_from(list(BITS)))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), *spatial)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randint(-2, 3, shape, generator=gen).to(dtype)
    x.view(-1)[torch.randint(0, x.numel(), (draw(st.integers(0, 2)),), generator=gen)] = NAN
    g = torch.randint(-3, 4, (*shape[:2], *(ax.out for ax in axes)), generator=gen).to(dtype) / 2
    return x, g, axes


@settings(max_examples=60, deadline=None)
@given(kernel_cases())
def test_the_c_kernel_is_the_eager_path(case):
    x, g, axes = case
    for ties in ("last", "uniform"):
        m, aux = _cpu.forward(x, axes, ties)
        gx = _cpu.backward(g, x, m, aux, axes)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MTLIB_POOL_COMPILE", "0")
            eager_m, eager_aux = _torch.forward(x, axes, ties)
            eager_gx = _torch.backward(g, x, eager_m, eager_aux, axes, ties)
        same_bits(m, eager_m)
        assert torch.equal(aux, eager_aux)
        same_bits(gx, eager_gx)


def test_the_window_spans_are_the_definition():
    """``PoolAxis.spans`` (the C kernel's description of the windows, in closed form: first tap
    inside the input, number of such taps, consecutive ``dilation`` apart) lists the windows
    of the definitions, on every small strided geometry (padding, dilation, ceil mode, empty
    windows) and every adaptive one."""
    cases = [(PoolAxis(size, k, s, p, d, out), strided_windows(size, k, s, p, d, out))
             for size, k, s, d in itertools.product(range(1, 10), range(1, 5), range(1, 4),
                                                    range(1, 4))
             for p in range(((k - 1) * d + 1) // 2 + 1) for ceil in (False, True)
             if (out := pool_output_size(size, k, s, p, d, ceil)) > 0]
    cases += [(adaptive_axis(size, out), adaptive_windows(size, out))
              for size in range(1, 10) for out in range(1, size + 3)]
    assert any(not w for _, windows in cases for w in windows)  # empty windows are among them
    for ax, windows in cases:
        first, count = ax.spans()
        spans = [list(range(f, f + c * ax.dilation, ax.dilation))
                 for f, c in zip(first.tolist(), count.tolist())]
        assert spans == windows, ax


def test_threads_change_no_bit(c_calls):
    x = ties_input((4, 8, 17, 16), torch.bfloat16, seed=5)
    g = torch.randint(-3, 4, (4, 8, 17, 16), generator=torch.Generator().manual_seed(6))
    g = g.to(torch.bfloat16) / 3  # shares of many tied, overlapping 3x3 windows, in bfloat16
    before, results = torch.get_num_threads(), []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append([t for ties in ("last", "uniform") for t in pool_and_grad(
                mp.max_pool2d, x, g, 3, 1, 1, ties=ties, backend="torch")])
    finally:
        torch.set_num_threads(before)
    assert c_calls == ["forward", "backward"] * 4
    for one, two in zip(*results):
        same_bits(one, two)


def test_the_switch_and_the_inputs_the_kernel_refuses(monkeypatch, c_calls):
    x = ties_input((1, 2, 4, 4), seed=1)
    axes = pool_axes((4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert _cpu.enabled(x) and _cpu.forward(x, axes, "last") is not None
    assert not _cpu.enabled(x.transpose(2, 3))  # not contiguous
    assert not _cpu.enabled(x.to("meta"))
    assert not _cpu.enabled(x.to(torch.int32))
    monkeypatch.setenv("MTLIB_POOL_COMPILE", "0")
    assert not _cpu.enabled(x)
    assert _cpu.forward(x, axes, "uniform") is None
    c_calls.clear()
    y, gx = pool_and_grad(mp.max_pool2d, x, torch.ones(1, 2, 2, 2, dtype=x.dtype), 2,
                          ties="uniform", backend="torch")
    assert c_calls == ["forward skipped", "backward skipped"]
    ref_y, ref_g, _, _ = pool_oracle(x, torch.ones(1, 2, 2, 2, dtype=x.dtype),
                                     [strided_windows(4, 2, 2, 0, 1, 2)] * 2, "uniform")
    same_bits(y, ref_y)
    same_bits(gx, ref_g)


def test_a_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path, c_calls):
    monkeypatch.setattr(_cpu, "_state", {"lib": None, "failed": None})
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("MTLIB_CACHE_DIR", str(tmp_path))  # no cached build there
    x = ties_input((2, 2, 6, 7), seed=3, nan=True)
    g = torch.randint(-3, 4, (2, 2, 3, 4), generator=torch.Generator().manual_seed(4)).double()
    windows = [strided_windows(6, 3, 2, 1, 1, 3), strided_windows(7, 3, 2, 1, 1, 4)]
    ref_y, ref_g, _, _ = pool_oracle(x, g, windows, "uniform")

    def pool_once():
        c_calls.clear()
        y, gx = pool_and_grad(mp.max_pool2d, x, g, 3, 2, 1, ties="uniform", backend="torch")
        assert c_calls == ["forward skipped", "backward skipped"]  # the eager path
        same_bits(y, ref_y)
        same_bits(gx, ref_g)

    with pytest.warns(RuntimeWarning, match="compiling the CPU pool kernel failed"):
        pool_once()
    assert "/nonexistent/cc" in _cpu._state["failed"] and _cpu._state["lib"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # from now on silently
        pool_once()
    assert not list(tmp_path.glob("*.so"))


def test_the_build_is_cached(monkeypatch, tmp_path):
    runs = []

    def run(*args, **kwargs):
        runs.append(args[0])
        return subprocess.run(*args, **kwargs)

    monkeypatch.setattr(_cpu, "subprocess", types.SimpleNamespace(run=run))
    monkeypatch.setenv("MTLIB_CACHE_DIR", str(tmp_path))
    x = ties_input((2, 3, 9, 40), torch.float32, seed=2, nan=True)
    axes = pool_axes((9, 40), None, None, None, None, False, (2, 3))
    compiles, loaded = [], []
    for _ in range(2):
        monkeypatch.setattr(_cpu, "_state", {"lib": None, "failed": None})
        loaded.append(_cpu._library()._name)
        compiles.append(len(runs))
        m, aux = _cpu.forward(x, axes, "uniform")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MTLIB_POOL_COMPILE", "0")
            eager_m, eager_aux = _torch.forward(x, axes, "uniform")
        same_bits(m, eager_m)
        assert torch.equal(aux, eager_aux)
    assert compiles == [1, 1]  # compiled once, then loaded from the cache
    files = list(tmp_path.iterdir())  # the build alone (its temporary folder is gone)
    assert len(files) == 1 and files[0].match("maxpool_cpu-*.so")
    assert loaded == [str(files[0])] * 2
